"""The Redis backplane against a real ``redis-server`` started by the test.

Two or three :class:`RedisBackplane` instances in this process play the
nodes; each delivers to a recording receiver. Redis is killed, restarted and
has its clients killed to check the failure behaviour of issue 14 item 4.
"""

from __future__ import annotations

import os
from typing import Any

import trustme
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from tests.integration.redis_support import RedisServer
from tests.integration.support import ServerTestCase
from wsplugin.backplane import (
    BackplaneUnavailable,
    Command,
    Publication,
    RecoveryStatus,
    RedisBackplane,
)


class Recorder:
    """A backplane receiver that records what it is given."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self.cmds: list[Command] = []

    def deliver(self, publication: Publication) -> None:
        self.pubs.append(publication)

    def command(self, command: Command) -> None:
        self.cmds.append(command)

    def on(self, channel: str | None) -> list[Publication]:
        """The publications delivered for ``channel``."""
        return [p for p in self.pubs if p.channel == channel]


def later(delay: float = 0.0) -> Deferred[None]:
    """Fires after ``delay`` seconds of the real reactor."""
    d: Deferred[None] = Deferred()
    reactor.callLater(delay, d.callback, None)  # type: ignore[attr-defined]
    return d


class RedisTestCase(ServerTestCase):
    """Starts a redis-server and backplane nodes on it."""

    timeout = 90

    def redis(self, **kwargs: Any) -> RedisServer:
        return RedisServer(self, **kwargs).start()

    @inlineCallbacks
    def node(self, server: RedisServer | str, name: str, **options: Any) -> Any:
        """A started RedisBackplane with a Recorder, once connected."""
        url = server if isinstance(server, str) else server.url
        opts: dict[str, Any] = {
            "reconnect_initial": 0.05,
            "reconnect_max": 0.4,
            "heartbeat_interval": 0.5,
            "counts_delay": 0.05,
            "reply_timeout": 5.0,
        }
        opts.update(options)
        bp = RedisBackplane(url, node_id=f"{name}.0", **opts)
        rec = Recorder()
        yield bp.start(rec)
        self.addCleanup(bp.stop)
        yield self.connected(bp)
        return bp, rec

    def connected(self, *nodes: RedisBackplane) -> Deferred[None]:
        return self.when(lambda: all(n.state == "connected" for n in nodes), 20)

    def topics(self, server: RedisServer) -> set[str]:
        reply = server.command("PUBSUB", "CHANNELS", "wsplugin:0:ch:*")
        assert isinstance(reply, list)
        return {t.decode() for t in reply}


class PubSubTests(RedisTestCase):
    @inlineCallbacks
    def test_channel_broadcast_crosses_nodes_once(self) -> Any:
        """A publication to a channel reaches the other node's receiver
        once, with its offset, epoch and filters; the publisher's node, with
        no local subscriber, gets nothing."""
        server = self.redis()
        a, rec_a = yield self.node(server, "a")
        b, rec_b = yield self.node(server, "b")
        yield b.subscribe("room")
        a.publish(
            "room",
            b"hello",
            protocol="chat",
            ids=["x.0." + "0" * 32],
            exclude=["y"],
        )
        a.publish("room", b"\x00\xff", is_binary=True)
        yield self.when(lambda: len(rec_b.pubs) == 2)
        first, second = rec_b.pubs
        self.assertEqual(first.message, "hello")
        self.assertEqual(first.offset, 1)
        self.assertEqual((first.protocol, first.ids), ("chat", ("x.0." + "0" * 32,)))
        self.assertEqual((first.exclude, first.origin), (("y",), "a.0"))
        self.assertEqual((second.message, second.offset), (b"\x00\xff", 2))
        self.assertEqual(first.epoch, second.epoch)
        yield later(0.1)
        self.assertEqual(rec_a.pubs, [])
        self.assertEqual(len(rec_b.pubs), 2)

    @inlineCallbacks
    def test_broadcast_to_all_reaches_every_node_once(self) -> Any:
        """A broadcast without a channel reaches every node, the publisher
        too, exactly once each, with no offset."""
        server = self.redis()
        a, rec_a = yield self.node(server, "a")
        b, rec_b = yield self.node(server, "b")
        a.publish(None, b"to all")
        yield self.when(lambda: rec_a.pubs and rec_b.pubs)
        yield later(0.1)
        self.assertEqual([p.message for p in rec_a.pubs], ["to all"])
        self.assertEqual([p.message for p in rec_b.pubs], ["to all"])
        self.assertIsNone(rec_b.pubs[0].offset)

    @inlineCallbacks
    def test_topic_subscribed_only_while_local_subscribers(self) -> Any:
        """A node subscribes to a channel's topic with its first local
        subscriber and unsubscribes with its last (PUBSUB CHANNELS)."""
        server = self.redis()
        a, _ = yield self.node(server, "a")
        self.assertEqual(self.topics(server), set())
        yield a.subscribe("news")
        yield a.subscribe("news")
        self.assertEqual(self.topics(server), {"wsplugin:0:ch:news"})
        a.unsubscribe("news")
        yield later(0.05)
        self.assertEqual(self.topics(server), {"wsplugin:0:ch:news"})
        a.unsubscribe("news")
        yield self.when(lambda: self.topics(server) == set())
        self.assertEqual(a.local_channels(), {})

    @inlineCallbacks
    def test_targeted_commands_reach_the_holder(self) -> Any:
        """send and disconnect by id go to the node named in the id only;
        disconnect_all reaches every node once; an id without a node part
        goes to every node."""
        server = self.redis()
        a, rec_a = yield self.node(server, "a")
        b, rec_b = yield self.node(server, "b")
        conn_id = b.new_connection_id()
        self.assertTrue(conn_id.startswith("b.0."))
        a.send(conn_id, b"for you")
        a.disconnect(conn_id, 4000, "bye")
        yield self.when(lambda: len(rec_b.cmds) == 2)
        send, close = rec_b.cmds
        self.assertEqual(
            (send.kind, send.conn_id, send.data), ("send", conn_id, b"for you")
        )
        self.assertEqual((close.kind, close.code, close.reason), ("close", 4000, "bye"))
        self.assertEqual(rec_a.cmds, [])

        a.disconnect_all(1001, "maintenance")
        self.assertEqual([c.kind for c in rec_a.cmds], ["close_all"])
        yield self.when(lambda: len(rec_b.cmds) == 3)
        a.send("app-chosen-id", b"x")
        yield self.when(lambda: len(rec_b.cmds) == 4)
        yield later(0.1)
        self.assertEqual([c.kind for c in rec_a.cmds], ["close_all", "send"])
        self.assertEqual(rec_b.cmds[2].reason, "maintenance")
        self.assertEqual(rec_b.cmds[3].conn_id, "app-chosen-id")


class CountTests(RedisTestCase):
    @inlineCallbacks
    def test_counts_are_cluster_wide(self) -> Any:
        """connection_count and channel_count add every live node's counts;
        a stopped node's counts are withdrawn."""
        server = self.redis()
        a, _ = yield self.node(server, "a")
        b, _ = yield self.node(server, "b")
        for _ in range(2):
            a.connection_opened()
        for _ in range(3):
            b.connection_opened()
        b.connection_closed()
        yield a.subscribe("c")
        yield b.subscribe("c")
        yield b.subscribe("c")
        counts: dict[str, int] = {}

        @inlineCallbacks
        def poll() -> Any:
            counts["a"] = yield a.connection_count()
            counts["b"] = yield b.connection_count()
            counts["ch"] = yield a.channel_count("c")
            counts["other"] = yield b.channel_count("other")

        for _ in range(100):
            yield poll()
            if counts == {"a": 4, "b": 4, "ch": 3, "other": 0}:
                break
            yield later(0.05)
        self.assertEqual(counts, {"a": 4, "b": 4, "ch": 3, "other": 0})
        yield b.stop()
        n = yield a.connection_count()
        self.assertEqual(n, 2)

    @inlineCallbacks
    def test_dead_node_counts_expire(self) -> Any:
        """A node whose heartbeat expired is not counted (and is forgotten)."""
        server = self.redis()
        a, _ = yield self.node(server, "a")
        seconds, micros = server.command("TIME")  # type: ignore[misc]
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        server.command("HSET", "wsplugin:0:counts:ghost.0", "c", "7")
        server.command("ZADD", "wsplugin:0:nodes", now_ms + 60_000, "ghost.0")
        n = yield a.connection_count()
        self.assertEqual(n, 7)
        server.command("ZADD", "wsplugin:0:nodes", now_ms - 1, "ghost.0")
        n = yield a.connection_count()
        self.assertEqual(n, 0)
        self.assertIsNone(server.command("ZSCORE", "wsplugin:0:nodes", "ghost.0"))


class HistoryTests(RedisTestCase):
    @inlineCallbacks
    def test_recovery_under_concurrent_publishing(self) -> Any:
        """Subscribers recovering while another node publishes get the missed
        publications, then live ones, in order, with no gap and no
        duplicate: on a node already subscribed and on a fresh one."""
        server = self.redis()
        a, _ = yield self.node(server, "a", history_size=1000)
        b, rec_b = yield self.node(server, "b")
        c, rec_c = yield self.node(server, "c")
        first = yield b.subscribe("h")
        self.assertEqual(first.status, RecoveryStatus.NOT_REQUESTED)
        epoch0, top0 = first.position
        total = 300
        sent = [0]

        def burst() -> None:
            for _ in range(5):
                if sent[0] < total:
                    sent[0] += 1
                    a.publish("h", str(sent[0]).encode())
            if sent[0] < total:
                reactor.callLater(0, burst)  # type: ignore[attr-defined]

        burst()
        yield self.when(lambda: len(rec_b.on("h")) >= 40)
        since = rec_b.on("h")[20].position
        assert since is not None
        results: list[tuple[str, Any, int]] = []

        def record(rec: Any, name: str, receiver: Recorder) -> None:
            # the caller's contract: the subscriber joins the fan-out now
            results.append((name, rec, len(receiver.on("h"))))

        b.subscribe("h", since).addCallback(record, "b", rec_b)
        c.subscribe("h", since).addCallback(record, "c", rec_c)
        receivers = {"b": rec_b, "c": rec_c}

        def seen(name: str, rec: Any, joined: int) -> list[int | None]:
            offsets = [p.offset for p in rec.publications]
            return offsets + [p.offset for p in receivers[name].on("h")[joined:]]

        yield self.when(lambda: len(results) == 2 and sent[0] == total, 30)
        yield self.when(lambda: all(seen(*r)[-1:] == [total] for r in results), 30)
        yield later(0.1)
        for name, rec, joined in results:
            self.assertEqual(rec.status, RecoveryStatus.RECOVERED, name)
            self.assertEqual(
                seen(name, rec, joined), list(range(since.offset + 1, total + 1))
            )
            self.assertEqual({p.epoch for p in rec.publications}, {since.epoch})
            self.assertEqual(
                [p.message for p in rec.publications],
                [str(p.offset) for p in rec.publications],
            )
        self.assertEqual(epoch0, since.epoch)
        self.assertEqual(top0, 0)

    @inlineCallbacks
    def test_history_lost_means_epoch_changed(self) -> Any:
        """After FLUSHALL the next publication starts a new epoch at offset
        1, and recovery from the old epoch is reported impossible."""
        server = self.redis()
        a, _ = yield self.node(server, "a", history_size=10)
        for i in range(3):
            a.publish("e", b"%d" % i)
        rec = yield a.subscribe("e", ("whatever", 0))
        self.assertEqual(rec.status, RecoveryStatus.EPOCH_CHANGED)
        old = rec.position
        self.assertEqual(old.offset, 3)
        ok = yield a.subscribe("e", (old.epoch, 1))
        self.assertEqual(ok.status, RecoveryStatus.RECOVERED)
        self.assertEqual([p.message for p in ok.publications], ["1", "2"])
        server.command("FLUSHALL")
        a.publish("e", b"new")
        rec = yield a.subscribe("e", old)
        self.assertEqual(rec.status, RecoveryStatus.EPOCH_CHANGED)
        self.assertNotEqual(rec.position.epoch, old.epoch)
        self.assertEqual(rec.position.offset, 1)
        self.assertEqual(rec.publications, ())

    @inlineCallbacks
    def test_too_old(self) -> Any:
        """A position older than the kept history is reported too old; with
        no history only an up-to-date position recovers."""
        server = self.redis()
        a, _ = yield self.node(server, "a", history_size=5)
        for i in range(400):
            a.publish("t", b"%d" % i)
        pos = yield a.subscribe("t")
        self.assertEqual(pos.position.offset, 400)
        rec = yield a.subscribe("t", (pos.position.epoch, 1))
        self.assertEqual(rec.status, RecoveryStatus.TOO_OLD)
        rec = yield a.subscribe("t", (pos.position.epoch, 397))
        self.assertEqual([p.message for p in rec.publications], ["397", "398", "399"])
        for i in range(2):
            a.publish("n", b"%d" % i, history_size=0)
        pos = yield a.subscribe("n")
        rec = yield a.subscribe("n", (pos.position.epoch, 1))
        self.assertEqual(rec.status, RecoveryStatus.TOO_OLD)
        rec = yield a.subscribe("n", pos.position)
        self.assertEqual(rec.status, RecoveryStatus.RECOVERED)
        self.assertEqual(a.stats.recoveries["too_old"], 2)

    @inlineCallbacks
    def test_history_options_stick_to_the_channel(self) -> Any:
        """A size given by one node's publish is the channel's own: another
        node publishing without options keeps that history."""
        server = self.redis()
        a, _ = yield self.node(server, "a")
        b, _ = yield self.node(server, "b")
        a.publish("s", b"0", history_size=3)
        for i in range(1, 6):
            b.publish("s", b"%d" % i)
        pos = yield a.subscribe("s")
        self.assertEqual(pos.position.offset, 6)
        rec = yield b.subscribe("s", (pos.position.epoch, 3))
        self.assertEqual([p.message for p in rec.publications], ["3", "4", "5"])
        meta = server.command("HGETALL", "wsplugin:0:meta:s")
        assert isinstance(meta, list)
        self.assertEqual(dict(zip(meta[::2], meta[1::2], strict=True))[b"s"], b"3")


class FailureTests(RedisTestCase):
    @inlineCallbacks
    def test_redis_outage(self) -> Any:
        """Redis killed and restarted (with its saved data): local delivery
        goes on and nothing raises; publications during the outage are
        counted, queued, and sent after reconnection with backoff; topics
        are resubscribed; a recovering subscriber gets everything in
        history, in order."""
        server = self.redis()
        a, rec_a = yield self.node(server, "a", history_size=100)
        b, rec_b = yield self.node(server, "b")
        yield a.subscribe("room")
        yield b.subscribe("room")
        for i in range(1, 4):
            a.publish("room", b"%d" % i)
        yield self.when(lambda: len(rec_b.on("room")) == 3)
        left_at = rec_b.on("room")[-1].position
        b.unsubscribe("room")  # the subscriber goes away at offset 3
        yield self.when(lambda: self.topics(server) == {"wsplugin:0:ch:room"})
        self.assertEqual(server.command("SAVE"), "OK")
        server.kill()
        yield self.when(lambda: a.state == "disconnected" == b.state)

        for i in range(4, 9):
            a.publish("room", b"%d" % i)  # never raises
        self.assertEqual([p.message for p in rec_a.on("room")[3:]], list("45678"))
        self.assertEqual({p.offset for p in rec_a.on("room")[3:]}, {None})
        self.assertEqual((a.stats.publish_failures, a.stats.queued), (5, 5))
        failure = yield self.assertFailure(a.connection_count(), BackplaneUnavailable)
        self.assertIn("down", str(failure))
        rec = yield b.subscribe("room", left_at)
        self.assertEqual(rec.status, RecoveryStatus.UNAVAILABLE)
        b.unsubscribe("room")

        yield later(0.3)  # a few reconnect attempts fail meanwhile
        server.restart()
        yield self.connected(a, b)
        self.assertEqual((a.stats.reconnects, b.stats.reconnects), (1, 1))
        self.assertEqual((a.stats.queued, a.stats.queue_flushed), (0, 5))
        self.assertEqual(self.topics(server), {"wsplugin:0:ch:room"})
        yield a.connection_count()  # a round trip after the queued ones
        rec = yield b.subscribe("room", left_at)
        self.assertEqual(rec.status, RecoveryStatus.RECOVERED)
        self.assertEqual([p.message for p in rec.publications], list("45678"))
        self.assertEqual([p.offset for p in rec.publications], [4, 5, 6, 7, 8])
        self.assertEqual(rec.position, (left_at.epoch, 8))
        a.publish("room", b"9")
        yield self.when(lambda: rec_b.on("room")[-1].message == "9")
        yield self.when(lambda: rec_a.on("room")[-1].message == "9")
        # the origin node caught up, without its queued publications twice
        self.assertEqual(a.stats.catch_ups, {"recovered": 1})
        self.assertEqual(
            [p.message for p in rec_a.on("room")], [str(i) for i in range(1, 10)]
        )

    @inlineCallbacks
    def test_restart_empty_changes_epoch(self) -> Any:
        """Redis restarted without its data: recovery from a position taken
        before reports the epoch change."""
        server = self.redis()
        a, _ = yield self.node(server, "a", history_size=10)
        a.publish("r", b"1")
        before = yield a.subscribe("r")
        server.restart()
        yield self.when(lambda: a.stats.reconnects == 1, 20)
        a.publish("r", b"2")
        rec = yield a.subscribe("r", before.position)
        self.assertEqual(rec.status, RecoveryStatus.EPOCH_CHANGED)
        self.assertEqual(rec.position.offset, 1)

    @inlineCallbacks
    def test_queue_is_bounded(self) -> Any:
        """Beyond max_queue the oldest queued publications are dropped and
        counted; the rest are sent, in order, once Redis is back."""
        server = self.redis()
        a, rec_a = yield self.node(server, "a", max_queue=3, history_size=10)
        yield a.subscribe("q")
        server.kill()
        yield self.when(lambda: a.state == "disconnected")
        for i in range(5):
            a.publish("q", b"%d" % i)
        self.assertEqual([p.message for p in rec_a.on("q")], list("01234"))
        self.assertEqual(a.stats.queued, 3)
        self.assertEqual((a.stats.queue_dropped, a.stats.publish_failures), (2, 5))
        server.restart()
        yield self.connected(a)
        yield self.when(lambda: a.stats.queue_flushed == 3)
        n = yield a.channel_count("q")  # a round trip after the flushed ones
        self.assertEqual(n, 1)
        stream = server.command("XRANGE", "wsplugin:0:hist:q", "-", "+")
        assert isinstance(stream, list)
        self.assertEqual(
            [(e[0], e[1][1][-1:]) for e in stream],
            [(b"1-0", b"2"), (b"2-0", b"3"), (b"3-0", b"4")],
        )
        yield later(0.1)
        self.assertEqual(len(rec_a.on("q")), 5)  # no echo of its own

    @inlineCallbacks
    def test_subscriber_links_killed_resubscribe(self) -> Any:
        """Killing every pub/sub client makes the nodes reconnect and
        subscribe their channels again; delivery resumes."""
        server = self.redis()
        a, _ = yield self.node(server, "a")
        b, rec_b = yield self.node(server, "b")
        yield b.subscribe("k")
        yield b.subscribe("k2")
        killed = server.command("CLIENT", "KILL", "TYPE", "pubsub")
        self.assertEqual(killed, 2)
        yield self.when(lambda: b.stats.reconnects == 1, 20)
        yield self.when(
            lambda: self.topics(server) == {"wsplugin:0:ch:k", "wsplugin:0:ch:k2"}
        )
        a.publish("k", b"after")
        yield self.when(lambda: [p.message for p in rec_b.on("k")] == ["after"])


class CatchUpTests(RedisTestCase):
    @inlineCallbacks
    def test_node_catches_up_when_its_link_is_cut(self) -> Any:
        """Every pub/sub link is killed while another node publishes
        continuously: the subscribed node reconnects and recovers the gap
        from history, so its receiver gets every offset once, in order."""
        server = self.redis()
        a, _ = yield self.node(server, "a", history_size=1000)
        b, rec_b = yield self.node(server, "b")
        yield b.subscribe("k")
        total = 300
        sent = [0]

        def burst() -> None:
            for _ in range(3):
                if sent[0] < total:
                    sent[0] += 1
                    a.publish("k", b"%d" % sent[0])
            if sent[0] < total:
                reactor.callLater(0, burst)  # type: ignore[attr-defined]

        burst()
        yield self.when(lambda: len(rec_b.on("k")) >= 30)
        self.assertEqual(server.command("CLIENT", "KILL", "TYPE", "pubsub"), 2)
        yield self.when(lambda: rec_b.on("k")[-1].offset == total, 30)
        yield later(0.1)
        self.assertEqual([p.offset for p in rec_b.on("k")], list(range(1, total + 1)))
        self.assertEqual(b.stats.reconnects, 1)
        self.assertEqual(b.stats.catch_ups, {"recovered": 1})


class UrlFormTests(RedisTestCase):
    @inlineCallbacks
    def test_unix_socket_with_password_and_db(self) -> Any:
        """unix:// with a password in the query reaches a socket-only,
        password-protected server; keys go to the chosen database."""
        server = RedisServer(self, unix=True, password="s3cret pw").start()
        url = f"unix://{server.unix_path}?db=3&password=s3cret%20pw"
        a, _ = yield self.node(url, "a", history_size=5)
        b, rec_b = yield self.node(url, "b")
        yield b.subscribe("u")
        a.publish("u", b"over unix")
        yield self.when(lambda: [p.message for p in rec_b.pubs] == ["over unix"])
        self.assertEqual(server.command("EXISTS", "wsplugin:3:hist:u"), 0)
        self.assertEqual(server.command("EXISTS", "wsplugin:3:hist:u", db=3), 1)

    @inlineCallbacks
    def test_wrong_password_fails_without_retrying(self) -> Any:
        """A refused password puts the backplane in state "failed" with a
        log line; publishing still delivers locally and never raises."""
        server = RedisServer(self, password="right").start()
        bp = RedisBackplane(f"redis://:wrong@127.0.0.1:{server.port}/0", node_id="w.0")
        rec = Recorder()
        yield bp.start(rec)
        self.addCleanup(bp.stop)
        yield self.when(lambda: bp.state == "failed", 20)
        bp.publish(None, b"local only")
        self.assertEqual([p.message for p in rec.pubs], ["local only"])
        self.assertEqual(bp.stats.queued, 1)

    @inlineCallbacks
    def test_tls(self) -> Any:
        """rediss:// verifies the server's certificate against ?ca= and
        carries publications."""
        ca = trustme.CA()
        cert = ca.issue_cert("localhost")
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        ca_path = os.path.join(base, "ca.pem")
        cert_path = os.path.join(base, "cert.pem")
        key_path = os.path.join(base, "key.pem")
        ca.cert_pem.write_to_path(ca_path)
        cert.cert_chain_pems[0].write_to_path(cert_path)
        cert.private_key_pem.write_to_path(key_path)
        server = RedisServer(self, tls=(cert_path, key_path)).start()
        url = server.url + "?ca=" + ca_path
        a, _ = yield self.node(url, "a")
        b, rec_b = yield self.node(url, "b")
        yield b.subscribe("s")
        a.publish("s", b"secure")
        yield self.when(lambda: [p.message for p in rec_b.pubs] == ["secure"])
        clients = server.command("CLIENT", "LIST")
        assert isinstance(clients, bytes)
        self.assertEqual(clients.count(b"\n"), 5)  # 4 TLS links + this one
