"""``wsplugin.backplane``, the package: its public names and
:func:`~wsplugin.backplane.make_backplane`. The engines and their parts
have their own test modules (``tests/test_backplane_*.py``)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

import wsplugin.backplane as bp_module
from tests.backplane_support import Recorder
from wsplugin.backplane import (
    Backplane,
    BackplaneReceiver,
    LocalBackplane,
    RedisBackplane,
    make_backplane,
)
from wsplugin.errors import ConfigError

BACKPLANE_ALL = [
    "Backplane",
    "BackplaneReceiver",
    "BackplaneStats",
    "BackplaneUnavailable",
    "Command",
    "LocalBackplane",
    "Publication",
    "Recovery",
    "RecoveryStatus",
    "RedisBackplane",
    "RedisURL",
    "StreamPosition",
    "holder_of",
    "make_backplane",
    "make_node_id",
    "new_connection_id",
    "parse_backplane_url",
]


class PublicApiTests(SynchronousTestCase):
    def test_all_is_exported(self) -> None:
        """Every name in __all__ exists, and the engines meet the protocol."""
        for name in bp_module.__all__:
            self.assertTrue(hasattr(bp_module, name), name)
        self.assertIsInstance(LocalBackplane(), Backplane)
        self.assertIsInstance(RedisBackplane("redis://localhost"), Backplane)
        self.assertIsInstance(Recorder(), BackplaneReceiver)

    def test_make_backplane(self) -> None:
        """None and "local" give the in-process engine; Redis URLs the Redis
        one, with options passed on; bad options are ConfigErrors."""
        self.assertIsInstance(make_backplane(), LocalBackplane)
        lb = make_backplane("local", node_id="x.1", history_size=5)
        self.assertIsInstance(lb, LocalBackplane)
        self.assertEqual((lb.node_id, lb.history_size), ("x.1", 5))  # type: ignore[attr-defined]
        rb = make_backplane("redis://:pw@h:7000/2", node_id="y.0", max_queue=7)
        self.assertIsInstance(rb, RedisBackplane)
        self.assertEqual(rb.state, "stopped")
        self.assertNotIn("pw", repr(rb))
        self.assertIn("redis://:***@h:7000/2", repr(rb))
        with self.assertRaises(ConfigError):
            make_backplane("local", history_size=-1)
        with self.assertRaises(ConfigError):
            make_backplane("http://x")

    def test_all_is_pinned(self) -> None:
        """``__all__`` is exactly the documented names, each defined in a
        private module and re-exported as the same object."""
        from wsplugin.backplane import _memory, _redis, _types, _url

        self.assertEqual(sorted(bp_module.__all__), BACKPLANE_ALL)
        self.assertIs(bp_module.LocalBackplane, _memory.LocalBackplane)
        self.assertIs(bp_module.RedisBackplane, _redis.RedisBackplane)
        self.assertIs(bp_module.Backplane, _types.Backplane)
        self.assertIs(bp_module.RedisURL, _url.RedisURL)
