"""HTTP and WebSocket on one port, upgrade from a resource, authentication."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
from pathlib import Path
from typing import Any

import bcrypt
from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.web.pages import errorPage
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.util import Redirect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.helpers import Recorder
from tests.integration.support import ServerTestCase, in_thread
from wsplugin.auth import (
    ApiKeyAuth,
    BasicAuth,
    HtpasswdChecker,
    LoginResource,
    QueryTokenAuth,
    SessionAuth,
    SessionStore,
)
from wsplugin.web import upgrade


class Echo(Recorder):
    def on_open(self, conn: Any) -> None:
        super().on_open(conn)
        if conn.user is not None:
            conn.send_text(f"hello {conn.user}")

    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        conn.send_text(text)


def http_get(
    port: int,
    path: str,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, data


def ws_status(url: str, **kw: Any) -> Any:
    """101 -> the first message (or "open"); otherwise the HTTP status."""
    try:
        with connect(url, open_timeout=10, **kw) as ws:
            try:
                return ws.recv(timeout=1)
            except TimeoutError:
                return "open"
    except InvalidStatus as e:
        return e.response.status_code


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class SamePortTests(ServerTestCase):
    """Static files, pages and WebSocket routes share a port."""

    def _site_dir(self) -> Path:
        root = Path(self.mktemp()).resolve()
        root.mkdir(parents=True)
        (root / "index.html").write_text("<h1>home</h1>")
        (root / "style.css").write_text("body { color: red }")
        (root / "data.bin").write_bytes(bytes(range(256)) * 4)
        return root

    @inlineCallbacks
    def test_static_and_websocket(self) -> None:
        """One port: index.html, content types, Range (206), 404, and a
        WebSocket upgrade on the same port."""
        server = yield self.start_server(Echo(), static=str(self._site_dir()))
        port = server.ports[0].getHost().port
        status, headers, body = yield in_thread(http_get, port, "/")
        self.assertEqual((status, body), (200, b"<h1>home</h1>"))
        status, headers, _ = yield in_thread(http_get, port, "/style.css")
        self.assertEqual(headers["content-type"], "text/css")
        status, headers, body = yield in_thread(
            http_get, port, "/data.bin", {"Range": "bytes=10-19"}
        )
        self.assertEqual((status, body), (206, bytes(range(10, 20))))
        status, _, _ = yield in_thread(http_get, port, "/missing")
        self.assertEqual(status, 404)
        self.assertEqual((yield in_thread(ws_status, self.url + "/")), "open")

    @inlineCallbacks
    def test_empty_404(self) -> None:
        """With empty_404 an unknown path is 404 with no body."""
        server = yield self.start_server(
            Echo(), static=str(self._site_dir()), empty_404=True
        )
        port = server.ports[0].getHost().port
        status, headers, body = yield in_thread(http_get, port, "/nothing-here")
        self.assertEqual((status, body, headers.get("content-length")), (404, b"", "0"))

    @inlineCallbacks
    def test_plain_get_to_websocket_path(self) -> None:
        """A plain GET to a WebSocket-only path gets 426, not a hang."""
        page = Resource()
        page.putChild(b"", Redirect(b"/chat"))
        server = yield self.start_server(Echo(), path="/chat", http=page)
        port = server.ports[0].getHost().port
        status, headers, _ = yield in_thread(http_get, port, "/chat")
        self.assertEqual((status, headers.get("upgrade")), (426, "websocket"))
        self.assertEqual((yield in_thread(ws_status, self.url + "/chat")), "open")
        self.assertEqual((yield in_thread(ws_status, self.url + "/other")), 404)

    @inlineCallbacks
    def test_chat_test_page(self) -> None:
        """The chat app serves its test page at / next to the WebSocket."""
        from wsplugin.apps.chat import Chat

        chat = Chat()
        server = yield self.start_server(chat, http=chat.resource())
        port = server.ports[0].getHost().port
        status, headers, body = yield in_thread(http_get, port, "/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        self.assertIn(b"new WebSocket(url, [SUBPROTOCOL])", body)

    @inlineCallbacks
    def test_before_request(self) -> None:
        """before_request screens every request: 401 without a header, a
        redirect for /old, and lets the rest (upgrades included) through."""

        def screen(request: Any) -> Any:
            if request.path == b"/old":
                return Redirect(b"/new")
            if request.getHeader(b"x-team") != b"blue":
                return errorPage(401, "Unauthorized", "")
            return None

        server = yield self.start_server(Echo(), before_request=screen)
        port = server.ports[0].getHost().port
        self.assertEqual((yield in_thread(http_get, port, "/x"))[0], 401)
        status, headers, _ = yield in_thread(http_get, port, "/old", {"X-Team": "blue"})
        self.assertEqual((status, headers["location"]), (302, "/new"))
        self.assertEqual((yield in_thread(ws_status, self.url)), 401)
        ok = yield in_thread(ws_status, self.url, additional_headers={"X-Team": "blue"})
        self.assertEqual(ok, "open")


class SparkleTests(ServerTestCase):
    """upgrade(request) inside a resource (TMS Sparkle Upgrader.Upgrade)."""

    @inlineCallbacks
    def test_upgrade_from_resource(self) -> None:
        """A render_GET upgrades and runs an awaitable echo loop; a plain GET
        to the same resource gets 400."""
        ended: list[str] = []

        class EchoService(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> Any:
                conn = upgrade(request)
                if conn is None:
                    return NOT_DONE_YET
                Deferred.fromCoroutine(self.serve(conn))
                return NOT_DONE_YET

            async def serve(self, conn: Any) -> None:
                async for message in conn:
                    conn.send_text("Echo: " + message)
                ended.append("loop ended")

        server = yield self.start_server(None, http=EchoService())
        port = server.ports[0].getHost().port

        def client() -> list[str]:
            with connect(self.url + "/echo", open_timeout=10) as ws:
                ws.send("one")
                first = ws.recv(timeout=10)
                ws.send("two")
                return [first, ws.recv(timeout=10)]

        self.assertEqual((yield in_thread(client)), ["Echo: one", "Echo: two"])
        yield self.when(lambda: ended == ["loop ended"])
        status, _, _ = yield in_thread(http_get, port, "/echo")
        self.assertEqual(status, 400)


class AuthTests(ServerTestCase):
    """Authenticators answer 401/403 before any upgrade; conn.user is set."""

    def _htpasswd(self) -> str:
        path = Path(self.mktemp()).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        ada = bcrypt.hashpw(b"lovelace", bcrypt.gensalt(4)).decode()
        bob = "{SHA}" + base64.b64encode(hashlib.sha1(b"builder").digest()).decode()
        path.write_text(f"# users\nada:{ada}\nbob:{bob}\n")
        return str(path)

    @inlineCallbacks
    def test_basic_auth(self) -> None:
        """Right bcrypt and {SHA} passwords open and set conn.user; a wrong
        password or none gets 401 with WWW-Authenticate; a huge header 431."""
        # a file mixing bcrypt and {SHA} on purpose: both schemes are checked
        checker = HtpasswdChecker(self._htpasswd(), allow_mixed=True)
        auth = BasicAuth(checker, realm="chat")
        yield self.start_server(Echo(), auth=auth)
        url = self.url
        self.assertEqual(
            (
                yield in_thread(
                    ws_status, url, additional_headers=basic("ada", "lovelace")
                )
            ),
            "hello ada",
        )
        self.assertEqual(
            (
                yield in_thread(
                    ws_status, url, additional_headers=basic("bob", "builder")
                )
            ),
            "hello bob",
        )
        for headers in (basic("ada", "wrong"), basic("eve", "lovelace"), {}):
            self.assertEqual(
                (yield in_thread(ws_status, url, additional_headers=headers)), 401
            )
        port = self.server.ports[0].getHost().port
        status, headers, body = yield in_thread(
            http_get,
            port,
            "/",
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13",
            },
        )
        self.assertEqual(
            (status, headers["www-authenticate"], body),
            (401, 'Basic realm="chat"', b""),
        )
        status, _, _ = yield in_thread(
            http_get, port, "/", {"Authorization": "Basic " + "A" * 20000}
        )
        self.assertEqual(status, 431)

    @inlineCallbacks
    def test_public_and_protected_routes(self) -> None:
        """One route public, another protected, on one server."""
        server = yield self.start_server(None)
        server.register_handler("*", "/public", Echo(), default_host=True)
        server.register_handler(
            "*", "/admin", Echo(), auth=ApiKeyAuth({"k-123": "ops"})
        )
        self.assertEqual((yield in_thread(ws_status, self.url + "/public")), "open")
        self.assertEqual((yield in_thread(ws_status, self.url + "/admin")), 401)
        wrong = yield in_thread(
            ws_status, self.url + "/admin", additional_headers={"X-API-Key": "k-999"}
        )
        self.assertEqual(wrong, 403)
        right = yield in_thread(
            ws_status, self.url + "/admin", additional_headers={"X-API-Key": "k-123"}
        )
        self.assertEqual(right, "hello ops")

    @inlineCallbacks
    def test_query_token(self) -> None:
        """?token= checked by a callable: missing 401, invalid 403, valid ok."""
        auth = QueryTokenAuth(lambda token: {"t0ken": "carol"}.get(token))
        yield self.start_server(Echo(), auth=auth)
        self.assertEqual((yield in_thread(ws_status, self.url + "/")), 401)
        self.assertEqual((yield in_thread(ws_status, self.url + "/?token=bad")), 403)
        self.assertEqual(
            (yield in_thread(ws_status, self.url + "/?token=t0ken")), "hello carol"
        )

    @inlineCallbacks
    def test_session_cookie(self) -> None:
        """POST /login sets a session cookie that opens the WebSocket; a wrong
        login gets 401; an expired session gets 401."""
        clock = task.Clock()
        store = SessionStore(clock, timeout=60)
        checker = HtpasswdChecker(self._htpasswd(), allow_mixed=True)
        login = Resource()
        login.putChild(b"login", LoginResource(checker, store))
        server = yield self.start_server(Echo(), auth=SessionAuth(store), http=login)
        port = server.ports[0].getHost().port
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, _, _ = yield in_thread(
            http_get, port, "/login", form, "POST", b"username=ada&password=nope"
        )
        self.assertEqual(status, 401)
        status, headers, _ = yield in_thread(
            http_get, port, "/login", form, "POST", b"username=ada&password=lovelace"
        )
        self.assertEqual(status, 204)
        cookie = headers["set-cookie"].split(";")[0]
        self.assertIn("HttpOnly", headers["set-cookie"])
        self.assertEqual(
            (
                yield in_thread(
                    ws_status, self.url, additional_headers={"Cookie": cookie}
                )
            ),
            "hello ada",
        )
        clock.advance(61)
        self.assertEqual(
            (
                yield in_thread(
                    ws_status, self.url, additional_headers={"Cookie": cookie}
                )
            ),
            401,
        )
        self.assertEqual((yield in_thread(ws_status, self.url)), 401)

    @inlineCallbacks
    def test_bad_requests(self) -> None:
        """A non-GET upgrade gets 405; a bad origin 403; an unknown
        subprotocol opens without one."""
        yield self.start_server(
            Echo(), allowed_origins=["https://app.example"], subprotocols=["v1"]
        )
        port = self.server.ports[0].getHost().port
        status, headers, _ = yield in_thread(
            http_get,
            port,
            "/",
            {
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13",
            },
            "POST",
        )
        self.assertEqual((status, headers.get("allow")), (405, "GET"))
        self.assertEqual(
            (yield in_thread(ws_status, self.url, origin="https://evil.example")), 403
        )

        def unknown_protocol() -> Any:
            with connect(self.url, open_timeout=10, origin="https://app.example") as ws:
                return ws.subprotocol

        self.assertIsNone((yield in_thread(unknown_protocol)))

    @inlineCallbacks
    def test_forwarded_for(self) -> None:
        """With trusted_proxies=1 the client address comes from X-Forwarded-For;
        without, the header is ignored."""
        seen: list[str] = []

        class Peer(Recorder):
            def allow(self, conn: Any) -> bool:
                seen.append(conn.request.peer_address)
                return True

        server = yield self.start_server(None)
        server.register_handler(
            "*", "/trusting", Peer(), default_host=True, trusted_proxies=1
        )
        server.register_handler("*", "/plain", Peer())
        headers = {"X-Forwarded-For": "203.0.113.7"}
        yield in_thread(ws_status, self.url + "/trusting", additional_headers=headers)
        yield in_thread(ws_status, self.url + "/plain", additional_headers=headers)
        self.assertEqual(seen, ["203.0.113.7", "127.0.0.1"])
