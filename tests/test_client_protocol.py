"""Tests for ``wsplugin.client._protocol``: the Autobahn adapter in memory
(``iosim``), against wsplugin's own server factory or a scripted raw server:
the response head, refusals, invalid 101s, frames, the end of a connection."""

from __future__ import annotations

import struct
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientProtocol as AutobahnClientProtocol,
)
from OpenSSL import SSL
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.client_support import (
    SERVER,
    URL,
    Echo,
    Harness,
    open_conn,
    scripted,
    server_frames,
    upgrade,
)
from tests.helpers import Recorder
from wsplugin._frames import OP_BINARY, OP_PONG, OP_TEXT, encode_frame
from wsplugin.client import HandshakeFailed, TLSFailed, WebSocketClientFactory
from wsplugin.errors import ConnectionClosed, Reject


class HandshakeTests(SynchronousTestCase):
    """Opening handshakes against wsplugin's server and scripted servers."""

    def test_autobahn_options_copied(self) -> None:
        """Every option in Autobahn's client CONFIG_ATTRS reaches the protocol
        from the factory (wsplugin copies them, not Autobahn's pretty-printing
        copy)."""
        _, harness = open_conn(self)
        proto = harness.client_protocol()
        self.assertEqual(proto.CONFIG_ATTRS, [])
        names = AutobahnClientProtocol.CONFIG_ATTRS
        self.assertIn("maxMessagePayloadSize", names)
        for name in names:
            self.assertIn(name, vars(proto), name)
            self.assertEqual(getattr(proto, name), getattr(proto.factory, name), name)

    def test_subprotocol(self) -> None:
        """The server's choice among the offered subprotocols is ``subprotocol``."""
        harness = Harness(Echo(), subprotocols=("chat.v2",))
        conn = self.successResultOf(
            harness.connect(subprotocols=["chat.v1", "chat.v2"])
        )
        self.assertEqual(conn.subprotocol, "chat.v2")
        self.assertEqual(conn.request.protocols, ("chat.v1", "chat.v2"))

    def test_reject_401(self) -> None:
        """A Reject(401) is HandshakeFailed with status, headers and body."""

        class Locked:
            def allow(self, conn: Any) -> Any:
                return Reject(401, "Unauthorized", [("WWW-Authenticate", "Basic")])

        harness = Harness(Locked())
        error = self.failureResultOf(harness.connect(), HandshakeFailed).value
        self.assertEqual((error.status, error.reason), (401, "Unauthorized"))
        self.assertEqual(error.headers["www-authenticate"], "Basic")
        self.assertEqual(error.body, b"")
        assert error.response is not None
        self.assertEqual(error.response.status, 401)
        self.assertEqual(str(error), f"handshake with {URL} failed: 401 Unauthorized")

    def test_error_bodies(self) -> None:
        """The body of an error answer is read by Content-Length, chunked, or
        until the server closes, and capped at ``max_error_body``."""
        head = b"HTTP/1.1 403 Forbidden\r\nX-Why: nope\r\n"
        cases = [
            (head + b"Content-Length: 5\r\n\r\nhello", False, {}, b"hello"),
            (
                head + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                False,
                {},
                b"abc",
            ),
            (head + b"\r\nuntil the end", True, {}, b"until the end"),
            (
                head + b"Content-Length: 1000\r\n\r\n" + b"x" * 1000,
                False,
                {"max_error_body": 10},
                b"x" * 10,
            ),
        ]
        for answer, close, options, body in cases:
            harness = Harness(server_factory=scripted(answer, close))
            error = self.failureResultOf(
                harness.connect(**options), HandshakeFailed
            ).value
            self.assertEqual((error.status, error.body), (403, body))
            self.assertEqual(error.headers["x-why"], "nope")
            self.assertTrue(harness.endpoint.clients[0].disconnecting)

    def test_invalid_101(self) -> None:
        """A 101 with a wrong accept key fails with status 101 and a detail."""
        harness = Harness(server_factory=scripted(lambda k: upgrade(k, b"wrong=")))
        error = self.failureResultOf(harness.connect(), HandshakeFailed).value
        self.assertEqual(error.status, 101)
        self.assertIn("Sec-WebSocket-Accept", error.detail)
        self.assertIn("invalid 101 response", str(error))

    def test_no_http_answer(self) -> None:
        """Garbage, or a close before any answer, fails with status None."""
        harness = Harness(server_factory=scripted(b"SSH-2.0-OpenSSH\r\n\r\n"))
        error = self.failureResultOf(harness.connect(), HandshakeFailed).value
        self.assertIsNone(error.status)
        self.assertIsNone(error.response)
        self.assertIn("SSH-2.0", error.detail)
        harness = Harness(server_factory=scripted(b"", close=True))
        error = self.failureResultOf(harness.connect(), HandshakeFailed).value
        self.assertIn("closed before the server answered", str(error))

    def test_tls_failure(self) -> None:
        """A TLS error ending the connection before the handshake is TLSFailed."""
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        factory = WebSocketClientFactory(
            "wss://localhost:8443/", reactor=MemoryReactorClock()
        )
        proto = factory.buildProtocol(SERVER)
        proto.makeConnection(StringTransport())
        proto.connectionLost(Failure(error))
        failure = self.failureResultOf(proto.opened, TLSFailed)
        self.assertEqual(
            str(failure.value),
            "TLS handshake with localhost:8443 failed: certificate verify failed",
        )

    def test_factory(self) -> None:
        """The factory keeps the URL as given and parsed; Autobahn gets the
        normalised URL; its timers run on the given reactor."""
        clock = MemoryReactorClock()
        factory = WebSocketClientFactory("ws://[::1]:9000/a b?x=1", reactor=clock)
        self.assertEqual(factory.url, "ws://[::1]:9000/a b?x=1")
        self.assertEqual(factory.target.resource, "/a%20b?x=1")
        self.assertIs(factory.clock, clock)
        self.assertEqual(factory.config.max_queue, 32)


class FrameTests(SynchronousTestCase):
    """Frames in and out, and how a connection ends."""

    def test_frames_are_masked(self) -> None:
        """Every frame the client writes has the MASK bit (RFC 6455 5.3)."""
        conn, harness = open_conn(self)
        transport = harness.endpoint.clients[0]
        conn.send_text("x" * 200)
        conn.ping(b"p")
        data = b"".join(transport.stream)
        self.assertEqual(data[0], 0x81)
        self.assertTrue(data[1] & 0x80)
        self.assertEqual(data[1] & 0x7F, 126)
        ping = data[4 + 4 + 200 :]
        self.assertEqual((ping[0], ping[1]), (0x89, 0x81))
        harness.flush()

    def test_raw_frames_from_server(self) -> None:
        """Fragmented, binary and control frames from a raw server arrive as
        whole messages and pongs."""
        harness = Harness(server_factory=scripted(upgrade))
        conn = self.successResultOf(harness.connect())
        server_frames(
            harness,
            encode_frame(OP_TEXT, b"ab", fin=False),
            encode_frame(OP_PONG, b"mid"),
            encode_frame(0, b"cd"),
            encode_frame(OP_BINARY, struct.pack("!H", 7)),
        )
        self.assertEqual(self.successResultOf(conn.receive()), "abcd")
        self.assertEqual(self.successResultOf(conn.receive()), b"\x00\x07")
        self.assertEqual(
            self.successResultOf(conn.wait_for_message("pong")).data, b"mid"
        )

    def test_message_too_big(self) -> None:
        """A message over ``max_message_size`` closes with 1009."""
        recorder = Recorder()
        conn, harness = open_conn(self, recorder, max_message_size=100)
        harness.server_conn().send_text("x" * 101)
        harness.flush()
        closes = [e for e in recorder.events if e[0] == "on_close"]
        self.assertEqual([e[1] for e in closes], [1009])
        harness.clock.advance(2)
        harness.flush()
        error = self.failureResultOf(conn.receive(), ConnectionClosed).value
        self.assertEqual(error.code, 1009)
        self.assertIn("exceeds", error.reason)

    def test_server_drops_mid_frame(self) -> None:
        """A TCP drop in the middle of a frame ends the connection with 1006."""

        def half_frame(key: bytes) -> bytes:
            return upgrade(key) + encode_frame(OP_TEXT, b"x" * 50)[:20]

        harness = Harness(server_factory=scripted(half_frame))
        conn = self.successResultOf(harness.connect())
        d = conn.receive()
        harness.endpoint.servers[0].transport.loseConnection()
        harness.flush()
        self.assertEqual(self.failureResultOf(d, ConnectionClosed).value.code, 1006)

    def test_abort_drain_buffered(self) -> None:
        """``drain`` waits while the transport is full; ``abort`` drops at once."""
        conn, harness = open_conn(self)
        protocol = harness.client_protocol()
        self.assertEqual(self.successResultOf(conn.drain()), None)
        self.assertIsInstance(conn.buffered_amount, int)
        protocol.pauseProducing()
        d = conn.drain()
        self.assertNoResult(d)
        protocol.resumeProducing()
        self.successResultOf(d)
        protocol.pauseProducing()
        pending = conn.drain()
        conn.abort()
        harness.flush()
        self.failureResultOf(pending, ConnectionClosed)
        self.assertEqual(conn.close_code, 1006)
        self.failureResultOf(conn.drain(), ConnectionClosed)

    def test_lost_listener_runs_before_receivers_wake(self) -> None:
        """A lost listener sees the connection closed, with its code, while
        a pending ``receive`` has not failed yet."""
        conn, harness = open_conn(self)
        pending = conn.receive()
        seen: list[Any] = []

        def listener(c: Any, reason: Failure) -> None:
            seen.append((c is conn, c.state.value, c.close_code, pending.called))

        harness.client_protocol().add_lost_listener(listener)
        harness.server_conn().abort()
        harness.flush()
        self.assertEqual(seen, [(True, "closed", 1006, False)])
        self.failureResultOf(pending, ConnectionClosed)
