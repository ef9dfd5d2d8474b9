"""Redis coming back from an older snapshot, against a real ``redis-server``.

The meta hash ``{e, o}`` of a channel is then rolled back in the same
epoch: without a check, the next publications would reuse offsets already
handed out, and a client that left at one of them would "recover" a wrong
sequence. Nodes remember the highest offset they saw; the scripts replace
the epoch when Redis's top is below it. A client's ``since`` never does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.integration.redis_support import RedisServer
from tests.integration.test_redis_backplane import RedisTestCase, later
from wsplugin.backplane import RecoveryStatus, StreamPosition
from wsplugin.backplane._layout import PUBLISH_LUA, RECOVER_LUA

META, HIST = "wsplugin:0:meta:s", "wsplugin:0:hist:s"


def meta(server: RedisServer, key: str = META) -> dict[str, str]:
    reply = server.command("HGETALL", key)
    assert isinstance(reply, list)
    return {
        k.decode(): v.decode() for k, v in zip(reply[::2], reply[1::2], strict=True)
    }


def stream_ids(server: RedisServer, key: str = HIST) -> list[str]:
    reply = server.command("XRANGE", key, "-", "+")
    assert isinstance(reply, list)
    return [entry[0].decode() for entry in reply]


class RollbackTests(RedisTestCase):
    @inlineCallbacks
    def test_older_snapshot_found_by_the_catch_up(self) -> Any:
        """The tester's scenario: SAVE at offset 5, two more publications,
        kill -9, restart from the dump (top 5 again, same epoch). The
        subscribed node's catch-up finds its last offset (7) above the top
        and starts a new epoch: new publications take offsets 1, 2 in it,
        live subscribers see them with the new epoch, and a client that
        left at offset 6 is told EPOCH_CHANGED, never handed offset 7 of
        another publication as "recovered"."""
        server = self.redis()
        a, _ = yield self.node(server, "a", history_size=100)
        b, rec_b = yield self.node(server, "b")
        yield b.subscribe("s")
        for i in range(1, 6):
            a.publish("s", b"p-%d" % i)
        yield self.when(lambda: len(rec_b.on("s")) == 5)
        self.assertEqual(server.command("SAVE"), "OK")
        a.publish("s", b"s-1")
        a.publish("s", b"s-2")
        yield self.when(lambda: len(rec_b.on("s")) == 7)
        epoch = rec_b.on("s")[-1].epoch
        left_at = rec_b.on("s")[5].position  # a client saw s-1 and left
        self.assertEqual(left_at, (epoch, 6))
        server.restart()  # kill -9, then the dump of offset 5
        self.assertEqual(meta(server)["o"], "5")
        yield self.when(lambda: b.stats.catch_ups.get("epoch_changed") == 1, 20)
        yield self.connected(a, b)
        self.assertEqual(b.stats.rollbacks, 1)
        rotated = meta(server)
        self.assertNotEqual(rotated["e"], epoch)
        self.assertEqual(rotated["o"], "0")
        self.assertEqual(stream_ids(server), [])

        a.publish("s", b"s-3")
        a.publish("s", b"s-4")
        yield self.when(lambda: len(rec_b.on("s")) == 9)
        after = [(p.message, p.epoch, p.offset) for p in rec_b.on("s")[7:]]
        self.assertEqual(after, [("s-3", rotated["e"], 1), ("s-4", rotated["e"], 2)])
        rec = yield b.subscribe("s", left_at)
        self.assertEqual(rec.status, RecoveryStatus.EPOCH_CHANGED)
        self.assertEqual(rec.publications, ())
        self.assertEqual(rec.position, (rotated["e"], 2))
        # a client that joined after the rollback recovers in the new epoch
        rec = yield b.subscribe("s", (rotated["e"], 1))
        self.assertEqual(rec.status, RecoveryStatus.RECOVERED)
        self.assertEqual([p.message for p in rec.publications], ["s-4"])
        self.assertEqual(a.stats.rollbacks + b.stats.rollbacks, 1)

    @inlineCallbacks
    def test_older_snapshot_found_by_the_publisher(self) -> Any:
        """A node with no subscriber that published offsets 6 and 7 before
        the rollback: its publications queued during the outage carry its
        mark, so the first one sent after the restart starts the new epoch
        (offset 1) instead of taking offset 6 a second time."""
        server = self.redis()
        a, _ = yield self.node(server, "a", history_size=100)
        for i in range(1, 6):
            a.publish("s", b"p-%d" % i)
        before = yield a.subscribe("s")
        a.unsubscribe("s")
        epoch = before.position.epoch
        self.assertEqual(before.position, (epoch, 5))
        self.assertEqual(server.command("SAVE"), "OK")
        a.publish("s", b"s-1")
        a.publish("s", b"s-2")
        yield self.when(lambda: a.channels.mark("s") == (epoch, 7))
        server.kill()
        yield self.when(lambda: a.state == "disconnected")
        a.publish("s", b"queued")
        self.assertEqual(a.stats.queued, 1)
        server.start()  # from the dump: offset 5 of the same epoch
        yield self.connected(a)
        yield self.when(lambda: a.stats.rollbacks == 1)
        yield a.connection_count()  # a round trip after the flushed one
        rotated = meta(server)
        self.assertNotEqual(rotated["e"], epoch)
        self.assertEqual(rotated["o"], "1")
        self.assertEqual(stream_ids(server), ["1-0"])
        self.assertEqual(a.channels.mark("s"), (rotated["e"], 1))
        rec = yield a.subscribe("s", (epoch, 6))
        self.assertEqual(rec.status, RecoveryStatus.EPOCH_CHANGED)
        self.assertEqual(rec.position, (rotated["e"], 1))

    @inlineCallbacks
    def test_queued_publication_of_a_subscribed_node(self) -> Any:
        """A node with a local subscriber published during the outage: its
        queued publication, flushed as soon as the command link is back
        (before the catch-up), carries the node's mark and starts the new
        epoch, so it cannot take offset 6 and hide the rollback from the
        catch-up; the other node's subscriber sees it in the new epoch."""
        server = self.redis()
        a, rec_a = yield self.node(server, "a", history_size=100)
        b, rec_b = yield self.node(server, "b")
        yield a.subscribe("s")
        yield b.subscribe("s")
        for i in range(1, 6):
            a.publish("s", b"p-%d" % i)
        yield self.when(lambda: len(rec_b.on("s")) == 5)
        self.assertEqual(server.command("SAVE"), "OK")
        for i in (6, 7):
            b.publish("s", b"p-%d" % i)
        yield self.when(lambda: len(rec_a.on("s")) == 7)
        epoch = rec_a.on("s")[-1].epoch
        server.kill()
        yield self.when(lambda: a.state == "disconnected" == b.state)
        a.publish("s", b"queued")
        self.assertIsNone(rec_a.on("s")[-1].offset)  # delivered at once
        server.start()
        yield self.connected(a, b)
        # b gets it live or, if it was sent before b's link was back, from
        # its catch-up, which replays the new epoch from offset 1
        yield self.when(lambda: [p.message for p in rec_b.on("s")][-1:] == ["queued"])
        yield self.when(lambda: sum(b.stats.catch_ups.values()) == 1)
        rotated = meta(server)["e"]
        self.assertNotEqual(rotated, epoch)
        self.assertEqual(
            [(p.epoch, p.offset) for p in rec_b.on("s")[5:]],
            [(epoch, 6), (epoch, 7), (rotated, 1)],
        )
        self.assertEqual(a.stats.rollbacks + b.stats.rollbacks, 1)
        self.assertEqual(len(rec_a.on("s")), 8)  # not delivered twice
        rec = yield a.subscribe("s", (epoch, 6))
        self.assertEqual(rec.status, RecoveryStatus.EPOCH_CHANGED)

    @inlineCallbacks
    def test_client_since_beyond_top_changes_nothing(self) -> Any:
        """A client claiming an offset above the top (a rollback no node saw,
        or a made-up position) is told EPOCH_CHANGED and Redis is left as it
        was: the history stays for everyone else."""
        server = self.redis()
        a, _ = yield self.node(server, "a", history_size=10)
        b, _ = yield self.node(server, "b")
        for i in range(1, 4):
            a.publish("s", b"%d" % i)
        yield self.when(lambda: a.channels.mark("s") is not None)
        yield a.connection_count()
        before = meta(server)
        rec = yield b.subscribe("s", (before["e"], 999_999))
        self.assertEqual(rec.status, RecoveryStatus.EPOCH_CHANGED)
        self.assertEqual(rec.position, (before["e"], 3))
        self.assertEqual(meta(server), before)
        self.assertEqual(stream_ids(server), ["1-0", "2-0", "3-0"])
        rec = yield b.subscribe("s", (before["e"], 1))
        self.assertEqual(rec.status, RecoveryStatus.RECOVERED)
        self.assertEqual([p.message for p in rec.publications], ["2", "3"])
        self.assertEqual(a.stats.rollbacks + b.stats.rollbacks, 0)
        yield later(0)


class ScriptBranchTests(RedisTestCase):
    """The scripts' rollback branches, run with EVAL on a real server."""

    def publish(self, server: RedisServer, mark: tuple[str, int] | None) -> Any:
        return server.command(
            "EVAL",
            PUBLISH_LUA,
            2,
            META,
            HIST,
            "wsplugin:0:ch:s",
            f"cand{len(stream_ids(server)):08d}",
            "",
            "",
            b"msg",
            10,
            60_000,
            mark[0] if mark else "",
            mark[1] if mark else 0,
        )

    def recover(
        self,
        server: RedisServer,
        since: tuple[str, int] | None,
        mark: tuple[str, int] | None,
        candidate: str = "newepoch0001",
    ) -> Any:
        return server.command(
            "EVAL",
            RECOVER_LUA,
            2,
            META,
            HIST,
            candidate,
            60_000,
            since[0] if since else "",
            since[1] if since else 0,
            mark[0] if mark else "",
            mark[1] if mark else 0,
        )

    def test_publish_branches(self) -> None:
        """A mark at or below the top, or of another epoch, changes
        nothing; a mark above the top of the same epoch replaces the epoch
        and restarts offsets and history."""
        server = self.redis()
        self.assertEqual(self.publish(server, None), [1, b"cand00000000"])
        epoch = "cand00000000"
        self.assertEqual(self.publish(server, (epoch, 1)), [2, epoch.encode()])
        self.assertEqual(self.publish(server, (epoch, 1)), [3, epoch.encode()])
        self.assertEqual(self.publish(server, ("other", 99)), [4, epoch.encode()])
        self.assertEqual(stream_ids(server), ["1-0", "2-0", "3-0", "4-0"])
        server.command("HSET", META, "o", 2)  # rolled back to offset 2
        reply = self.publish(server, (epoch, 4))
        self.assertEqual(reply, [1, b"cand00000004", b"rolled"])
        self.assertEqual(meta(server)["e"], "cand00000004")
        self.assertEqual(stream_ids(server), ["1-0"])
        self.assertGreater(server.command("PTTL", META), 0)
        # a second node with the same old mark finds the new epoch: no change
        self.assertEqual(self.publish(server, (epoch, 4)), [2, b"cand00000004"])

    def test_catch_up_gets_the_new_epoch(self) -> None:
        """A node's catch-up ('1') from another epoch gets the new epoch's
        entries from offset 1 when all are kept; a client's recovery does
        not, nor a catch-up whose first entries were trimmed."""
        server = self.redis()
        for _ in range(2):
            self.publish(server, None)
        epoch = b"cand00000000"

        def catch_up(flag: str) -> Any:
            return server.command(
                "EVAL", RECOVER_LUA, 2, META, HIST, "x", 60_000, "old", 7, "", 0, flag
            )

        reply = catch_up("1")
        self.assertEqual(reply[:3], [epoch, 2, b"epoch"])
        self.assertEqual([e[0] for e in reply[3]], [b"1-0", b"2-0"])
        self.assertEqual(catch_up(""), [epoch, 2, b"epoch"])
        server.command("XDEL", HIST, "1-0")
        self.assertEqual(catch_up("1"), [epoch, 2, b"epoch"])

    def test_recover_branches(self) -> None:
        """A node's mark above the top rotates once (a second node with the
        same mark finds the new epoch); a client's since above the top
        never rotates; a mark at the top changes nothing."""
        server = self.redis()
        for _ in range(3):
            self.publish(server, None)
        epoch = "cand00000000"
        self.assertEqual(
            self.recover(server, (epoch, 9), None), [epoch.encode(), 3, b"epoch"]
        )
        self.assertEqual(self.recover(server, None, (epoch, 3)), [epoch.encode(), 3])
        self.assertEqual(meta(server)["e"], epoch)
        self.assertEqual(len(stream_ids(server)), 3)
        reply = self.recover(server, (epoch, 2), (epoch, 4))
        self.assertEqual(reply, [b"newepoch0001", 0, b"rolled"])
        self.assertEqual((meta(server)["e"], meta(server)["o"]), ("newepoch0001", "0"))
        self.assertEqual(stream_ids(server), [])
        reply = self.recover(server, (epoch, 2), (epoch, 4), "newepoch0002")
        self.assertEqual(reply, [b"newepoch0001", 0, b"epoch"])
        self.assertEqual(self.publish(server, None)[0], 1)
        pos = StreamPosition("newepoch0001", 1)
        self.assertEqual(self.recover(server, pos, pos), [b"newepoch0001", 1, b"ok"])
