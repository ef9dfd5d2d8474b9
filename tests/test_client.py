"""Tests for ``wsplugin.client``: pure parts with values, the Autobahn adapter
in memory (``iosim``) against wsplugin's own server factory or a scripted raw
server, reconnecting on a fake clock, the chat client's logic, and the
``client`` mode of ``conformance/run.py``. No sockets, no real time.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.helpers import Recorder, make
from wsplugin.apps.chat import Chat
from wsplugin.client import (
    ClientConfig,
    ClientConnection,
    ClientError,
    ConnectFailed,
    HandshakeFailed,
    Message,
    OpenTimeout,
    ReceiveTimeout,
    ReconnectingClient,
    TLSFailed,
    WebSocketClientFactory,
    _Chat,
    _default_endpoint,
    _exit_status,
    _format_message,
    _tls_creator,
    _tls_reason,
    connect,
    decode_chunked,
    main,
    parse_response_head,
    parse_url,
)
from wsplugin.connection import ConnectionState
from wsplugin.errors import (
    ConfigError,
    ConnectionClosed,
    FragmentedSendError,
    InvalidCloseCode,
    Reject,
    WSPluginError,
)
from wsplugin.frames import OP_BINARY, OP_PONG, OP_TEXT, encode_frame

URL = "ws://127.0.0.1:8888/chat"
SERVER = IPv4Address("TCP", "127.0.0.1", 8888)
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------
# In-memory plumbing
# --------------------------------------------------------------------------


class RecordingTransport(iosim.FakeTransport):
    """An iosim transport that remembers whether reading was paused."""

    producer_state = "producing"

    def pauseProducing(self) -> None:
        self.producer_state = "paused"

    def resumeProducing(self) -> None:
        self.producer_state = "producing"


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects each client to a new protocol of ``server_factory`` via iosim."""

    def __init__(self, server_factory: Any, clock: MemoryReactorClock) -> None:
        self.server_factory = server_factory
        self.clock = clock
        self.refuse = False
        self.attempts = 0
        self.pumps: list[iosim.IOPump] = []
        self.clients: list[RecordingTransport] = []
        self.servers: list[Any] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError(string="Connection refused"))
        local = IPv4Address("TCP", "127.0.0.1", 50000 + self.attempts)
        client = factory.buildProtocol(SERVER)
        server = self.server_factory.buildProtocol(local)
        ctransport = RecordingTransport(client, False, local, SERVER)
        stransport = iosim.FakeTransport(server, True, SERVER, local)
        pump = iosim.connect(
            server, stransport, client, ctransport, greet=False, clock=self.clock
        )
        self.pumps.append(pump)
        self.clients.append(ctransport)
        self.servers.append(server)
        return succeed(client)

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


def accept_key(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept for a Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade(key: bytes, accept: bytes | None = None) -> bytes:
    """A valid 101 response to a request with ``key``."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
        + (accept if accept is not None else accept_key(key))
        + b"\r\n\r\n"
    )


class ScriptedServer(Protocol):
    """A raw server: answers the request head with ``script(key)``'s bytes,
    then closes if ``close`` says so. ``requests`` collects what it read."""

    def __init__(self, script: Any, close: bool = False) -> None:
        self.script = script
        self.close = close
        self.buffer = b""
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.answered or b"\r\n\r\n" not in self.buffer:
            return
        self.answered = True
        key = b""
        for line in self.buffer.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        answer = self.script(key) if callable(self.script) else self.script
        if answer:
            self.transport.write(answer)
        if self.close:
            self.transport.loseConnection()


class scripted(Factory):
    """A factory of :class:`ScriptedServer` protocols."""

    def __init__(self, script: Any, close: bool = False) -> None:
        self.script = script
        self.close = close

    def buildProtocol(self, addr: Any) -> ScriptedServer:
        protocol = ScriptedServer(self.script, self.close)
        protocol.factory = self
        return protocol


class Echo(Recorder):
    """Records events and echoes every message."""

    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        conn.send_text(text)

    def on_binary(self, conn: Any, data: bytes) -> None:
        super().on_binary(conn, data)
        conn.send_binary(data)


class Harness:
    """A wsplugin server (or a raw factory) and a client endpoint, in memory."""

    def __init__(self, handler: Any = None, server_factory: Any = None, **opts: Any):
        self.clock = MemoryReactorClock()
        if server_factory is None:
            server, harness = make(handler, **opts)
            self.server = server
            self.clock = harness.clock
            server_factory = server.factory
        self.endpoint = MemoryEndpoint(server_factory, self.clock)

    def connect(self, url: str = URL, **options: Any) -> Deferred[ClientConnection]:
        d = connect(url, reactor=self.clock, endpoint=self.endpoint, **options)
        self.flush()
        return d

    def flush(self) -> None:
        self.endpoint.flush()

    def server_conn(self, index: int = -1) -> Any:
        return self.endpoint.servers[index].connection


def open_conn(
    test: SynchronousTestCase, handler: Any = None, **options: Any
) -> tuple[ClientConnection, Harness]:
    """An open client connection to an in-memory wsplugin server."""
    harness = Harness(handler if handler is not None else Echo())
    conn = test.successResultOf(harness.connect(**options))
    return conn, harness


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------


class URLTests(SynchronousTestCase):
    """``parse_url`` accepts WebSocket URLs only, with clear errors."""

    def test_defaults(self) -> None:
        """Ports default by scheme; the path defaults to ``/``."""
        url = parse_url("ws://example.com")
        self.assertEqual((url.secure, url.host, url.port), (False, "example.com", 80))
        self.assertEqual(url.resource, "/")
        secure = parse_url("wss://example.com/x")
        self.assertEqual((secure.secure, secure.port, secure.path), (True, 443, "/x"))

    def test_ipv6_query_and_params(self) -> None:
        """IPv6 hosts lose their brackets except in the Host header; the
        query stays on the request line and parses into params."""
        url = parse_url("ws://[::1]:9000/a?x=1&x=2&y=")
        self.assertEqual(url.host, "::1")
        self.assertEqual(url.host_header, "[::1]")
        self.assertEqual(url.resource, "/a?x=1&x=2&y=")
        self.assertEqual(url.params, {"x": ["1", "2"], "y": [""]})
        self.assertEqual(str(url), "ws://[::1]:9000/a?x=1&x=2&y=")

    def test_non_ascii_is_encoded(self) -> None:
        """A non-ASCII path is percent-encoded, a non-ASCII host IDNA-encoded."""
        url = parse_url("ws://bücher.example/ä b")
        self.assertEqual(url.host, "xn--bcher-kva.example")
        self.assertEqual(url.path, "/%C3%A4%20b")

    def test_rejected(self) -> None:
        """Other schemes, no host, fragments, credentials and bad ports are
        ConfigErrors (ValueErrors) whose message names the problem."""
        cases = {
            "http://example.com/": "ws:// or wss://",
            "ws:///path": "no host",
            "ws://example.com/#frag": "fragment",
            "ws://user:pw@example.com/": "header",
            "ws://example.com:99999/": "Port out of range",
        }
        for url, words in cases.items():
            with self.assertRaises(ConfigError) as caught:
                parse_url(url)
            self.assertIn(words, str(caught.exception))
            self.assertIsInstance(caught.exception, ValueError)

    def test_connect_rejects_bad_url_at_once(self) -> None:
        """``connect`` raises for a bad URL before returning a Deferred."""
        self.assertRaises(ConfigError, connect, "tcp://x", reactor=MemoryReactorClock())


class ResponseHeadTests(SynchronousTestCase):
    """The response head and error body parsers."""

    def test_parse(self) -> None:
        """Status, reason and every header (repeated ones too) are read."""
        data = (
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\n"
            b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nbody"
        )
        head = parse_response_head(data)
        assert head is not None
        self.assertEqual((head.status, head.reason), (401, "Unauthorized"))
        self.assertEqual(
            [v for k, v in head.headers if k == "Set-Cookie"], ["a=1", "b=2"]
        )
        self.assertEqual(data[head.length :], b"body")

    def test_incomplete_and_invalid(self) -> None:
        """No blank line yet gives None; a non-HTTP head is a ValueError."""
        self.assertIsNone(parse_response_head(b"HTTP/1.1 101 OK\r\nUpgrade: x\r\n"))
        self.assertRaises(ValueError, parse_response_head, b"SSH-2.0-x\r\n\r\n")
        self.assertRaises(ValueError, parse_response_head, b"HTTP/1.1 2 x\r\n\r\n")
        self.assertRaises(
            ValueError, parse_response_head, b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"
        )

    def test_chunked(self) -> None:
        """Chunked bodies decode, wait for more, and stop at the limit."""
        data = b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
        self.assertEqual(decode_chunked(data, 100), (b"abcde", True))
        self.assertEqual(decode_chunked(data[:12], 100), (b"abc", False))
        self.assertEqual(decode_chunked(data, 4), (b"abcd", True))
        self.assertEqual(decode_chunked(b"zz\r\n", 100), (b"", True))

    @settings(max_examples=50, derandomize=True)
    @given(st.lists(st.binary(min_size=1, max_size=40), max_size=8))
    def test_chunked_round_trip(self, chunks: list[bytes]) -> None:
        """Any chunking of a body decodes back to the body."""
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        encoded += b"0\r\n\r\n"
        self.assertEqual(decode_chunked(encoded, 10_000), (b"".join(chunks), True))


class ConfigTests(SynchronousTestCase):
    """``ClientConfig`` validates options when it is built."""

    def test_headers_forms_and_merging(self) -> None:
        """Mappings and pairs are accepted; repeated names are joined, Cookie
        with ``; ``; Origin and User-Agent replace the defaults."""
        config = ClientConfig(
            headers=[
                ("Cookie", "a=1"),
                ("cookie", "b=2"),
                ("X-Tag", "1"),
                ("X-Tag", "2"),
                ("Origin", "https://app.example"),
                ("User-Agent", "probe/1"),
            ]
        )
        headers, origin, agent = config.request_headers()
        self.assertEqual(headers, {"Cookie": "a=1; b=2", "X-Tag": "1, 2"})
        self.assertEqual((origin, agent), ("https://app.example", "probe/1"))
        self.assertEqual(ClientConfig(headers={"A": "b"}).headers, (("A", "b"),))

    def test_bad_headers(self) -> None:
        """Header injection, non-token names and handshake headers are refused."""
        for headers, words in [
            ({"X": "a\r\nEvil: 1"}, "control"),
            ({"Bad Name": "x"}, "invalid request header name"),
            ({"Sec-WebSocket-Protocol": "x"}, "subprotocols="),
            ({"Host": "x"}, "set by the handshake"),
            ("X: y", "mapping"),
            ([("only-name",)], "pairs"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                ClientConfig(headers=headers)
            self.assertIn(words, str(caught.exception))

    def test_limits_and_tls_options(self) -> None:
        """Non-positive timeouts, negative sizes and conflicting TLS options
        are refused; 0 turns a size limit off on purpose."""
        self.assertEqual(ClientConfig(max_message_size=0).max_message_size, 0)
        for options in [
            {"open_timeout": 0},
            {"close_timeout": -1},
            {"max_message_size": -1},
            {"max_queue": 0},
            {"subprotocols": ["a b"]},
            {"tls": object(), "ca_file": "x.pem"},
            {"ca_file": "x.pem", "trust": b"x"},
        ]:
            self.assertRaises(ConfigError, ClientConfig, **options)
        self.assertEqual(ClientConfig(subprotocols="chat").subprotocols, ("chat",))

    def test_connect_option_errors(self) -> None:
        """Unknown options, options besides ``config=`` and TLS options for a
        ws:// URL raise at once."""
        clock = MemoryReactorClock()
        self.assertRaises(ConfigError, connect, URL, reactor=clock, colour="red")
        self.assertRaises(
            ConfigError, connect, URL, reactor=clock, config=ClientConfig(), headers={}
        )
        with self.assertRaises(ConfigError) as caught:
            connect(URL, reactor=clock, ca_file="ca.pem")
        self.assertIn("wss://", str(caught.exception))

    def test_tls_creator(self) -> None:
        """``trust=`` takes a trustme CA or PEM; ``ca_file=`` a PEM file; a
        file without certificates is an error."""
        ca = trustme.CA()
        url = parse_url("wss://localhost:8443/")
        for trust in (ca, ca.cert_pem.bytes(), ca.cert_pem.bytes().decode()):
            self.assertIsNotNone(_tls_creator(url, ClientConfig(trust=trust)))
        path = Path(self.mktemp())
        ca.cert_pem.write_to_path(str(path))
        self.assertIsNotNone(_tls_creator(url, ClientConfig(ca_file=path)))
        path.write_text("nothing here")
        self.assertRaises(ConfigError, _tls_creator, url, ClientConfig(ca_file=path))
        self.assertRaises(ConfigError, _tls_creator, url, ClientConfig(trust=42))
        creator = object()
        self.assertIs(_tls_creator(url, ClientConfig(tls=creator)), creator)

    def test_default_endpoint(self) -> None:
        """IP literals connect without a resolver; names use HostnameEndpoint."""
        clock = MemoryReactorClock()
        config = ClientConfig()
        self.assertIsInstance(
            _default_endpoint(clock, parse_url("ws://127.0.0.1/"), config),
            TCP4ClientEndpoint,
        )
        self.assertIsInstance(
            _default_endpoint(clock, parse_url("ws://[::1]/"), config),
            TCP6ClientEndpoint,
        )
        self.assertIsInstance(
            _default_endpoint(clock, parse_url("ws://localhost/"), config),
            HostnameEndpoint,
        )

    def test_errors_derive_from_wsplugin_error(self) -> None:
        """Every client error is a WSPluginError; timeouts are TimeoutErrors."""
        for error in (
            ConnectFailed("h", 1, "r"),
            TLSFailed("h", 1, "r"),
            OpenTimeout("h", 1, "r"),
            HandshakeFailed("ws://h/", 401, "Unauthorized"),
            ReceiveTimeout("x"),
        ):
            self.assertIsInstance(error, ClientError)
            self.assertIsInstance(error, WSPluginError)
        self.assertIsInstance(OpenTimeout("h", 1, "r"), TimeoutError)
        self.assertIsInstance(ReceiveTimeout("x"), TimeoutError)
        self.assertEqual(
            str(ConnectFailed("::1", 80, "Connection refused")),
            "cannot connect to [::1]:80: Connection refused",
        )


# --------------------------------------------------------------------------
# Handshake, in memory
# --------------------------------------------------------------------------


class HandshakeTests(SynchronousTestCase):
    """Opening handshakes against wsplugin's server and scripted servers."""

    def test_open_response_and_custom_headers(self) -> None:
        """Custom headers reach the server; the 101's headers (two Set-Cookie)
        reach the client (FPC OnHandshakeSuccess)."""
        seen = {}

        class Cookies(Echo):
            def allow(self, conn: Any) -> Any:
                seen["token"] = conn.request.headers.get("x-token")
                seen["cookie"] = conn.request.headers.get("cookie")
                conn.response_headers += [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
                return True

        conn, _ = open_conn(
            self, Cookies(), headers={"X-Token": "t0k", "Cookie": "sid=9"}
        )
        self.assertEqual(seen, {"token": "t0k", "cookie": "sid=9"})
        self.assertEqual(conn.state, ConnectionState.OPEN)
        self.assertTrue(conn.is_open)
        self.assertEqual(conn.response.status, 101)
        self.assertEqual(conn.response.headers.get_all("set-cookie"), ["a=1", "b=2"])
        self.assertIn(("Set-Cookie", "b=2"), conn.response_headers)
        self.assertEqual(conn.request.headers["X-Token"], "t0k")
        self.assertEqual(conn.request.path, "/chat")
        self.assertEqual(conn.request.peer, SERVER)
        self.assertIn("ws://127.0.0.1:8888/chat", repr(conn))

    def test_autobahn_options_copied(self) -> None:
        """Every option in Autobahn's client CONFIG_ATTRS reaches the protocol
        from the factory (wsplugin copies them, not Autobahn's pretty-printing
        copy)."""
        conn, _ = open_conn(self)
        proto = conn._protocol
        self.assertEqual(proto.CONFIG_ATTRS, [])
        self.assertIn("maxMessagePayloadSize", proto._OPTION_NAMES)
        for name in proto._OPTION_NAMES:
            self.assertIn(name, vars(proto), name)
            self.assertEqual(getattr(proto, name), getattr(proto.factory, name), name)

    def test_subprotocol(self) -> None:
        """The server's choice among the offered subprotocols is ``protocol``."""
        harness = Harness(Echo(), subprotocols=("chat.v2",))
        conn = self.successResultOf(
            harness.connect(subprotocols=["chat.v1", "chat.v2"])
        )
        self.assertEqual(conn.protocol, "chat.v2")
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

    def test_open_timeout(self) -> None:
        """A server that never answers: OpenTimeout after ``open_timeout``,
        and the connection is dropped."""
        harness = Harness(server_factory=scripted(b""))
        d = harness.connect(open_timeout=3)
        self.assertNoResult(d)
        harness.clock.advance(3)
        error = self.failureResultOf(d, OpenTimeout).value
        self.assertIsInstance(error, ConnectFailed)
        self.assertIn("not open within 3 seconds", str(error))
        self.assertTrue(harness.endpoint.clients[0].disconnecting)
        harness.flush()  # the late failure of the attempt is swallowed

    def test_refused(self) -> None:
        """A refused TCP connection is ConnectFailed with a one-line message."""
        harness = Harness(Echo())
        harness.endpoint.refuse = True
        error = self.failureResultOf(harness.connect(), ConnectFailed).value
        self.assertEqual(
            str(error), "cannot connect to 127.0.0.1:8888: Connection refused"
        )

    def test_default_endpoint_connects_tcp(self) -> None:
        """Without ``endpoint=``, connect() dials TCP to the URL's address."""
        clock = MemoryReactorClock()
        d = connect("ws://127.0.0.1:9/x", reactor=clock)
        host, port, *_ = clock.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 9))
        iosim.ConnectionCompleter(clock).failOnce(
            Failure(ConnectionRefusedError(string="Connection refused"))
        )
        self.failureResultOf(d, ConnectFailed)

    def test_cancel(self) -> None:
        """Cancelling the Deferred aborts the attempt."""
        harness = Harness(server_factory=scripted(b""))
        d = harness.connect()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(harness.endpoint.clients[0].disconnecting)
        harness.flush()

    def test_tls_failure(self) -> None:
        """A TLS error ending the connection before the handshake is TLSFailed."""
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(_tls_reason(error), "certificate verify failed")
        self.assertIsNone(_tls_reason(ConnectionDone()))
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


# --------------------------------------------------------------------------
# Messages, in memory
# --------------------------------------------------------------------------


def server_frames(harness: Harness, *frames: bytes) -> None:
    """Write raw frames from the server side, then pump."""
    harness.endpoint.servers[-1].transport.write(b"".join(frames))
    harness.flush()


class MessagingTests(SynchronousTestCase):
    """The Connection API on the client side."""

    def test_round_trip(self) -> None:
        """Text and binary go out and come back; ``send`` picks by type."""
        conn, harness = open_conn(self)
        conn.send_text("héllo")
        conn.send_binary(b"\x00\x01")
        conn.send("str")
        conn.send(b"bytes")
        harness.flush()
        got = [self.successResultOf(conn.receive()) for _ in range(4)]
        self.assertEqual(got, ["héllo", b"\x00\x01", "str", b"bytes"])
        self.assertRaises(TypeError, conn.send, 42)

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

    def test_send_frame(self) -> None:
        """``send_frame`` builds one message from frames; a whole message in
        the middle is refused."""
        conn, harness = open_conn(self)
        conn.send_frame("ab", fin=False)
        self.assertRaises(FragmentedSendError, conn.send_text, "no")
        conn.send_frame(b"cd", fin=True)
        harness.flush()
        self.assertEqual(self.successResultOf(conn.receive()), "abcd")

    def test_wait_for_message_kinds(self) -> None:
        """Pongs are queued for ``wait_for_message``; messages of other kinds
        stay queued, in order, for ``receive``; the default takes any kind."""
        conn, harness = open_conn(self)
        conn.send_text("first")
        conn.ping(b"p1")
        conn.send_binary(b"second")
        conn.ping(b"p2")
        harness.flush()
        pong = self.successResultOf(conn.wait_for_message(kinds=("pong",)))
        self.assertEqual(pong, Message("pong", b"p1"))
        self.assertEqual(self.successResultOf(conn.receive()), "first")
        self.assertEqual(
            self.successResultOf(conn.wait_for_message()), Message("binary", b"second")
        )
        self.assertEqual(self.successResultOf(conn.wait_for_message("pong")).text, "p2")
        self.assertNoResult(conn.wait_for_message("text", timeout=1))

    def test_receive_skips_pongs(self) -> None:
        """A pending ``receive`` is not woken by a pong."""
        conn, harness = open_conn(self)
        d = conn.receive()
        conn.ping(b"p")
        harness.flush()
        self.assertNoResult(d)
        conn.send_text("data")
        harness.flush()
        self.assertEqual(self.successResultOf(d), "data")

    def test_wait_timeout(self) -> None:
        """``wait_for_message(timeout=)`` fails with ReceiveTimeout; a later
        message stays queued."""
        conn, harness = open_conn(self)
        d = conn.wait_for_message(("text",), timeout=2)
        harness.clock.advance(2)
        self.assertIn("within 2s", str(self.failureResultOf(d, ReceiveTimeout).value))
        conn.send_text("late")
        harness.flush()
        self.assertEqual(self.successResultOf(conn.receive()), "late")

    def test_wait_arguments(self) -> None:
        """Unknown kinds and a non-positive timeout are refused."""
        conn, _ = open_conn(self)
        self.assertRaises(ValueError, conn.wait_for_message, ("ping",))
        self.assertRaises(ValueError, conn.wait_for_message, ())
        self.assertRaises(ValueError, conn.wait_for_message, timeout=0)

    def test_pongs_bounded(self) -> None:
        """At most ``max_pongs`` pongs are kept; the oldest go first."""
        conn, harness = open_conn(self, max_pongs=2)
        for n in range(3):
            conn.ping(b"%d" % n)
        harness.flush()
        pongs = [self.successResultOf(conn.wait_for_message("pong")) for _ in "ab"]
        self.assertEqual([p.data for p in pongs], [b"1", b"2"])

    def test_receive_queue_pauses_reading(self) -> None:
        """A full receive queue pauses reading; taking messages resumes it."""
        conn, harness = open_conn(self, max_queue=2)
        transport = harness.endpoint.clients[0]
        conn.send_text("1")
        conn.send_text("2")
        harness.flush()
        self.assertEqual(transport.producer_state, "paused")
        self.successResultOf(conn.receive())
        self.assertEqual(transport.producer_state, "producing")

    def test_waiters_fail_on_close(self) -> None:
        """Pending waits fail with ConnectionClosed when the server closes;
        ``async for`` ends; ``wait_closed`` fires."""
        conn, harness = open_conn(self)
        receiving = conn.receive()
        waiting = conn.wait_for_message("pong", timeout=30)
        closed = conn.wait_closed()
        harness.server_conn().close(1001, "bye")
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        error = self.failureResultOf(receiving, ConnectionClosed).value
        self.assertEqual((error.code, error.reason), (1001, "bye"))
        self.failureResultOf(waiting, ConnectionClosed)
        self.assertIs(self.successResultOf(closed), conn)
        self.assertEqual(conn.state, ConnectionState.CLOSED)
        self.assertRaises(ConnectionClosed, conn.send_text, "late")
        self.failureResultOf(conn.receive(), ConnectionClosed)

    def test_close(self) -> None:
        """``close(code, reason)`` reaches the server; forbidden codes raise."""
        recorder = Echo()
        conn, harness = open_conn(self, recorder)
        self.assertRaises(InvalidCloseCode, conn.close, 1005)
        conn.close(4000, "done")
        self.assertEqual(conn.state, ConnectionState.CLOSING)
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.assertIn(("on_close", 4000, "done"), recorder.events)
        # the code the connection ended with is the one the server sent back
        self.assertEqual(conn.close_code, 1000)
        self.assertEqual(conn.state, ConnectionState.CLOSED)
        conn.close()  # closing a closed connection does nothing

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
        protocol = conn._protocol
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

    def test_ping_payload_limit(self) -> None:
        """Control payloads are at most 125 bytes."""
        conn, _ = open_conn(self)
        self.assertRaises(ValueError, conn.ping, b"x" * 126)
        self.assertRaises(ValueError, conn.pong, b"x" * 126)
        conn.pong(b"unsolicited")

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


# --------------------------------------------------------------------------
# Reconnecting, in memory
# --------------------------------------------------------------------------


class ReconnectTests(SynchronousTestCase):
    """``ReconnectingClient`` on ClientService, with a fake clock."""

    def make(
        self, handler: Any = None, **kw: Any
    ) -> tuple[ReconnectingClient, Harness, list[Any]]:
        harness = Harness(handler if handler is not None else Echo())
        events: list[Any] = []
        kw.setdefault("on_connect", lambda conn: events.append(("connect", conn)))
        client = ReconnectingClient(
            URL,
            reactor=harness.clock,
            endpoint=harness.endpoint,
            on_disconnect=lambda conn: events.append(("disconnect", conn.close_code)),
            initial_delay=1.0,
            factor=2.0,
            jitter=lambda: 0.0,
            **kw,
        )
        return client, harness, events

    def stop(self, client: ReconnectingClient, harness: Harness) -> None:
        """Stop the client, completing its closing handshake."""
        stopping = client.stop()
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.successResultOf(stopping)

    def test_reconnects_after_drop(self) -> None:
        """After the connection drops, the client connects again after the
        backoff delay, and ``on_connect`` runs for each connection."""
        client, harness, events = self.make()
        client.start()
        harness.flush()
        first = self.successResultOf(client.when_connected())
        self.assertIs(client.connection, first)
        self.assertEqual(events, [("connect", first)])
        harness.server_conn().abort()
        harness.flush()
        self.assertEqual(events[-1], ("disconnect", 1006))
        self.assertIsNone(client.connection)
        pending = client.when_connected()
        self.assertNoResult(pending)
        harness.clock.advance(2.0)  # backoff: 1.0 * 2.0 ** 1
        harness.flush()
        second = self.successResultOf(pending)
        self.assertIsNot(second, first)
        self.assertEqual(client.connections_made, 2)
        self.assertTrue(second.is_open)
        second.send_text("again")
        harness.flush()
        self.assertEqual(self.successResultOf(second.receive()), "again")

    def test_receive_loop_gets_the_next_connection(self) -> None:
        """A loop that asks for the next connection as soon as receiving
        fails gets a new connection, not the one that just ended."""
        client, harness, events = self.make()
        client.start()
        harness.flush()
        first = self.successResultOf(client.when_connected())
        following: list[Deferred[ClientConnection]] = []
        first.receive().addErrback(lambda f: following.append(client.when_connected()))
        harness.server_conn().abort()
        harness.flush()
        self.assertNoResult(following[0])
        harness.clock.advance(2.0)
        harness.flush()
        self.assertIsNot(self.successResultOf(following[0]), first)
        self.stop(client, harness)

    def test_failed_attempts_back_off(self) -> None:
        """Refused connections are retried with growing delays
        (``initial_delay * factor ** n``) until one opens."""
        client, harness, events = self.make()
        harness.endpoint.refuse = True
        failed = client.when_connected(fail_after_failures=1)
        client.start()
        self.failureResultOf(failed, ConnectFailed)
        self.assertEqual(harness.endpoint.attempts, 1)
        harness.clock.advance(1.9)
        self.assertEqual(harness.endpoint.attempts, 1)
        harness.clock.advance(0.1)
        self.assertEqual(harness.endpoint.attempts, 2)
        harness.endpoint.refuse = False
        harness.clock.advance(8.0)
        harness.flush()
        self.assertEqual(harness.endpoint.attempts, 3)
        self.assertTrue(self.successResultOf(client.when_connected()).is_open)
        self.stop(client, harness)

    def test_rejected_handshake_is_a_failure(self) -> None:
        """A handshake the server refuses is reported and retried."""

        class Locked:
            def allow(self, conn: Any) -> Any:
                return Reject(403, "Forbidden")

        client, harness, events = self.make(Locked())
        client.start()
        d = client.when_connected(fail_after_failures=1)
        harness.flush()
        self.assertEqual(self.failureResultOf(d, HandshakeFailed).value.status, 403)
        self.assertEqual(events, [])
        harness.clock.advance(2.0)
        harness.flush()
        self.assertEqual(harness.endpoint.attempts, 2)
        self.successResultOf(client.stop())

    def test_stop_closes_gracefully(self) -> None:
        """``stop`` closes the open connection with 1000 and stops retrying."""
        recorder = Echo()
        client, harness, events = self.make(recorder)
        client.start()
        harness.flush()
        stopping = client.stop()
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.successResultOf(stopping)
        self.assertIn(("on_close", 1000, ""), recorder.events)
        self.assertEqual(events[-1], ("disconnect", 1000))
        harness.clock.advance(100)
        self.assertEqual(harness.endpoint.attempts, 1)
        self.failureResultOf(client.when_connected(), CancelledError)
        self.successResultOf(client.stop())

    def test_on_connect_failure_closes_1011(self) -> None:
        """An ``on_connect`` that raises is logged; the connection is closed
        with 1011 and made again later."""
        recorder = Echo()

        def broken(conn: Any) -> None:
            raise RuntimeError("boom")

        client, harness, events = self.make(recorder, on_connect=broken)
        client.start()
        harness.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn(("on_close", 1011, "on_connect failed"), recorder.events)
        # the code the connection ended with is the server's reply
        self.assertEqual(events[-1], ("disconnect", 1000))
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(harness.endpoint.attempts, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.stop(client, harness)

    def test_loss_during_async_on_connect(self) -> None:
        """A connection lost while an async ``on_connect`` runs is reported to
        ClientService only after it finished (no state-machine error)."""
        gate: Deferred[None] = Deferred()
        client, harness, events = self.make(on_connect=lambda conn: gate)
        client.start()
        harness.flush()
        ready = client.when_connected()
        self.assertNoResult(ready)
        harness.server_conn().abort()
        harness.flush()
        gate.callback(None)
        self.successResultOf(ready)
        harness.clock.advance(0)
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(harness.endpoint.attempts, 2)
        self.assertEqual(client.connections_made, 2)
        self.stop(client, harness)

    def test_arguments(self) -> None:
        """Bad backoff settings and non-callable hooks are refused."""
        clock = MemoryReactorClock()
        self.assertRaises(
            ConfigError,
            ReconnectingClient,
            URL,
            reactor=clock,
            initial_delay=9,
            max_delay=1,
        )
        self.assertRaises(TypeError, ReconnectingClient, URL, 42, reactor=clock)
        self.assertRaises(ConfigError, ReconnectingClient, "http://x/", reactor=clock)


# --------------------------------------------------------------------------
# The chat client (python -m wsplugin.client)
# --------------------------------------------------------------------------


class FakeStdio:
    """Stands in for StandardIO: collects output, closes at once."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.output = b""
        self.closed = False
        self.disconnecting = False
        protocol.makeConnection(self)

    def write(self, data: bytes) -> None:
        self.output += data

    def loseConnection(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def lines(self) -> list[str]:
        return self.output.decode().splitlines()

    def type(self, *lines: str) -> None:
        for line in lines:
            self.protocol.dataReceived(line.encode() + b"\n")


class ChatTests(SynchronousTestCase):
    """The chat client's logic, against the chat app in memory."""

    def chat(
        self, handler: Any = None, url: str = URL
    ) -> tuple[_Chat, Harness, list[FakeStdio], io.StringIO]:
        harness = Harness(handler if handler is not None else Chat())
        stdios: list[FakeStdio] = []
        stderr = io.StringIO()

        def stdio_factory(protocol: Any) -> FakeStdio:
            stdios.append(FakeStdio(protocol))
            return stdios[-1]

        chat = _Chat(
            harness.clock, url, {"endpoint": harness.endpoint}, stderr, stdio_factory
        )
        chat.start()
        harness.flush()
        return chat, harness, stdios, stderr

    def test_session(self) -> None:
        """Lines are sent, messages printed, ``ping TEXT`` prints the pong,
        ``exit`` closes with 1000 and exits 0."""
        chat, harness, stdios, stderr = self.chat()
        stdio = stdios[0]
        stdio.type("hello", "ping are you there", "")
        harness.flush()
        stdio.type("exit")
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(
            stdio.lines(),
            [
                "connected to ws://127.0.0.1:8888/chat; type a message, "
                '"ping TEXT" to ping, "exit" to quit',
                "< hello",
                "< [pong] are you there",
                "closed (code 1000)",
            ],
        )
        self.assertEqual(self.successResultOf(chat.done), 0)
        self.assertTrue(stdio.closed)
        self.assertEqual(stderr.getvalue(), "")

    def test_end_of_input_closes(self) -> None:
        """The end of standard input closes like ``exit``."""
        chat, harness, stdios, _ = self.chat()
        stdios[0].protocol.readConnectionLost()
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(self.successResultOf(chat.done), 0)

    def test_interrupt_closes_gracefully(self) -> None:
        """Ctrl-C (reactor shutdown) closes with 1000 and waits for it."""
        recorder = Recorder()
        chat, harness, stdios, _ = self.chat(recorder)
        stopping = chat.shutdown()
        assert stopping is not None
        self.assertNoResult(stopping)
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.successResultOf(stopping)
        self.assertIn(("on_close", 1000, ""), recorder.events)
        self.assertEqual(stdios[0].lines()[-1], "closed (code 1000)")
        self.assertEqual(self.successResultOf(chat.done), 0)
        self.assertIsNone(chat.shutdown())

    def test_server_closes(self) -> None:
        """A close by the server exits 1 with one line on stderr."""
        chat, harness, _, stderr = self.chat()
        harness.server_conn().close(1001, "going away")
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(self.successResultOf(chat.done), 1)
        self.assertEqual(
            stderr.getvalue(),
            "wsplugin-client: the server closed the connection "
            "(code 1001: going away)\n",
        )

    def test_connect_failures(self) -> None:
        """Refused: 2; rejected handshake: 4 with the status; one line each."""

        class Locked:
            def allow(self, conn: Any) -> Any:
                return Reject(401, "Unauthorized")

        chat, harness, stdios, stderr = self.chat(Locked())
        self.assertEqual(self.successResultOf(chat.done), 4)
        self.assertEqual(
            stderr.getvalue(),
            f"wsplugin-client: handshake with {URL} failed: 401 Unauthorized\n",
        )
        self.assertEqual(stdios, [])

    def test_ping_too_long(self) -> None:
        """A ping over 125 bytes is an error line, not an exit."""
        chat, harness, stdios, stderr = self.chat()
        stdios[0].type("ping " + "x" * 130)
        self.assertIn("at most 125 bytes", stderr.getvalue())
        self.assertIsNone(chat.status)

    def test_long_line_dropped(self) -> None:
        """A line over the limit is dropped with an error, in any number of
        reads, without holding it in memory; the next line is sent."""
        chat, harness, stdios, stderr = self.chat()
        protocol = stdios[0].protocol
        protocol.MAX_LENGTH = 10
        protocol.dataReceived(b"x" * 8)
        protocol.dataReceived(b"x" * 8)
        self.assertLessEqual(len(protocol._buffer), 10)
        protocol.dataReceived(b"x" * 8 + b"\nshort\n" + b"y" * 20 + b"\nlast\n")
        harness.flush()
        self.assertEqual(stdios[0].lines()[1:], ["< short", "< last"])
        self.assertEqual(stderr.getvalue().count("ignored"), 2)

    def test_exit_status_and_format(self) -> None:
        """Errors map to the documented exit codes; messages print by kind."""
        self.assertEqual(_exit_status(TLSFailed("h", 1, "x")), 3)
        self.assertEqual(_exit_status(OpenTimeout("h", 1, "x")), 2)
        self.assertEqual(_exit_status(ConnectFailed("h", 1, "x")), 2)
        self.assertEqual(_exit_status(HandshakeFailed("u", 404)), 4)
        self.assertEqual(_format_message(Message("text", "hi")), "< hi")
        self.assertEqual(_format_message(Message("pong", b"p")), "< [pong] p")
        self.assertEqual(
            _format_message(Message("binary", b"\x01\x02")),
            "< [binary, 2 bytes] 0102",
        )

    def test_usage_errors(self) -> None:
        """Bad arguments exit 64 with a one-line error before any connecting."""
        for argv in (["http://x/"], ["-H", "no-colon", "ws://x/"], []):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            self.assertEqual(main(argv), 64)
            self.assertTrue(stderr.getvalue().startswith("wsplugin-client: "))


# --------------------------------------------------------------------------
# conformance/run.py: the client mode
# --------------------------------------------------------------------------


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


CONFORMANCE = Path(__file__).resolve().parent.parent / "conformance"
run = _load("conformance_run", CONFORMANCE / "run.py")
KOSOKU_SKIP = None if importlib.util.find_spec("kosoku") else "kosoku is not installed"


class ConformanceClientModeTests(SynchronousTestCase):
    """The ``client`` mode of the conformance runner (pure parts)."""

    def test_mode_table(self) -> None:
        """``client`` is selectable and run by default, besides the server modes."""
        self.assertNotIn("client", run.MODES)
        self.assertEqual(list(run.ALL_MODES)[-1], "client")
        mode = run.ALL_MODES["client"]
        self.assertIsInstance(mode, run.ClientMode)
        self.assertTrue(mode.compression)
        self.assertEqual(mode.client_args, ("--compression",))
        self.assertEqual(run.parse_args(["--mode", "client"]).mode, ["client"])
        self.assertIsNone(run.parse_args([]).mode)

    def test_commands(self) -> None:
        """kosoku serves on loopback; the echo client is pointed at it."""
        fuzzer = run.fuzzingserver_command(4321, ["1.*", "2.1"], Path("/x/client"))
        self.assertEqual(Path(fuzzer[0]).name, "kosoku")
        self.assertEqual(
            fuzzer[1:],
            [
                "-m",
                "fuzzingserver",
                "127.0.0.1:4321",
                "-o",
                "/x/client",
                "-i",
                "1.*",
                "-i",
                "2.1",
            ],
        )
        client = run.echo_client_command(run.ALL_MODES["client"], 4321)
        self.assertEqual(client[0], sys.executable)
        self.assertEqual(Path(client[1]).name, "echo_client.py")
        self.assertEqual(
            client[2:],
            ["ws://127.0.0.1:4321", "--agent", "wsplugin-client", "--compression"],
        )

    def test_verdicts(self) -> None:
        """Compression is offered, so UNIMPLEMENTED 12.* fails the client mode;
        the JSON digest names the client's options."""
        mode = run.ALL_MODES["client"]
        outcomes = run.parse_index(
            {"wsplugin-client": {"1.1.1": {"behavior": "OK", "behaviorClose": "OK"}}}
        )
        self.assertTrue(run.ModeResult(mode, ["1.1.1"], outcomes).passed)
        self.assertFalse(run.unimplemented_allowed(mode, "12.1.1"))
        digest = run.ModeResult(mode, ["1.1.1"], outcomes).to_json()
        self.assertEqual(digest["client_args"], ["--compression"])

    def test_whole_suite(self) -> None:
        """The client mode selects all 517 cases."""
        ids = run.all_case_ids()
        self.assertEqual(len(run.select_cases(run.ALL_MODES["client"].cases, ids)), 517)

    test_whole_suite.skip = KOSOKU_SKIP  # type: ignore[attr-defined]

    def test_echo_client_arguments(self) -> None:
        """The echo client takes the server URL, an agent and --compression."""
        echo_client = _load("conformance_echo_client", CONFORMANCE / "echo_client.py")
        args = echo_client.parse_args(["ws://127.0.0.1:9001", "--compression"])
        self.assertEqual(
            (args.url, args.agent, args.compression),
            ("ws://127.0.0.1:9001", "wsplugin-client", True),
        )
