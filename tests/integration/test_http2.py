"""HTTP/2 on the same port as wss://, over real loopback TLS sockets.

The server offers ``h2`` and ``http/1.1`` over ALPN when it serves pages
(and the ``h2`` package is installed); pages and files come over HTTP/2,
WebSocket upgrades over HTTP/1.1 on the same port. The bounds of the
HTTP/1.1 side hold per stream (413 from the head, a refusal leaving the
other streams alone). Checked with the ``h2`` package's client, with
``curl --http2`` and with headless Chromium, whose navigation entry must
say ``h2``.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import trustme
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest
from websockets.sync.client import connect

from tests.integration.browser import Chromium
from tests.integration.h2_support import H2Client
from tests.integration.support import ServerTestCase, in_thread
from tests.integration.test_browser import LOG, STATE, WAIT, chromium_or_skip
from tests.integration.test_tls import Pems, tls_handshake
from wsplugin import TLSOptions
from wsplugin.apps.chat import Chat
from wsplugin.auth import ApiKeyAuth, guard
from wsplugin.web import StaticFiles

LOOPBACK = "tcp:0:interface=127.0.0.1"


def curl_or_skip() -> str:
    """Debian's curl (built with nghttp2): skipped locally when missing,
    a failure under CI."""
    path = shutil.which("curl")
    if path:
        return path
    if os.environ.get("CI"):
        raise AssertionError("curl is not installed; CI installs it")
    raise SkipTest("curl is not installed")


class Echo:
    def on_message(self, conn: Any, text: str) -> None:
        conn.send_text(text)


class HTTP2Tests(ServerTestCase):
    """Pages over h2, WebSockets over http/1.1, on one TLS port."""

    @inlineCallbacks
    def serve(self, **options: Any) -> Any:
        self.pems = Pems(self, trustme.CA())
        site = Path(self.mktemp()).resolve()
        site.mkdir()
        (site / "index.html").write_text("<h1>home</h1>\n")
        (site / "data.bin").write_bytes(bytes(range(256)) * 1024)
        files = StaticFiles(str(site))
        files.putChild(b"private", guard(StaticFiles(str(site)), ApiKeyAuth({"k": 1})))
        tls = TLSOptions(certificate=self.pems.cert, key=self.pems.key)
        server = yield self.start_server(
            Echo(),
            path="/ws",
            endpoints=[LOOPBACK],
            http=files,
            tls=tls,
            **options,
        )
        self.port = server.ports[0].getHost().port
        return server

    @inlineCallbacks
    def test_alpn_offers_h2_next_to_http11(self) -> None:
        """A browser-like offer (h2, http/1.1) gets h2 from a server with
        pages; a WebSocket-only server keeps http/1.1."""
        yield self.serve()
        client = yield in_thread(H2Client, self.port, self.pems.ca, ("h2", "http/1.1"))
        self.addCleanup(client.close)
        self.assertEqual(client.alpn, "h2")
        pems = Pems(self, trustme.CA(), name="ws-only")
        only = yield self.start_server(
            Echo(),
            endpoints=[LOOPBACK],
            tls=TLSOptions(certificate=pems.cert, key=pems.key),
        )
        port = only.ports[0].getHost().port
        context = ssl.create_default_context(cafile=pems.ca)
        context.set_alpn_protocols(["h2", "http/1.1"])
        info = yield in_thread(tls_handshake, port, context)
        self.assertEqual(info["alpn"], "http/1.1")

    @inlineCallbacks
    def test_pages_files_and_bounds_per_stream(self) -> None:
        """Over one HTTP/2 connection: the page, a Range of a file (206), a
        body declared over max_request_body (413 from the head, then a
        reset with NO_ERROR), a guarded file without its key (401), and
        the page again: the connection survived its refused streams."""
        yield self.serve(max_request_body=1000)

        def scenario() -> list[Any]:
            client = H2Client(self.port, self.pems.ca)
            try:
                page = client.wait(client.request("GET", "/"))
                part = client.wait(
                    client.request("GET", "/data.bin", [("range", "bytes=0-99")])
                )
                big = client.request(
                    "POST", "/", [("content-length", "5000")], b"x" * 500, end=False
                )
                refused = client.wait(big)
                guarded = client.wait(client.request("GET", "/private/index.html"))
                keyed = client.wait(
                    client.request("GET", "/private/index.html", [("x-api-key", "k")])
                )
                again = client.wait(client.request("GET", "/"))
                return [page, part, refused, guarded, keyed, again, client.closed]
            finally:
                client.close()

        page, part, refused, guarded, keyed, again, closed = yield in_thread(scenario)
        self.assertEqual((page.status, page.body), (200, b"<h1>home</h1>\n"))
        self.assertEqual((part.status, part.body), (206, bytes(range(100))))
        self.assertEqual((refused.status, refused.reset), (413, 0))
        self.assertEqual((guarded.status, guarded.body), (401, b""))
        self.assertEqual((keyed.status, keyed.body), (200, b"<h1>home</h1>\n"))
        self.assertEqual((again.status, closed), (200, False))

    @inlineCallbacks
    def test_websocket_on_the_same_port(self) -> None:
        """wss:// on the port that serves h2 pages: the upgrade runs over
        http/1.1 and echoes."""
        yield self.serve()

        def echo() -> str:
            context = ssl.create_default_context(cafile=self.pems.ca)
            with connect(
                f"wss://localhost:{self.port}/ws", ssl=context, open_timeout=10
            ) as ws:
                ws.send("over http/1.1")
                return str(ws.recv(timeout=10))

        self.assertEqual((yield in_thread(echo)), "over http/1.1")

    @inlineCallbacks
    def test_curl_http2(self) -> None:
        """curl --http2 fetches the page and a Range over HTTP/2."""
        curl = curl_or_skip()
        yield self.serve()

        def fetch(*args: str) -> str:
            result = subprocess.run(
                [
                    curl,
                    "-s",
                    "--http2",
                    "--cacert",
                    self.pems.ca,
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_version} %{http_code} %{size_download}",
                    *args,
                    f"https://localhost:{self.port}/data.bin",
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
            return result.stdout.decode()

        self.assertEqual((yield in_thread(fetch)), "2 200 262144")
        self.assertEqual((yield in_thread(fetch, "-r", "0-99")), "2 206 100")


class BrowserHTTP2Tests(ServerTestCase):
    """Headless Chromium loads the chat page over h2 and chats over wss://
    on the same port."""

    timeout = 120

    @inlineCallbacks
    def test_chat_page_over_h2(self) -> None:
        """The page's navigation entry says h2 (nextHopProtocol); two tabs
        chat through the WebSocket of the same port."""
        chromium = chromium_or_skip()
        pems = Pems(self, trustme.CA())
        chat = Chat()
        server = yield self.start_server(
            chat,
            endpoints=[LOOPBACK],
            http=chat.resource(),
            tls=TLSOptions(certificate=pems.cert, key=pems.key),
        )
        port = server.ports[0].getHost().port
        browser = Chromium(
            chromium, timeout=WAIT, flags=("--ignore-certificate-errors",)
        )
        self.addCleanup(browser.stop)

        def scenario() -> tuple[Any, Any, Any]:
            browser.start()
            url = f"https://localhost:{port}/"
            a, b = browser.new_page(url), browser.new_page(url)
            for page in (a, b):
                browser.wait_for(page, f"{STATE} === 'open'", WAIT)
            protocol = browser.evaluate(
                a, "performance.getEntriesByType('navigation')[0].nextHopProtocol"
            )
            browser.evaluate(
                a,
                "document.getElementById('message').value = 'over h2';"
                "document.getElementById('send').click();",
            )
            browser.wait_for(b, f"{LOG}.includes('over h2')", WAIT)
            scheme = browser.evaluate(a, "location.protocol")
            return protocol, scheme, browser.evaluate(b, LOG)

        protocol, scheme, log = yield deferToThread(scenario)
        self.assertEqual((protocol, scheme), ("h2", "https:"))
        self.assertEqual(log, ["over h2"])
