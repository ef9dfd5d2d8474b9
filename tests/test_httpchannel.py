"""wsplugin._httpchannel in memory: bodies bounded before they are read, and
on_connect screening HTTP connections."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.web_support import Body, Echo, Peer, site
from wsplugin.testing import handshake_request
from wsplugin.web import SiteRequest


class BodyLimitTests(SynchronousTestCase):
    """max_request_body and request_body_timeout, checked from the head."""

    def test_declared_length_over_limit(self) -> None:
        """A declared length over the limit gets 413 and a close, with no
        100 Continue and no body storage (gotLength never runs)."""
        stored: list[Any] = []
        self.patch(SiteRequest, "gotLength", lambda req, n: stored.append(n))
        server, body = site(Echo(), max_request_body=1000)
        peer = Peer(server)
        peer.send(
            b"POST /form HTTP/1.1\r\nContent-Length: 1001\r\n"
            b"Expect: 100-continue\r\n\r\n" + b"x" * 1001
        )
        self.assertTrue(
            peer.transport.value().startswith(b"HTTP/1.1 413 Content Too Large\r\n")
        )
        self.assertNotIn(b"100 Continue", peer.transport.value())
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual((stored, body.bodies), ([], []))

    def test_within_limit(self) -> None:
        """A body at the limit is delivered whole."""
        server, body = site(Echo(), max_request_body=1000)
        peer = Peer(server)
        peer.send(b"POST /form HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
        self.assertEqual((peer.status(), body.bodies), (200, [b"x" * 1000]))

    def test_chunked_cut_at_limit(self) -> None:
        """A chunked body is refused where it crosses the limit; the request
        never reaches its resource."""
        server, body = site(Echo(), max_request_body=1000)
        peer = Peer(server)
        peer.send(b"POST /form HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        peer.send(b"258\r\n" + b"y" * 600 + b"\r\n")
        self.assertEqual(peer.status(), 0)
        peer.send(b"258\r\n" + b"y" * 600 + b"\r\n0\r\n\r\n")
        self.assertEqual(peer.status(), 413)
        self.assertEqual(body.bodies, [])

    def test_resource_overrides(self) -> None:
        """A resource's max_request_body raises or lowers the limit for its
        own requests only; 0 switches it off."""
        server, body = site(Echo(), max_request_body=100)
        big, small, free = Body(), Body(), Body()
        big.max_request_body = 5000  # type: ignore[attr-defined]
        small.max_request_body = 10  # type: ignore[attr-defined]
        free.max_request_body = 0  # type: ignore[attr-defined]
        root = server.site.resource._http
        root.putChild(b"big", big)
        root.putChild(b"small", small)
        root.putChild(b"free", free)
        for path, size, status in [
            (b"/big", 4000, 200),
            (b"/form", 4000, 413),
            (b"/small", 11, 413),
            (b"/free", 200_000, 200),
        ]:
            peer = Peer(server)
            peer.send(
                b"POST %s HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (path, size)
                + b"z" * size
            )
            self.assertEqual(peer.status(), status, path)

    def test_slow_body(self) -> None:
        """A body still incomplete request_body_timeout seconds after its
        head gets 408 and the connection closes; a resource may allow more."""
        server, body = site(Echo(), request_body_timeout=5)
        patient = Body()
        patient.request_body_timeout = 60  # type: ignore[attr-defined]
        server.site.resource._http.putChild(b"patient", patient)
        slow, calm = Peer(server), Peer(server)
        slow.send(b"POST /form HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
        calm.send(b"POST /patient HTTP/1.1\r\nContent-Length: 10\r\n\r\nab")
        server.reactor.advance(4.9)
        self.assertEqual(slow.status(), 0)
        server.reactor.advance(0.2)
        self.assertEqual(slow.status(), 408)
        self.assertTrue(slow.transport.disconnecting)
        self.assertEqual(calm.status(), 0)
        calm.send(b"c" * 8)
        self.assertEqual((calm.status(), patient.bodies), (200, [b"abcccccccc"]))

    def test_upgrade_with_body(self) -> None:
        """A WebSocket upgrade announcing a body gets 400 from its head."""
        server, _ = site(Echo())
        peer = Peer(server)
        peer.send(handshake_request("/", headers=[("Content-Length", "4")]))
        self.assertEqual(peer.status(), 400)


class OverlongLineTests(SynchronousTestCase):
    """A line over MAX_LENGTH gets an answer (twisted.web closed silently)."""

    def test_request_line_414(self) -> None:
        """A request line over 16384 bytes: 414 URI Too Long, closed."""
        server, _ = site(Echo())
        peer = Peer(server)
        peer.send(b"GET /" + b"a" * 20000)
        self.assertTrue(
            peer.transport.value().startswith(b"HTTP/1.1 414 URI Too Long\r\n")
        )
        self.assertTrue(peer.transport.disconnecting)

    def test_header_line_431(self) -> None:
        """A header line over 16384 bytes (complete or not): 431."""
        for tail in (b"", b"\r\n\r\n"):
            server, _ = site(Echo())
            peer = Peer(server)
            peer.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + tail)
            self.assertEqual(peer.status(), 431)
            self.assertTrue(peer.transport.disconnecting)
            peer.send(b"more" * 10000)  # ignored
            self.assertEqual(peer.transport.value().count(b"HTTP/1.1"), 1)


class OnConnectTests(SynchronousTestCase):
    """The server handler's on_connect screens HTTP connections too."""

    def test_false_drops(self) -> None:
        """False closes the connection before any byte is processed."""

        class No(Echo):
            def on_connect(self, peer: Any) -> bool:
                return peer.host != "198.51.100.9"

        server, body = site(No())
        bad = Peer(server, "198.51.100.9")
        self.assertTrue(bad.transport.disconnecting)
        bad.transport.protocol.dataReceived(
            b"POST /form HTTP/1.1\r\nContent-Length: 1\r\n\r\nx"
        )
        self.assertEqual((bad.transport.value(), body.bodies), (b"", []))
        good = Peer(server)
        good.send(b"POST /form HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
        self.assertEqual(good.status(), 200)

    def test_deferred_pauses_reading(self) -> None:
        """While an async on_connect decides, reading is paused; True
        resumes it, a later False closes."""
        pending: list[Deferred[bool]] = []

        class Later(Echo):
            def on_connect(self, peer: Any) -> Deferred[bool]:
                d: Deferred[bool] = Deferred()
                pending.append(d)
                return d

        server, _ = site(Later())
        first, second = Peer(server), Peer(server)
        self.assertEqual(first.transport.producerState, "paused")
        pending[0].callback(True)
        self.assertEqual(first.transport.producerState, "producing")
        pending[1].callback(False)
        self.assertTrue(second.transport.disconnecting)

    def test_raising_hook_aborts(self) -> None:
        """An on_connect that raises aborts the connection."""

        class Broken(Echo):
            def on_connect(self, peer: Any) -> bool:
                raise RuntimeError("boom")

        server, _ = site(Broken())
        peer = Peer(server)
        self.assertTrue(peer.transport.aborted)
        self.flushLoggedErrors(RuntimeError)
