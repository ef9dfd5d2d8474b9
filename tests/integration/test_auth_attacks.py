"""Attacks on authentication, performed over real loopback sockets.

Each test does what an attacker would (floods of bogus Basic upgrades,
password guessing, login floods, cross-site requests, unauthenticated HTTP)
and asserts the refusal: the status or close code, and that legitimate
clients are still served. Outcomes are judged by what the server did (which
checks ran, in which order, what each client got), never by wall time.
"""

from __future__ import annotations

import base64
import http.client
import os
import select
import socket
import time
from pathlib import Path
from typing import Any

import bcrypt
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.internet import task
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.resource import Resource
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.auth_support import HeldChecker
from tests.integration.support import ServerTestCase, in_thread
from wsplugin.auth import (
    BasicAuth,
    HtpasswdChecker,
    LoginResource,
    LoginThrottle,
    SessionAuth,
    SessionStore,
)


class Greeter:
    def on_open(self, conn: Any) -> None:
        conn.send_text(f"hello {conn.user}")

    def on_message(self, conn: Any, text: str) -> None:
        conn.send_text(text)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def upgrade_request(port: int, headers: dict[str, str], path: str = "/") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def flood(
    port: int, count: int, headers_of: Any, close: bool = False
) -> list[socket.socket]:
    """Send ``count`` upgrade requests on as many sockets; close each at once
    after sending with ``close``. Returns the sockets (open ones unless
    ``close``)."""
    socks = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(upgrade_request(port, headers_of(i)))
        if close:
            sock.close()
        socks.append(sock)
    return socks


def answers(socks: list[socket.socket], expected: int) -> dict[int, str]:
    """Read response heads until ``expected`` sockets have one (bounded by
    10 s); ``{index: head}``."""
    heads: dict[int, str] = {}
    buffers = {i: b"" for i in range(len(socks))}
    deadline = time.monotonic() + 10
    while len(heads) < expected and time.monotonic() < deadline:
        waiting = [s for i, s in enumerate(socks) if i not in heads]
        readable, _, _ = select.select(waiting, [], [], 0.5)
        for sock in readable:
            i = socks.index(sock)
            data = sock.recv(4096)
            buffers[i] += data
            if b"\r\n\r\n" in buffers[i] or not data:
                heads[i] = buffers[i].split(b"\r\n\r\n")[0].decode("latin-1")
    return heads


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def ws_status(url: str, **kw: Any) -> Any:
    """101 -> the first message; otherwise the HTTP status."""
    try:
        with connect(url, open_timeout=10, **kw) as ws:
            return ws.recv(timeout=10)
    except InvalidStatus as e:
        return e.response.status_code


def http_request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def capture_logs(test: Any) -> list[str]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


class Recording:
    """A checker that records the user names it is asked about, in order."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[str] = []

    def requestAvatarId(self, credentials: Any) -> Any:
        self.seen.append(credentials.username.decode())
        return self.inner.requestAvatarId(credentials)


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class PasswordFloodTests(ServerTestCase):
    """Bogus Basic upgrades cannot queue without bound or delay real logins."""

    @inlineCallbacks
    def test_bounded_queue_503_and_gone_clients_skipped(self) -> None:
        """40 bogus Basic upgrades: 1 check runs, 8 wait, the other 31 get 503
        with Retry-After at once. Their clients then close; a legitimate login
        arriving next takes the place of the 8 gone ones and is checked right
        after the one running bogus check: none of the 8 ever runs."""
        checker = HeldChecker(
            {"ada": "lovelace"}, hold={f"bogus{i}" for i in range(40)}
        )
        throttle = LoginThrottle(concurrency=1, max_queued=8, max_pending_per_peer=0)
        yield self.start_server(Greeter(), auth=BasicAuth(checker, throttle=throttle))
        port = self.server.ports[0].getHost().port
        socks = yield in_thread(flood, port, 40, lambda i: basic(f"bogus{i}", "x"))
        self.addCleanup(close_all, socks)
        yield self.when(lambda: throttle.stats.busy + throttle.queued == 39)
        heads = yield in_thread(answers, socks, 31)
        self.assertEqual(len(heads), 31)
        for head in heads.values():
            self.assertTrue(head.startswith("HTTP/1.1 503 "), head)
            self.assertIn("Retry-After: 1", head)
        admitted = [s for i, s in enumerate(socks) if i not in heads]
        self.assertEqual((len(admitted), throttle.running, throttle.queued), (9, 1, 8))
        yield in_thread(close_all, admitted)

        legit = in_thread(
            ws_status, self.url, additional_headers=basic("ada", "lovelace")
        )
        yield self.when(lambda: throttle.stats.dropped == 8 and throttle.queued == 1)
        checker.release(0)  # the one running bogus check fails
        self.assertEqual((yield legit), "hello ada")
        self.assertEqual(len(checker.seen), 2)
        self.assertEqual(checker.seen[1], "ada")
        self.assertEqual(throttle.stats.started, 2)

    @inlineCallbacks
    def test_real_bcrypt_flood_of_closed_connections(self) -> None:
        """40 bogus upgrades from 40 addresses (behind a trusted proxy), each
        closed right after sending, against bcrypt cost 10 with the default
        throttle: the checks of gone clients are skipped, so a real login
        right behind them is served after at most a few bogus checks (without
        the throttle all 40 ran first)."""
        path = Path(self.mktemp())
        path.write_text(
            "ada:" + bcrypt.hashpw(b"lovelace", bcrypt.gensalt(10)).decode()
        )
        checker = Recording(HtpasswdChecker(path))
        throttle = LoginThrottle()
        yield self.start_server(
            Greeter(), auth=BasicAuth(checker, throttle=throttle), trusted_proxies=1
        )
        port = self.server.ports[0].getHost().port

        def bogus(i: int) -> dict[str, str]:
            return {"X-Forwarded-For": f"198.51.100.{i}", **basic(f"bogus{i}", "x")}

        yield in_thread(flood, port, 40, bogus, True)
        headers = {"X-Forwarded-For": "203.0.113.9", **basic("ada", "lovelace")}
        self.assertEqual(
            (yield in_thread(ws_status, self.url, additional_headers=headers)),
            "hello ada",
        )
        yield self.when(lambda: throttle.running == 0)
        bogus_checked = [name for name in checker.seen if name != "ada"]
        self.assertLess(len(bogus_checked), 10, checker.seen)
        self.assertIn("ada", checker.seen)
        self.assertGreaterEqual(throttle.stats.dropped + throttle.stats.busy, 30)

    @inlineCallbacks
    def test_closed_http_requests_to_a_guarded_site(self) -> None:
        """The same flood as plain GETs to a guarded static site (http_auth,
        as --auth-file): 80 bogus requests, each closed right after sending,
        against bcrypt cost 10. The checks of gone clients are skipped, so a
        real request right behind them is served after at most a few bogus
        checks (before the fix all of them ran: the adversarial run measured
        34 checks and a 9 s wait for the real login)."""
        site = Path(self.mktemp()).resolve()
        site.mkdir()
        (site / "index.html").write_text("<h1>home</h1>")
        path = Path(self.mktemp())
        path.write_text(
            "ada:" + bcrypt.hashpw(b"lovelace", bcrypt.gensalt(10)).decode()
        )
        checker = Recording(HtpasswdChecker(path))
        throttle = LoginThrottle()
        auth = BasicAuth(checker, throttle=throttle)
        server = yield self.start_server(
            Greeter(), static=str(site), http_auth=auth, trusted_proxies=1
        )
        port = server.ports[0].getHost().port

        def flood_gets() -> None:
            for i in range(80):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                head = (
                    f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"X-Forwarded-For: 198.51.100.{i}\r\n"
                    f"Authorization: {basic(f'bogus{i}', 'x')['Authorization']}"
                    "\r\n\r\n"
                )
                sock.sendall(head.encode("latin-1"))
                sock.close()

        yield in_thread(flood_gets)
        headers = {"X-Forwarded-For": "203.0.113.9", **basic("ada", "lovelace")}
        status, _, body = yield in_thread(http_request, port, "GET", "/", headers)
        self.assertEqual((status, body), (200, b"<h1>home</h1>"))
        yield self.when(lambda: throttle.running == 0)
        bogus_checked = [name for name in checker.seen if name != "ada"]
        self.assertLess(len(bogus_checked), 10, checker.seen)
        self.assertGreaterEqual(throttle.stats.dropped + throttle.stats.busy, 60)


class GuessingTests(ServerTestCase):
    """Repeated wrong passwords from one address are slowed down (429)."""

    @inlineCallbacks
    def test_websocket_guessing_backoff(self) -> None:
        """3 wrong passwords get 401; then even the right one gets 429 with
        Retry-After, and the log says why; after the block it works; another
        failure blocks for twice as long."""
        logs = capture_logs(self)
        clock = task.Clock()
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        throttle = LoginThrottle(clock, max_failures=3, backoff=10)
        yield self.start_server(Greeter(), auth=BasicAuth(checker, throttle=throttle))
        port = self.server.ports[0].getHost().port
        for guess in ("a", "b", "c"):
            status = yield in_thread(
                ws_status, self.url, additional_headers=basic("ada", guess)
            )
            self.assertEqual(status, 401)
        self.assertTrue(
            any("3 failed password checks in a row from 127.0.0.1" in x for x in logs)
        )
        status, headers, _ = yield in_thread(
            http_request,
            port,
            "GET",
            "/",
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13",
                **basic("ada", "lovelace"),
            },
        )
        self.assertEqual((status, headers.get("retry-after")), (429, "10"))
        clock.advance(10)
        self.assertEqual(
            (
                yield in_thread(
                    ws_status, self.url, additional_headers=basic("ada", "lovelace")
                )
            ),
            "hello ada",
        )
        yield in_thread(ws_status, self.url, additional_headers=basic("ada", "d"))
        self.assertEqual(
            (
                yield in_thread(
                    ws_status, self.url, additional_headers=basic("ada", "lovelace")
                )
            ),
            429,
        )
        self.assertEqual(throttle.stats.blocks, 2)

    @inlineCallbacks
    def test_login_form_guessing_backoff(self) -> None:
        """The same for LoginResource: 401, 401, 401, then 429."""
        clock = task.Clock()
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        throttle = LoginThrottle(clock, max_failures=3, backoff=10)
        pages = Resource()
        store = SessionStore(clock)
        pages.putChild(b"login", LoginResource(checker, store, throttle=throttle))
        server = yield self.start_server(None, http=pages)
        port = server.ports[0].getHost().port
        statuses = []
        for password in ("a", "b", "c", "lovelace"):
            status, headers, _ = yield in_thread(
                http_request,
                port,
                "POST",
                "/login",
                FORM,
                f"username=ada&password={password}".encode(),
            )
            statuses.append(status)
        self.assertEqual(statuses, [401, 401, 401, 429])
        self.assertEqual(headers.get("retry-after"), "10")
        self.assertEqual(len(store), 0)


class SessionTests(ServerTestCase):
    """Sessions are bounded, and ending one closes its WebSockets (1008)."""

    @inlineCallbacks
    def _session_server(self, store: SessionStore, **kw: Any) -> Any:
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        pages = Resource()
        pages.putChild(b"login", LoginResource(checker, store, **kw))
        server = yield self.start_server(None, http=pages)
        server.register_handler(
            "*", "/ws", Greeter(), default_host=True, auth=SessionAuth(store)
        )
        self.port = server.ports[0].getHost().port
        return server

    def login(self) -> str:
        status, headers, _ = http_request(
            self.port, "POST", "/login", FORM, b"username=ada&password=lovelace"
        )
        assert status == 204, status
        return headers["set-cookie"].split(";")[0]

    def hold_open(self, cookie: str) -> tuple[str, Any, str]:
        """Open the WebSocket with ``cookie``; block until it is closed;
        the greeting and the close code and reason."""
        with connect(
            f"ws://127.0.0.1:{self.port}/ws",
            open_timeout=10,
            additional_headers={"Cookie": cookie},
        ) as ws:
            greeting = ws.recv(timeout=10)
            try:
                ws.recv(timeout=30)
            except ConnectionClosed as e:
                return (
                    greeting,
                    e.rcvd.code if e.rcvd else None,
                    e.rcvd.reason if e.rcvd else "",
                )
        return greeting, None, ""

    @inlineCallbacks
    def test_two_thousand_logins(self) -> None:
        """2,000 logins of one user leave 16 sessions (max_per_identity), and
        the WebSocket opened with the first session is closed with 1008 when
        that session is evicted."""
        store = SessionStore(task.Clock())
        server = yield self._session_server(store)
        first = yield in_thread(self.login)
        held = in_thread(self.hold_open, first)
        yield self.when(lambda: len(server.connections) == 1)

        def logins() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            ok = 0
            for _ in range(2000):
                conn.request("POST", "/login", b"username=ada&password=lovelace", FORM)
                response = conn.getresponse()
                response.read()
                ok += response.status == 204
            conn.close()
            return ok

        self.assertEqual((yield in_thread(logins)), 2000)
        self.assertEqual(len(store), 16)
        self.assertEqual((yield held), ("hello ada", 1008, "session ended"))

    @inlineCallbacks
    def test_logout_closes_websocket(self) -> None:
        """DELETE /login ends the session and closes its open WebSocket with
        1008; the cookie no longer opens one (401)."""
        store = SessionStore(task.Clock())
        server = yield self._session_server(store)
        cookie = yield in_thread(self.login)
        held = in_thread(self.hold_open, cookie)
        yield self.when(lambda: len(server.connections) == 1)
        status, _, _ = yield in_thread(
            http_request, self.port, "DELETE", "/login", {"Cookie": cookie}
        )
        self.assertEqual(status, 204)
        self.assertEqual((yield held), ("hello ada", 1008, "session ended"))
        self.assertEqual(
            (
                yield in_thread(
                    ws_status,
                    f"ws://127.0.0.1:{self.port}/ws",
                    additional_headers={"Cookie": cookie},
                )
            ),
            401,
        )

    @inlineCallbacks
    def test_expiry_closes_websocket(self) -> None:
        """A session that expires closes its open WebSocket with 1008."""
        clock = task.Clock()
        store = SessionStore(clock, timeout=60)
        server = yield self._session_server(store)
        cookie = yield in_thread(self.login)
        held = in_thread(self.hold_open, cookie)
        yield self.when(lambda: len(server.connections) == 1)
        clock.advance(60)
        self.assertEqual((yield held), ("hello ada", 1008, "session expired"))

    @inlineCallbacks
    def test_cross_site_login_refused(self) -> None:
        """A login POST from another site's page gets 403 and no cookie; the
        server's own origin logs in."""
        store = SessionStore(task.Clock())
        yield self._session_server(store)
        body = b"username=ada&password=lovelace"
        for headers, expected in [
            ({"Origin": "https://evil.example"}, 403),
            ({"Sec-Fetch-Site": "cross-site"}, 403),
            ({"Origin": f"http://127.0.0.1:{self.port}"}, 204),
        ]:
            status, response, _ = yield in_thread(
                http_request, self.port, "POST", "/login", {**FORM, **headers}, body
            )
            self.assertEqual(status, expected, headers)
            self.assertEqual("set-cookie" in response, expected == 204)
        self.assertEqual(len(store), 1)


class OriginTests(ServerTestCase):
    """Cross-site WebSocket hijacking of authenticated routes."""

    @inlineCallbacks
    def test_cross_origin_upgrade_refused_by_default(self) -> None:
        """With default options, an upgrade to an authenticated route from
        another origin gets 403 even with valid credentials; the same origin
        and clients without Origin open; a public route takes any origin."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        server = yield self.start_server(None)
        server.register_handler(
            "*", "/private", Greeter(), default_host=True, auth=BasicAuth(checker)
        )
        server.register_handler("*", "/public", Greeter())
        port = server.ports[0].getHost().port
        creds = basic("ada", "lovelace")
        private = self.url + "/private"
        self.assertEqual(
            (
                yield in_thread(
                    ws_status,
                    private,
                    origin="https://evil.example",
                    additional_headers=creds,
                )
            ),
            403,
        )
        self.assertEqual(
            (
                yield in_thread(
                    ws_status,
                    private,
                    origin=f"http://127.0.0.1:{port}",
                    additional_headers=creds,
                )
            ),
            "hello ada",
        )
        self.assertEqual(
            (yield in_thread(ws_status, private, additional_headers=creds)),
            "hello ada",
        )
        self.assertEqual(
            (
                yield in_thread(
                    ws_status, self.url + "/public", origin="https://evil.example"
                )
            ),
            "hello None",
        )

    @inlineCallbacks
    def test_explicit_star_is_warned(self) -> None:
        """allowed_origins=["*"] on an authenticated route logs a warning at
        registration, and then does accept other origins."""
        logs = capture_logs(self)
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        yield self.start_server(
            Greeter(), auth=BasicAuth(checker), allowed_origins=["*"]
        )
        self.assertTrue(any("accepts any Origin (*)" in line for line in logs), logs)
        self.assertEqual(
            (
                yield in_thread(
                    ws_status,
                    self.url,
                    origin="https://evil.example",
                    additional_headers=basic("ada", "lovelace"),
                )
            ),
            "hello ada",
        )


class WholeSiteTests(ServerTestCase):
    """http_auth guards static files and resources, not only WebSockets."""

    @inlineCallbacks
    def test_static_site_needs_credentials(self) -> None:
        """GET /, /.env, a missing path and an encoded traversal out of a
        public directory get 401 with WWW-Authenticate; the public path and
        the credentialed requests are served; the WebSocket route keeps its
        own authenticator."""
        site = Path(self.mktemp()).resolve()
        (site / "public").mkdir(parents=True)
        (site / "index.html").write_text("<h1>home</h1>")
        (site / ".env").write_text("SECRET=1\n")
        (site / "public" / "logo.txt").write_text("logo")
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        auth = BasicAuth(checker, realm="site")
        server = yield self.start_server(
            Greeter(),
            auth=auth,
            static=str(site),
            http_auth=auth,
            public_paths=["/public/"],
        )
        port = server.ports[0].getHost().port
        for path in ("/", "/.env", "/missing"):
            status, headers, body = yield in_thread(http_request, port, "GET", path)
            self.assertEqual(
                (status, headers.get("www-authenticate"), body),
                (401, 'Basic realm="site"', b""),
                path,
            )
        # encoded traversals out of a public path never reach the guard: the
        # target check refuses them first (wsplugin.handshake.target_problem)
        for path in ("/public/..%2f.env", "/public/%2e%2e/.env"):
            status, _, body = yield in_thread(http_request, port, "GET", path)
            self.assertEqual((status, body), (400, b""), path)
        status, _, body = yield in_thread(http_request, port, "GET", "/public/logo.txt")
        self.assertEqual((status, body), (200, b"logo"))
        creds = basic("ada", "lovelace")
        status, _, body = yield in_thread(http_request, port, "GET", "/", creds)
        self.assertEqual((status, body), (200, b"<h1>home</h1>"))
        self.assertEqual(
            (yield in_thread(ws_status, self.url, additional_headers=creds)),
            "hello ada",
        )
        self.assertEqual((yield in_thread(ws_status, self.url)), 401)
