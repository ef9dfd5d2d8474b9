"""wsplugin._h2 in memory: HTTP/2 streams on the same-port site keep the
bounds of HTTP/1.1 requests (target check, body size and time, heads
decided later, refusals per stream, the idle connection's timer), driven by
the ``h2`` package's client state machine over a FakeTransport whose TLS
negotiated ``h2``."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.auth_support import Data, capture_logs
from tests.web_support import Body, Echo, site
from wsplugin import WebSocketServer
from wsplugin.auth import ApiKeyAuth, guard
from wsplugin.testing import FakeTransport
from wsplugin.web import EmptyPage


class H2Peer:
    """A client speaking HTTP/2 to a server's listening factory in memory."""

    def __init__(self, server: WebSocketServer) -> None:
        self.clock = server.reactor
        addr = IPv4Address("TCP", "203.0.113.5", 40000)
        self.transport = FakeTransport(self.clock, addr)
        self.transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        protocol = server.listening_factory.buildProtocol(addr)
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.events: list[Any] = []
        self.flush()

    def flush(self) -> None:
        """Send what the client has, then take in what the server wrote."""
        data = self.conn.data_to_send()
        if data and not self.transport.lost:
            self.transport.protocol.dataReceived(data)
        self.clock.advance(0)
        self.clock.advance(0)
        out = self.transport.value()
        self.transport.clear()
        if out:
            self.events += self.conn.receive_data(out)
            extra = self.conn.data_to_send()
            if extra and not self.transport.lost:
                self.transport.protocol.dataReceived(extra)
                self.clock.advance(0)

    def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        end: bool = True,
    ) -> int:
        stream = self.conn.get_next_available_stream_id()
        head = [
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", "localhost"),
            *(headers or []),
        ]
        self.conn.send_headers(stream, head, end_stream=end and not body)
        if body:
            self.conn.send_data(stream, body, end_stream=end)
        self.flush()
        return stream

    def send(self, stream: int, data: bytes, end: bool = False) -> None:
        self.conn.send_data(stream, data, end_stream=end)
        self.flush()

    def status(self, stream: int) -> int:
        for event in self.events:
            if isinstance(event, h2.events.ResponseReceived):
                if event.stream_id == stream:
                    return int(dict(event.headers)[":status"])
        return 0

    def headers(self, stream: int) -> dict[str, str]:
        for event in self.events:
            if isinstance(event, h2.events.ResponseReceived):
                if event.stream_id == stream:
                    return dict(event.headers)
        return {}

    def body(self, stream: int) -> bytes:
        return b"".join(
            e.data
            for e in self.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == stream
        )

    def reset(self, stream: int) -> int | None:
        for event in self.events:
            if isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                return int(event.error_code)
        return None

    def goaway(self) -> bool:
        return any(isinstance(e, h2.events.ConnectionTerminated) for e in self.events)


class StreamTests(SynchronousTestCase):
    """Pages over HTTP/2, and the bounds of each stream."""

    def test_pages_served(self) -> None:
        """A GET over HTTP/2 reaches the resource; the access log has the
        request as HTTP/2 with its query redacted."""
        lines = capture_logs(self)
        server, body = site(Echo())
        server.site.resource._http.putChild(b"page", Data(b"hello", "text/plain"))
        server.site.doStart()  # opens the access log
        self.addCleanup(server.site.doStop)
        peer = H2Peer(server)
        stream = peer.request("GET", "/page?token=s3cret")
        self.assertEqual((peer.status(stream), peer.body(stream)), (200, b"hello"))
        access = [line for line in lines if "HTTP/2" in line]
        self.assertEqual(len(access), 1, lines)
        self.assertIn('"GET /page?[redacted] HTTP/2" 200 5', access[0])
        self.assertFalse([line for line in lines if "s3cret" in line])

    def test_declared_body_over_limit(self) -> None:
        """A declared content-length over the limit: 413 on that stream from
        its head, then a reset with NO_ERROR; the connection goes on."""
        server, body = site(Echo(), max_request_body=100)
        peer = H2Peer(server)
        stream = peer.request(
            "POST", "/form", [("content-length", "1000")], b"x" * 50, end=False
        )
        self.assertEqual((peer.status(stream), peer.reset(stream)), (413, 0))
        self.assertEqual(body.bodies, [])
        other = peer.request("POST", "/form", body=b"fine")
        self.assertEqual((peer.status(other), body.bodies), (200, [b"fine"]))
        self.assertFalse(peer.transport.disconnecting)

    def test_streamed_body_over_limit(self) -> None:
        """Without content-length the body is cut where it crosses the
        limit (413)."""
        server, body = site(Echo(), max_request_body=100)
        peer = H2Peer(server)
        stream = peer.request("POST", "/form", body=b"y" * 60, end=False)
        self.assertEqual(peer.status(stream), 0)
        peer.send(stream, b"y" * 60)
        self.assertEqual((peer.status(stream), peer.reset(stream)), (413, 0))
        self.assertEqual(body.bodies, [])

    def test_slow_body(self) -> None:
        """A body still incomplete request_body_timeout after its head: 408
        on its stream."""
        server, body = site(Echo(), request_body_timeout=5)
        peer = H2Peer(server)
        stream = peer.request("POST", "/form", body=b"ab", end=False)
        server.reactor.advance(4.9)
        peer.flush()
        self.assertEqual(peer.status(stream), 0)
        server.reactor.advance(0.2)
        peer.flush()
        self.assertEqual(peer.status(stream), 408)

    def test_bad_target(self) -> None:
        """A :path that could be read two ways gets 400 on its stream."""
        server, body = site(Echo())
        peer = H2Peer(server)
        stream = peer.request("GET", "/x/../form")
        self.assertEqual(peer.status(stream), 400)

    def test_idle_connection_closed(self) -> None:
        """A connection without a stream for open_handshake_timeout is closed
        with GOAWAY; one whose stream ended gets the time again."""
        server, body = site(Echo(), open_handshake_timeout=10)
        server.site.resource._http.putChild(b"page", Data(b"hi", "text/plain"))
        peer = H2Peer(server)
        server.reactor.advance(9)
        stream = peer.request("GET", "/page")
        self.assertEqual(peer.status(stream), 200)
        server.reactor.advance(9)
        peer.flush()
        self.assertFalse(peer.goaway())
        server.reactor.advance(1)
        peer.flush()
        self.assertTrue(peer.goaway())
        self.assertTrue(peer.transport.disconnecting)

    def test_guard_refuses_from_the_head(self) -> None:
        """guard() on HTTP/2: 401 on the stream before any body, the other
        streams served."""
        server, body = site(Echo())
        server.site.resource._http.putChild(
            b"private", guard(Body(), ApiKeyAuth({"k-1": "ops"}))
        )
        peer = H2Peer(server)
        refused = peer.request("POST", "/private", body=b"z" * 10, end=False)
        self.assertEqual(peer.status(refused), 401)
        allowed = peer.request("POST", "/private", [("x-api-key", "k-1")], b"ok")
        self.assertEqual(peer.status(allowed), 200)


class LaterHeadTests(SynchronousTestCase):
    """A before_request deciding later holds its stream only."""

    def test_other_streams_go_on(self) -> None:
        """While one stream's hook is pending its body waits; another stream
        is answered meanwhile; then the first one completes with its body."""
        pending: list[Deferred[Any]] = []

        def before_request(request: Any) -> Any:
            if request.path == b"/form":
                d: Deferred[Any] = Deferred()
                pending.append(d)
                return d
            return None

        server, body = site(Echo(), before_request=before_request)
        server.site.resource._http.putChild(b"page", Data(b"hi", "text/plain"))
        peer = H2Peer(server)
        slow = peer.request("POST", "/form", body=b"first", end=True)
        fast = peer.request("GET", "/page")
        self.assertEqual((peer.status(slow), peer.status(fast)), (0, 200))
        self.assertEqual(body.bodies, [])
        pending[0].callback(None)
        peer.flush()
        self.assertEqual((peer.status(slow), body.bodies), (200, [b"first"]))

    def test_refusal_answered_from_the_head(self) -> None:
        """A pending hook firing with an EmptyPage refusal answers that
        stream with its status and headers."""
        pending: list[Deferred[Any]] = []

        def before_request(request: Any) -> Deferred[Any]:
            pending.append(Deferred())
            return pending[-1]

        server, body = site(Echo(), before_request=before_request)
        peer = H2Peer(server)
        stream = peer.request("POST", "/form", body=b"data", end=False)
        pending[0].callback(EmptyPage(401, {b"www-authenticate": b"Bearer"}))
        peer.flush()
        self.assertEqual(peer.status(stream), 401)
        self.assertEqual(peer.headers(stream).get("www-authenticate"), "Bearer")
        self.assertEqual(body.bodies, [])

    def test_undecided_hook(self) -> None:
        """A hook still pending after open_handshake_timeout: 503."""
        server, body = site(
            Echo(), open_handshake_timeout=10, before_request=lambda r: Deferred()
        )
        peer = H2Peer(server)
        stream = peer.request("GET", "/form")
        server.reactor.advance(10)
        peer.flush()
        self.assertEqual(peer.status(stream), 503)


class WebSocketPathTests(SynchronousTestCase):
    """A WebSocket path asked for over HTTP/2 gets 426: upgrades are
    HTTP/1.1 only (no RFC 8441)."""

    def test_426(self) -> None:
        """A plain request for a WebSocket route's path: 426."""
        server, _ = site(Echo())
        server.register_handler("*", "/ws", Echo(), default_host=True)
        peer = H2Peer(server)
        stream = peer.request("GET", "/ws")
        self.assertEqual(peer.status(stream), 426)
