"""``wsplugin.backplane._presence``: the counts heartbeat and cluster-wide
counts, on a ``task.Clock`` with a fake command link."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.backplane_support import FakeLink, FakeOpener, LinkLost
from wsplugin.backplane import BackplaneUnavailable, RedisURL
from wsplugin.backplane._layout import (
    COUNT_LUA,
    HEARTBEAT_LUA,
    WITHDRAW_LUA,
    RedisLayout,
)
from wsplugin.backplane._links import RedisLinks
from wsplugin.backplane._presence import Presence


class PresenceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
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
        self.channels = {"room": 2}
        self.presence = Presence(
            reactor=self.clock,
            layout=layout,
            links=self.links,
            log=log,
            url=url,
            channel_counts=lambda: self.channels,
            heartbeat_interval=5.0,
            counts_delay=0.5,
        )
        self.cmd = FakeLink()

    def started(self) -> None:
        self.links.start(lambda topic, raw: None)
        self.links.link_up("cmd", self.cmd)
        self.presence.start()

    def test_changes_are_coalesced(self) -> None:
        """A burst of changes is written once, counts_delay later: the
        connection count and each channel's subscribers, with a TTL of 3
        heartbeats."""
        self.started()
        self.presence.opened()
        self.presence.opened()
        self.presence.closed()
        self.presence.opened()
        self.assertEqual(self.cmd.calls, [])
        self.clock.advance(0.5)
        (script, keys, args), _ = self.cmd.pop("EVAL")
        self.assertEqual(script, HEARTBEAT_LUA)
        self.assertEqual(keys, ["wsplugin:0:counts:n.0", "wsplugin:0:nodes"])
        self.assertEqual(args, ["n.0", 15000, "c", 2, "ch:room", 2])
        self.assertEqual(self.cmd.calls, [])

    def test_heartbeat(self) -> None:
        """A snapshot goes out every heartbeat_interval, changes or not; a
        failed write is logged and the next one tried."""
        self.started()
        self.clock.advance(5)
        self.cmd.pop("EVAL")[1].errback(ConnectionError("timeout"))
        self.assertIn("counts not written: timeout", formatEvent(self.events[-1]))
        self.clock.advance(5)
        self.assertEqual(self.cmd.names(), ["EVAL"])

    def test_nothing_is_written_while_stopped_or_down(self) -> None:
        """Before start, changes schedule nothing; without a command link a
        snapshot is skipped; a dead link raises nothing; never below 0."""
        self.presence.closed()
        self.assertEqual(self.presence.connections, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.links.start(lambda topic, raw: None)
        self.presence.push()
        self.links.link_up("cmd", self.cmd)
        self.cmd.broken = True
        self.presence.push()
        self.assertEqual(self.cmd.calls, [])

    def test_counts_add_this_nodes_exact_figure(self) -> None:
        """A count sums the other live nodes in Redis and adds the local
        figure; without Redis it fails with BackplaneUnavailable."""
        self.failureResultOf(self.presence.count("c", 1), BackplaneUnavailable)
        self.started()
        d = self.presence.count("ch:room", 2)
        (script, keys, args), reply = self.cmd.pop("EVAL")
        self.assertEqual(script, COUNT_LUA)
        self.assertEqual(keys, ["wsplugin:0:nodes"])
        self.assertEqual(args, ["wsplugin:0:counts:", "ch:room", "n.0"])
        reply.callback(b"5")
        self.assertEqual(self.successResultOf(d), 7)
        d = self.presence.count("c", 0)
        self.cmd.pop("EVAL")[1].errback(ConnectionError("lost"))
        self.failureResultOf(d, BackplaneUnavailable)
        self.cmd.broken = True
        self.failureResultOf(self.presence.count("c", 0), BackplaneUnavailable)

    def test_stop_withdraws(self) -> None:
        """stop() cancels the timers and withdraws the node's counts; it
        never fails, with or without a command link."""
        self.started()
        self.presence.opened()
        d = self.presence.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        (script, keys, args), reply = self.cmd.pop("EVAL")
        self.assertEqual((script, args), (WITHDRAW_LUA, ["n.0"]))
        self.assertNoResult(d)
        reply.errback(ConnectionError("lost"))
        self.assertIsNone(self.successResultOf(d))
        self.cmd.broken = True
        self.assertIsNone(self.successResultOf(self.presence.stop()))
        self.links.link_down("cmd", self.cmd)
        self.assertIsNone(self.successResultOf(self.presence.stop()))
