"""wsplugin._httpchannel in memory: bodies bounded before they are read, and
on_connect screening HTTP connections."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.auth_support import Data
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


class LaterHeadTests(SynchronousTestCase):
    """A before_request hook answering with a Deferred or a coroutine: the
    connection reads nothing more until it decides, and its requests stay
    in order."""

    def hooked(self, **options: Any) -> tuple[Any, Body, list[Deferred[Any]]]:
        pending: list[Deferred[Any]] = []

        def before_request(request: Any) -> Any:
            if request.path == b"/form" or request.path == b"/slow":
                d: Deferred[Any] = Deferred()
                pending.append(d)
                return d
            return None

        server, body = site(Echo(), before_request=before_request, **options)
        server.site.resource._http.putChild(b"fast", Body())
        server.site.resource._http.putChild(b"page", Data(b"page", "text/plain"))
        return server, body, pending

    def test_pipelined_requests_stay_in_order(self) -> None:
        """Two pipelined requests, the first one's hook slow: nothing is
        answered and reading is paused until it fires; then both answers
        come, first one first."""
        server, body, pending = self.hooked()
        peer = Peer(server)
        peer.send(
            b"POST /form HTTP/1.1\r\nContent-Length: 3\r\n\r\none"
            b"POST /fast HTTP/1.1\r\nContent-Length: 3\r\n\r\ntwo"
        )
        self.assertEqual((peer.transport.value(), len(pending)), (b"", 1))
        self.assertEqual(peer.transport.producerState, "paused")
        pending[0].callback(None)
        answers = peer.transport.value().split(b"HTTP/1.1 ")[1:]
        self.assertEqual([a[:3] for a in answers], [b"200", b"200"])
        self.assertEqual(body.bodies, [b"one"])
        self.assertEqual(peer.transport.producerState, "producing")

    def test_bodiless_request_waits(self) -> None:
        """A GET whose hook is pending is not rendered until it fires."""
        server, body, pending = self.hooked()
        peer = Peer(server)
        peer.send(b"GET /slow HTTP/1.1\r\n\r\nGET /page HTTP/1.1\r\n\r\n")
        self.assertEqual(peer.transport.value(), b"")
        pending[0].callback(None)
        answers = peer.transport.value().split(b"HTTP/1.1 ")[1:]
        # /slow is no resource; /page is
        self.assertEqual([a[:3] for a in answers], [b"404", b"200"])

    def test_answer_from_a_later_hook(self) -> None:
        """A Deferred firing with an EmptyPage refusal answers it from the
        head, headers included, and closes: the body is never read."""
        from wsplugin.web import EmptyPage

        server, body, pending = self.hooked()
        peer = Peer(server)
        peer.send(b"POST /form HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        pending[0].callback(EmptyPage(401, {b"www-authenticate": b"Bearer"}))
        self.assertEqual(peer.status(), 401)
        self.assertIn(b"www-authenticate: bearer", peer.transport.value().lower())
        self.assertTrue(peer.transport.disconnecting)
        self.assertEqual(body.bodies, [])

    def test_limits_of_the_resource_found_later(self) -> None:
        """The body limit is that of the resource the walk reaches after the
        hook: 413 for a declared length over it, decided only then."""
        server, body, pending = self.hooked(max_request_body=4)
        peer = Peer(server)
        peer.send(b"POST /form HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(peer.status(), 0)
        pending[0].callback(None)
        self.assertEqual(peer.status(), 413)

    def test_coroutine_hook(self) -> None:
        """``async def before_request`` works like a Deferred."""
        gate: Deferred[None] = Deferred()

        async def before_request(request: Any) -> Any:
            await gate
            return None

        server, body = site(Echo(), before_request=before_request)
        peer = Peer(server)
        peer.send(b"POST /form HTTP/1.1\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(peer.status(), 0)
        gate.callback(None)
        self.assertEqual((peer.status(), body.bodies), (200, [b"ok"]))

    def test_failing_hook(self) -> None:
        """A Deferred that fails answers 500 and is logged."""
        server, body, pending = self.hooked()
        peer = Peer(server)
        peer.send(b"GET /slow HTTP/1.1\r\n\r\n")
        pending[0].errback(RuntimeError("database down"))
        self.assertEqual(peer.status(), 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_hook_that_never_decides(self) -> None:
        """The head timeout bounds the hook too: 503 and close."""
        server, body, pending = self.hooked(open_handshake_timeout=10)
        peer = Peer(server)
        peer.send(b"GET /slow HTTP/1.1\r\n\r\n")
        server.reactor.advance(10)
        self.assertEqual(peer.status(), 503)
        self.assertTrue(peer.transport.disconnecting)
        pending[0].callback(None)  # too late: nothing more is written
        self.assertEqual(peer.transport.value().count(b"HTTP/1.1"), 1)

    def test_client_gone_while_deciding(self) -> None:
        """A client that leaves while the hook decides gets nothing written."""
        server, body, pending = self.hooked()
        peer = Peer(server)
        peer.send(b"GET /slow HTTP/1.1\r\n\r\n")
        peer.close()
        pending[0].callback(None)
        self.assertEqual(peer.transport.value(), b"")

    def test_upgrade_after_a_later_hook(self) -> None:
        """A WebSocket upgrade whose hook is pending opens once it fires,
        with the frames sent behind its head kept for the route."""
        from wsplugin.testing import client_frame

        server, _, pending = self.hooked()
        peer = Peer(server)
        peer.send(handshake_request("/slow") + client_frame(0x1, b"hi"))
        self.assertEqual(peer.transport.value(), b"")
        pending[0].callback(None)
        self.assertIn(b"101 Switching Protocols", peer.transport.value())
        self.assertIn(b"\x81\x02hi", peer.transport.value())


class FormArgsTests(SynchronousTestCase):
    """twisted.web parses form bodies whole in memory; on wsplugin's site
    only bodies within the server's max_request_body are."""

    def test_large_form_left_unparsed(self) -> None:
        """A 3 MiB urlencoded body to a resource allowing 8 MiB: request.args
        holds the query only, the body is still readable, and parsing did not
        allocate the body again (tracemalloc)."""
        import tracemalloc

        seen: list[Any] = []

        class Form(Body):
            max_request_body = 8 * 1024 * 1024

            def render_POST(self, request: Any) -> bytes:
                request.content.seek(0, 2)  # its size, without reading it
                seen.append((dict(request.args), request.content.tell()))
                return b"ok"

        server, _ = site(Echo())
        server.site.resource._http.putChild(b"big", Form())
        size = 3 * 1024 * 1024
        body = b"a=" + b"x" * (size - 2)
        head = (
            b"POST /big?q=1 HTTP/1.1\r\nContent-Type: "
            b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % size
        )
        peer = Peer(server)
        peer.send(head)
        tracemalloc.start()
        try:
            for i in range(0, size, 65536):
                peer.send(body[i : i + 65536])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(peer.status(), 200)
        self.assertEqual(seen, [({b"q": [b"1"]}, size)])
        # parsing would hold the body at least twice (the read, the value):
        # measured: 6.6 MiB with Twisted parsing it, 0.07 MiB without
        self.assertLess(peak, size // 2)

    def test_small_form_parsed(self) -> None:
        """Within the server's limit a form is parsed into request.args as
        twisted.web does."""
        seen: list[Any] = []

        class Form(Body):
            def render_POST(self, request: Any) -> bytes:
                seen.append(dict(request.args))
                return b"ok"

        server, _ = site(Echo())
        server.site.resource._http.putChild(b"small", Form())
        peer = Peer(server)
        peer.send(
            b"POST /small HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded"
            b"\r\nContent-Length: 7\r\n\r\na=1&b=2"
        )
        self.assertEqual(seen, [{b"a": [b"1"], b"b": [b"2"]}])
