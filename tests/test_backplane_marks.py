"""``wsplugin.backplane._marks``: a node's high-water marks per channel."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from wsplugin.backplane import StreamPosition
from wsplugin.backplane._marks import MAX_MARKS, HighMarks, higher, log_rollback


class HighMarksTests(SynchronousTestCase):
    def test_mark_only_grows_within_an_epoch(self) -> None:
        """Within one epoch the mark keeps the highest offset (a late reply
        of an older publication does not lower it); a position of another
        epoch replaces it."""
        marks = HighMarks()
        self.assertIsNone(marks.mark("c"))
        marks.see("c", StreamPosition("E", 7))
        marks.see("c", StreamPosition("E", 6))
        self.assertEqual(marks.mark("c"), ("E", 7))
        marks.see("c", StreamPosition("F", 1))
        self.assertEqual(marks.mark("c"), ("F", 1))
        marks.see("d", StreamPosition("E", 2))
        self.assertEqual((marks.mark("d"), len(marks)), (("E", 2), 2))

    def test_bounded_least_recently_seen_first(self) -> None:
        """Beyond ``limit`` channels the least recently seen is forgotten;
        the default limit is 10,000."""
        self.assertEqual(HighMarks().limit, MAX_MARKS)
        self.assertEqual(MAX_MARKS, 10_000)
        marks = HighMarks(limit=2)
        marks.see("a", StreamPosition("E", 1))
        marks.see("b", StreamPosition("E", 1))
        marks.see("a", StreamPosition("E", 2))  # a is now the most recent
        marks.see("c", StreamPosition("E", 1))
        self.assertIsNone(marks.mark("b"))
        self.assertEqual((marks.mark("a"), marks.mark("c")), (("E", 2), ("E", 1)))
        self.assertEqual(len(marks), 2)

    def test_higher(self) -> None:
        """The higher of two marks: the larger offset in one epoch, else
        the first."""
        e5, e7, f1 = (StreamPosition(*p) for p in (("E", 5), ("E", 7), ("F", 1)))
        self.assertEqual(higher(e5, e7), e7)
        self.assertEqual(higher(e7, e5), e7)
        self.assertEqual(higher(f1, e7), f1)
        self.assertEqual(higher(None, e5), e5)
        self.assertEqual(higher(e5, None), e5)
        self.assertIsNone(higher(None, None))

    def test_log_line(self) -> None:
        """The warning names the node, the channel and the new epoch."""
        events: list[dict[str, Any]] = []
        log_rollback(Logger(observer=events.append), "n.0", "room", "abc")
        (event,) = events
        self.assertIn(
            "backplane n.0: Redis lost publications of 'room'", formatEvent(event)
        )
        self.assertIn("new epoch abc", formatEvent(event))
