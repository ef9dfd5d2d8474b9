"""wsplugin._handshaking: the lean opening handshake gives Autobahn's
answers, from one parse of the head and without debug formatting."""

from __future__ import annotations

from typing import Any

import autobahn.twisted.websocket as autobahn_twisted
import autobahn.websocket.protocol as autobahn_protocol
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin._handshaking import (
    LeanHandshake,
    accept_key,
    plain_request,
    response_prefix,
)
from wsplugin.handshake import parse_request_head
from wsplugin.testing import client_frame, handshake_request

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class Spy:
    """Records whether the lean path took each handshake."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.taken: list[bool] = []
        lean = LeanHandshake.lean_handshake

        def spy(protocol: Any, head: Any) -> bool:
            result = lean(protocol, head)
            self.taken.append(result)
            return result

        case.patch(LeanHandshake, "lean_handshake", spy)


def answer(
    case: SynchronousTestCase, request: bytes, lean: bool, **options: Any
) -> bytes:
    """The server's bytes for ``request``, with or without the lean path."""
    if not lean:
        case.patch(LeanHandshake, "lean_handshake", lambda self, head: False)
        case.patch(LeanHandshake, "lean_succeed", lambda self, res: False)
    _, harness = make(Recorder(), **options)
    client = harness.connect()
    client.send_raw(request)
    return bytes(client.transport.value())


class PlainRequestTests(SynchronousTestCase):
    """Which requests are plain enough for the lean path."""

    def head(self, **kw: Any) -> Any:
        return parse_request_head(handshake_request("/", key=KEY, **kw))

    def test_plain(self) -> None:
        """A client's usual request: headers, key, no port."""
        headers, key, port = plain_request(self.head())  # type: ignore[misc]
        self.assertEqual((key, port, headers["host"]), (KEY, None, "localhost"))

    def test_port(self) -> None:
        """A port in Host is parsed (IPv6 literals keep their colons)."""
        req = parse_request_head(handshake_request("/", host="h:8080", key=KEY))
        self.assertEqual(plain_request(req)[2], 8080)  # type: ignore[index]
        req = parse_request_head(handshake_request("/", host="[::1]", key=KEY))
        self.assertIsNone(plain_request(req)[2])  # type: ignore[index]

    def test_not_plain(self) -> None:
        """Anything unusual is left to Autobahn."""
        cases = [
            dict(method="POST"),
            dict(version="8"),
            dict(version=None),
            dict(upgrade=False),
            dict(key="short=="),
            dict(key="dGhlIHNhbXBsZSBub25jZQ=!"),
            dict(headers=[("Origin", "http://localhost")]),
            dict(headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]),
            dict(headers=[("Host", "again")]),
            dict(headers=[("X-A", "1"), ("x-a", "2")]),
        ]
        for kw in cases:
            key = kw.pop("key", KEY)
            req = parse_request_head(handshake_request("/", key=key, **kw))
            self.assertIsNone(plain_request(req), kw)
        req = parse_request_head(handshake_request("/", host="h:x", key=KEY))
        self.assertIsNone(plain_request(req))

    def test_accept_key(self) -> None:
        """RFC 6455 section 1.3's example."""
        self.assertEqual(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


class SameAnswerTests(SynchronousTestCase):
    """The lean path answers byte for byte as Autobahn's does."""

    def test_plain_101(self) -> None:
        """The 101 of a plain request, lean path taken."""
        spy = Spy(self)
        request = handshake_request("/?a=1", key=KEY)
        got = answer(self, request, True)
        self.assertEqual(spy.taken, [True])
        self.assertEqual(got, answer(self, request, False))
        self.assertIn(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", got)

    def test_subprotocol_and_server_header(self) -> None:
        """A chosen subprotocol and a configured Server header."""
        request = handshake_request(
            "/", key=KEY, headers=[("Sec-WebSocket-Protocol", "x, chat")]
        )
        options = dict(subprotocols=["chat"], server_header="test/1")
        got = answer(self, request, True, **options)
        self.assertIn(b"Sec-WebSocket-Protocol: chat\r\n", got)
        self.assertIn(b"Server: test/1\r\n", got)
        self.assertEqual(got, answer(self, request, False, **options))

    def test_refusals_unchanged(self) -> None:
        """Requests the lean path leaves to Autobahn get Autobahn's status."""
        cases = [
            handshake_request("/", key=KEY, version="8"),
            handshake_request("/", key=KEY, upgrade=False),
            handshake_request("/", key="abc"),
            handshake_request("/", key=KEY, method="POST"),
            handshake_request(
                "/", key=KEY, headers=[("Sec-WebSocket-Protocol", "a, a")]
            ),
            handshake_request("/", key=KEY, host="h:notaport"),
        ]
        for request in cases:
            lean = answer(self, request, True)
            self.assertEqual(
                lean.split(b"\r\n")[0], answer(self, request, False).split(b"\r\n")[0]
            )
            self.assertFalse(lean.startswith(b"HTTP/1.1 101"), request)

    def test_request_seen_by_handler(self) -> None:
        """conn.request from the lean path: path, params, host, protocols."""
        seen: list[Any] = []

        class Handler:
            def allow(self, conn: Any) -> bool:
                seen.append(conn.request)
                return True

        _, harness = make(Handler())
        harness.open(
            "/p?x=1&x=2",
            host="Example.COM:80",
            headers=[("Sec-WebSocket-Protocol", "a, b")],
        )
        request = seen[0]
        self.assertEqual(request.path, "/p")
        self.assertEqual(request.params, {"x": ["1", "2"]})
        self.assertEqual(request.host, "example.com")
        self.assertEqual(request.protocols, ("a", "b"))

    def test_frames_after_the_head(self) -> None:
        """Frames in the same read as a lean handshake are delivered."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.connect()
        client.send_raw(handshake_request("/", key=KEY) + client_frame(1, b"hi"))
        self.assertEqual(rec.events[-1], ("on_message", "hi"))

    def test_async_allow(self) -> None:
        """An allow() answering later: the 101 waits for it."""
        from twisted.internet.defer import Deferred

        gate: Deferred[bool] = Deferred()

        class Later:
            def allow(self, conn: Any) -> Deferred[bool]:
                return gate

        _, harness = make(Later())
        client = harness.connect()
        client.send_raw(handshake_request("/", key=KEY))
        self.assertEqual(client.transport.value(), b"")
        gate.callback(True)
        self.assertTrue(client.transport.value().startswith(b"HTTP/1.1 101"))


class NoDebugFormattingTests(SynchronousTestCase):
    """No debug argument is formatted per connection."""

    def test_no_pformat_or_hltype(self) -> None:
        """A connection's life calls neither pformat nor hltype."""

        def boom(*args: Any, **kw: Any) -> Any:
            raise AssertionError("formatted a debug argument")

        self.patch(autobahn_protocol, "pformat", boom)
        for module in (autobahn_protocol, autobahn_twisted):
            self.patch(module, "hltype", boom)
            self.patch(module, "hlval", boom)
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_text("x")
        client.send_close(1000)
        harness.flush()
        self.assertEqual(rec.events[-1], ("on_disconnect", True, 1000))

    def test_one_parse_of_the_head(self) -> None:
        """A plain handshake parses its head once, with wsplugin's bounded
        parser; Autobahn's parseHttpHeader is not called."""
        import wsplugin._decision as decision

        def boom(*args: Any, **kw: Any) -> Any:
            raise AssertionError("Autobahn parsed the head again")

        parses: list[bytes] = []

        def counted(data: bytes, *args: Any) -> Any:
            parses.append(data)
            return parse_request_head(data, *args)

        self.patch(autobahn_protocol, "parseHttpHeader", boom)
        self.patch(decision, "parse_request_head", counted)
        rec = Recorder()
        _, harness = make(rec)
        client = harness.connect()
        client.send_raw(handshake_request("/", key=KEY))
        self.assertIn(b" 101 ", bytes(client.transport.value()))
        self.assertEqual(len(parses), 1)
        self.assertEqual(rec.names()[-1], "on_open")

    def test_connection_count(self) -> None:
        """The factory's connection count rises and falls as Autobahn's."""
        server, harness = make(Recorder())
        client = harness.open()
        self.assertEqual(server.factory.countConnections, 1)
        client.drop()
        self.assertEqual(server.factory.countConnections, 0)

    def test_prefix_cached(self) -> None:
        """The 101's fixed part is built once per server header set."""
        first = response_prefix("s", {"X-A": "1"})
        self.assertIs(response_prefix("s", {"X-A": "1"}), first)
        self.assertIn("X-A: 1\r\n", first)
