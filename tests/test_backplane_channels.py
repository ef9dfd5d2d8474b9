"""``wsplugin.backplane._channels``: channel topics, recovery and the node's
catch-up, alone, with fake links whose replies the test releases."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.backplane_support import FakeLink, FakeOpener, LinkLost, entries
from wsplugin.backplane import BackplaneStats, Publication, RecoveryStatus, RedisURL
from wsplugin.backplane._channels import Subscriptions
from wsplugin.backplane._layout import RECOVER_LUA, RedisLayout
from wsplugin.backplane._links import RedisLinks
from wsplugin.backplane._types import encode_publication

TOPIC = "wsplugin:0:ch:c"


def pub(offset: int, origin: str = "a.0", epoch: str = "E") -> Publication:
    return Publication("c", b"%d" % offset, origin=origin, offset=offset, epoch=epoch)


class SubscriptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        log = Logger(observer=self.events.append)
        layout = RedisLayout("wsplugin", 0, "n.0")
        self.links = RedisLinks(
            layout=layout,
            url=RedisURL("redis", "h", 6379),
            log=log,
            link_error=LinkLost,
            opener=FakeOpener(),
            on_command_up=lambda: None,
            on_subscriber_up=lambda: self.subs.subscriber_up(),
            on_subscriber_down=lambda: self.subs.subscriber_down(),
            on_connected=lambda again: self.subs.start_catch_ups(),
        )
        self.links.start(lambda topic, raw: None)
        self.stats = BackplaneStats()
        self.delivered: list[Publication] = []
        self.changes = 0
        self.subs = Subscriptions(
            layout=layout,
            links=self.links,
            stats=self.stats,
            log=log,
            history_ttl=300.0,
            deliver=self.delivered.append,
            on_change=self.changed,
        )
        self.cmd, self.sub = FakeLink(), FakeLink()

    def changed(self) -> None:
        self.changes += 1

    def connect(self) -> None:
        self.links.link_up("cmd", self.cmd)
        self.links.link_up("sub", self.sub)
        self.sub.confirm()

    def offsets(self) -> list[int | None]:
        return [p.offset for p in self.delivered]

    def test_topic_follows_local_subscribers(self) -> None:
        """The first local subscriber subscribes the channel's topic, the
        last one unsubscribes it; every change is reported; one too many
        unsubscribes is ignored. Without links, recovery is unavailable."""
        got = self.successResultOf(self.subs.subscribe("c", ("E", 1)))
        self.assertEqual(got.status, RecoveryStatus.UNAVAILABLE)
        got = self.successResultOf(self.subs.subscribe("c"))
        self.assertEqual(got.status, RecoveryStatus.NOT_REQUESTED)
        self.assertEqual(self.subs.members, {"c": 2})
        self.assertEqual(self.stats.recoveries, {"unavailable": 1, "not_requested": 1})
        self.links.link_up("cmd", self.cmd)
        self.links.link_up("sub", self.sub)
        self.assertEqual(self.sub.pop("SUBSCRIBE")[0], (TOPIC,))  # first
        self.sub.confirm()
        self.subs.unsubscribe("c")
        self.assertEqual(self.sub.names(), [])
        self.subs.unsubscribe("c")
        self.subs.unsubscribe("c")
        self.assertEqual(self.sub.pop("UNSUBSCRIBE")[0], (TOPIC,))
        self.assertEqual(self.subs.members, {})
        self.assertEqual(self.changes, 4)
        with self.assertRaises(ValueError):
            self.subs.subscribe("")

    def test_recovery_merges_history_and_live(self) -> None:
        """Recovery reads history between two PINGs; the live messages seen
        meanwhile that are newer than the history's top follow it."""
        self.connect()
        d = self.subs.subscribe("c", ("E", 2))
        self.sub.pop("SUBSCRIBE")
        self.sub.pop("PING")[1].callback(b"PONG")
        (script, keys, args), reply = self.cmd.pop("EVAL")
        self.assertEqual(script, RECOVER_LUA)
        self.assertEqual(keys, ["wsplugin:0:meta:c", "wsplugin:0:hist:c"])
        self.assertEqual((args[1], args[2:]), (300000, ["E", 2, "", 0, ""]))
        self.assertTrue(self.subs.observe(pub(4), False))  # in history too
        self.assertTrue(self.subs.observe(pub(5), False))
        self.assertEqual(self.subs.recovering(), ["c"])
        reply.callback([b"E", 4, b"ok", entries(3, 4)])
        self.sub.pop("PING")[1].callback(b"PONG")
        got = self.successResultOf(d)
        self.assertEqual([p.offset for p in got.publications], [3, 4, 5])
        self.assertEqual(got.position, ("E", 5))
        self.assertEqual(self.subs.recovering(), [])
        self.assertEqual(self.stats.recoveries, {"recovered": 1})

    def test_recovery_outcomes(self) -> None:
        """The script's verdicts become EPOCH_CHANGED and TOO_OLD; a
        subscriber link replaced during the read makes it UNAVAILABLE, with
        a warning."""
        self.connect()
        for verdict, status in ((b"epoch", "epoch_changed"), (b"old", "too_old")):
            d = self.subs.subscribe("c", ("E", 1))
            self.sub.pop("PING")[1].callback(b"PONG")
            self.cmd.pop("EVAL")[1].callback([b"F", 9, verdict])
            self.sub.pop("PING")[1].callback(b"PONG")
            self.assertEqual(self.successResultOf(d).status.value, status)
        d = self.subs.subscribe("c", ("E", 1))
        self.sub.pop("PING")[1].callback(b"PONG")
        self.links.link_down("sub", self.sub)
        self.links.link_up("sub", FakeLink())
        self.cmd.pop("EVAL")[1].callback([b"E", 1, b"ok"])
        self.sub.pop("PING")[1].callback(b"PONG")
        self.assertEqual(self.successResultOf(d).status, RecoveryStatus.UNAVAILABLE)
        self.assertIn("could not recover 'c'", formatEvent(self.events[-1]))

    def test_catch_up_after_the_subscriber_link_returns(self) -> None:
        """A channel that may have missed publications holds live ones
        back until its catch-up from the last delivered offset; then each
        arrives once, in order, skipping what this node delivered itself."""
        self.connect()
        self.subs.subscribe("c")
        self.sub.pop("PING")[1].errback(ConnectionError("lost"))
        self.assertTrue(self.subs.observe(pub(1), False))
        self.links.link_down("sub", self.sub)
        sub2 = FakeLink()
        self.links.link_up("sub", sub2)
        self.assertFalse(self.subs.observe(pub(4), False))  # held
        sub2.confirm()  # connected: the catch-up starts
        sub2.pop("PING")[1].callback(b"PONG")
        (_, _, args), reply = self.cmd.pop("EVAL")
        self.assertEqual(args[2:], ["E", 1, "E", 4, "1"])  # 4: held, but seen
        mine = Publication("c", b"3", origin="n.0")
        own = [b"3-0", [b"m", encode_publication(mine, local_done=True)]]
        reply.callback([b"E", 3, b"ok", [*entries(2), own]])
        self.assertEqual(self.offsets(), [])  # until the second PING
        sub2.pop("PING")[1].callback(b"PONG")
        self.assertEqual(self.offsets(), [2, 4])  # 3 was delivered when made
        self.assertEqual(self.stats.catch_ups, {"recovered": 1})
        self.assertEqual(self.subs.recovering(), [])
        self.assertTrue(self.subs.observe(pub(5), False))

    def test_no_members_no_delivery(self) -> None:
        """A live publication of a channel without local subscribers is not
        delivered."""
        self.assertFalse(self.subs.observe(pub(1), False))

    def test_rollback_found_by_a_catch_up(self) -> None:
        """The catch-up passes the node's mark (its last delivered offset);
        when the script answers that it replaced the epoch, the catch-up is
        EPOCH_CHANGED, a rollback is counted and logged, and what another
        node published in the old epoch meanwhile (an offset handed out a
        second time) is dropped: the new epoch's publications follow."""
        self.connect()
        self.subs.subscribe("c")
        self.sub.pop("PING")[1].callback(b"PONG")
        self.cmd.pop("EVAL")[1].callback([b"E", 5])
        self.sub.pop("PING")[1].callback(b"PONG")
        for offset in (6, 7):
            self.assertTrue(self.subs.observe(pub(offset), False))
        self.delivered.extend([pub(6), pub(7)])  # what the backplane delivers
        self.links.link_down("sub", self.sub)  # Redis restarted from a dump
        sub2 = FakeLink()
        self.links.link_up("sub", sub2)
        self.assertFalse(self.subs.observe(pub(6), False))  # another s-6: held
        sub2.confirm()
        sub2.pop("PING")[1].callback(b"PONG")
        (_, _, args), reply = self.cmd.pop("EVAL")
        self.assertEqual(args[2:], ["E", 7, "E", 7, "1"])
        self.assertFalse(self.subs.observe(pub(1, epoch="F"), False))  # held
        reply.callback([b"F", 0, b"rolled"])
        sub2.pop("PING")[1].callback(b"PONG")
        self.assertEqual(
            [(p.epoch, p.offset) for p in self.delivered],
            [("E", 6), ("E", 7), ("F", 1)],
        )
        self.assertEqual(self.stats.catch_ups, {"epoch_changed": 1})
        self.assertEqual(self.stats.rollbacks, 1)
        self.assertEqual(self.subs.mark("c"), ("F", 1))
        lines = [formatEvent(e) for e in self.events]
        self.assertTrue(any("starts a new epoch F" in line for line in lines))

    def test_rolled_recovery_of_a_subscriber(self) -> None:
        """A subscriber's recovery passes the node's mark, never its own
        since: the since of a client is (E, 999999), the node's mark (E, 3);
        the script's 'rolled' makes it EPOCH_CHANGED at the new epoch's
        start; without a since it is NOT_REQUESTED."""
        self.connect()
        self.subs.see("c", pub(3).position)
        d = self.subs.subscribe("c", ("E", 999_999))
        self.sub.pop("PING")[1].callback(b"PONG")
        (_, _, args), reply = self.cmd.pop("EVAL")
        self.assertEqual(args[2:], ["E", 999_999, "E", 3, ""])
        reply.callback([b"F", 0, b"rolled"])
        self.sub.pop("PING")[1].callback(b"PONG")
        got = self.successResultOf(d)
        self.assertEqual(
            (got.status, got.position), (RecoveryStatus.EPOCH_CHANGED, ("F", 0))
        )
        d = self.subs.subscribe("c")
        self.sub.pop("PING")[1].callback(b"PONG")
        (_, _, args), reply = self.cmd.pop("EVAL")
        self.assertEqual(args[2:], ["", 0, "F", 0, ""])
        reply.callback([b"G", 0, b"rolled"])
        self.sub.pop("PING")[1].callback(b"PONG")
        got = self.successResultOf(d)
        self.assertEqual(
            (got.status, got.position), (RecoveryStatus.NOT_REQUESTED, ("G", 0))
        )
        self.assertEqual(self.stats.rollbacks, 2)

    def test_catch_up_into_a_new_epoch(self) -> None:
        """A catch-up that finds another epoch (another node rotated it, or
        the history expired) gets that epoch's entries from offset 1 and
        delivers them, then the held live ones: the node's connected
        subscribers miss nothing of the new epoch."""
        self.connect()
        self.subs.subscribe("c")
        self.sub.pop("PING")[1].callback(b"PONG")
        self.cmd.pop("EVAL")[1].callback([b"E", 0])
        self.sub.pop("PING")[1].callback(b"PONG")
        self.assertTrue(self.subs.observe(pub(1), False))
        self.links.link_down("sub", self.sub)
        sub2 = FakeLink()
        self.links.link_up("sub", sub2)
        sub2.confirm()
        self.assertFalse(self.subs.observe(pub(3, epoch="F"), False))  # held
        sub2.pop("PING")[1].callback(b"PONG")
        reply = self.cmd.pop("EVAL")[1]
        reply.callback([b"F", 2, b"epoch", entries(1, 2)])
        sub2.pop("PING")[1].callback(b"PONG")
        self.assertEqual(
            [(p.epoch, p.offset) for p in self.delivered],
            [("F", 1), ("F", 2), ("F", 3)],
        )
        self.assertEqual(self.stats.catch_ups, {"epoch_changed": 1})
