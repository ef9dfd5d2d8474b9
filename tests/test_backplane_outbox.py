"""``wsplugin.backplane._outbox``: the publish path and its bounded outage
queue, with a fake command link."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.backplane_support import FakeLink, FakeOpener, LinkLost
from wsplugin.backplane import BackplaneStats, RedisURL, StreamPosition
from wsplugin.backplane._layout import PUBLISH_LUA, RedisLayout
from wsplugin.backplane._links import RedisLinks
from wsplugin.backplane._outbox import Op, Outbox


class OutboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        log = Logger(observer=self.events.append)
        layout = RedisLayout("wsplugin", 0, "n.0")
        url = RedisURL("redis", "h", 6379)
        self.links = RedisLinks(
            layout=layout,
            url=url,
            log=log,
            link_error=LinkLost,
            opener=FakeOpener(),
            on_command_up=lambda: None,
            on_subscriber_up=lambda: None,
            on_subscriber_down=lambda: None,
            on_connected=lambda again: None,
        )
        self.links.start(lambda topic, raw: None)
        self.stats = BackplaneStats()
        self.outbox = Outbox(
            layout=layout,
            links=self.links,
            stats=self.stats,
            log=log,
            url=url,
            max_queue=3,
            max_queue_bytes=10,
        )

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_sent_at_once_on_the_command_link(self) -> None:
        """A channel's op runs the publish script on its meta and history
        keys, with a fresh epoch candidate, size and TTL (or '' for the
        channel's own) and the defaults; any other op is a plain PUBLISH."""
        cmd = FakeLink()
        self.links.link_up("cmd", cmd)
        self.outbox.send(Op("wsplugin:0:ch:c", b"m", channel="c", size=5, ttl_ms=9))
        self.outbox.send(Op("wsplugin:0:ch:c", b"n", channel="c", default_size=3))
        self.outbox.send(Op("wsplugin:0:all", b"x"))
        (script, keys, args), _ = cmd.pop("EVAL")
        self.assertEqual(script, PUBLISH_LUA)
        self.assertEqual(keys, ["wsplugin:0:meta:c", "wsplugin:0:hist:c"])
        self.assertEqual(args[0], "wsplugin:0:ch:c")
        self.assertRegex(args[1], "^[0-9a-f]{12}$")
        self.assertEqual(args[2:], [5, 9, b"m", 0, 300_000, "", 0])
        (script, keys, args), _ = cmd.pop("EVAL")
        self.assertEqual(args[2:], ["", "", b"n", 3, 300_000, "", 0])
        self.assertEqual(cmd.pop("PUBLISH")[0], ("wsplugin:0:all", b"x"))
        self.assertEqual((self.stats.publish_failures, self.stats.queued), (0, 0))

    def test_queue_is_bounded_and_flushed_in_order(self) -> None:
        """With the link down, ops wait; beyond 3 ops or 10 bytes the oldest
        are dropped (one warning per outage for each); when the link is back
        they are sent oldest first."""
        for payload in (b"a", b"b", b"c", b"d"):
            self.outbox.send(Op("t", payload))
        self.assertEqual(self.stats.queued, 3)
        self.assertEqual(self.stats.queue_dropped, 1)
        self.outbox.send(Op("t", b"0123456789"))  # 10 bytes: only it fits
        self.assertEqual(self.stats.queued, 1)
        self.assertEqual(self.outbox.queued_bytes, 10)
        self.assertEqual(
            (self.outbox.outage_failures, self.outbox.outage_dropped), (5, 4)
        )
        self.assertEqual(self.stats.publish_failures, 5)
        unreachable, full = self.lines()
        self.assertIn("Redis at redis://h:6379/0 is unreachable", unreachable)
        self.assertIn("at most 3 / 10 bytes", unreachable)
        self.assertIn("publication queue full", full)
        self.outbox.send(Op("t", b"e"))  # drops the 10 bytes
        cmd = FakeLink()
        self.links.link_up("cmd", cmd)
        self.outbox.flush()
        self.assertEqual([args for _, args, _ in cmd.calls], [("t", b"e")])
        self.assertEqual((self.stats.queued, self.stats.queue_flushed), (0, 1))
        self.assertEqual(self.outbox.queued_bytes, 0)
        self.assertEqual(len(self.lines()), 2)
        self.outbox.end_outage()
        self.assertEqual(
            (self.outbox.outage_failures, self.outbox.outage_dropped), (0, 0)
        )

    def test_dead_link_queues_and_lost_reply_counts(self) -> None:
        """A link that raises at once queues the op; one whose reply fails
        counts it as a failure (it is not sent again: live delivery is at
        most once) with one warning."""
        cmd = FakeLink()
        self.links.link_up("cmd", cmd)
        cmd.broken = True
        self.outbox.send(Op("t", b"a"))
        self.assertEqual(self.stats.queued, 1)
        cmd.broken = False
        self.outbox.end_outage()
        self.outbox.send(Op("t", b"b"))
        cmd.pop("PUBLISH")[1].errback(ConnectionError("reply timeout"))
        self.assertEqual(self.stats.publish_failures, 2)
        self.assertEqual(self.stats.queued, 1)
        self.assertIn("a publication to t may be lost: reply timeout", self.lines()[-1])

    def test_no_queue(self) -> None:
        """With max_queue=0 nothing waits: every op made during an outage
        is dropped and counted."""
        self.outbox.max_queue = 0
        self.outbox.send(Op("t", b"a"))
        self.assertEqual((self.stats.queued, self.stats.queue_dropped), (0, 1))

    def test_publish_carries_the_mark_read_when_sent(self) -> None:
        """A channel's op carries the node's mark as it is when the op is
        sent (a queued one, at the flush); the reply raises the mark, and a
        'rolled' reply is counted and logged."""
        self.outbox.marks.see("c", StreamPosition("E", 7))
        self.outbox.send(Op("wsplugin:0:ch:c", b"q", channel="c"))  # queued
        self.outbox.marks.see("c", StreamPosition("E", 8))
        cmd = FakeLink()
        self.links.link_up("cmd", cmd)
        self.outbox.flush()
        (_, _, args), reply = cmd.pop("EVAL")
        self.assertEqual(args[-2:], ["E", 8])
        reply.callback([1, b"F", b"rolled"])
        self.assertEqual(self.outbox.marks.mark("c"), ("F", 1))
        self.assertEqual(self.stats.rollbacks, 1)
        self.assertIn("starts a new epoch F", self.lines()[-1])
        self.outbox.send(Op("wsplugin:0:ch:c", b"r", channel="c"))
        (_, _, args), reply = cmd.pop("EVAL")
        self.assertEqual(args[-2:], ["F", 1])
        reply.callback([2, b"F"])
        self.assertEqual(self.outbox.marks.mark("c"), ("F", 2))
        self.assertEqual(self.stats.rollbacks, 1)
