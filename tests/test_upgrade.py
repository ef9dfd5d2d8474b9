"""wsplugin._upgrade in memory: upgrades taken over from twisted.web behave
as on a WebSocket-only server."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from tests.web_support import Echo, Peer, site
from wsplugin import WebSocketServer
from wsplugin._upgrade import (
    WebSocketResource,
    is_websocket_request,
    request_route,
    wants_upgrade,
)
from wsplugin.testing import client_frame, handshake_request, parse_frames


class RequestTests(SynchronousTestCase):
    """Which requests are upgrades, and which route they go to."""

    def _request(self, path: bytes, **headers: bytes) -> DummyRequest:
        request = DummyRequest([])
        request.path = path
        for name, value in headers.items():
            request.requestHeaders.setRawHeaders(name.replace("_", "-"), [value])
        return request

    def test_is_websocket_request(self) -> None:
        """Upgrade: websocket, in any case, among other tokens."""
        self.assertTrue(
            is_websocket_request(self._request(b"/", upgrade=b"h2c, WebSocket"))
        )
        self.assertFalse(is_websocket_request(self._request(b"/", upgrade=b"h2c")))
        self.assertFalse(is_websocket_request(self._request(b"/")))

    def test_route_and_skip_upgrade_check(self) -> None:
        """The route by Host and path; without Upgrade, only a route with
        skip_upgrade_check takes a request that has a Sec-WebSocket-Key."""
        server = WebSocketServer(Echo(), reactor=MemoryReactorClock(), path="/ws")
        router = server.factory.router
        plain = self._request(b"/ws", host=b"example.com")
        route = request_route(router, plain)
        self.assertEqual(route.path, "/ws")
        self.assertFalse(wants_upgrade(plain, route))
        keyed = self._request(b"/ws", sec_websocket_key=b"k")
        self.assertFalse(wants_upgrade(keyed, route))
        lax = server.register_handler("*", "/lax", Echo(), skip_upgrade_check=True)
        self.assertTrue(wants_upgrade(keyed, lax))
        self.assertIsNone(request_route(router, self._request(b"/nope")))


class TakeOverTests(SynchronousTestCase):
    """Upgrades taken over from twisted.web behave as on a WebSocket-only
    server."""

    def test_pipelined_frame(self) -> None:
        """A masked frame in the same read as the upgrade is echoed."""
        server, _ = site(Echo())
        peer = Peer(server)
        peer.send(handshake_request("/") + client_frame(0x1, b"hi"))
        server.reactor.advance(0)
        data = peer.transport.value()
        self.assertEqual(peer.status(), 101)
        frames, _ = parse_frames(data.split(b"\r\n\r\n", 1)[1])
        self.assertEqual([f.payload for f in frames], [b"hi"])

    def test_skip_upgrade_check(self) -> None:
        """skip_upgrade_check upgrades a request with a Sec-WebSocket-Key but
        no Upgrade header; a plain GET still gets the HTTP answer."""
        server, _ = site(Echo(), path="/ws", skip_upgrade_check=True)
        peer = Peer(server)
        peer.send(handshake_request("/ws", upgrade=False))
        self.assertEqual(peer.status(), 101)
        plain = Peer(server)
        plain.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(
            plain.transport.value().startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
        )

    def test_http10_upgrade_refused(self) -> None:
        """An upgrade sent with HTTP/1.0 gets 400 (RFC 6455, 4.1), from the
        head (before any body), and from WebSocketResource on another site;
        a plain HTTP/1.0 GET of the WebSocket path still gets 426."""
        server, _ = site(Echo(), path="/ws")
        peer = Peer(server)
        peer.send(handshake_request("/ws").replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        self.assertEqual(peer.status(), 400)
        self.assertTrue(peer.transport.disconnecting)
        resource = WebSocketResource(server.factory)
        request = DummyRequest([b"ws"])
        request.path = b"/ws"
        request.clientproto = b"HTTP/1.0"
        request.channel = DummyChannel()
        for name, value in [(b"upgrade", b"websocket"), (b"host", b"x")]:
            request.requestHeaders.setRawHeaders(name, [value])
        body = resource.render(request)
        self.assertEqual(request.responseCode, 400)
        self.assertIn(b"HTTP/1.1 or higher", body)
        plain = Peer(server)
        plain.send(b"GET /ws HTTP/1.0\r\nHost: x\r\n\r\n")
        self.assertEqual(plain.status(), 426)

    def test_426_phrase_websocket_only(self) -> None:
        """The WebSocket-only server's 426 says "Upgrade Required" too."""
        server = WebSocketServer(Echo(), reactor=MemoryReactorClock())
        peer = Peer(server)
        peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(
            peer.transport.value().startswith(b"HTTP/1.1 426 Upgrade Required\r\n")
        )

    def test_slot_moves_to_websocket(self) -> None:
        """The taken-over connection keeps its counted slot until it ends."""
        server, _ = site(Echo())
        gate = server.listening_factory
        peer = Peer(server)
        peer.send(handshake_request("/"))
        self.assertEqual(gate.total, 1)
        peer.close()
        self.assertEqual(gate.total, 0)
