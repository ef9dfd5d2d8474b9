"""Unit tests of wsplugin.backplane with no Redis: the in-process engine,
identities, the wire codec, URL parsing and option validation."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import wsplugin.backplane as bp_module
import wsplugin.backplane._redis as redis_engine
from wsplugin.backplane import (
    Backplane,
    BackplaneReceiver,
    Command,
    LocalBackplane,
    Publication,
    RecoveryStatus,
    RedisBackplane,
    RedisURL,
    StreamPosition,
    holder_of,
    make_backplane,
    make_node_id,
    new_connection_id,
    parse_backplane_url,
)
from wsplugin.backplane._types import WireError, decode, encode_command
from wsplugin.backplane._types import encode_publication as encode_pub
from wsplugin.errors import ConfigError


class Recorder:
    """A receiver recording publications and commands."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self.cmds: list[Command] = []

    def deliver(self, publication: Publication) -> None:
        self.pubs.append(publication)

    def command(self, command: Command) -> None:
        self.cmds.append(command)


class Exploding:
    """A receiver that raises on everything."""

    def deliver(self, publication: Publication) -> None:
        raise RuntimeError("boom")

    def command(self, command: Command) -> None:
        raise RuntimeError("boom")


def local(**kwargs: Any) -> tuple[LocalBackplane, Recorder, Clock]:
    clock = Clock()
    bp = LocalBackplane(node_id="n.0", clock=clock, **kwargs)
    rec = Recorder()
    bp.start(rec)
    return bp, rec, clock


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


class IdentityTests(SynchronousTestCase):
    def test_node_ids(self) -> None:
        """A node id is <name>.<worker>; the default name is random."""
        self.assertEqual(make_node_id("web-1", 3), "web-1.3")
        a, b = make_node_id(), make_node_id()
        self.assertNotEqual(a, b)
        self.assertTrue(a.endswith(".0"))
        for bad in ("", "a.b", "a:b", "x" * 65, "é"):
            with self.assertRaises(ConfigError):
                make_node_id(bad)
        for worker in (-1, 1_000_000, True, "1"):
            with self.assertRaises(ConfigError):
                make_node_id("a", worker)  # type: ignore[arg-type]
        with self.assertRaises(ConfigError):
            LocalBackplane(node_id="nodot")

    def test_connection_ids_name_their_holder(self) -> None:
        """A connection id names the node that holds it; other ids name none."""
        conn = new_connection_id("web-1.3")
        self.assertRegex(conn, r"^web-1\.3\.[0-9a-f]{32}$")
        self.assertEqual(holder_of(conn), "web-1.3")
        self.assertNotEqual(conn, new_connection_id("web-1.3"))
        for other in ("3f2b", "a.b.c", "web.1." + "0" * 31, "", 5):
            self.assertIsNone(holder_of(other), other)  # type: ignore[arg-type]
        self.assertTrue(
            LocalBackplane(node_id="q.2").new_connection_id().startswith("q.2.")
        )


class CodecTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """Publications and commands survive encoding, filters included."""
        pub = Publication(
            "room", "h\u00e9".encode(), False, None, None, "chat", ("a",), ("b",), "n.0"
        )
        back, done = decode(encode_pub(pub), offset=4, epoch="e1")
        self.assertEqual(
            back, Publication(**{**_fields(pub), "offset": 4, "epoch": "e1"})
        )
        self.assertFalse(done)
        self.assertEqual(back.position, StreamPosition("e1", 4))
        self.assertEqual(back.message, "h\u00e9")
        everyone = Publication(None, b"\x00", True, origin="n.0")
        back, done = decode(encode_pub(everyone, local_done=True))
        self.assertEqual((back, done), (everyone, True))
        self.assertIsNone(everyone.position)
        self.assertEqual(everyone.message, b"\x00")
        for cmd in (
            Command("send", "n.0.x", b"\x01", True, origin="m.0"),
            Command("close", "n.0.x", code=4001, reason="r", origin="m.0"),
            Command("close_all", None, code=1001, reason="", origin="m.0"),
        ):
            self.assertEqual(decode(encode_command(cmd)), (cmd, False))

    @settings(max_examples=100, derandomize=True, deadline=None)
    @given(
        channel=st.none() | st.text(min_size=1, max_size=20),
        data=st.binary(max_size=64),
        protocol=st.none() | st.text(max_size=10),
        ids=st.none() | st.lists(st.text(max_size=8), max_size=3).map(tuple),
    )
    def test_round_trip_property(
        self, channel: Any, data: bytes, protocol: Any, ids: Any
    ) -> None:
        """Any publication decodes to itself (payload bytes are untouched,
        newlines included)."""
        pub = Publication(channel, data, True, protocol=protocol, ids=ids, origin="o.0")
        self.assertEqual(decode(encode_pub(pub))[0], pub)

    def test_malformed(self) -> None:
        """Bytes that are not our messages raise WireError."""
        for raw in (
            b"no newline",
            b"not json\nx",
            b"[1]\nx",
            b'{"v":"9","k":"p"}\n',
            b'{"v":"1","k":"z"}\n',
            b'{"v":"1"}\n',
            b'{"v":"1","k":"c","t":"explode"}\n',
            b'{"v":"1","k":"c","t":"close","d":"x"}\n',
        ):
            with self.assertRaises(WireError, msg=raw):
                decode(raw)


def _fields(pub: Publication) -> dict[str, Any]:
    return {name: getattr(pub, name) for name in Publication.__slots__}


class LocalPublishTests(SynchronousTestCase):
    def test_publish_delivers_at_once_with_offsets(self) -> None:
        """Channel publications get offsets 1, 2, ... in one epoch; a
        broadcast to all has none; filters are passed on."""
        bp, rec, _ = local()
        bp.publish("a", b"one")
        bp.publish("a", b"two", protocol="p", ids=["i", "i"], exclude=["x"])
        bp.publish("b", b"\x00", is_binary=True)
        bp.publish(None, b"all")
        self.assertEqual([p.offset for p in rec.pubs], [1, 2, 1, None])
        self.assertEqual(rec.pubs[0].epoch, rec.pubs[1].epoch)
        self.assertNotEqual(rec.pubs[0].epoch, rec.pubs[2].epoch)
        self.assertEqual(rec.pubs[1].ids, ("i",))
        self.assertEqual(rec.pubs[1].exclude, ("x",))
        self.assertEqual(rec.pubs[1].protocol, "p")
        self.assertEqual(rec.pubs[1].origin, "n.0")
        self.assertEqual(bp.stats.published, 4)
        self.assertEqual(bp.state, "connected")

    def test_misuse_raises(self) -> None:
        """Wrong types and invalid text raise at once, naming the problem."""
        bp, rec, _ = local()
        with self.assertRaises(TypeError):
            bp.publish("a", "text")  # type: ignore[arg-type]
        with self.assertRaises(UnicodeDecodeError):
            bp.publish("a", b"\xff")
        with self.assertRaises(ValueError):
            bp.publish("", b"x")
        with self.assertRaises(ValueError):
            bp.publish("x" * 1025, b"x")
        with self.assertRaises(TypeError):
            bp.publish("a", b"x", ids=[1])  # type: ignore[list-item]
        with self.assertRaises(ConfigError):
            bp.publish("a", b"x", history_size=-1)
        with self.assertRaises(ValueError):
            bp.subscribe("a", ("e", -1))
        with self.assertRaises(ValueError):
            bp.subscribe("a", "e1")  # type: ignore[arg-type]
        self.assertEqual(rec.pubs, [])

    def test_stopped_or_failing_receiver_never_raises(self) -> None:
        """A stopped engine drops with a log line; a receiver that raises is
        logged; the publisher never sees an exception."""
        bp = LocalBackplane(clock=Clock())
        bp.publish("a", b"x")
        bp.send("id", b"x")
        bp.start(Exploding())
        bp.publish("a", b"x")
        bp.disconnect_all()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.successResultOf(bp.stop())
        self.assertEqual(bp.state, "stopped")

    def test_commands_go_to_the_receiver(self) -> None:
        """send, disconnect and disconnect_all reach the receiver in order."""
        bp, rec, _ = local()
        cid = bp.new_connection_id()
        bp.send(cid, b"\x01", is_binary=True)
        bp.disconnect(cid, 4000, "bye")
        bp.disconnect_all(1001, "restart")
        self.assertEqual(
            rec.cmds,
            [
                Command("send", cid, b"\x01", True, origin="n.0"),
                Command("close", cid, code=4000, reason="bye", origin="n.0"),
                Command("close_all", None, code=1001, reason="restart", origin="n.0"),
            ],
        )
        with self.assertRaises(UnicodeDecodeError):
            bp.send(cid, b"\xff")


class LocalHistoryTests(SynchronousTestCase):
    def test_recovery(self) -> None:
        """A subscriber recovers exactly the publications after its
        position; an up-to-date one recovers nothing."""
        bp, rec, _ = local(history_size=10)
        start = self.successResultOf(bp.subscribe("c"))
        self.assertEqual(start.status, RecoveryStatus.NOT_REQUESTED)
        self.assertEqual(start.position.offset, 0)  # type: ignore[union-attr]
        for i in range(5):
            bp.publish("c", b"%d" % i)
        got = self.successResultOf(bp.subscribe("c", (start.position.epoch, 2)))  # type: ignore[union-attr]
        self.assertTrue(got.recovered)
        self.assertEqual([p.message for p in got.publications], ["2", "3", "4"])
        self.assertEqual(got.position, (start.position.epoch, 5))  # type: ignore[union-attr]
        same = self.successResultOf(bp.subscribe("c", got.position))
        self.assertEqual(
            (same.status, same.publications), (RecoveryStatus.RECOVERED, ())
        )
        self.assertEqual(bp.stats.recoveries, {"not_requested": 1, "recovered": 2})

    def test_too_old_and_no_history(self) -> None:
        """A position before the kept window is too old; a channel without
        history recovers only an up-to-date position."""
        bp, rec, _ = local(history_size=3)
        for i in range(6):
            bp.publish("c", b"%d" % i)
        epoch = rec.pubs[0].epoch
        assert epoch is not None
        self.assertEqual(
            self.successResultOf(bp.subscribe("c", (epoch, 2))).status,
            RecoveryStatus.TOO_OLD,
        )
        ok = self.successResultOf(bp.subscribe("c", (epoch, 3)))
        self.assertEqual([p.offset for p in ok.publications], [4, 5, 6])
        bp.publish("n", b"x", history_size=0)
        bp.publish("n", b"y", history_size=0)
        n_epoch = rec.pubs[-1].epoch
        assert n_epoch is not None
        self.assertEqual(
            self.successResultOf(bp.subscribe("n", (n_epoch, 1))).status,
            RecoveryStatus.TOO_OLD,
        )
        self.assertTrue(self.successResultOf(bp.subscribe("n", (n_epoch, 2))).recovered)

    def test_epoch_changes_when_history_expires(self) -> None:
        """After history_ttl without a publication the channel starts a new
        epoch at offset 1; old positions get EPOCH_CHANGED, and so do
        positions from the future or an unknown epoch."""
        bp, rec, clock = local(history_size=10, history_ttl=60)
        bp.publish("c", b"1")
        clock.advance(59)
        bp.publish("c", b"2")  # refreshes the TTL
        clock.advance(59)
        old = rec.pubs[-1].position
        assert old is not None
        self.assertTrue(
            self.successResultOf(bp.subscribe("c", (old.epoch, 0))).recovered
        )
        clock.advance(61)
        bp.publish("c", b"3")
        self.assertEqual(rec.pubs[-1].offset, 1)
        self.assertNotEqual(rec.pubs[-1].epoch, old.epoch)
        for since in (old, ("other", 0), (rec.pubs[-1].epoch, 5)):
            got = self.successResultOf(bp.subscribe("c", since))  # type: ignore[arg-type]
            self.assertEqual(got.status, RecoveryStatus.EPOCH_CHANGED)
            self.assertEqual(got.position, rec.pubs[-1].position)

    def test_history_is_bounded_and_swept(self) -> None:
        """History keeps the newest entries when its size changes, and
        expired channels are forgotten (memory is bounded)."""
        bp, rec, clock = local(history_size=4, history_ttl=10)
        for i in range(4):
            bp.publish("c", b"%d" % i)
        bp.publish("c", b"4", history_size=2)
        epoch = rec.pubs[0].epoch
        assert epoch is not None
        got = self.successResultOf(bp.subscribe("c", (epoch, 3)))
        self.assertEqual([p.message for p in got.publications], ["3", "4"])
        self.assertEqual(
            self.successResultOf(bp.subscribe("c", (epoch, 2))).status,
            RecoveryStatus.TOO_OLD,
        )
        for i in range(100):
            bp.publish(f"tmp{i}", b"x")
        self.assertEqual(len(bp._logs), 101)
        clock.advance(11)
        bp.publish("c", b"again")
        self.assertEqual(list(bp._logs), ["c"])


class LocalCountTests(SynchronousTestCase):
    def test_counts(self) -> None:
        """Connection and channel counts follow opened/closed and
        subscribe/unsubscribe, never below zero."""
        bp, _, _ = local()
        bp.connection_opened()
        bp.connection_opened()
        bp.connection_closed()
        bp.subscribe("c")
        bp.subscribe("c")
        bp.subscribe("d")
        bp.unsubscribe("c")
        bp.unsubscribe("d")
        bp.unsubscribe("d")
        bp.unsubscribe("never")
        self.assertEqual(self.successResultOf(bp.connection_count()), 1)
        self.assertEqual(self.successResultOf(bp.channel_count("c")), 1)
        self.assertEqual(self.successResultOf(bp.channel_count("d")), 0)
        self.assertEqual(bp.local_channels(), {"c": 1})
        bp.connection_closed()
        bp.connection_closed()
        self.assertEqual(self.successResultOf(bp.connection_count()), 0)


class UrlTests(SynchronousTestCase):
    def test_valid_forms(self) -> None:
        """The documented URL forms parse to their parts."""
        cases: dict[str, RedisURL | None] = {
            "local": None,
            "redis://localhost": RedisURL("redis", "localhost", 6379),
            "redis://:p%40ss@10.0.0.5:6380/2": RedisURL(
                "redis", "10.0.0.5", 6380, db=2, password="p@ss"
            ),
            "redis://user:pw@h/0?prefix=app1": RedisURL(
                "redis", "h", 6379, username="user", password="pw", prefix="app1"
            ),
            "redis://[::1]:7000?db=4": RedisURL("redis", "::1", 7000, db=4),
            "rediss://h:6390/1?ca=/etc/ca.pem": RedisURL(
                "rediss", "h", 6390, db=1, ca_file="/etc/ca.pem"
            ),
            "unix:///run/redis.sock": RedisURL("unix", path="/run/redis.sock"),
            "unix:///run/redis.sock?db=3&password=a%20b&user=u": RedisURL(
                "unix", path="/run/redis.sock", db=3, password="a b", username="u"
            ),
            "unix://:pw@/run/r.sock": RedisURL(
                "unix", path="/run/r.sock", password="pw"
            ),
            "REDIS://H": RedisURL("redis", "h", 6379),
        }
        for url, expected in cases.items():
            self.assertEqual(parse_backplane_url(url), expected, url)
        parsed = parse_backplane_url("rediss://h")
        assert parsed is not None
        self.assertTrue(parsed.tls)

    def test_invalid_forms(self) -> None:
        """Each bad form is a ConfigError that says what is wrong."""
        cases = {
            "http://h": "scheme",
            "redis:///0": "host is required",
            "redis://h:0": "port",
            "redis://h:99999": "port",
            "redis://h:x": "port",
            "redis://h/x": "database index",
            "redis://h/-1": "database index",
            "redis://h/1?db=2": "not both",
            "redis://h?db=1&db=2": "twice",
            "redis://h?timeout=3": "unknown option 'timeout'",
            "redis://h?ca=/x": "unknown option 'ca'",
            "redis://h#frag": "fragment",
            "redis://h?prefix=a/b": "prefix",
            "redis://:a@h?password=b": "password is given twice",
            "redis://u@h?user=v": "user is given twice",
            "redis://h?x": "key=value",
            "unix://host/run/r.sock": "three slashes",
            "unix://": "absolute",
            "unix:///": "absolute",
            "unix:///r.sock?db=a": "database index",
        }
        for url, words in cases.items():
            with self.assertRaises(ConfigError, msg=url) as caught:
                parse_backplane_url(url)
            self.assertIn(words, str(caught.exception), url)
        with self.assertRaises(ConfigError):
            parse_backplane_url(5)  # type: ignore[arg-type]

    def test_passwords_never_shown(self) -> None:
        """Neither repr, redacted() nor an error message shows a password."""
        url = parse_backplane_url("redis://u:hunter2@h:1/3")
        assert url is not None
        self.assertNotIn("hunter2", repr(url))
        self.assertEqual(url.redacted(), "redis://u:***@h:1/3")
        unix = parse_backplane_url("unix:///s.sock?password=hunter2")
        assert unix is not None
        self.assertEqual(unix.redacted(), "unix://:***@/s.sock?db=0")
        self.assertEqual(
            parse_backplane_url("redis://[::1]").redacted(),  # type: ignore[union-attr]
            "redis://[::1]:6379/0",
        )
        with self.assertRaises(ConfigError) as caught:
            parse_backplane_url("redis://:hunter2@h:x")
        self.assertNotIn("hunter2", str(caught.exception))


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


class FakeLink:
    """Stands for a txredisapi protocol: records commands; the test fires
    their replies, in any order it likes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], Deferred[Any]]] = []

    def _call(self, name: str, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((name, args, d))
        return d

    def ping(self) -> Deferred[Any]:
        return self._call("PING")

    def subscribe(self, topic: str) -> Deferred[Any]:
        return self._call("SUBSCRIBE", topic)

    def unsubscribe(self, topic: str) -> Deferred[Any]:
        return self._call("UNSUBSCRIBE", topic)

    def eval(self, script: str, keys: list[str], args: list[Any]) -> Deferred[Any]:
        return self._call("EVAL", script, keys, args)

    def execute_command(self, *args: Any) -> Deferred[Any]:
        return self._call(*args)

    def pop(self, name: str) -> tuple[tuple[Any, ...], Deferred[Any]]:
        """The oldest unanswered command called ``name``."""
        for i, (n, args, d) in enumerate(self.calls):
            if n == name:
                del self.calls[i]
                return args, d
        raise AssertionError(f"no {name} pending; calls: {self.calls}")

    def names(self) -> list[str]:
        return [n for n, _, _ in self.calls]


def live(offset: int, body: bytes = b"", channel: str = "c", epoch: str = "E") -> bytes:
    """A channel message as the publish script sends it."""
    pub = Publication(channel, body or b"%d" % offset, origin="a.0")
    return b"%d %s\n" % (offset, epoch.encode()) + encode_pub(pub)


def entries(*offsets: int, channel: str = "c") -> list[Any]:
    return [
        [b"%d-0" % o, [b"m", encode_pub(Publication(channel, b"%d" % o, origin="a.0"))]]
        for o in offsets
    ]


class RedisEngineLogicTests(SynchronousTestCase):
    """The Redis engine's ordering logic, with fake links whose replies the
    test releases one by one (white box: the link hooks are called directly,
    as txredisapi would)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.bp = RedisBackplane(
            "redis://h", node_id="b.0", reactor=self.clock, history_size=10
        )
        self.rec = Recorder()
        self.bp._receiver = self.rec
        self.cmd, self.sub = FakeLink(), FakeLink()
        self.topic = b"wsplugin:0:ch:c"

    def confirm(self, link: FakeLink) -> None:
        """Redis confirms every SUBSCRIBE sent on ``link``."""
        while "SUBSCRIBE" in link.names():
            (topic,), d = link.pop("SUBSCRIBE")
            d.callback([b"subscribe", topic.encode(), 1])

    def connect(self) -> None:
        self.bp._link_up("cmd", self.cmd)
        self.bp._link_up("sub", self.sub)
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
        self.bp._on_message(self.topic, live(5))  # before the first PING
        self.sub.pop("PING")[1].callback([b"pong", b""])
        (_, keys, args), evald = self.cmd.pop("EVAL")
        self.assertEqual(keys, ["wsplugin:0:meta:c", "wsplugin:0:hist:c"])
        self.assertEqual(args[2:], ["E", 2])
        self.bp._on_message(self.topic, live(6))  # during the read
        evald.callback([b"E", 6, b"ok", entries(3, 4, 5, 6)])
        self.bp._on_message(self.topic, live(7))  # before the second PING
        self.assertNoResult(d)
        self.sub.pop("PING")[1].callback([b"pong", b""])
        rec = self.successResultOf(d)
        self.assertEqual(rec.status, RecoveryStatus.RECOVERED)
        self.assertEqual([p.offset for p in rec.publications], [3, 4, 5, 6, 7])
        self.assertEqual([p.message for p in rec.publications], list("34567"))
        self.assertEqual(rec.position, ("E", 7))
        # the node had this one subscriber: live 5-7 went to the receiver too
        self.bp._on_message(self.topic, live(8))
        self.assertEqual(self.offsets(), [5, 6, 7, 8])
        self.assertEqual(self.bp._pending, {})

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
            self.bp._on_message(self.topic, live(o))
        self.bp._link_down("sub", self.sub)
        self.assertEqual(self.bp.state, "disconnected")
        sub2 = FakeLink()
        self.bp._link_up("sub", sub2)
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
        self.bp._on_message(self.topic, live(7))  # held back
        self.assertEqual(self.offsets(), [1, 2, 3])
        sub2.pop("PING")[1].callback([b"pong", b""])
        (_, _, args), evald = self.cmd.pop("EVAL")
        self.assertEqual(args[2:], ["E", 3])
        evald.callback([b"E", 6, b"ok", entries(4, 5, 6)])
        self.bp._on_message(self.topic, live(8))
        sub2.pop("PING")[1].callback([b"pong", b""])
        self.assertEqual(self.offsets(), list(range(1, 9)))
        self.bp._on_message(self.topic, live(9))
        self.assertEqual(self.offsets(), list(range(1, 10)))
        self.assertEqual(self.bp.stats.catch_ups, {"recovered": 1})

    def test_catch_up_without_history_delivers_held_messages(self) -> None:
        """When the missed publications are gone, the held live ones are
        still delivered (and a warning logged); when the command link
        fails, too."""
        sub2 = self.catch_up_setup()
        self.bp._on_message(self.topic, live(9))
        sub2.pop("PING")[1].callback([b"pong", b""])
        self.cmd.pop("EVAL")[1].callback([b"E", 8, b"old"])
        sub2.pop("PING")[1].callback([b"pong", b""])
        self.assertEqual(self.offsets(), [1, 2, 3, 9])

        self.bp._link_down("sub", sub2)
        sub3 = FakeLink()
        self.bp._link_up("sub", sub3)
        self.confirm(sub3)
        self.bp._on_message(self.topic, live(10))
        sub3.pop("PING")[1].callback([b"pong", b""])
        self.cmd.pop("EVAL")[1].errback(ConnectionError("cmd link lost"))
        self.assertEqual(self.offsets(), [1, 2, 3, 9, 10])
        self.assertEqual(self.bp.stats.catch_ups, {"too_old": 1, "unavailable": 1})

    def test_hold_is_bounded(self) -> None:
        """A catch-up that cannot start (command link down) holds at most
        MAX_HOLD messages, then delivers them and stops holding."""
        self.patch(redis_engine, "MAX_HOLD", 3)
        self.connect()
        self.subscribe_unrecovered()
        self.bp._on_message(self.topic, live(1))
        self.bp._link_down("cmd", self.cmd)
        self.bp._link_down("sub", self.sub)
        self.bp._link_up("sub", FakeLink())
        for o in (5, 6, 7):
            self.bp._on_message(self.topic, live(o))
        self.assertEqual(self.offsets(), [1])
        self.bp._on_message(self.topic, live(8))
        self.assertEqual(self.offsets(), [1, 5, 6, 7, 8])
        self.assertEqual(self.bp._pending, {})
        self.cmd.calls.clear()
        self.bp._link_up("cmd", self.cmd)  # nothing left to catch up
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
        self.bp._link_down("cmd", self.cmd)
        self.bp.publish("c", b"one")
        self.bp.publish(None, b"two")
        self.assertEqual([p.message for p in self.rec.pubs], ["one", "two"])
        self.assertEqual(self.offsets(), [None, None])
        self.assertEqual(self.bp.stats.queued, 2)
        cmd2 = FakeLink()
        self.bp._link_up("cmd", cmd2)
        (script, keys, args), _ = cmd2.pop("EVAL")
        self.assertEqual(keys, ["wsplugin:0:meta:c", "wsplugin:0:hist:c"])
        payload = args[-1]
        self.assertEqual(decode(payload)[1], True)  # local_done
        (topic, raw), _ = cmd2.pop("PUBLISH")
        self.assertEqual(topic, "wsplugin:0:all")
        self.bp._on_message(self.topic, b"1 E\n" + payload)  # the echo
        self.bp._on_message(b"wsplugin:0:all", raw)
        self.assertEqual(len(self.rec.pubs), 2)
        self.assertEqual(self.bp.stats.queue_flushed, 2)
        (_, keys, _), _ = cmd2.pop("EVAL")  # the counts snapshot
        self.assertEqual(keys, ["wsplugin:0:counts:b.0", "wsplugin:0:nodes"])
        # connected again and subscribed: the next one comes via Redis
        self.bp.publish("c", b"three")
        self.assertEqual(len(self.rec.pubs), 2)
        self.assertEqual(decode(cmd2.pop("EVAL")[0][2][-1])[1], False)

    def test_malformed_messages_are_ignored(self) -> None:
        """Bytes another program published on our topics are logged and
        dropped."""
        self.connect()
        self.bp.subscribe("c")
        self.bp._on_message(self.topic, b"garbage")
        self.bp._on_message(self.topic, b"x E\n{}")
        self.bp._on_message(b"wsplugin:0:all", b"{}\n")
        self.assertEqual(self.rec.pubs, [])
