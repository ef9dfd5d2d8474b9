"""The same-port site (wsplugin.web) in memory: bounded bodies, one route
resolution, on_connect, pipelined frames, access log, static files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from tests.helpers import Recorder
from wsplugin import WebSocketServer
from wsplugin.testing import (
    FakeTransport,
    client_frame,
    handshake_request,
    parse_frames,
)
from wsplugin.web import (
    EmptyPage,
    SiteRequest,
    StaticFiles,
    access_log_formatter,
    redact_query,
)


class Echo(Recorder):
    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        conn.send_text(text)


class Body(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request: Any) -> bytes:
        self.bodies.append(request.content.read())
        return b"ok"


class Peer:
    """One in-memory TCP connection to a server's listening factory."""

    def __init__(self, server: WebSocketServer, host: str = "203.0.113.5") -> None:
        self.clock = server.reactor
        addr = IPv4Address("TCP", host, 40000)
        self.transport = FakeTransport(self.clock, addr)
        protocol = server.listening_factory.buildProtocol(addr)
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        if not self.transport.lost:
            self.transport.protocol.dataReceived(data)

    def status(self) -> int:
        data = self.transport.value()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0

    def close(self) -> None:
        self.transport.loseConnection()
        self.clock.advance(0)


def site(handler: Any = None, **options: Any) -> tuple[WebSocketServer, Body]:
    body = Body()
    root = Resource()
    root.putChild(b"form", body)
    server = WebSocketServer(
        handler, reactor=MemoryReactorClock(), http=root, **options
    )
    return server, body


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


class TargetTests(SynchronousTestCase):
    """The site reads the target as the WebSocket-only server does."""

    def test_spellings(self) -> None:
        """Absolute form, dot segments and encoded slashes get 400 before
        before_request runs; // and ; reach the route the hook saw."""
        seen: list[bytes] = []

        def hook(request: Any) -> Any:
            seen.append(request.path)
            return EmptyPage(403) if request.path.startswith(b"/admin") else None

        admin, public = Recorder(), Recorder()
        server, _ = site(None, before_request=hook)
        server.register_handler("*", "/admin", admin)
        server.register_handler("*", "/p", public, default_host=True, default_path=True)
        for target, status in [
            ("http://x/admin", 400),
            ("/./admin", 400),
            ("/a/%2e%2e/admin", 400),
            ("/%2Fadmin", 400),
            ("/admin;", 403),
            ("//x/admin", 101),
        ]:
            peer = Peer(server)
            peer.send(handshake_request(target))
            server.reactor.advance(0)
            self.assertEqual(peer.status(), status, target)
        self.assertEqual(seen, [b"/admin;", b"//x/admin"])
        self.assertEqual(admin.events, [])
        self.assertEqual(public.events[0], ("allow", "//x/admin"))

    def test_route_resolved_once(self) -> None:
        """The protocol gets the route resolved from the request path and
        never looks it up again."""
        server, _ = site(Echo())
        calls: list[str] = []
        resolve = server.factory.router.resolve

        def counting(host: str, path: str) -> Any:
            calls.append(path)
            return resolve(host, path)

        self.patch(server.factory.router, "resolve", counting)
        peer = Peer(server)
        peer.send(handshake_request("/x?q=1"))
        self.assertEqual(peer.status(), 101)
        self.assertEqual(calls, ["/x"])


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


class AccessLogTests(SynchronousTestCase):
    """access_log_formatter writes no query strings."""

    def test_query_redacted(self) -> None:
        """The target's and the Referer's query become ?[redacted]."""

        class Fake:
            method = b"GET"
            uri = b"/feed?token=abc"
            clientproto = b"HTTP/1.1"
            code = 200
            sentLength = 2

            def getClientAddress(self) -> Any:
                return IPv4Address("TCP", "192.0.2.1", 1)

            def getHeader(self, name: bytes) -> bytes | None:
                return {b"referer": b"http://h/?token=abc", b"user-agent": b"ua"}.get(
                    name.lower()
                )

        line = access_log_formatter("[ts]", Fake())
        self.assertNotIn("abc", line)
        self.assertIn('"GET /feed?[redacted] HTTP/1.1" 200 2', line)
        self.assertIn('"http://h/?[redacted]" "ua"', line)
        self.assertEqual(redact_query(b"/a"), b"/a")


class StaticFilesTests(SynchronousTestCase):
    """StaticFiles refuses escapes, listings and dotfiles unless allowed."""

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        (base / "out").mkdir(parents=True)
        (base / "out" / "secret").write_text("s")
        self.root = base / "root"
        (self.root / "dir").mkdir(parents=True)
        (self.root / ".env").write_text("e")
        (self.root / "link").symlink_to(base / "out")

    def _get(self, files: StaticFiles, *segments: bytes) -> Any:
        from twisted.web.test.requesthelper import DummyRequest

        resource: Any = files
        for segment in segments:
            resource = resource.getChild(segment, DummyRequest([segment]))
        return resource

    def test_defaults(self) -> None:
        """Escaping link, dotfile: not found; listing: 403."""
        files = StaticFiles(str(self.root))
        self.assertIs(self._get(files, b"link"), files.childNotFound)
        self.assertIs(self._get(files, b".env"), files.childNotFound)
        self.assertEqual(self._get(files, b"dir", b"")._code, 403)

    def test_options(self) -> None:
        """Each option turns its refusal off, in subdirectories too."""
        files = StaticFiles(
            str(self.root), listing=True, dotfiles=True, follow_symlinks=True
        )
        self.assertTrue(self._get(files, b"link", b"secret").path.endswith("secret"))
        self.assertTrue(self._get(files, b".env").path.endswith(".env"))
        self.assertEqual(
            type(self._get(files, b"dir", b"")).__name__, "DirectoryLister"
        )


class WebSocketOnlyTargetTests(SynchronousTestCase):
    """The WebSocket-only server reads targets as the site does."""

    def test_spellings(self) -> None:
        """400 for absolute form, dot segments, encoded slashes and bodies;
        // and ; route as sent (to the catch-all, never to /admin)."""
        from tests.helpers import make

        admin, public = Recorder(), Recorder()
        server, harness = make(None)
        server.register_handler("*", "/admin", admin)
        server.register_handler("*", "/p", public, default_host=True, default_path=True)
        for target, status in [
            ("http://x/admin", 400),
            ("/./admin", 400),
            ("/%2fadmin", 400),
            ("//x/admin", 101),
            ("/admin;", 101),
        ]:
            self.assertEqual(harness.connect().handshake(target).status, status, target)
        body = harness.connect().handshake("/", headers=[("Content-Length", "3")])
        self.assertEqual(body.status, 400)
        self.assertEqual(admin.events, [])
        self.assertEqual(
            [e for e in public.events if e[0] == "allow"],
            [("allow", "//x/admin"), ("allow", "/admin;")],
        )
