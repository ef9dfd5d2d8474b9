"""``wsplugin.client``'s connections over real loopback sockets: messages,
kinds, limits and close codes, against wsplugin's own server, a raw server
that drops mid-frame, and an independent server (``websockets``)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint

from tests.client_support import scripted, upgrade
from tests.integration.client_support import WAIT, ClientTestCase, Echo, bounded
from wsplugin._frames import OP_TEXT, encode_frame
from wsplugin.client import Message, connect
from wsplugin.errors import ConnectionClosed


class WsplugServerTests(ClientTestCase):
    """Messages to and from wsplugin's own WebSocketServer."""

    @inlineCallbacks
    def test_round_trip_headers_and_cookie(self) -> None:
        """Custom headers reach the server; Set-Cookie comes back in the
        response; text and binary messages round-trip."""
        handler = Echo()
        yield self.start_server(handler)
        conn = yield self.open(
            self.url + "/chat?room=1",
            headers={"Authorization": "Bearer t0k", "X-Client": "tests"},
        )
        self.assertEqual(handler.headers[0]["authorization"], "Bearer t0k")
        self.assertEqual(handler.headers[0]["x-client"], "tests")
        self.assertEqual(
            conn.response.headers.get_all("Set-Cookie"), ["session=abc; HttpOnly"]
        )
        conn.send_text("héllo")
        conn.send_binary(b"\x00\xff")
        self.assertEqual((yield bounded(conn.receive())), "héllo")
        self.assertEqual((yield bounded(conn.receive())), b"\x00\xff")

    @inlineCallbacks
    def test_wait_for_message_kinds(self) -> None:
        """wait_for_message returns the kind asked for, pongs included, and
        leaves the others queued for receive()."""
        yield self.start_server(Echo())
        conn = yield self.open(self.url)
        conn.send_text("one")
        yield bounded(conn.wait_for_message(("text",)))  # the echo of "one"
        conn.send_text("two")
        conn.ping(b"are you there")
        pong = yield bounded(conn.wait_for_message(kinds=("pong",)))
        self.assertEqual(pong, Message("pong", b"are you there"))
        self.assertEqual((yield bounded(conn.receive())), "two")
        conn.send_binary(b"three")
        message = yield bounded(conn.wait_for_message(timeout=WAIT))
        self.assertEqual((message.kind, message.data), ("binary", b"three"))

    @inlineCallbacks
    def test_large_messages_and_limit(self) -> None:
        """A 4 MiB message arrives whole; one over max_message_size closes the
        connection with 1009."""
        yield self.start_server(Echo())
        conn = yield self.open(self.url, compression=True)
        conn.send_text("big:4194304")
        self.assertEqual(len((yield bounded(conn.receive()))), 4194304)
        small = yield self.open(self.url, max_message_size=1024)
        small.send_text("big:2048")
        try:
            yield bounded(small.receive())
        except ConnectionClosed as e:
            self.assertEqual(e.code, 1009)
        else:
            self.fail("a message over the limit was delivered")

    @inlineCallbacks
    def test_close_codes(self) -> None:
        """close(4000) reaches the server; a server close ends receive()."""
        handler = Echo()
        yield self.start_server(handler)
        conn = yield self.open(self.url)
        conn.close(4000, "done")
        yield bounded(conn.wait_closed())
        yield self.when(lambda: "on_disconnect" in handler.names())
        self.assertIn(("on_close", 4000, "done"), handler.events)
        self.assertIn(("on_disconnect", True, 4000), handler.events)
        other = yield self.open(self.url)
        pending = other.receive()
        yield self.server.stop()
        try:
            yield bounded(pending)
        except ConnectionClosed as e:
            self.assertEqual(e.code, 1001)
        else:
            self.fail("receive() did not fail after the server closed")


class RawServerTests(ClientTestCase):
    """A server that misbehaves, on a real socket."""

    @inlineCallbacks
    def listen(self, factory: Any) -> Any:
        """Listen on a loopback port with ``factory``; returns the URL."""
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        return f"ws://127.0.0.1:{port.getHost().port}/"

    @inlineCallbacks
    def test_drop_mid_frame(self) -> None:
        """A server that drops the TCP connection in the middle of a frame
        ends the connection with 1006; receive() fails."""

        def half_frame(key: bytes) -> bytes:
            return upgrade(key) + encode_frame(OP_TEXT, b"x" * 100)[:30]

        url = yield self.listen(scripted(half_frame, close=True))
        conn = yield bounded(connect(url))
        try:
            yield bounded(conn.receive())
        except ConnectionClosed as e:
            self.assertEqual(e.code, 1006)
        else:
            self.fail("a partial frame was delivered")
        yield bounded(conn.wait_closed())


class IndependentServerTests(ClientTestCase):
    """Closing by an independent server implementation."""

    @inlineCallbacks
    def test_server_closes(self) -> None:
        """A close from the server ends the message stream with its code."""

        def handler(ws: Any) -> None:
            ws.send("bye soon")
            ws.close(4001, "policy")

        server = self.websockets_server(handler)
        conn = yield self.open(server.url)
        messages = []
        while True:
            try:
                messages.append((yield bounded(conn.receive())))
            except ConnectionClosed as e:
                self.assertEqual((e.code, e.reason), (4001, "policy"))
                break
        self.assertEqual(messages, ["bye soon"])
