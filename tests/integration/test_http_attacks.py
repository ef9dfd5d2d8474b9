"""Attacks on a server that serves HTTP on its WebSocket port, over loopback.

Each test performs the attack with a raw socket (or the ``websockets``
client) and asserts the refusal: request bodies (issue 11.3), route-bypass
spellings (12.1), static files (12.6), connection limits (12.7), the access
log (12.9), frames pipelined behind the upgrade (12.10) and the same-port
defects of 11.7.
"""

from __future__ import annotations

import base64
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.resource import Resource

from tests.helpers import Recorder
from tests.integration.support import ServerTestCase, in_thread
from tests.integration.test_web import http_get, ws_status
from wsplugin.config import MiB
from wsplugin.testing import client_frame, handshake_request, parse_frames

TEN_GIB = 10 * 1024**3


def exchange(port: int, data: bytes, *, until: bytes | None = None) -> bytes:
    """Send ``data`` in one ``sendall`` and read until ``until`` appears, the
    server closes, or 10 seconds pass (bounded)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
            if until is not None and until in received:
                break
    return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


def upgrade_head(path: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    return handshake_request(path, "127.0.0.1", headers)


class Echo(Recorder):
    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        conn.send_text(text)


class Counting(Resource):
    """Counts the body bytes it was handed."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def render_POST(self, request: Any) -> bytes:
        body = request.content.read()
        self.sizes.append(len(body))
        return b"got %d" % len(body)

    def render_GET(self, request: Any) -> bytes:
        # (a 405 from twisted.web would use its deprecated error page class)
        return b"page"


class Upload(Counting):
    """An upload resource that raises the body limit for itself only."""

    max_request_body = 3 * MiB


class RequestBodyTests(ServerTestCase):
    """Issue 11.3: request bodies are bounded on the same port."""

    @inlineCallbacks
    def _site(self, **options: Any) -> Any:
        self.page = Counting()
        self.upload = Upload()
        root = Resource()
        root.putChild(b"", self.page)
        root.putChild(b"form", self.page)
        root.putChild(b"upload", self.upload)
        server = yield self.start_server(Echo(), http=root, **options)
        return server.ports[0].getHost().port

    @inlineCallbacks
    def test_declared_10_gib_refused_before_reading(self) -> None:
        """POST / with Content-Length 10 GiB gets 413 from the head alone: no
        body byte was sent, nothing is stored, no temporary file is made."""
        made: list[Any] = []
        real = tempfile.TemporaryFile

        def spy(*a: Any, **kw: Any) -> Any:
            made.append(a)
            return real(*a, **kw)

        self.patch(tempfile, "TemporaryFile", spy)
        port = yield self._site()
        head = (
            f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {TEN_GIB}\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()
        response = yield in_thread(exchange, port, head)
        self.assertEqual(status_of(response), 413)
        self.assertNotIn(b"100 Continue", response)
        self.assertIn(b"Connection: close", response)
        self.assertEqual((made, self.page.sizes), ([], []))

    @inlineCallbacks
    def test_flooding_body_is_not_read(self) -> None:
        """A client that streams the 10 GiB body anyway is cut off: it can
        push no more than the socket buffers hold before the connection
        closes, and the server stores nothing."""
        port = yield self._site()

        def flood() -> int:
            sent = 0
            head = f"POST /form HTTP/1.1\r\nContent-Length: {TEN_GIB}\r\n\r\n"
            block = b"x" * 65536
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(head.encode())
                try:
                    while sent < 256 * MiB:  # bounded
                        sent += s.send(block)
                except OSError:
                    pass
            return sent

        sent = yield in_thread(flood)
        self.assertLess(sent, 64 * MiB)
        self.assertEqual(self.page.sizes, [])

    @inlineCallbacks
    def test_chunked_body_cut_at_limit(self) -> None:
        """A chunked body gets 413 where it crosses max_request_body; one
        under the limit is delivered whole."""
        port = yield self._site(max_request_body=100_000)
        chunk = b"%x\r\n%s\r\n" % (40_000, b"y" * 40_000)
        head = b"POST /form HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        small = yield in_thread(
            exchange, port, head + chunk * 2 + b"0\r\n\r\n", until=b"got"
        )
        self.assertEqual(status_of(small), 200)
        big = yield in_thread(exchange, port, head + chunk * 3)
        self.assertEqual(status_of(big), 413)
        self.assertEqual(self.page.sizes, [80_000])

    @inlineCallbacks
    def test_resource_raises_its_own_limit(self) -> None:
        """An upload resource's max_request_body applies to it alone: 2 MiB
        is accepted there and refused (413) on every other path, the
        WebSocket path included, for every method."""
        port = yield self._site()
        body = b"z" * (2 * MiB)
        status, _, answer = yield in_thread(
            http_get, port, "/upload", None, "POST", body
        )
        self.assertEqual((status, answer), (200, b"got %d" % len(body)))
        for method, path in [("POST", "/form"), ("PUT", "/"), ("POST", "/ws")]:
            head = f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n"
            response = yield in_thread(exchange, port, head.encode())
            self.assertEqual(status_of(response), 413, (method, path))
        over = f"POST /upload HTTP/1.1\r\nContent-Length: {4 * MiB}\r\n\r\n"
        self.assertEqual(
            status_of((yield in_thread(exchange, port, over.encode()))), 413
        )

    @inlineCallbacks
    def test_slow_body_dropped(self) -> None:
        """A body that does not arrive within request_body_timeout gets 408
        and the connection is closed (slow POST)."""
        port = yield self._site(request_body_timeout=0.5)

        def slow() -> tuple[bytes, float]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST /form HTTP/1.1\r\nContent-Length: 1000\r\n\r\nab")
                start = time.monotonic()
                data = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                return data, time.monotonic() - start

        response, took = yield in_thread(slow)
        self.assertEqual(status_of(response), 408)
        self.assertLess(took, 9)
        self.assertEqual(self.page.sizes, [])

    @inlineCallbacks
    def test_upgrade_with_body_refused_on_both_servers(self) -> None:
        """An upgrade that announces a body gets 400 on the same-port server
        and on the WebSocket-only server alike."""
        port = yield self._site()
        ws_only = yield self._ws_only()
        for p in (port, ws_only):
            for header in (("Content-Length", "5"), ("Transfer-Encoding", "chunked")):
                response = yield in_thread(exchange, p, upgrade_head("/", [header]))
                self.assertEqual(status_of(response), 400, (p, header))

    @inlineCallbacks
    def _ws_only(self) -> Any:
        from wsplugin import WebSocketServer

        server = WebSocketServer(Echo(), endpoints=["tcp:0:interface=127.0.0.1"])
        yield server.start()
        self.addCleanup(server.stop)
        return server.ports[0].getHost().port


class Admin(Recorder):
    def on_open(self, conn: Any) -> None:
        conn.send_text("admin " + conn.request.path)


class CatchAll(Recorder):
    def on_open(self, conn: Any) -> None:
        conn.send_text("public " + conn.request.path)


SPELLINGS = [
    # target, same-port answer (before_request refuses /admin*), WebSocket-only
    # answer (no hook there): a status, or the route reached and its path
    ("//x/admin", "public //x/admin", "public //x/admin"),
    ("http://x/admin", 400, 400),
    ("http://127.0.0.1/admin", 400, 400),
    ("/%2Fadmin", 400, 400),
    ("/x%2fadmin", 400, 400),
    ("/./admin", 400, 400),
    ("/x/../admin", 400, 400),
    ("/%2e/admin", 400, 400),
    ("/x/%2e%2e/admin", 400, 400),
    ("/..;/admin", 400, 400),
    ("/admin;", 403, "public /admin;"),
    ("/%61dmin", 400, 400),
    ("/adm%69n", 400, 400),
    ("/admin", 403, "admin /admin"),
    ("/public", "public /public", "public /public"),
]


class RouteBypassTests(ServerTestCase):
    """Issue 12.1: a path check in before_request cannot be bypassed."""

    def _routes(self, server: Any) -> None:
        server.register_handler("*", "/admin", Admin())
        server.register_handler(
            "*", "/public", CatchAll(), default_host=True, default_path=True
        )

    @inlineCallbacks
    def test_every_spelling_on_both_servers(self) -> None:
        """Each spelling is refused, or reaches the route before_request saw
        (never the admin route), on the same-port and the WebSocket-only
        server alike."""
        seen: list[bytes] = []

        def guard(request: Any) -> Any:
            seen.append(request.path)
            if request.path.startswith(b"/admin"):
                from wsplugin.web import EmptyPage

                return EmptyPage(403)
            return None

        same = yield self.start_server(None, before_request=guard)
        self._routes(same)
        same_port = same.ports[0].getHost().port
        from wsplugin import WebSocketServer

        ws_only = WebSocketServer(None, endpoints=["tcp:0:interface=127.0.0.1"])
        self._routes(ws_only)
        # the WebSocket-only server has no before_request: the admin route
        # there answers with its name, and no spelling may reach it either
        yield ws_only.start()
        self.addCleanup(ws_only.stop)
        only_port = ws_only.ports[0].getHost().port
        for target, on_same, on_only in SPELLINGS:
            for port, want in ((same_port, on_same), (only_port, on_only)):
                response = yield in_thread(
                    exchange, port, upgrade_head(target), until=b"\x81"
                )
                got: Any = status_of(response)
                if got == 101:
                    frames, _ = parse_frames(response.split(b"\r\n\r\n", 1)[1])
                    got = frames[0].payload.decode() if frames else "open"
                self.assertEqual(got, want, f"port {port}: {target}")
        self.assertIn(b"//x/admin", seen)


class StaticFileTests(ServerTestCase):
    """Issue 12.6: --static refuses symlink escapes, listings and dotfiles
    by default; each can be turned on."""

    def _tree(self) -> Path:
        base = Path(self.mktemp()).resolve()
        (base / "secret").mkdir(parents=True)
        (base / "secret" / "users.htpasswd").write_text("alice:$2b$secret\n")
        site = base / "site"
        (site / "docs").mkdir(parents=True)
        (site / "docs" / "a.txt").write_text("a")
        (site / "index.html").write_text("<h1>home</h1>")
        (site / ".env").write_text("TOKEN=abc")
        (site / "updir").symlink_to(base / "secret")
        (site / "inner").symlink_to(site / "docs")
        return site

    @inlineCallbacks
    def test_defaults_refuse(self) -> None:
        """A symlink out of the root 404, a directory listing 403, a dotfile
        404; a symlink inside the root and plain files are served."""
        site = self._tree()
        server = yield self.start_server(Echo(), static=str(site))
        port = server.ports[0].getHost().port
        for path, status in [
            ("/updir/users.htpasswd", 404),
            ("/updir/", 404),
            ("/docs/", 403),
            ("/.env", 404),
            ("/%2eenv", 400),  # an escaped unreserved character: never read
            ("/inner/a.txt", 200),
            ("/docs/a.txt", 200),
            ("/", 200),
        ]:
            got, _, body = yield in_thread(http_get, port, path)
            self.assertEqual(got, status, path)
            self.assertNotIn(b"alice", body)
            self.assertNotIn(b"TOKEN", body)

    @inlineCallbacks
    def test_each_can_be_turned_on(self) -> None:
        """static_listing, static_dotfiles and static_follow_symlinks serve
        what the defaults refuse."""
        site = self._tree()
        server = yield self.start_server(
            Echo(),
            static=str(site),
            static_listing=True,
            static_dotfiles=True,
            static_follow_symlinks=True,
        )
        port = server.ports[0].getHost().port
        got, _, body = yield in_thread(http_get, port, "/updir/users.htpasswd")
        self.assertEqual((got, body), (200, b"alice:$2b$secret\n"))
        got, _, body = yield in_thread(http_get, port, "/docs/")
        self.assertEqual(got, 200)
        self.assertIn(b"a.txt", body)
        got, _, body = yield in_thread(http_get, port, "/.env")
        self.assertEqual((got, body), (200, b"TOKEN=abc"))


def idle_http(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that each made one keep-alive HTTP request."""
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        held.append(s)
    return held


class ConnectionLimitTests(ServerTestCase):
    """Issue 12.7: every accepted connection counts; a per-IP limit."""

    def _close_all(self, socks: list[socket.socket]) -> None:
        for s in socks:
            s.close()

    @inlineCallbacks
    def test_idle_http_connections_count(self) -> None:
        """50 idle HTTP keep-alive connections fill max_connections=50: an
        upgrade then gets 503, and succeeds again once one is closed."""
        root = Resource()
        root.putChild(b"", Counting())
        server = yield self.start_server(Echo(), http=root, max_connections=50)
        port = server.ports[0].getHost().port
        held = yield in_thread(idle_http, port, 50)
        self.addCleanup(self._close_all, held)
        response = yield in_thread(exchange, port, upgrade_head("/ws"))
        self.assertEqual(status_of(response), 503)
        self.assertIn(b"Service Unavailable", response)
        held.pop().close()
        yield self.when(lambda: server.listening_factory.total == 49)
        self.assertEqual((yield in_thread(ws_status, self.url + "/ws")), "open")

    @inlineCallbacks
    def test_per_ip_limit(self) -> None:
        """Over max_connections_per_ip one address gets 503, on the
        WebSocket-only server too; loopback is exempt by default."""
        server = yield self.start_server(
            Echo(), max_connections_per_ip=3, per_ip_exempt=()
        )
        port = server.ports[0].getHost().port

        def hold(n: int) -> list[socket.socket]:
            socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
            return socks

        held = yield in_thread(hold, 3)
        self.addCleanup(self._close_all, held)
        yield self.when(lambda: server.listening_factory.total == 3)
        response = yield in_thread(exchange, port, upgrade_head("/"))
        self.assertEqual(status_of(response), 503)
        exempt = yield self.start_server(Echo(), max_connections_per_ip=3)
        other = exempt.ports[0].getHost().port
        more = yield in_thread(
            lambda: [socket.create_connection(("127.0.0.1", other)) for _ in range(5)]
        )
        self.addCleanup(self._close_all, more)
        self.assertEqual((yield in_thread(ws_status, self.url)), "open")


class AccessLogTests(ServerTestCase):
    """Issue 12.9: the access log holds no query strings."""

    @inlineCallbacks
    def test_token_not_logged(self) -> None:
        """A request with ?token=... is logged with its path, the query (and
        a Referer's query) replaced by ?[redacted]."""
        lines: list[str] = []

        def observe(event: Any) -> None:
            text = formatEvent(event)
            if "HTTP/1.1" in text:
                lines.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        root = Resource()
        root.putChild(b"feed", Counting())
        server = yield self.start_server(Echo(), http=root)
        port = server.ports[0].getHost().port
        yield in_thread(
            http_get,
            port,
            "/feed?token=s3cr3t-t0ken&x=1",
            {"Referer": "http://h/page?token=s3cr3t-t0ken"},
        )
        yield self.when(lambda: any("/feed" in line for line in lines))
        logged = "\n".join(lines)
        self.assertNotIn("s3cr3t", logged)
        self.assertIn('"GET /feed?[redacted] HTTP/1.1"', logged)
        self.assertIn("http://h/page?[redacted]", logged)


class SamePortDefectTests(ServerTestCase):
    """Issues 12.10 and 11.7 on the same-port server, against the
    WebSocket-only server's behaviour."""

    @inlineCallbacks
    def _both(self, handler: Any, **options: Any) -> Any:
        root = Resource()
        root.putChild(b"page", Counting())
        same = yield self.start_server(handler, http=root, **options)
        from wsplugin import WebSocketServer

        only = WebSocketServer(
            handler, endpoints=["tcp:0:interface=127.0.0.1"], **options
        )
        yield only.start()
        self.addCleanup(only.stop)
        return [same.ports[0].getHost().port, only.ports[0].getHost().port]

    @inlineCallbacks
    def test_pipelined_frame_echoed(self) -> None:
        """The upgrade request and a masked text frame in one send(): the
        echo arrives on both servers."""
        ports = yield self._both(Echo())
        data = upgrade_head("/") + client_frame(0x1, b"early bird")
        for port in ports:
            response = yield in_thread(exchange, port, data, until=b"early bird")
            self.assertEqual(status_of(response), 101, port)
            frames, _ = parse_frames(response.split(b"\r\n\r\n", 1)[1])
            self.assertEqual([f.payload for f in frames], [b"early bird"], port)

    @inlineCallbacks
    def test_skip_upgrade_check(self) -> None:
        """With skip_upgrade_check a handshake without Upgrade/Connection
        opens (101) on both servers; plain GETs still reach pages."""
        ports = yield self._both(Echo(), skip_upgrade_check=True)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET /ws HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        for port in ports:
            self.assertEqual(status_of((yield in_thread(exchange, port, head))), 101)
        status, _, body = yield in_thread(http_get, ports[0], "/page")
        self.assertEqual((status, body), (200, b"page"))

    @inlineCallbacks
    def test_426_reason_phrase(self) -> None:
        """A plain GET to a WebSocket-only path gets "426 Upgrade Required" on
        both servers, never "Unknown Status"."""
        root = Resource()
        root.putChild(b"page", Counting())
        same = yield self.start_server(Echo(), path="/chat", http=root)
        from wsplugin import WebSocketServer

        only = WebSocketServer(
            Echo(), path="/chat", endpoints=["tcp:0:interface=127.0.0.1"]
        )
        yield only.start()
        self.addCleanup(only.stop)
        for server in (same, only):
            port = server.ports[0].getHost().port
            response = yield in_thread(
                exchange,
                port,
                b"GET /chat HTTP/1.1\r\nHost: x\r\n\r\n",
                until=b"\r\n\r\n",
            )
            self.assertTrue(
                response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), response
            )

    @inlineCallbacks
    def test_on_connect_for_every_connection(self) -> None:
        """on_connect runs for each accepted connection on the same-port
        server, HTTP or WebSocket; False drops it before any byte is read."""
        peers: list[str] = []
        refuse = [False]

        class Screen(Echo):
            def on_connect(self, peer: Any) -> bool:
                peers.append(peer.host)
                return not refuse[0]

        root = Resource()
        root.putChild(b"page", Counting())
        server = yield self.start_server(Screen(), http=root)
        port = server.ports[0].getHost().port
        status, _, _ = yield in_thread(http_get, port, "/page")
        self.assertEqual(status, 200)
        self.assertEqual((yield in_thread(ws_status, self.url + "/")), "open")
        self.assertEqual(peers, ["127.0.0.1", "127.0.0.1"])
        refuse[0] = True
        response = yield in_thread(exchange, port, b"GET /page HTTP/1.1\r\n\r\n")
        self.assertEqual(response, b"")
        self.assertEqual(len(peers), 3)


class Upgrading(Resource):
    """A resource that upgrades its own requests (Sparkle's Upgrader)."""

    isLeaf = True

    def render_GET(self, request: Any) -> Any:
        from twisted.web.server import NOT_DONE_YET

        from wsplugin.web import upgrade

        upgrade(request)
        return NOT_DONE_YET


class OldHttpUpgradeTests(ServerTestCase):
    """An upgrade sent with HTTP/1.0 gets 400 (RFC 6455, 4.1: HTTP/1.1 or
    higher); it used to get 101 on the same-port server."""

    @inlineCallbacks
    def test_refused_on_both_servers(self) -> None:
        """HTTP/1.0 upgrades: 400 from a route on the same-port server, from
        a resource calling upgrade(), and on the WebSocket-only server; an
        HTTP/1.0 GET of a page is still served, and HTTP/1.1 upgrades open."""
        from wsplugin import WebSocketServer

        root = Resource()
        root.putChild(b"page", Counting())
        root.putChild(b"up", Upgrading())
        same = yield self.start_server(None, http=root)
        same.register_handler("*", "/ws", Echo(), default_host=True)
        same_port = same.ports[0].getHost().port
        only = WebSocketServer(Echo(), endpoints=["tcp:0:interface=127.0.0.1"])
        yield only.start()
        self.addCleanup(only.stop)
        only_port = only.ports[0].getHost().port
        for port, path in ((same_port, "/ws"), (same_port, "/up"), (only_port, "/")):
            head = upgrade_head(path).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
            response = yield in_thread(exchange, port, head)
            self.assertEqual(status_of(response), 400, (port, path, response[:80]))
            self.assertNotIn(b"Sec-WebSocket-Accept", response)
        page = yield in_thread(
            exchange, same_port, b"GET /page HTTP/1.0\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(status_of(page), 200)
        self.assertTrue(page.endswith(b"\r\n\r\npage"), page)
        for port in (same_port, only_port):
            response = yield in_thread(
                exchange, port, upgrade_head("/ws"), until=b"\r\n\r\n"
            )
            self.assertEqual(status_of(response), 101, port)


class Secret(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"the admin page"


class EncodedPathTests(ServerTestCase):
    """A before_request hook guarding /admin (an HTTP resource) is not
    bypassed by escaping a letter: twisted.web decodes %XX in each segment
    while it walks resources, so /%61dmin would reach the admin resource
    while the hook saw another path."""

    @inlineCallbacks
    def test_escaped_letters_refused(self) -> None:
        """/%61dmin and the like get 400 before the hook or any resource;
        /admin gets the hook's 403; a double escape stays one (404)."""
        seen: list[bytes] = []

        def guard(request: Any) -> Any:
            seen.append(request.path)
            if request.path.startswith(b"/admin"):
                from wsplugin.web import EmptyPage

                return EmptyPage(403)
            return None

        root = Resource()
        root.putChild(b"admin", Secret())
        root.putChild(b"page", Counting())
        server = yield self.start_server(None, http=root, before_request=guard)
        port = server.ports[0].getHost().port
        for target, want in [
            ("/admin", 403),
            ("/%61dmin", 400),
            ("/%61%64%6d%69%6e", 400),
            ("/ADM%49N", 400),
            ("/adm%69n/", 400),
            ("/%2561dmin", 404),
            ("/page", 200),
        ]:
            request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            response = yield in_thread(exchange, port, request.encode())
            self.assertEqual(status_of(response), want, target)
            self.assertNotIn(b"the admin page", response, target)
        self.assertEqual(seen, [b"/admin", b"/%2561dmin", b"/page"])
