"""``wsplugin.backplane._links``: the two links, their reconnects and the
connected state, with fake links (the test plays txredisapi)."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.backplane_support import FakeLink, FakeOpener, LinkLost
from wsplugin.backplane import RedisURL
from wsplugin.backplane._layout import RedisLayout
from wsplugin.backplane._links import RedisLinks

NODE_TOPICS = ["wsplugin:0:node:n.0", "wsplugin:0:all"]


class LinksTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.calls: list[Any] = []
        self.opener = FakeOpener()
        self.links = RedisLinks(
            layout=RedisLayout("wsplugin", 0, "n.0"),
            url=RedisURL("redis", "h", 6379, password="hunter2"),
            log=Logger(observer=self.events.append),
            link_error=LinkLost,
            opener=self.opener,
            on_command_up=lambda: self.calls.append("cmd up"),
            on_subscriber_up=self.subscriber_up,
            on_subscriber_down=lambda: self.calls.append("sub down"),
            on_connected=lambda again: self.calls.append(("connected", again)),
        )
        self.cmd, self.sub = FakeLink(), FakeLink()

    def subscriber_up(self) -> None:
        # what the owner does: subscribe its channels' topics first
        self.calls.append("sub up")
        self.links.subscribe_topic("wsplugin:0:ch:c")

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def topics(self, link: FakeLink) -> list[str]:
        return [args[0] for name, args, _ in link.calls if name == "SUBSCRIBE"]

    def connect(self) -> None:
        self.links.start(lambda topic, raw: None)
        self.opener.up("cmd", self.cmd)
        self.opener.up("sub", self.sub)
        self.sub.confirm()

    def test_connected_once_node_topics_are_confirmed(self) -> None:
        """Both links up is not enough: the node is connected once Redis
        confirmed its own topics, which are subscribed after the channels'
        (so those are confirmed before); when_connected fires then."""
        self.assertEqual(self.links.state, "stopped")
        self.links.start(lambda topic, raw: None)
        self.assertEqual(self.links.state, "connecting")
        waiting = self.links.when_connected()
        self.opener.up("cmd", self.cmd)
        self.opener.up("sub", self.sub)
        self.assertEqual(self.calls, ["cmd up", "sub up"])
        self.assertEqual(self.topics(self.sub), ["wsplugin:0:ch:c", *NODE_TOPICS])
        self.assertNoResult(waiting)
        self.assertEqual(self.links.state, "connecting")
        self.sub.confirm()
        self.assertEqual(self.links.state, "connected")
        self.successResultOf(waiting)
        self.assertEqual(self.calls[-1], ("connected", False))
        self.successResultOf(self.links.when_connected())
        self.assertIs(self.links.command, self.cmd)
        self.assertTrue(self.links.is_confirmed("wsplugin:0:all"))

    def test_lost_link_reconnects(self) -> None:
        """A lost link makes the node disconnected (one warning, without the
        password); its return makes it connected again, as a reconnect. A
        link that is not the current one going down changes nothing."""
        self.connect()
        self.opener.down("sub", FakeLink())  # an old link
        self.assertEqual(self.links.state, "connected")
        self.opener.down("sub", self.sub)
        self.assertEqual(self.links.state, "disconnected")
        self.assertIsNone(self.links.subscriber)
        self.assertFalse(self.links.is_confirmed("wsplugin:0:all"))
        self.assertIn("sub down", self.calls)
        [line] = self.lines()
        self.assertIn("lost its sub link to redis://:***@h:6379/0", line)
        self.assertNotIn("hunter2", line)
        self.opener.down("cmd", self.cmd)  # no second warning: not connected
        self.assertEqual(len(self.lines()), 1)
        sub2, cmd2 = FakeLink(), FakeLink()
        self.opener.up("sub", sub2)
        sub2.confirm()
        self.assertEqual(self.links.state, "disconnected")  # no command link
        self.opener.up("cmd", cmd2)
        self.assertEqual(self.links.state, "connected")
        self.assertEqual(self.calls[-1], ("connected", True))

    def test_stale_confirmations_are_ignored(self) -> None:
        """A confirmation from a replaced link, or for a topic unsubscribed
        meanwhile, does not count."""
        self.connect()
        self.links.subscribe_topic("t")
        self.links.unsubscribe_topic("t")
        self.sub.confirm()
        self.assertFalse(self.links.is_confirmed("t"))
        self.assertEqual(self.sub.names(), ["UNSUBSCRIBE"])
        self.links.subscribe_topic("u")
        self.opener.down("sub", self.sub)
        sub2 = FakeLink()
        self.opener.up("sub", sub2)
        self.sub.confirm()  # the old link answers late
        self.assertFalse(self.links.is_confirmed("u"))
        self.assertEqual(self.links.state, "disconnected")

    def test_a_dead_link_does_not_raise(self) -> None:
        """Subscribing on a link that just died is skipped (the topics are
        subscribed again when it is back); nothing raises."""
        self.connect()
        self.sub.broken = True
        self.links.subscribe_topic("t")
        self.links.unsubscribe_topic("t")
        self.assertFalse(self.links.is_confirmed("t"))
        self.assertEqual(self.links.state, "connected")

    def test_failure_is_final(self) -> None:
        """When txredisapi gives up (a refused password), the state is
        ``failed`` and an error is logged once."""
        self.links.start(lambda topic, raw: None)
        self.opener.error("WRONGPASS invalid username-password pair")
        self.assertEqual(self.links.state, "failed")
        self.assertIn("gave up on redis://:***@h:6379/0: WRONGPASS", self.lines()[0])

    def test_close_disconnects_and_ignores_late_hooks(self) -> None:
        """close() disconnects both links; hooks that fire afterwards (or
        before start) are ignored."""
        self.links.link_up("cmd", self.cmd)
        self.links.link_failed("before start")
        self.assertIsNone(self.links.command)
        self.assertIsNone(self.links.failure)
        self.connect()
        factories = self.opener.factories
        self.successResultOf(self.links.close())
        self.assertEqual([f.disconnects for f in factories], [1, 1])
        self.assertEqual(self.links.state, "stopped")
        self.opener.up("cmd", FakeLink())
        self.opener.error("late")
        self.assertIs(self.links.command, self.cmd)
        self.assertIsNone(self.links.failure)
