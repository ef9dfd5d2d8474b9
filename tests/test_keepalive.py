"""wsplugin._keepalive: heartbeat and idle timers on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._keepalive import HEARTBEAT_PREFIX, KeepAlive


@dataclass
class Config:
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 5.0
    idle_timeout: float = 0.0


@dataclass
class Host:
    """A connection as keep-alive sees it, recording what it is asked."""

    open: bool = True
    hook: bool | None = False
    calls: list[object] = field(default_factory=list)

    def keepalive_wanted(self) -> bool:
        return self.open

    def before_heartbeat(self) -> bool | None:
        self.calls.append("before_heartbeat")
        return self.hook

    def send_ping(self, payload: bytes) -> None:
        self.calls.append(("ping", payload))

    def heartbeat_expired(self) -> None:
        self.calls.append("expired")

    def idle_expired(self) -> None:
        self.calls.append("idle")


def started(**cfg: float) -> tuple[Clock, Host, KeepAlive]:
    clock, host = Clock(), Host()
    return clock, host, KeepAlive(clock, host, Config(**cfg))


class HeartbeatTests(SynchronousTestCase):
    """A silent peer is pinged and must answer within the timeout."""

    def test_silent_peer_pinged_then_expired(self) -> None:
        """After a silent interval: before_heartbeat, a ping, and after the
        timeout with no data, heartbeat_expired."""
        clock, host, _ = started()
        clock.advance(10)
        self.assertEqual(
            host.calls, ["before_heartbeat", ("ping", HEARTBEAT_PREFIX + b"1")]
        )
        clock.advance(5)
        self.assertEqual(host.calls[-1], "expired")

    def test_traffic_answers(self) -> None:
        """Data during the timeout answers the heartbeat; traffic during an
        interval means no ping at all."""
        clock, host, ka = started()
        clock.advance(10)
        ka.reads += 1
        ka.answered()
        clock.advance(5)
        self.assertNotIn("expired", host.calls)
        ka.reads += 1
        clock.advance(5)  # the next interval ends: the peer was heard from
        self.assertEqual(host.calls.count("before_heartbeat"), 1)

    def test_application_keepalive(self) -> None:
        """before_heartbeat returning True sends no ping, but waits for an
        answer; None (it failed) waits for nothing."""
        clock, host, _ = started()
        host.hook = True
        clock.advance(10)
        self.assertEqual(host.calls, ["before_heartbeat"])
        clock.advance(5)
        self.assertEqual(host.calls[-1], "expired")
        clock, host, ka = started()
        host.hook = None
        clock.advance(10)
        self.assertIsNone(ka.expiry)

    def test_no_timeout(self) -> None:
        """heartbeat_timeout 0: pings, never expires."""
        clock, host, ka = started(heartbeat_timeout=0)
        for _ in range(3):
            clock.advance(10)
        self.assertEqual(ka.seq, 3)
        self.assertNotIn("expired", host.calls)

    def test_closed_connection_stops(self) -> None:
        """Once the host no longer wants keep-alive, the timer stops."""
        clock, host, _ = started()
        host.open = False
        clock.advance(10)
        self.assertEqual(host.calls, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class IdleTests(SynchronousTestCase):
    """A peer that sends no data message for idle_timeout is closed."""

    def test_idle_closed_within_two_periods(self) -> None:
        """Messages in a period keep it; a silent period closes it."""
        clock, host, ka = started(heartbeat_interval=0, idle_timeout=10)
        ka.messages += 1
        clock.advance(10)
        self.assertNotIn("idle", host.calls)
        clock.advance(10)
        self.assertEqual(host.calls, ["idle"])

    def test_stop_cancels_everything(self) -> None:
        """stop() cancels the heartbeat, its timeout and the idle timer."""
        clock, _, ka = started(idle_timeout=20)
        clock.advance(10)
        self.assertEqual(len(clock.getDelayedCalls()), 3)
        ka.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        ka.stop()  # twice is harmless
