"""wsplugin._listening on a fake reactor: listening, retries at start, the
listener watchdog, each on its own (the server-level behaviour is in
tests/test_watchdog.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.test_watchdog import Reactor
from wsplugin._listening import Listening
from wsplugin._routing import Router
from wsplugin.config import ServerConfig


class Events:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def up(self) -> None:
        self.seen.append("up")

    def down(self) -> None:
        self.seen.append("down")

    def done(self, result: Any) -> None:
        self.seen.append(("done", result))


def listening(
    reactor: Reactor, endpoints: list[str], **config: Any
) -> tuple[Listening, Events]:
    events = Events()
    made = Listening(
        reactor,
        endpoints,
        object(),
        tls=None,
        router=Router(),
        config=ServerConfig(**config),
        log=Logger(),
        on_up=events.up,
        on_down=events.down,
    )
    return made, events


class StartTests(SynchronousTestCase):
    """begin(): every endpoint or none; retries as the watchdog allows."""

    def test_all_endpoints(self) -> None:
        """Both endpoints listen; the outcome fires; done gets the ports."""
        reactor = Reactor()
        made, events = listening(reactor, ["tcp:9001", "tcp:9002"])
        made.begin(events.done)
        self.assertEqual([p.number for p in made.ports], [9001, 9002])
        self.assertFalse(made.pending)
        self.assertIsNone(self.successResultOf(made.outcome()))
        self.assertEqual(events.seen[0][0], "done")

    def test_failure_without_watchdog(self) -> None:
        """No watchdog: the failure is final, and its outcome fails."""
        reactor = Reactor()
        reactor.refuse = 1
        made, events = listening(reactor, ["tcp:9001"])
        made.begin(events.done)
        self.failureResultOf(made.outcome(), CannotListenError)
        self.assertIsNotNone(made.failure)
        self.assertEqual(made.ports, [])

    def test_retries(self) -> None:
        """With a watchdog interval: tried again until it works."""
        reactor = Reactor()
        reactor.refuse = 2
        made, events = listening(reactor, ["tcp:9001"], watchdog_interval=1)
        made.begin(events.done)
        outcome = made.outcome()
        self.assertTrue(made.pending)
        reactor.advance(1)
        self.assertEqual(made.attempts, 2)
        self.assertNoResult(outcome)
        reactor.advance(1)
        self.successResultOf(outcome)
        self.assertEqual(len(made.ports), 1)

    def test_cancel_retry(self) -> None:
        """The server stops while waiting to retry: the outcome fails with
        the reason given."""
        reactor = Reactor()
        reactor.refuse = 5
        made, events = listening(reactor, ["tcp:9001"], watchdog_interval=1)
        made.begin(events.done)
        outcome = made.outcome()
        made.cancel_retry(RuntimeError("stopped"))
        self.failureResultOf(outcome, RuntimeError)
        self.assertEqual(reactor.getDelayedCalls(), [])


class WatchTests(SynchronousTestCase):
    """After start: a lost listener is noticed and replaced."""

    def test_lost_and_back(self) -> None:
        """A lost port: on_down, a new listen, on_up; the other port stays."""
        reactor = Reactor()
        made, events = listening(reactor, ["tcp:9001", "tcp:9002"], watchdog_interval=1)
        made.begin(events.done)
        first, second = made.ports
        first.connected = False
        reactor.advance(1)
        self.assertIn("down", events.seen)
        reactor.advance(0)
        self.assertEqual(events.seen[-1], "up")
        self.assertEqual([p.number for p in made.ports], [9001, 9002])
        self.assertIs(made.ports[1], second)
        self.assertIsNot(made.ports[0], first)

    def test_stop_unwatches(self) -> None:
        """stop(): no more checks, no more attempts."""
        reactor = Reactor()
        made, events = listening(reactor, ["tcp:9001"], watchdog_interval=1)
        made.begin(events.done)
        made.stop()
        self.assertEqual(reactor.getDelayedCalls(), [])
        self.assertEqual(len(made.take_ports()), 1)
        self.assertEqual(made.ports, [])
