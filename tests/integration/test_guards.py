"""Guarded HTTP resources and an asynchronous before_request, over real
loopback sockets.

Every authenticator of wsplugin.auth guards a plain twisted.web resource
with guard(): the refusals (401 with WWW-Authenticate, 403) and the
accepted requests are checked as a client sees them. A guard decides at the
request head: a refused upload's body is never read, an accepted one gets
its resource's own body limit. Two pipelined requests whose first
before_request is slow are answered in order.
"""

from __future__ import annotations

import base64
import select
import socket
import time
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.web.resource import Resource

from tests.auth_support import Data
from tests.integration.support import ServerTestCase, in_thread
from tests.integration.test_auth_attacks import FORM, http_request
from wsplugin.auth import (
    ApiKeyAuth,
    BasicAuth,
    LoginResource,
    LoginThrottle,
    QueryTokenAuth,
    SessionAuth,
    SessionStore,
    guard,
)
from wsplugin.config import MiB


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Sized(Resource):
    """A leaf taking bodies up to 4 MiB; counts what it was given."""

    isLeaf = True
    max_request_body = 4 * MiB

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def render_POST(self, request: Any) -> bytes:
        request.content.seek(0, 2)
        self.sizes.append(request.content.tell())
        return b"stored"


def read_answers(sock: socket.socket, count: int, timeout: float = 10) -> bytes:
    """Read until ``count`` response heads have arrived (bounded)."""
    data = b""
    deadline = time.monotonic() + timeout
    while data.count(b"HTTP/1.1 ") < count and time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


class GuardTests(ServerTestCase):
    """guard() with each authenticator, as a client sees it."""

    @inlineCallbacks
    def test_every_authenticator(self) -> None:
        """Basic: 401 with WWW-Authenticate, then 200; query token: 401
        missing, 403 wrong, 200; API key: 401, 403, 200; session: 401
        without the cookie, 200 with the one the login set."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        throttle = LoginThrottle()
        store = SessionStore(reactor)
        self.addCleanup(store.stop)
        root = Resource()
        page = Data(b"members only", "text/plain")
        root.putChild(
            b"basic", guard(page, BasicAuth(checker, realm="r", throttle=throttle))
        )
        root.putChild(b"token", guard(page, QueryTokenAuth({"t-1": "carol"}.get)))
        root.putChild(b"key", guard(page, ApiKeyAuth({"k-1": "ops"})))
        root.putChild(b"session", guard(page, SessionAuth(store)))
        root.putChild(b"login", LoginResource(checker, store, throttle=throttle))
        server = yield self.start_server(None, http=root)
        port = server.ports[0].getHost().port

        def get(path: str, headers: dict[str, str] | None = None) -> Any:
            return in_thread(http_request, port, "GET", path, headers)

        status, headers, body = yield get("/basic")
        self.assertEqual(
            (status, headers["www-authenticate"], body), (401, 'Basic realm="r"', b"")
        )
        status, _, body = yield get("/basic", basic("ada", "lovelace"))
        self.assertEqual((status, body), (200, b"members only"))
        for path, expected in [
            ("/token", 401),
            ("/token?token=guess", 403),
            ("/token?token=t-1", 200),
        ]:
            self.assertEqual((yield get(path))[0], expected, path)
        for key, expected in [(None, 401), ("k-9", 403), ("k-1", 200)]:
            sent = {"X-API-Key": key} if key else {}
            self.assertEqual((yield get("/key", sent))[0], expected, key)
        self.assertEqual((yield get("/session"))[0], 401)
        status, headers, _ = yield in_thread(
            http_request,
            port,
            "POST",
            "/login",
            FORM,
            b"username=ada&password=lovelace",
        )
        self.assertEqual(status, 204)
        cookie = {"Cookie": headers["set-cookie"].split(";")[0]}
        status, _, body = yield get("/session", cookie)
        self.assertEqual((status, body), (200, b"members only"))

    @inlineCallbacks
    def test_refused_before_the_body(self) -> None:
        """A POST of 3 MiB to a guarded resource that takes 4 MiB: without
        credentials 401 comes from the head, nothing reaches the resource;
        with them the resource's own limit holds (the server's is 1 MiB),
        and 5 MiB gets 413."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        sized = Sized()
        root = Resource()
        root.putChild(b"upload", guard(sized, BasicAuth(checker)))
        server = yield self.start_server(None, http=root)
        port = server.ports[0].getHost().port
        body = b"x" * (3 * MiB)

        def post(headers: dict[str, str], data: bytes) -> Any:
            return in_thread(http_request, port, "POST", "/upload", headers, data)

        def head_only() -> bytes:
            # the head alone, announcing 3 MiB: the 401 must come before any
            # body byte is sent (sending the body as well races with the
            # server closing the connection after its answer)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body)
                )
                return read_answers(sock, 1)

        answer = yield in_thread(head_only)
        self.assertTrue(answer.startswith(b"HTTP/1.1 401 "), answer[:80])
        self.assertEqual(sized.sizes, [])
        status, _, answer = yield post(basic("ada", "lovelace"), body)
        self.assertEqual((status, answer, sized.sizes), (200, b"stored", [3 * MiB]))

        def too_big() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                auth = basic("ada", "lovelace")["Authorization"]
                sock.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\n"
                    b"Content-Length: %d\r\n\r\n" % (auth.encode(), 5 * MiB)
                )
                return read_answers(sock, 1)

        self.assertTrue((yield in_thread(too_big)).startswith(b"HTTP/1.1 413 "))


class LaterBeforeRequestTests(ServerTestCase):
    """before_request returning a Deferred, over a real socket."""

    @inlineCallbacks
    def test_pipelined_requests_stay_in_order(self) -> None:
        """Two requests in one packet, the first one's hook slow: no answer
        while it is pending; once it fires, the first answer, then the
        second."""
        pending: list[Deferred[Any]] = []

        def before_request(request: Any) -> Any:
            if request.path == b"/slow":
                d: Deferred[Any] = Deferred()
                pending.append(d)
                return d
            return None

        root = Resource()
        root.putChild(b"slow", Data(b"first", "text/plain"))
        root.putChild(b"fast", Data(b"second", "text/plain"))
        server = yield self.start_server(None, http=root, before_request=before_request)
        port = server.ports[0].getHost().port
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        yield self.when(lambda: len(pending) == 1)
        early = yield in_thread(read_answers, sock, 1, 0.5)
        self.assertEqual(early, b"")
        pending[0].callback(None)
        data = yield in_thread(read_answers, sock, 2)
        first, second = data.index(b"first"), data.index(b"second")
        self.assertLess(first, second)
        self.assertEqual(data.count(b"HTTP/1.1 200 OK"), 2)

    @inlineCallbacks
    def test_coroutine_hook_refuses(self) -> None:
        """An ``async def`` hook that looks a token up answers 401 to a
        request without it and lets the one with it through."""
        from wsplugin.web import EmptyPage

        async def before_request(request: Any) -> Any:
            d: Deferred[None] = Deferred()
            reactor.callLater(0, d.callback, None)  # a look-up elsewhere
            await d
            if request.getHeader(b"x-team") != b"blue":
                return EmptyPage(401, {b"www-authenticate": b'Bearer realm="team"'})
            return None

        site = Path(self.mktemp())
        site.mkdir()
        (site / "index.html").write_text("home")
        server = yield self.start_server(
            None, static=str(site), before_request=before_request
        )
        port = server.ports[0].getHost().port
        status, headers, _ = yield in_thread(http_request, port, "GET", "/")
        self.assertEqual(
            (status, headers["www-authenticate"]), (401, 'Bearer realm="team"')
        )
        status, _, body = yield in_thread(
            http_request, port, "GET", "/", {"X-Team": "blue"}
        )
        self.assertEqual((status, body), (200, b"home"))


class Recorder:
    """Session events, recorded; each session's data names its user."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def create_session(self, identity: Any) -> dict[str, Any]:
        return {"name": identity.capitalize()}

    def on_session_start(self, session: Any) -> None:
        self.seen.append(("start", session.identity))

    def on_session_end(self, session: Any, reason: str) -> None:
        self.seen.append(("end", session.identity, reason))

    def on_invalid_session(self, request: Any) -> None:
        self.seen.append(("invalid", request.path))


class Cart(Resource):
    isLeaf = True

    def __init__(self, store: SessionStore) -> None:
        super().__init__()
        self.store = store

    def render_GET(self, request: Any) -> bytes:
        session = self.store.session_of(request)
        if session is None:
            request.setResponseCode(401)
            return b""
        return session.data["name"].encode()


class Hello:
    def on_open(self, conn: Any) -> None:
        conn.send_text(f"hello {conn.session.data['name']}")


class SessionTests(ServerTestCase):
    """Session events, the session seen by HTTP and WebSocket, and the
    session fixation attack, over real sockets."""

    @inlineCallbacks
    def test_fixation_and_events(self) -> None:
        """An attacker logs in, plants its session id in the victim's
        browser; the victim logs in with that cookie: the victim's id is a
        new one, the planted id no longer works (HTTP 401, WebSocket 401),
        the victim's session is visible to the resource and on the
        WebSocket, and the events tell it all."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        events = Recorder()
        store = SessionStore(reactor, handler=events)
        self.addCleanup(store.stop)
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace", eve=b"evil")
        root = Resource()
        root.putChild(b"login", LoginResource(checker, store))
        root.putChild(b"cart", Cart(store))
        server = yield self.start_server(None, http=root)
        server.register_handler(
            "*", "/ws", Hello(), default_host=True, auth=SessionAuth(store)
        )
        port = server.ports[0].getHost().port

        def login(user: str, password: str, cookie: str | None = None) -> str:
            headers = dict(FORM)
            if cookie:
                headers["Cookie"] = cookie
            body = f"username={user}&password={password}".encode()
            status, answer, _ = http_request(port, "POST", "/login", headers, body)
            assert status == 204, status
            return str(answer["set-cookie"].split(";")[0])

        planted = yield in_thread(login, "eve", "evil")
        victim = yield in_thread(login, "ada", "lovelace", planted)
        self.assertNotEqual(victim, planted)
        status, _, _ = yield in_thread(
            http_request, port, "GET", "/cart", {"Cookie": planted}
        )
        self.assertEqual(status, 401)
        status, _, body = yield in_thread(
            http_request, port, "GET", "/cart", {"Cookie": victim}
        )
        self.assertEqual((status, body), (200, b"Ada"))

        def websocket(cookie: str) -> Any:
            try:
                with connect(
                    f"ws://127.0.0.1:{port}/ws",
                    additional_headers={"Cookie": cookie},
                    open_timeout=10,
                ) as ws:
                    return ws.recv(timeout=10)
            except InvalidStatus as e:
                return e.response.status_code

        self.assertEqual((yield in_thread(websocket, victim)), "hello Ada")
        self.assertEqual((yield in_thread(websocket, planted)), 401)
        self.assertEqual(
            events.seen,
            [
                ("start", "eve"),
                ("end", "eve", "replaced"),
                ("start", "ada"),
                ("invalid", "/cart"),
                ("invalid", "/ws"),
            ],
        )
