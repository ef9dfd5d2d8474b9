"""wsplugin._keepalive: heartbeat and idle timers on a fake clock."""

from __future__ import annotations

import gc
import weakref
from dataclasses import dataclass, field

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._keepalive import COMPACT_AT, HEARTBEAT_PREFIX, Heartbeats, KeepAlive


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
    return clock, host, KeepAlive(Heartbeats(clock), host, Config(**cfg))


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


class SharedQueueTests(SynchronousTestCase):
    """Connections with the same clock and interval share one timer, and
    each is still pinged one whole interval after its own start."""

    def test_one_timer_for_many_each_on_time(self) -> None:
        """Three connections opened at 0, 3 and 6: one pending call; pings
        at 10, 13 and 16 (and again at 20, 23, 26)."""
        clock = Clock()
        hb = Heartbeats(clock)
        hosts = []
        for _ in range(3):
            host = Host()
            KeepAlive(hb, host, Config(heartbeat_timeout=0))
            hosts.append(host)
            self.assertEqual(len(clock.getDelayedCalls()), 1)
            clock.advance(3)
        pinged: list[tuple[int, float]] = []
        for _ in range(20):
            for i, host in enumerate(hosts):
                pings = [c for c in host.calls if c != "before_heartbeat"]
                pinged.extend((i, clock.seconds()) for _ in pings)
                host.calls.clear()
            clock.advance(1)
        self.assertEqual(pinged, [(0, 10), (1, 13), (2, 16), (0, 20), (1, 23), (2, 26)])
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_stopped_head_skipped_and_last_stop_cancels(self) -> None:
        """A stopped connection is not pinged and the timer moves on to
        the next live one; when every connection stopped, no call is left
        pending."""
        clock = Clock()
        hb = Heartbeats(clock)
        first, second = Host(), Host()
        ka1 = KeepAlive(hb, first, Config(heartbeat_timeout=0))
        clock.advance(3)
        ka2 = KeepAlive(hb, second, Config(heartbeat_timeout=0))
        clock.advance(2)
        ka1.stop()
        clock.advance(5)  # t=10: ka1 would have been due
        self.assertEqual((first.calls, second.calls), ([], []))
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [13])
        clock.advance(3)
        self.assertEqual(second.calls[0], "before_heartbeat")
        ka2.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_intervals_apart(self) -> None:
        """Another interval gets its own queue and timer."""
        clock = Clock()
        hb = Heartbeats(clock)
        fast, slow = Host(), Host()
        KeepAlive(hb, slow, Config(heartbeat_interval=10, heartbeat_timeout=0))
        KeepAlive(hb, fast, Config(heartbeat_interval=4, heartbeat_timeout=0))
        self.assertEqual(sorted(c.getTime() for c in clock.getDelayedCalls()), [4, 10])
        clock.advance(4)
        self.assertEqual((len(fast.calls), len(slow.calls)), (2, 0))

    def test_stop_during_a_beat(self) -> None:
        """A heartbeat hook that closes another connection due at the same
        time: that one is not pinged, and the timers stay consistent."""
        clock = Clock()
        hb = Heartbeats(clock)
        victim = Host()
        victim_ka: list[KeepAlive] = []

        class Closer(Host):
            def before_heartbeat(self) -> bool | None:
                victim_ka[0].stop()
                return super().before_heartbeat()

        closer = Closer()
        KeepAlive(hb, closer, Config(heartbeat_timeout=0))
        victim_ka.append(KeepAlive(hb, victim, Config(heartbeat_timeout=0)))
        clock.advance(10)
        self.assertEqual(victim.calls, [])
        self.assertEqual(closer.calls[0], "before_heartbeat")
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [20])

    def test_churn_keeps_the_queue_small(self) -> None:
        """Connections that open and close while one stays: stopped
        entries are dropped once they outnumber the live ones, so the
        queue never holds much more than COMPACT_AT of them."""
        clock = Clock()
        hb = Heartbeats(clock)
        stays = Host()
        KeepAlive(hb, stays, Config(heartbeat_timeout=0))
        beats = hb.queue(10.0)
        longest = 0
        for _ in range(1000):
            KeepAlive(hb, Host(), Config(heartbeat_timeout=0)).stop()
            longest = max(longest, beats.queued)
        self.assertEqual(beats.live, 1)
        self.assertLessEqual(longest, COMPACT_AT + 2)
        clock.advance(10)
        self.assertEqual(stays.calls[0], "before_heartbeat")
        self.assertEqual(beats.queued, 1)

    def test_stopped_lets_go_of_its_connection(self) -> None:
        """A stopped entry still queued does not keep its connection."""
        clock = Clock()
        hb = Heartbeats(clock)
        KeepAlive(hb, Host(), Config(heartbeat_timeout=0))
        gone = Host()
        ref = weakref.ref(gone)
        KeepAlive(hb, gone, Config(heartbeat_timeout=0)).stop()
        del gone
        gc.collect()
        self.assertIsNone(ref())
        self.assertEqual(hb.queue(10.0).queued, 2)

    def test_mass_stop_during_a_beat(self) -> None:
        """A hook that stops 80 of 100 connections due at the same time
        (the queue is compacted while it is being walked): the other 19
        are pinged once, and all 20 survivors are due one interval later."""
        clock = Clock()
        hb = Heartbeats(clock)
        hosts = [Host() for _ in range(99)]
        kas: list[KeepAlive] = []

        class Closer(Host):
            def before_heartbeat(self) -> bool | None:
                for ka in kas[:80]:
                    ka.stop()
                return super().before_heartbeat()

        closer = Closer()
        KeepAlive(hb, closer, Config(heartbeat_timeout=0))
        kas.extend(KeepAlive(hb, h, Config(heartbeat_timeout=0)) for h in hosts)
        clock.advance(10)
        beats = hb.queue(10.0)
        self.assertEqual([len(h.calls) for h in hosts[:80]], [0] * 80)
        self.assertEqual([len(h.calls) for h in hosts[80:]], [2] * 19)
        self.assertEqual((beats.live, beats.queued), (20, 20))
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [20])
        clock.advance(10)
        self.assertEqual([len(h.calls) for h in hosts[80:]], [4] * 19)

    def test_cancelled_timer_recovers(self) -> None:
        """A shared call cancelled behind the queue's back (trial's
        janitor does it after a dirty test): the next connection gets a
        call again, for the first one due, and stopping never raises."""
        clock = Clock()
        hb = Heartbeats(clock)
        first, second = Host(), Host()
        ka1 = KeepAlive(hb, first, Config(heartbeat_timeout=0))
        clock.getDelayedCalls()[0].cancel()
        clock.advance(2)
        ka2 = KeepAlive(hb, second, Config(heartbeat_timeout=0))
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [10])
        clock.advance(8)
        self.assertEqual(first.calls[0], "before_heartbeat")
        clock.advance(2)
        self.assertEqual(second.calls[0], "before_heartbeat")
        ka1.stop()
        clock.getDelayedCalls()[0].cancel()
        ka2.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_clock_stepped_back(self) -> None:
        """The wall clock steps back an hour: a connection opened after
        the step is checked one interval later, not an hour later, and so
        is the one queued before it."""
        clock = Clock()
        hb = Heartbeats(clock)
        clock.advance(5000)
        before, after = Host(), Host()
        KeepAlive(hb, before, Config(heartbeat_timeout=0))
        clock.rightNow -= 3600
        KeepAlive(hb, after, Config(heartbeat_timeout=0))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(10)
        self.assertEqual(before.calls[0], "before_heartbeat")
        self.assertEqual(after.calls[0], "before_heartbeat")

    def test_queues_go_with_their_owner(self) -> None:
        """A connection never stopped does not keep the clock (and so the
        factory's queues) alive once nothing else refers to them."""
        clock = Clock()
        KeepAlive(Heartbeats(clock), Host(), Config(heartbeat_timeout=0))
        ref = weakref.ref(clock)
        del clock
        gc.collect()
        self.assertIsNone(ref())


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
