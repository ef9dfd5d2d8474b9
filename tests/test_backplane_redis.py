"""``wsplugin.backplane._redis``: the Redis engine's facade, its options,
and its ordering logic end to end over fake links (no Redis; the same
behaviour against a real ``redis-server`` is in
``tests/integration/test_redis_backplane.py``)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import wsplugin.backplane as bp_module
import wsplugin.backplane._channels as channels_module
from tests.backplane_support import FakeLink, FakeOpener, Recorder, entries, live
from wsplugin.backplane import RecoveryStatus, RedisBackplane
from wsplugin.backplane._types import decode
from wsplugin.errors import ConfigError


class RedisOptionTests(SynchronousTestCase):
    def test_bad_options(self) -> None:
        """Bad engine options are ConfigErrors at construction."""
        for kwargs in (
            {"max_queue": -1},
            {"max_queue_bytes": 1.5},
            {"reconnect_initial": 0},
            {"reconnect_initial": 5, "reconnect_max": 1},
            {"reply_timeout": -1},
            {"heartbeat_interval": "5"},
            {"history_size": 2_000_000},
            {"history_ttl": 0},
        ):
            with self.assertRaises(ConfigError, msg=kwargs):
                RedisBackplane("redis://h", **kwargs)
        with self.assertRaises(ConfigError):
            RedisBackplane("local")

    def test_not_started(self) -> None:
        """Before start, counts fail with BackplaneUnavailable and subscribe
        reports that recovery is unavailable; nothing raises."""
        rb = RedisBackplane("redis://h", node_id="r.0")
        self.failureResultOf(rb.connection_count(), bp_module.BackplaneUnavailable)
        got = self.successResultOf(rb.subscribe("c", ("e", 1)))
        self.assertEqual(got.status, RecoveryStatus.UNAVAILABLE)
        got = self.successResultOf(rb.subscribe("c"))
        self.assertEqual(
            (got.status, got.position), (RecoveryStatus.NOT_REQUESTED, None)
        )
        rb.publish("c", b"x")
        self.assertEqual((rb.stats.queued, rb.stats.publish_failures), (1, 1))
        self.assertEqual(self.successResultOf(rb.stop()), None)


class RedisEngineLogicTests(SynchronousTestCase):
    """The Redis engine's ordering logic end to end, with fake links whose
    replies the test releases one by one: the test plays txredisapi, calling
    the hooks the engine gave its link opener."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.bp = RedisBackplane(
            "redis://h", node_id="b.0", reactor=self.clock, history_size=10
        )
        self.redis = FakeOpener()
        self.bp.links.opener = self.redis
        self.rec = Recorder()
        self.bp.start(self.rec)
        self.addCleanup(self.bp.stop)
        self.cmd, self.sub = FakeLink(), FakeLink()
        self.topic = b"wsplugin:0:ch:c"

    def confirm(self, link: FakeLink) -> None:
        """Redis confirms every SUBSCRIBE sent on ``link``."""
        link.confirm()

    def connect(self) -> None:
        self.redis.up("cmd", self.cmd)
        self.redis.up("sub", self.sub)
        self.assertEqual(self.bp.state, "connecting")  # topics not confirmed
        self.confirm(self.sub)
        self.assertEqual(self.bp.state, "connected")
        self.cmd.calls.clear()  # the counts snapshot

    def offsets(self) -> list[int | None]:
        return [p.offset for p in self.rec.pubs]

    def test_recovery_race(self) -> None:
        """Live messages that arrive before, during and after the history
        read are merged: history first, then newer live ones, no duplicate;
        later ones reach the receiver."""
        self.connect()
        d = self.bp.subscribe("c", ("E", 2))
        self.sub.pop("SUBSCRIBE")[1].callback([b"subscribe", self.topic, 1])
        self.redis.message(self.topic, live(5))  # before the first PING
        self.sub.pop("PING")[1].callback([b"pong", b""])
        (_, keys, args), evald = self.cmd.pop("EVAL")
        self.assertEqual(keys, ["wsplugin:0:meta:c", "wsplugin:0:hist:c"])
        # since, then the node's mark: the live message it saw before
        self.assertEqual(args[2:], ["E", 2, "E", 5, ""])
        self.redis.message(self.topic, live(6))  # during the read
        evald.callback([b"E", 6, b"ok", entries(3, 4, 5, 6)])
        self.redis.message(self.topic, live(7))  # before the second PING
        self.assertNoResult(d)
        self.sub.pop("PING")[1].callback([b"pong", b""])
        rec = self.successResultOf(d)
        self.assertEqual(rec.status, RecoveryStatus.RECOVERED)
        self.assertEqual([p.offset for p in rec.publications], [3, 4, 5, 6, 7])
        self.assertEqual([p.message for p in rec.publications], list("34567"))
        self.assertEqual(rec.position, ("E", 7))
        # the node had this one subscriber: live 5-7 went to the receiver too
        self.redis.message(self.topic, live(8))
        self.assertEqual(self.offsets(), [5, 6, 7, 8])
        self.assertEqual(self.bp.channels.recovering(), [])

    def test_recovery_fails_when_the_link_drops(self) -> None:
        """A subscriber link lost during recovery gives UNAVAILABLE."""
        self.connect()
        d = self.bp.subscribe("c", ("E", 2))
        self.sub.pop("PING")[1].errback(ConnectionError("lost"))
        self.assertEqual(self.successResultOf(d).status, RecoveryStatus.UNAVAILABLE)
        self.assertEqual(self.bp.stats.recoveries, {"unavailable": 1})

    def subscribe_unrecovered(self) -> None:
        """One local subscriber whose position read fails (link lost)."""
        self.bp.subscribe("c")
        self.sub.pop("PING")[1].errback(ConnectionError("lost"))
        self.sub.calls.clear()

    def catch_up_setup(self) -> FakeLink:
        self.connect()
        self.subscribe_unrecovered()
        for o in (1, 2, 3):
            self.redis.message(self.topic, live(o))
        self.redis.down("sub", self.sub)
        self.assertEqual(self.bp.state, "disconnected")
        sub2 = FakeLink()
        self.redis.up("sub", sub2)
        self.assertEqual(
            [c[1][0] for c in sub2.calls],
            ["wsplugin:0:ch:c", "wsplugin:0:node:b.0", "wsplugin:0:all"],
        )
        self.confirm(sub2)
        self.assertEqual(self.bp.stats.reconnects, 1)
        return sub2

    def test_node_catches_up_after_its_subscriber_link_returns(self) -> None:
        """After the subscriber link comes back, the node recovers what its
        local subscribers missed from the last offset it delivered, holding
        live messages back until then: all arrive once, in order."""
        sub2 = self.catch_up_setup()
        self.redis.message(self.topic, live(7))  # held back
        self.assertEqual(self.offsets(), [1, 2, 3])
        sub2.pop("PING")[1].callback([b"pong", b""])
        (_, _, args), evald = self.cmd.pop("EVAL")
        self.assertEqual(args[2:], ["E", 3, "E", 7, "1"])  # 7: held, but seen
        evald.callback([b"E", 6, b"ok", entries(4, 5, 6)])
        self.redis.message(self.topic, live(8))
        sub2.pop("PING")[1].callback([b"pong", b""])
        self.assertEqual(self.offsets(), list(range(1, 9)))
        self.redis.message(self.topic, live(9))
        self.assertEqual(self.offsets(), list(range(1, 10)))
        self.assertEqual(self.bp.stats.catch_ups, {"recovered": 1})

    def test_catch_up_without_history_delivers_held_messages(self) -> None:
        """When the missed publications are gone, the held live ones are
        still delivered (and a warning logged); when the command link
        fails, too."""
        sub2 = self.catch_up_setup()
        self.redis.message(self.topic, live(9))
        sub2.pop("PING")[1].callback([b"pong", b""])
        self.cmd.pop("EVAL")[1].callback([b"E", 8, b"old"])
        sub2.pop("PING")[1].callback([b"pong", b""])
        self.assertEqual(self.offsets(), [1, 2, 3, 9])

        self.redis.down("sub", sub2)
        sub3 = FakeLink()
        self.redis.up("sub", sub3)
        self.confirm(sub3)
        self.redis.message(self.topic, live(10))
        sub3.pop("PING")[1].callback([b"pong", b""])
        self.cmd.pop("EVAL")[1].errback(ConnectionError("cmd link lost"))
        self.assertEqual(self.offsets(), [1, 2, 3, 9, 10])
        self.assertEqual(self.bp.stats.catch_ups, {"too_old": 1, "unavailable": 1})

    def test_hold_is_bounded(self) -> None:
        """A catch-up that cannot start (command link down) holds at most
        MAX_HOLD messages, then delivers them and stops holding."""
        self.patch(channels_module, "MAX_HOLD", 3)
        self.connect()
        self.subscribe_unrecovered()
        self.redis.message(self.topic, live(1))
        self.redis.down("cmd", self.cmd)
        self.redis.down("sub", self.sub)
        self.redis.up("sub", FakeLink())
        for o in (5, 6, 7):
            self.redis.message(self.topic, live(o))
        self.assertEqual(self.offsets(), [1])
        self.redis.message(self.topic, live(8))
        self.assertEqual(self.offsets(), [1, 5, 6, 7, 8])
        self.assertEqual(self.bp.channels.recovering(), [])
        self.cmd.calls.clear()
        self.redis.up("cmd", self.cmd)  # nothing left to catch up
        (_, keys, _), _ = self.cmd.pop("EVAL")
        self.assertEqual(keys, ["wsplugin:0:counts:b.0", "wsplugin:0:nodes"])
        self.assertEqual(self.cmd.calls, [])

    def test_outage_delivers_locally_and_queues(self) -> None:
        """With the command link down, a publication reaches local
        subscribers at once (no offset) and waits in the queue, marked so
        that its echo is not delivered twice; the queue is sent in order
        when the link is back."""
        self.connect()
        self.bp.subscribe("c")
        self.sub.pop("SUBSCRIBE")[1].callback([b"subscribe", self.topic, 1])
        self.redis.down("cmd", self.cmd)
        self.bp.publish("c", b"one")
        self.bp.publish(None, b"two")
        self.assertEqual([p.message for p in self.rec.pubs], ["one", "two"])
        self.assertEqual(self.offsets(), [None, None])
        self.assertEqual(self.bp.stats.queued, 2)
        cmd2 = FakeLink()
        self.redis.up("cmd", cmd2)
        (script, keys, args), _ = cmd2.pop("EVAL")
        self.assertEqual(keys, ["wsplugin:0:meta:c", "wsplugin:0:hist:c"])
        payload = args[4]
        self.assertEqual(decode(payload)[1], True)  # local_done
        (topic, raw), _ = cmd2.pop("PUBLISH")
        self.assertEqual(topic, "wsplugin:0:all")
        self.redis.message(self.topic, b"1 E\n" + payload)  # the echo
        self.redis.message(b"wsplugin:0:all", raw)
        self.assertEqual(len(self.rec.pubs), 2)
        self.assertEqual(self.bp.stats.queue_flushed, 2)
        (_, keys, _), _ = cmd2.pop("EVAL")  # the counts snapshot
        self.assertEqual(keys, ["wsplugin:0:counts:b.0", "wsplugin:0:nodes"])
        # connected again and subscribed: the next one comes via Redis
        self.bp.publish("c", b"three")
        self.assertEqual(len(self.rec.pubs), 2)
        self.assertEqual(decode(cmd2.pop("EVAL")[0][2][4])[1], False)

    def test_malformed_messages_are_ignored(self) -> None:
        """Bytes another program published on our topics are logged and
        dropped."""
        self.connect()
        self.bp.subscribe("c")
        self.redis.message(self.topic, b"garbage")
        self.redis.message(self.topic, b"x E\n{}")
        self.redis.message(b"wsplugin:0:all", b"{}\n")
        self.assertEqual(self.rec.pubs, [])
