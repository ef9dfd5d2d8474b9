"""Sending to many: broadcast, send_to, write_data, ping_all, disconnect_all."""

from __future__ import annotations

import warnings
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import UnknownConnection


class BroadcastTests(SynchronousTestCase):
    """broadcast() and its filters."""

    def setUp(self) -> None:
        self.server, self.harness = make(Recorder(), subprotocols=["v1", "v2"])
        self.a = self.harness.open(headers=[("Sec-WebSocket-Protocol", "v1")])
        self.b = self.harness.open(headers=[("Sec-WebSocket-Protocol", "v2")])
        self.c = self.harness.open()

    def test_text_and_binary(self) -> None:
        """str goes out as a text frame, bytes as binary, to every client."""
        self.assertEqual(self.server.broadcast("hello"), 3)
        self.assertEqual(self.server.broadcast(b"\x00"), 3)
        for client in (self.a, self.b, self.c):
            self.assertEqual(client.messages(), ["hello", b"\x00"])

    def test_frame_built_once(self) -> None:
        """The frame is encoded once for all receivers (by the fan-out)."""
        from wsplugin import _fanout

        calls = []
        original = _fanout.encode_message

        def counting(*args: Any) -> bytes:
            calls.append(args)
            return original(*args)

        self.patch(_fanout, "encode_message", counting)
        self.assertEqual(self.server.broadcast("once"), 3)
        self.assertEqual(len(calls), 1)

    def test_filters(self) -> None:
        """channel, subprotocol, ids and exclude narrow the receivers."""
        self.a.connection.subscribe("news")
        self.c.connection.subscribe("news")
        self.assertEqual(self.server.broadcast("n", channel="news"), 2)
        self.assertEqual(self.server.broadcast("p", subprotocol="v2"), 1)
        self.assertEqual(
            self.server.broadcast("i", ids=[self.c.connection.id, "nope"]), 1
        )
        self.assertEqual(self.server.broadcast("x", exclude=[self.a.connection]), 2)
        self.c.connection.unsubscribe("news")
        self.assertEqual(self.server.broadcast("n2", channel="news"), 1)
        self.assertEqual(self.a.messages(), ["n", "n2"])
        self.assertEqual(self.b.messages(), ["p", "x"])
        self.assertEqual(self.c.messages(), ["n", "i", "x"])

    def test_protocol_is_a_deprecated_alias(self) -> None:
        """broadcast(protocol=...) filters like subprotocol=..., with a
        DeprecationWarning naming the new keyword; giving both is an error."""
        for target in (self.server, self.server.factory):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.assertEqual(target.broadcast("p", protocol="v1"), 1)
            self.assertEqual([w.category for w in caught], [DeprecationWarning])
            self.assertIn("use subprotocol=", str(caught[0].message))
            self.assertEqual(caught[0].filename, __file__)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with self.assertRaises(TypeError):
                    target.broadcast("p", protocol="v1", subprotocol="v1")
        self.assertEqual(self.a.messages(), ["p", "p"])
        self.assertEqual(self.b.messages(), [])

    def test_single_id_is_not_taken_apart(self) -> None:
        """ids= and exclude= take a single id as a str (not its characters),
        and exclude= a single Connection."""
        b_id = self.b.connection.id
        self.assertEqual(self.server.broadcast("only b", ids=b_id), 1)
        self.assertEqual(self.server.broadcast("not b", exclude=b_id), 2)
        self.assertEqual(self.server.broadcast("not a", exclude=self.a.connection), 2)
        self.assertEqual(self.server.broadcast("b, not b", ids=b_id, exclude=b_id), 0)
        self.assertEqual(self.a.messages(), ["not b"])
        self.assertEqual(self.b.messages(), ["only b", "not a"])
        self.assertEqual(self.c.messages(), ["not b", "not a"])

    def test_ids_as_bytes_refused(self) -> None:
        """An id given as bytes is a TypeError naming the argument."""
        with self.assertRaisesRegex(TypeError, "ids="):
            self.server.broadcast("x", ids=self.a.connection.id.encode())
        with self.assertRaisesRegex(TypeError, "exclude="):
            self.server.broadcast("x", exclude=b"abc")
        self.assertEqual(self.a.messages(), [])

    def test_send_to_selector(self) -> None:
        """send_to sends to the connections the selector picks (TMS SendMessageTo)."""
        sender = self.a.connection
        count = self.server.send_to("not you", lambda conn: conn is not sender)
        self.assertEqual(count, 2)
        self.assertEqual(self.a.messages(), [])
        self.assertEqual(self.b.messages(), ["not you"])

    def test_closed_connections_skipped(self) -> None:
        """A connection that is closing or gone receives nothing."""
        self.a.drop()
        self.b.connection.close(1000)
        self.b.frames()
        self.assertEqual(self.server.broadcast("late"), 1)
        self.assertEqual(self.b.messages(), [])
        self.assertEqual(self.c.messages(), ["late"])

    def test_wrong_type(self) -> None:
        """A message that is neither str nor bytes is a TypeError at once."""
        self.assertRaises(TypeError, self.server.broadcast, 42)


class SplitBroadcastTests(SynchronousTestCase):
    """Broadcast honours each route's frame size."""

    def test_split_and_plain_routes(self) -> None:
        """Clients on a split route get frames within the size; others one frame."""
        server, harness = make(None)
        server.register_handler(
            "*",
            "/split",
            Recorder(),
            default_host=True,
            split_message=True,
            frame_size=40,
        )
        server.register_handler("*", "/plain", Recorder())
        split, plain = harness.open("/split"), harness.open("/plain")
        server.broadcast("y" * 500)
        frames = split.frames()
        self.assertTrue(all(f.size <= 40 for f in frames))
        self.assertEqual(b"".join(f.payload for f in frames), b"y" * 500)
        self.assertEqual(len(plain.frames()), 1)


class DirectSendTests(SynchronousTestCase):
    """write_data, ping_all, disconnect_all and the connections registry."""

    def setUp(self) -> None:
        self.rec = Recorder()
        self.server, self.harness = make(self.rec)
        self.a = self.harness.open()
        self.b = self.harness.open()

    def test_connections_registry(self) -> None:
        """connections iterates, has a length, and looks up by id."""
        ids = {self.a.connection.id, self.b.connection.id}
        self.assertEqual(len(self.server.connections), 2)
        self.assertEqual({c.id for c in self.server.connections}, ids)
        self.assertIs(self.server.connections[self.a.connection.id], self.a.connection)
        self.assertIn(self.a.connection.id, self.server.connections)
        self.a.drop()
        self.assertEqual(len(self.server.connections), 1)
        self.assertNotIn(self.a.connection, self.server.connections)

    def test_write_data(self) -> None:
        """write_data reaches the one connection with that GUID."""
        self.server.write_data(self.b.connection.id, "only b")
        self.assertEqual(self.a.messages(), [])
        self.assertEqual(self.b.messages(), ["only b"])

    def test_write_data_unknown(self) -> None:
        """An unknown id raises UnknownConnection naming it."""
        e = self.assertRaises(UnknownConnection, self.server.write_data, "no-such", "x")
        self.assertIn("no-such", str(e))
        self.assertRaises(LookupError, self.server.connections.__getitem__, "x")

    def test_ping_all(self) -> None:
        """ping_all pings every open connection."""
        self.assertEqual(self.server.ping_all(b"hb"), 2)
        for client in (self.a, self.b):
            self.assertEqual(
                [(f.opcode, f.payload) for f in client.frames()], [(9, b"hb")]
            )

    def test_disconnect_all(self) -> None:
        """disconnect_all sends close 1001 to everyone; after the replies every
        connection ends and on_disconnect fires once each."""
        self.assertEqual(self.server.disconnect_all(), 2)
        for client in (self.a, self.b):
            self.assertEqual([f.close_code for f in client.frames()], [1001])
            client.send_close(1001)
        self.assertEqual(self.rec.names().count("on_disconnect"), 2)
        self.assertEqual(len(self.server.connections), 0)


class MutationGuardTests(SynchronousTestCase):
    """Behaviour the review's mutation run showed untested."""

    def test_split_broadcast_encoded_once(self) -> None:
        """Split frames for a broadcast are encoded once per frame size."""
        from wsplugin import _fanout

        calls = []
        original = _fanout.encode_message

        def counting(*args: Any) -> bytes:
            calls.append(args[2])
            return original(*args)

        self.patch(_fanout, "encode_message", counting)
        server, harness = make(Recorder(), split_message=True, frame_size=50)
        for _ in range(3):
            harness.open()
        self.assertEqual(server.broadcast("w" * 500), 3)
        self.assertEqual(len(calls), 1)

    def test_factory_disconnect_all_default_1001(self) -> None:
        """The factory's disconnect_all defaults to 1001 too."""
        server, harness = make(Recorder())
        client = harness.open()
        server.factory.disconnect_all()
        self.assertEqual([f.close_code for f in client.frames()], [1001])


class CollaboratorTests(SynchronousTestCase):
    """The factory's collaborators are objects that may be passed in."""

    def test_passed_in(self) -> None:
        """A registry, batcher and rate-limited log given to the factory are
        the ones its connections use."""
        from twisted.internet.testing import MemoryReactorClock
        from twisted.logger import Logger

        from wsplugin import WebSocketServerFactory
        from wsplugin._batching import TurnBatcher
        from wsplugin._ratelog import RateLimitedLog
        from wsplugin._registry import Registry
        from wsplugin.testing import ServerHarness

        clock = MemoryReactorClock()
        registry, batcher = Registry(), TurnBatcher(clock, Logger())
        log = RateLimitedLog(clock, Logger())
        factory = WebSocketServerFactory(
            reactor=clock, registry=registry, batcher=batcher, log_limited=log
        )
        factory.register_handler("*", "/", Recorder(), default_host=True)
        client = ServerHarness(factory).open()
        self.assertIs(factory.batcher, batcher)
        self.assertIs(factory.log_limited, log)
        self.assertEqual(registry.snapshot(), [client.connection])
        self.assertIs(factory.fanout.registry, registry)
