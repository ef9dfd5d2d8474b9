"""wsplugin._hub: a server as one node of a backplane, in memory.

The in-process engine (`LocalBackplane`) runs the real paths; a scripted
engine (`ScriptedBackplane`) answers subscriptions when the test says, to
check the ordering contract of a recovery that takes time (as Redis does).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder
from wsplugin import InvalidCloseCode, UnknownConnection, WebSocketServer
from wsplugin.backplane import (
    BackplaneStats,
    Command,
    LocalBackplane,
    Publication,
    Recovery,
    RecoveryStatus,
    StreamPosition,
    holder_of,
)
from wsplugin.testing import ServerHarness


class ScriptedBackplane:
    """A Backplane whose subscriptions the test answers; records calls."""

    node_id = "me.0"

    def __init__(self) -> None:
        self.stats = BackplaneStats()
        self.calls: list[tuple[Any, ...]] = []
        self.pending: list[tuple[str, Any, Deferred[Recovery]]] = []
        self.receiver: Any = None
        self.n = 0

    @property
    def state(self) -> str:
        return "connected" if self.receiver is not None else "stopped"

    def start(self, receiver: Any) -> Deferred[None]:
        self.calls.append(("start",))
        self.receiver = receiver
        return succeed(None)

    def stop(self) -> Deferred[None]:
        self.calls.append(("stop",))
        self.receiver = None
        return succeed(None)

    def new_connection_id(self) -> str:
        self.n += 1
        return f"me.0.{self.n:032x}"

    def publish(self, channel: Any, data: bytes, is_binary: bool = False, **kw: Any):
        self.calls.append(("publish", channel, data, kw))

    def send(self, conn_id: str, data: bytes, is_binary: bool = False) -> None:
        self.calls.append(("send", conn_id, data, is_binary))

    def disconnect(self, conn_id: str, code: int = 1000, reason: str = "") -> None:
        self.calls.append(("disconnect", conn_id, code, reason))

    def disconnect_all(self, code: int = 1001, reason: str = "") -> None:
        self.calls.append(("disconnect_all", code, reason))
        self.receiver.command(Command("close_all", code=code, reason=reason))

    def subscribe(self, channel: str, since: Any = None) -> Deferred[Recovery]:
        d: Deferred[Recovery] = Deferred()
        self.calls.append(("subscribe", channel, since))
        self.pending.append((channel, since, d))
        return d

    def unsubscribe(self, channel: str) -> None:
        self.calls.append(("unsubscribe", channel))

    def connection_opened(self) -> None:
        self.calls.append(("opened",))

    def connection_closed(self) -> None:
        self.calls.append(("closed",))

    def connection_count(self) -> Deferred[int]:
        return succeed(42)

    def channel_count(self, channel: str) -> Deferred[int]:
        return succeed(7)

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def started(backplane: Any = None, **options: Any) -> tuple[Any, ServerHarness]:
    """A started server on a memory reactor, with ``backplane``."""
    clock = MemoryReactorClock()
    server = WebSocketServer(Recorder(), reactor=clock, backplane=backplane, **options)
    server.startService()
    return server, ServerHarness(server)


def epoch_of(bp: LocalBackplane, channel: str) -> str:
    """The epoch of a channel's history in ``bp`` (asked as a subscriber)."""
    rec: list[Recovery] = []
    bp.subscribe(channel).addCallback(rec.append)
    bp.unsubscribe(channel)
    assert rec[0].position is not None
    return rec[0].position.epoch


def pub(channel: str, data: bytes, offset: int, epoch: str = "e1", **kw: Any):
    return Publication(channel, data, offset=offset, epoch=epoch, **kw)


class LocalEngineTests(SynchronousTestCase):
    """The default, in-process engine, through the server's API."""

    def setUp(self) -> None:
        self.bp = LocalBackplane(node_id="web.0", history_size=10)
        self.server, self.harness = started(self.bp)

    def test_default_engine_is_local(self) -> None:
        """Without backplane=, the server has an in-process engine, started
        with it and stopped after its connections."""
        server, harness = started()
        self.assertIsInstance(server.backplane, LocalBackplane)
        self.assertEqual(server.backplane.state, "connected")
        client = harness.open()
        d = server.stopService()
        client.send_close(1001)
        harness.flush()
        self.successResultOf(d)
        self.assertEqual(server.backplane.state, "stopped")

    def test_ids_name_the_node(self) -> None:
        """Connection ids come from the engine: node, worker, 32 hex."""
        conn = self.harness.open().connection
        self.assertEqual(holder_of(conn.id), "web.0")

    def test_broadcast_gets_offsets_and_history(self) -> None:
        """A channel broadcast reaches its subscribers and counts them; it
        is numbered and kept in the channel's history."""
        a, b = self.harness.open(), self.harness.open()
        a.connection.subscribe("room")
        self.assertEqual(self.server.broadcast("one", channel="room"), 1)
        self.assertEqual(self.server.broadcast("all"), 2)
        self.assertEqual(a.messages(), ["one", "all"])
        self.assertEqual(b.messages(), ["all"])
        rec = self.successResultOf(b.connection.subscribe("room", since=("x", 0)))
        self.assertEqual(rec.status, RecoveryStatus.EPOCH_CHANGED)
        epoch = rec.position.epoch
        self.assertEqual(rec.position, StreamPosition(epoch, 1))

    def test_recovery_then_live(self) -> None:
        """subscribe(since=) sends what was missed, in order, before the
        live ones, and says where the client stands."""
        first = self.harness.open()
        rec = self.successResultOf(first.connection.subscribe("room"))
        self.assertEqual(rec.status, RecoveryStatus.NOT_REQUESTED)
        for i in range(1, 6):
            self.server.broadcast(f"m{i}", channel="room")
        late = self.harness.open()
        since = (rec.position.epoch, 2)
        rec2 = self.successResultOf(late.connection.subscribe("room", since=since))
        self.assertTrue(rec2.recovered)
        self.assertEqual(rec2.position, StreamPosition(rec.position.epoch, 5))
        self.server.broadcast("m6", channel="room")
        self.assertEqual(late.messages(), ["m3", "m4", "m5", "m6"])

    def test_recovery_too_old(self) -> None:
        """A position older than the history kept is TOO_OLD; nothing is
        sent, and the client is subscribed from now on."""
        conn = self.harness.open()
        for i in range(15):
            self.server.broadcast(f"m{i}", channel="room")
        epoch = epoch_of(self.bp, "room")
        rec = self.successResultOf(conn.connection.subscribe("room", since=(epoch, 1)))
        self.assertEqual(rec.status, RecoveryStatus.TOO_OLD)
        self.assertEqual(conn.messages(), [])
        self.server.broadcast("live", channel="room")
        self.assertEqual(conn.messages(), ["live"])

    def test_history_override_per_broadcast(self) -> None:
        """history_size= on a broadcast keeps that many for the channel."""
        bp = LocalBackplane(node_id="web.0")
        server, harness = started(bp)
        for i in range(5):
            server.broadcast(f"m{i}", channel="c", history_size=2)
        conn = harness.open()
        epoch = epoch_of(bp, "c")
        rec = self.successResultOf(conn.connection.subscribe("c", since=(epoch, 3)))
        self.assertTrue(rec.recovered)
        self.assertEqual(conn.messages(), ["m3", "m4"])

    def test_subscribe_twice_is_a_no_op(self) -> None:
        """A second subscribe does not count twice or send anything."""
        conn = self.harness.open().connection
        conn.subscribe("room")
        rec = self.successResultOf(conn.subscribe("room", since=("e", 0)))
        self.assertEqual(rec, Recovery(RecoveryStatus.NOT_REQUESTED))
        self.assertEqual(self.successResultOf(self.server.channel_count("room")), 1)

    def test_bad_channel_and_since_raise(self) -> None:
        """Misuse raises at once, before anything is counted."""
        conn = self.harness.open().connection
        self.assertRaises(TypeError, conn.subscribe, b"room")
        self.assertRaises(ValueError, conn.subscribe, "")
        self.assertRaises(ValueError, conn.subscribe, "room", since=("e", -1))
        self.assertEqual(self.successResultOf(self.server.channel_count("room")), 0)

    def test_counts(self) -> None:
        """Connection and channel counts follow opens, subscriptions and
        ends (a closed connection leaves its channels)."""
        a, b = self.harness.open(), self.harness.open()
        a.connection.subscribe("room")
        b.connection.subscribe("room")
        b.connection.unsubscribe("room")
        self.assertEqual(self.successResultOf(self.server.connection_count()), 2)
        self.assertEqual(self.successResultOf(self.server.channel_count("room")), 1)
        a.drop()
        self.harness.flush()
        self.assertEqual(self.successResultOf(self.server.connection_count()), 1)
        self.assertEqual(self.successResultOf(self.server.channel_count("room")), 0)
        self.assertEqual(a.connection.channels, {"room"})  # kept for on_disconnect

    def test_write_data_and_disconnect(self) -> None:
        """By id: a local connection at once; an id of this node that is
        not open, or an id naming no node, is unknown."""
        conn = self.harness.open()
        self.server.write_data(conn.connection.id, "hi")
        self.assertEqual(conn.messages(), ["hi"])
        for bad in ("web.0." + "0" * 32, "no-such"):
            self.assertRaises(UnknownConnection, self.server.write_data, bad, "x")
            self.assertRaises(UnknownConnection, self.server.disconnect, bad)
        self.server.disconnect(conn.connection.id, 4000, "bye")
        self.assertEqual(conn.frames()[-1].close_code, 4000)

    def test_disconnect_all_counts_local(self) -> None:
        """disconnect_all closes every connection and returns this node's
        count; a code close() refuses raises."""
        self.harness.open(), self.harness.open()
        self.assertEqual(self.server.disconnect_all(4001, "x"), 2)
        self.assertRaises(InvalidCloseCode, self.server.disconnect_all, 1005)

    def test_envelope_connections(self) -> None:
        """A connection with envelope set gets a channel publication as a
        JSON publication message with channel, epoch and offset; the
        others get the payload."""
        plain, wrapped = self.harness.open(), self.harness.open()
        wrapped.connection.envelope = True
        for c in (plain, wrapped):
            c.connection.subscribe("room")
        self.assertEqual(self.server.broadcast("hi", channel="room"), 2)
        self.server.broadcast(b"\x00\x01", channel="room")
        self.assertEqual(plain.messages(), ["hi", b"\x00\x01"])
        got = [json.loads(m) for m in wrapped.messages()]
        epoch = epoch_of(self.bp, "room")
        self.assertEqual(
            got[0],
            {
                "type": "publication",
                "channel": "room",
                "epoch": epoch,
                "offset": 1,
                "data": "hi",
            },
        )
        self.assertEqual((got[1]["data"], got[1]["binary"]), ("AAE=", True))


class NotStartedTests(SynchronousTestCase):
    """Before the server (and so its engine) starts, sending is local."""

    def test_local_delivery(self) -> None:
        bp = ScriptedBackplane()
        server = WebSocketServer(Recorder(), reactor=MemoryReactorClock(), backplane=bp)
        harness = ServerHarness(server)
        conn = harness.open()
        self.assertEqual(server.broadcast("x"), 1)
        self.assertEqual(conn.messages(), ["x"])
        self.assertNotIn("publish", bp.names())
        self.assertRaises(UnknownConnection, server.write_data, "b.0." + "1" * 32, "x")


class BackplaneURLTests(SynchronousTestCase):
    """``WebSocketServer(backplane=URL)`` builds the Redis engine from the
    URL (nothing connects before the server starts)."""

    def test_url_forms(self) -> None:
        """redis:// with a password and a database, rediss:// (TLS) and a
        Unix socket each give a RedisBackplane with that address; "local"
        gives the in-process engine."""
        from wsplugin.backplane import RedisBackplane

        forms = {
            "redis://:s3cret@10.0.0.5:6390/2": ("redis", "10.0.0.5", 6390, None, 2),
            "rediss://cache.example:6380/0": ("rediss", "cache.example", 6380, None, 0),
            "unix:///run/redis.sock?db=1": ("unix", None, None, "/run/redis.sock", 1),
        }
        for url, (scheme, host, port, path, db) in forms.items():
            clock = MemoryReactorClock()
            server = WebSocketServer(Recorder(), reactor=clock, backplane=url)
            bp = server.backplane
            self.assertIsInstance(bp, RedisBackplane, url)
            assert isinstance(bp, RedisBackplane)
            got = (bp.url.scheme, bp.url.host, bp.url.port, bp.url.path, bp.url.db)
            self.assertEqual(got, (scheme, host, port, path, db))
            self.assertEqual((clock.tcpClients, clock.unixClients), ([], []))
        server = WebSocketServer(
            Recorder(), reactor=clock, backplane="redis://:s3cret@h/0"
        )
        assert isinstance(server.backplane, RedisBackplane)
        self.assertEqual(server.backplane.url.password, "s3cret")
        self.assertNotIn("s3cret", server.backplane.url.redacted())
        local = WebSocketServer(Recorder(), reactor=clock, backplane="local")
        self.assertIsInstance(local.backplane, LocalBackplane)

    def test_bad_url_is_a_config_error_without_the_password(self) -> None:
        from wsplugin.errors import ConfigError

        with self.assertRaises(ConfigError) as caught:
            WebSocketServer(
                Recorder(),
                reactor=MemoryReactorClock(),
                backplane="redis://:s3cret@host:notaport/0",
            )
        self.assertIn("port", str(caught.exception))
        self.assertNotIn("s3cret", str(caught.exception))


class ScriptedEngineTests(SynchronousTestCase):
    """The hub's side of the engine contract, with answers the test gives."""

    def setUp(self) -> None:
        self.bp = ScriptedBackplane()
        self.server, self.harness = started(self.bp)

    def test_broadcast_publishes_once(self) -> None:
        """One publish per broadcast, with the filters and history options;
        nothing is sent locally until the engine delivers."""
        a = self.harness.open()
        n = self.server.broadcast(
            "x",
            channel="c",
            subprotocol="p",
            ids=["i"],
            exclude=a.connection,
            history_size=3,
            history_ttl=9.0,
        )
        self.assertEqual(n, 0)
        self.assertEqual(
            self.bp.calls[-1],
            (
                "publish",
                "c",
                b"x",
                {
                    "protocol": "p",
                    "ids": ["i"],
                    "exclude": [a.connection.id],
                    "history_size": 3,
                    "history_ttl": 9.0,
                },
            ),
        )
        self.bp.receiver.deliver(Publication(None, b"back"))
        self.assertEqual(a.messages(), ["back"])

    def test_remote_ids_go_through_the_engine(self) -> None:
        """write_data/disconnect for another node's id go to the engine."""
        other = "other.3." + "a" * 32
        self.server.write_data(other, b"\x01")
        self.server.disconnect(other, 4002, "r")
        self.assertEqual(self.bp.calls[-2], ("send", other, b"\x01", True))
        self.assertEqual(self.bp.calls[-1], ("disconnect", other, 4002, "r"))
        self.assertRaises(InvalidCloseCode, self.server.disconnect, other, 1006)

    def test_send_to_by_id(self) -> None:
        """send_to with a connection id: a local one at once, another
        node's through the engine, an unknown one raises (as write_data)."""
        a = self.harness.open()
        self.assertEqual(self.server.send_to("here", a.connection.id), 1)
        self.assertEqual(a.messages(), ["here"])
        other = "other.1." + "b" * 32
        self.assertEqual(self.server.send_to("there", other), 1)
        self.assertEqual(self.bp.calls[-1], ("send", other, b"there", False))
        self.assertRaises(UnknownConnection, self.server.send_to, "x", "no-such")

    def test_commands(self) -> None:
        """send/close for a local id are carried out; an unknown id is
        ignored; close_all closes every local connection."""
        a, b = self.harness.open(), self.harness.open()
        r = self.bp.receiver
        r.command(Command("send", a.connection.id, b"hi"))
        r.command(Command("send", "me.0." + "f" * 32, b"lost"))
        r.command(Command("close", b.connection.id, code=4003, reason="go"))
        self.assertEqual(a.messages(), ["hi"])
        self.assertEqual(b.frames()[-1].close_code, 4003)
        self.assertEqual(self.server.disconnect_all(4004), 1)
        self.assertEqual(a.frames()[-1].close_code, 4004)

    def test_counts_are_the_engines(self) -> None:
        """connection_count and channel_count are the engine's answers."""
        self.assertEqual(self.successResultOf(self.server.connection_count()), 42)
        self.assertEqual(self.successResultOf(self.server.channel_count("c")), 7)

    def test_recovery_is_delivered_before_live(self) -> None:
        """Until the engine answers, the connection is out of the channel's
        fan-out; then it gets the recovered publications (filters applied),
        joins, and gets the live ones."""
        a = self.harness.open()
        conn = a.connection
        d = conn.subscribe("room", since=("e1", 1))
        self.assertNoResult(d)
        self.bp.receiver.deliver(pub("room", b"early", 3))
        self.assertEqual(a.messages(), [])
        recovered = (
            pub("room", b"m2", 2),
            pub("room", b"skip", 3, exclude=(conn.id,)),
            pub("room", b"other", 4, protocol="nope"),
            pub("room", b"m5", 5),
        )
        self.bp.pending[0][2].callback(
            Recovery(RecoveryStatus.RECOVERED, recovered, StreamPosition("e1", 5))
        )
        self.assertEqual(self.successResultOf(d).position, StreamPosition("e1", 5))
        self.bp.receiver.deliver(pub("room", b"m6", 6))
        self.assertEqual(a.messages(), ["m2", "m5", "m6"])

    def test_connection_gone_before_the_answer(self) -> None:
        """A connection that ends, or unsubscribes, while its subscription
        is under way never joins, and the engine's count is given back."""
        a, b = self.harness.open(), self.harness.open()
        da = a.connection.subscribe("room")
        db = b.connection.subscribe("room")
        a.drop()
        self.harness.flush()
        b.connection.unsubscribe("room")
        for _channel, _since, d in self.bp.pending:
            d.callback(Recovery(RecoveryStatus.NOT_REQUESTED))
        self.successResultOf(da), self.successResultOf(db)
        self.assertEqual(self.bp.names().count("unsubscribe"), 2)
        self.assertEqual(b.connection.channels, set())

    def test_engine_failure_still_joins(self) -> None:
        """A failed subscription is logged; the connection joins for live
        messages and the Deferred fires with UNAVAILABLE."""
        a = self.harness.open()
        d = a.connection.subscribe("room", since=("e", 1))
        self.bp.pending[0][2].errback(RuntimeError("engine broke"))
        self.assertEqual(self.successResultOf(d).status, RecoveryStatus.UNAVAILABLE)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.bp.receiver.deliver(pub("room", b"live", 9))
        self.assertEqual(a.messages(), ["live"])

    def test_stop_order(self) -> None:
        """Stopping closes this node's connections (1001, no cluster-wide
        close_all), waits for them, then stops the engine."""
        a = self.harness.open()
        d = self.server.stopService()
        self.assertNotIn("disconnect_all", self.bp.names())
        self.assertNotIn("stop", self.bp.names())
        self.assertEqual(a.frames()[-1].close_code, 1001)
        a.send_close(1001)
        self.harness.flush()
        self.successResultOf(d)
        names = self.bp.names()
        self.assertLess(names.index("closed"), names.index("stop"))
