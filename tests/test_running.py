"""wsplugin._running: run() as a process's main loop, and waiting for the
connections at stop, on fakes."""

from __future__ import annotations

import io
import sys
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._connbase import ConnectionState
from wsplugin._running import run_until_stopped, wait_closed_all


class FakeReactor(Clock):
    """callWhenRunning and shutdown triggers, run() runs them."""

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.when_running: list[Any] = []
        self.triggers: list[Any] = []
        self.stopped = False

    def callWhenRunning(self, f: Any) -> None:
        self.when_running.append(f)

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))

    def run(self) -> None:
        self.running = True
        for f in self.when_running:
            f()

    def stop(self) -> None:
        self.stopped = True
        self.running = False


class RunTests(SynchronousTestCase):
    """The exit status and what happens on the way."""

    def test_started(self) -> None:
        """A server that starts: status 0, stop() registered for shutdown."""
        reactor = FakeReactor()
        stop = lambda: succeed(None)  # noqa: E731
        status = run_until_stopped(reactor, lambda: succeed(None), stop, None)
        self.assertEqual(status, 0)
        self.assertEqual(reactor.triggers, [("before", "shutdown", stop)])

    def test_cannot_start(self) -> None:
        """A server that cannot listen: the reason on stderr, the reactor
        stopped, status 1."""
        reactor = FakeReactor()
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        status = run_until_stopped(
            reactor, lambda: fail(OSError("port taken")), lambda: succeed(None), None
        )
        self.assertEqual(status, 1)
        self.assertTrue(reactor.stopped)
        self.assertIn("cannot start: port taken", err.getvalue())


class Conn:
    """A connection that ends when told, or on abort()."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.state = ConnectionState.CLOSING
        self.closed: Deferred[Any] = Deferred()
        self.aborted = False

    def wait_closed(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.closed.addBoth(lambda r: d.callback(self) or r)
        return d

    def end(self) -> None:
        self.state = ConnectionState.CLOSED
        self.closed.callback(self)

    def abort(self) -> None:
        self.aborted = True
        self.clock.callLater(0, self.end)


class WaitClosedTests(SynchronousTestCase):
    """At most shutdown_timeout for the connections, then abort."""

    def test_all_close_in_time(self) -> None:
        """Connections that end in time are not aborted."""
        clock = Clock()
        conns = [Conn(clock), Conn(clock)]
        d = Deferred.fromCoroutine(wait_closed_all(conns, 5, clock, Logger()))
        self.assertNoResult(d)
        for conn in conns:
            conn.end()
        self.successResultOf(d)
        self.assertFalse(any(c.aborted for c in conns))

    def test_stragglers_aborted(self) -> None:
        """After the timeout the rest are aborted, and waited for."""
        clock = Clock()
        quick, slow = Conn(clock), Conn(clock)
        d = Deferred.fromCoroutine(wait_closed_all([quick, slow], 5, clock, Logger()))
        quick.end()
        clock.advance(4)
        self.assertNoResult(d)
        self.assertFalse(slow.aborted)
        clock.advance(1)  # the timeout: abort, and the abort's end
        self.assertTrue(slow.aborted)
        self.successResultOf(d)
        self.assertFalse(quick.aborted)

    def test_nothing_to_wait_for(self) -> None:
        """No connections: done at once."""
        self.successResultOf(
            Deferred.fromCoroutine(wait_closed_all([], 5, Clock(), Logger()))
        )
