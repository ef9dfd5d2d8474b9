"""``wsplugin.backplane._layout``: the Redis key and topic names."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsplugin.backplane._layout import (
    COUNT_LUA,
    HEARTBEAT_LUA,
    PUBLISH_LUA,
    RECOVER_LUA,
    WITHDRAW_LUA,
    RedisLayout,
)


class RedisLayoutTests(SynchronousTestCase):
    def test_default_names(self) -> None:
        """Every key and topic starts with <prefix>:<db>; the database index
        is in the topics too, because pub/sub ignores it."""
        names = RedisLayout("wsplugin", 0, "web.1")
        self.assertEqual(names.base, "wsplugin:0")
        self.assertEqual(names.topic_all, "wsplugin:0:all")
        self.assertEqual(names.topic_node, "wsplugin:0:node:web.1")
        self.assertEqual(names.node_topic("api.3"), "wsplugin:0:node:api.3")
        self.assertEqual(names.channel_topic("room:1"), "wsplugin:0:ch:room:1")
        self.assertEqual(names.channel_prefix, b"wsplugin:0:ch:")
        self.assertEqual(
            names.history_keys("room"), ["wsplugin:0:meta:room", "wsplugin:0:hist:room"]
        )
        self.assertEqual(names.counts_prefix, "wsplugin:0:counts:")
        self.assertEqual(
            names.counts_keys, ["wsplugin:0:counts:web.1", "wsplugin:0:nodes"]
        )
        self.assertEqual(names.nodes_key, "wsplugin:0:nodes")

    def test_prefix_and_db_separate_deployments(self) -> None:
        """Two prefixes, or two databases, share no key or topic."""
        a = RedisLayout("app1", 0, "n.0")
        b = RedisLayout("app1", 1, "n.0")
        c = RedisLayout("app2", 0, "n.0")
        for name in ("topic_all", "topic_node", "nodes_key", "counts_prefix"):
            values = {getattr(x, name) for x in (a, b, c)}
            self.assertEqual(len(values), 3, name)
        self.assertTrue(b.channel_topic("c").startswith("app1:1:"))

    def test_publish_script_frames_live_messages(self) -> None:
        """The publish script sends ``<offset> <epoch>\\n<message>`` (what
        the subscriber link parses) and keeps history only with a size; the
        scripts that write a node's counts take its keys as KEYS."""
        self.assertIn("off .. ' ' .. ep .. '\\n' .. ARGV[5]", PUBLISH_LUA)
        self.assertIn("if size > 0 then", PUBLISH_LUA)
        self.assertIn("'XRANGE', KEYS[2]", RECOVER_LUA)
        for script in (HEARTBEAT_LUA, WITHDRAW_LUA):
            self.assertIn("redis.call('DEL', KEYS[1])", script)
        self.assertIn("ZREMRANGEBYSCORE', KEYS[1]", COUNT_LUA)
