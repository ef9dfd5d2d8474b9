"""wsplugin._ratelog: at most a burst of lines per window, the rest counted."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._ratelog import RateLimitedLog


class RateLimitedLogTests(SynchronousTestCase):
    """The rate-limited log of per-connection problems."""

    def test_burst_then_count(self) -> None:
        """burst lines are written, the rest counted and reported once when
        the next window begins."""
        clock = Clock()
        log = RateLimitedLog(clock, Logger(namespace="t"), burst=3, window=10)
        with capturedLogs() as events:
            for i in range(10):
                log("problem {i}", i=i)
            self.assertEqual(log.suppressed, 7)
            clock.advance(10)
            log("later")
        lines = [formatEvent(e) for e in events]
        self.assertEqual(
            lines,
            [
                "problem 0",
                "problem 1",
                "problem 2",
                "7 similar connection problems were not logged",
                "later",
            ],
        )
        self.assertEqual({e["log_namespace"] for e in events}, {"t"})
        self.assertEqual(log.suppressed, 0)

    def test_quiet_window_reports_nothing(self) -> None:
        """A window with nothing suppressed starts without a summary line."""
        clock = Clock()
        log = RateLimitedLog(clock, Logger(), burst=1, window=1)
        with capturedLogs() as events:
            log("a")
            clock.advance(5)
            log("b")
        self.assertEqual([formatEvent(e) for e in events], ["a", "b"])
