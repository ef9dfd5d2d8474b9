"""wsplugin behind real proxies: Debian's nginx and HAProxy.

Each proxy runs the example configuration that docs/proxies.md shows
(examples/nginx/wsplugin.conf, examples/haproxy/wsplugin.cfg) with only its
ports and certificate paths changed (tests/integration/proxy_support.py),
terminates TLS with a trustme certificate, and passes connections to a
server on loopback:

* nginx adds ``X-Forwarded-For``; with ``trusted_proxies=1``
  ``conn.request.peer`` is the real client, and an ``X-Forwarded-For`` the
  client forged is ignored;
* HAProxy sends the PROXY protocol v2 to a ``haproxy:`` endpoint;
  ``conn.request.peer`` is the real client, port included;
* the documented deployment (``twistd`` started from the example systemd
  units, behind each proxy) serves the chat page, which two headless
  Chromium pages use to chat through nginx over wss://.

The client binds 127.0.0.2, so "the real client" cannot be confused with
the proxy, which talks to the server from 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from websockets.exceptions import InvalidMessage
from websockets.sync.client import connect

from tests.integration.browser import BrowserError, Chromium, Page
from tests.integration.proxy_support import (
    HAPROXY_SITE,
    NGINX_SITE,
    TLS_DIR,
    WAIT,
    ActivatedTwistd,
    HAProxy,
    Nginx,
    TLSFiles,
    fenced_blocks,
    require_binary,
    require_file,
    service_command,
)
from tests.integration.support import ROOT, ServerTestCase, in_thread
from tests.integration.test_browser import LOG, STATE, STATUS, chromium_or_skip

PROXIES_DOC = ROOT / "docs" / "proxies.md"
CLIENT_HOST = "127.0.0.2"  # the real client; the proxies connect from 127.0.0.1

#: docs/proxies.md's one change to wsplugin.service for HAProxy
HAPROXY_EXEC = (
    "--port systemd:domain=INET:index=0 --trusted-proxies 1",
    "--port haproxy:systemd:domain=INET:index=0",
)


class PeerReporter:
    """Records what the server knows of each client, and answers every
    message with it as JSON."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.connects: list[Any] = []

    def on_connect(self, peer: Any) -> bool:
        self.connects.append(peer)
        return True

    def allow(self, conn: Any) -> bool:
        self.requests.append(conn.request)
        return True

    def on_message(self, conn: Any, text: str) -> None:
        r = conn.request
        conn.send_text(
            json.dumps(
                {
                    "text": text,
                    "peer": [r.peer.host, r.peer.port],
                    "proxy_peer": r.proxy_peer.host if r.proxy_peer else None,
                    "peer_address": r.peer_address,
                }
            )
        )


def ask(url: str, tls: TLSFiles | None, headers: dict[str, str] | None = None) -> Any:
    """Connect from CLIENT_HOST, send one message, return the server's
    JSON answer plus the client's own address as ``"client"``."""
    with connect(
        url,
        ssl=tls.client_context() if tls else None,
        source_address=(CLIENT_HOST, 0),
        additional_headers=headers,
        open_timeout=WAIT,
    ) as ws:
        ws.send("who am I")
        answer = json.loads(ws.recv(timeout=WAIT))
        answer["client"] = list(ws.socket.getsockname()[:2])
    return answer


def get(port: int, path: str, tls: TLSFiles | None = None) -> tuple[int, Any, bytes]:
    """A GET from CLIENT_HOST without following redirects: status, headers,
    body."""
    if tls:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1",
            port,
            context=tls.client_context(),
            source_address=(CLIENT_HOST, 0),
            timeout=WAIT,
        )
    else:
        conn = http.client.HTTPConnection(
            "127.0.0.1", port, source_address=(CLIENT_HOST, 0), timeout=WAIT
        )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


class NginxTests(ServerTestCase):
    """nginx (examples/nginx/wsplugin.conf) in front of a server with
    ``trusted_proxies=1``."""

    @inlineCallbacks
    def start_behind_nginx(self, **options: Any) -> Any:
        self.handler = PeerReporter()
        server = yield self.start_server(self.handler, **options)
        self.tls = TLSFiles(self)
        self.nginx = Nginx(self, server.ports[0].getHost().port, self.tls)
        yield in_thread(self.nginx.run)
        self.wss = f"wss://127.0.0.1:{self.nginx.https_port}/chat?room=1"

    @inlineCallbacks
    def test_upgrade_and_real_client(self) -> None:
        """A wss:// upgrade through nginx reaches the server as HTTP/1.1 with
        ``Upgrade: websocket`` and ``Connection: upgrade``, messages flow,
        and ``conn.request.peer`` is the client (127.0.0.2, port 0: the
        header carries none) while ``proxy_peer`` is nginx."""
        yield self.start_behind_nginx(trusted_proxies=1)
        answer = yield in_thread(ask, self.wss, self.tls)
        self.assertEqual(answer["text"], "who am I")
        self.assertEqual(answer["peer"], [CLIENT_HOST, 0])
        self.assertEqual(answer["proxy_peer"], "127.0.0.1")
        self.assertEqual(answer["peer_address"], CLIENT_HOST)
        (request,) = self.handler.requests
        self.assertEqual(request.peer, IPv4Address("TCP", CLIENT_HOST, 0))
        self.assertEqual(request.headers["upgrade"].lower(), "websocket")
        self.assertEqual(request.headers["connection"].lower(), "upgrade")
        self.assertEqual(request.headers["x-forwarded-for"], CLIENT_HOST)
        self.assertEqual(request.headers["x-forwarded-proto"], "https")
        self.assertEqual(request.target, "/chat?room=1")
        self.assertEqual(request.params, {"room": ["1"]})

    @inlineCallbacks
    def test_forged_forwarded_for_through_nginx(self) -> None:
        """A client that sends its own ``X-Forwarded-For`` gets nginx's entry
        appended; with one trusted proxy only that last entry counts."""
        yield self.start_behind_nginx(trusted_proxies=1)
        forged = {"X-Forwarded-For": "203.0.113.66, 198.51.100.1"}
        answer = yield in_thread(ask, self.wss, self.tls, forged)
        self.assertEqual(answer["peer"], [CLIENT_HOST, 0])
        self.assertEqual(answer["peer_address"], CLIENT_HOST)
        (request,) = self.handler.requests
        self.assertEqual(
            request.headers["x-forwarded-for"],
            f"203.0.113.66, 198.51.100.1, {CLIENT_HOST}",
        )

    @inlineCallbacks
    def test_untrusted_nginx_is_the_peer(self) -> None:
        """With trusted_proxies=0 the header nginx adds is ignored: the peer
        is nginx's socket, as for any client."""
        yield self.start_behind_nginx()
        answer = yield in_thread(ask, self.wss, self.tls)
        self.assertEqual(answer["peer"][0], "127.0.0.1")
        self.assertNotEqual(answer["peer"][1], 0)
        self.assertIsNone(answer["proxy_peer"])

    @inlineCallbacks
    def test_http_redirects_to_https(self) -> None:
        """Port 80 (here a free port) answers 301 to the https:// URL."""
        yield self.start_behind_nginx(trusted_proxies=1)
        status, headers, _ = yield in_thread(get, self.nginx.http_port, "/chat?x=1")
        self.assertEqual(status, 301)
        self.assertEqual(headers["Location"], "https://127.0.0.1/chat?x=1")


class ForgedForwardedForTests(ServerTestCase):
    """Without a trusted proxy, ``X-Forwarded-For`` is just a header."""

    @inlineCallbacks
    def test_forged_header_direct(self) -> None:
        """A client connecting directly (trusted_proxies=0, the default) with
        a forged ``X-Forwarded-For`` is known by its socket address and
        port; the header changes nothing."""
        handler = PeerReporter()
        yield self.start_server(handler)
        forged = {"X-Forwarded-For": "203.0.113.66"}
        answer = yield in_thread(ask, self.url + "/", None, forged)
        self.assertEqual(answer["peer"], answer["client"])
        self.assertEqual(answer["peer_address"], CLIENT_HOST)
        self.assertIsNone(answer["proxy_peer"])
        (request,) = handler.requests
        self.assertIsNone(request.forwarded_for)
        self.assertEqual(request.headers["x-forwarded-for"], "203.0.113.66")


class ClientAddress(Resource):
    """Answers a GET with the client address ``twisted.web`` sees."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        address = request.getClientAddress()
        return f"{address.host} {address.port}".encode()


class HAProxyTests(ServerTestCase):
    """HAProxy (examples/haproxy/wsplugin.cfg) in front of a server on a
    ``haproxy:`` endpoint."""

    @inlineCallbacks
    def start_behind_haproxy(self, http: Any = None) -> Any:
        self.handler = PeerReporter()
        server = yield self.start_server(
            self.handler, endpoints=["haproxy:tcp:0:interface=127.0.0.1"], http=http
        )
        self.port = server.ports[0].getHost().port
        self.tls = TLSFiles(self)
        self.haproxy = HAProxy(self, self.port, self.tls)
        yield in_thread(self.haproxy.run)

    @inlineCallbacks
    def test_proxy_v2_real_client(self) -> None:
        """Through HAProxy, ``conn.request.peer`` is the client: its
        address and the source port its own socket has. ``on_connect``,
        which runs at TCP accept before the PROXY header arrives, sees
        HAProxy's address."""
        yield self.start_behind_haproxy()
        url = f"wss://127.0.0.1:{self.haproxy.https_port}/"
        answer = yield in_thread(ask, url, self.tls)
        self.assertEqual(answer["text"], "who am I")
        self.assertEqual(answer["peer"], answer["client"])
        self.assertEqual(answer["client"][0], CLIENT_HOST)
        self.assertIsNone(answer["proxy_peer"])
        self.assertEqual([peer.host for peer in self.handler.connects], ["127.0.0.1"])

    @inlineCallbacks
    def test_same_port_http(self) -> None:
        """Plain HTTP on the same port works through HAProxy too, and
        ``request.getClientAddress()`` in a resource is the client. Two
        clients in a row (127.0.0.2, then 127.0.0.3) each see their own
        address: HAProxy does not hand one client's server connection, and
        its PROXY header, to the next."""
        yield self.start_behind_haproxy(http=ClientAddress())

        def fetch(host: str) -> tuple[int, list[str], list[str]]:
            conn = http.client.HTTPSConnection(
                "127.0.0.1",
                self.haproxy.https_port,
                context=self.tls.client_context(),
                source_address=(host, 0),
                timeout=WAIT,
            )
            try:
                conn.connect()
                me = [str(part) for part in conn.sock.getsockname()[:2]]
                conn.request("GET", "/whoami")
                response = conn.getresponse()
                return response.status, response.read().decode().split(), me
            finally:
                conn.close()

        for host in (CLIENT_HOST, "127.0.0.3"):
            status, seen, me = yield in_thread(fetch, host)
            self.assertEqual(status, 200)
            self.assertEqual(seen, me)
            self.assertEqual(me[0], host)

    @inlineCallbacks
    def test_http_redirects_to_https(self) -> None:
        """Port 80 (here a free port) answers 301 to https://."""
        yield self.start_behind_haproxy()
        status, headers, _ = yield in_thread(get, self.haproxy.http_port, "/a?b=1")
        self.assertEqual(status, 301)
        self.assertTrue(headers["Location"].startswith("https://127.0.0.1"))
        self.assertTrue(headers["Location"].endswith("/a?b=1"))

    @inlineCallbacks
    def test_bypassing_haproxy_gets_nothing(self) -> None:
        """A client reaching the ``haproxy:`` endpoint directly, without a
        PROXY header, is disconnected before any HTTP answer: it cannot
        pose as anyone (and only loopback can reach it in the examples)."""
        yield self.start_behind_haproxy()

        def direct() -> None:
            with connect(f"ws://127.0.0.1:{self.port}/", open_timeout=WAIT):
                pass

        with self.assertRaises(InvalidMessage):
            yield in_thread(direct)
        self.assertEqual(self.handler.requests, [])


class DeploymentTests(ServerTestCase):
    """The documented deployment: twistd from the example systemd units on
    127.0.0.1, a proxy from the examples in front, TLS at the proxy."""

    timeout = 120

    @inlineCallbacks
    def test_chat_page_through_nginx_in_chromium(self) -> None:
        """Two headless Chromium pages load the chat page over https://
        through nginx, connect over wss://, and a message typed in one shows
        in both."""
        browser_path = chromium_or_skip()
        tls = TLSFiles(self)
        twistd = yield in_thread(ActivatedTwistd(self).run)
        nginx = Nginx(self, twistd.port, tls)
        yield in_thread(nginx.run)
        browser = Chromium(
            browser_path,
            timeout=WAIT,
            # trust exactly the test's server key, as a user trusts their CA
            flags=[f"--ignore-certificate-errors-spki-list={tls.spki_hash()}"],
        )
        self.addCleanup(browser.stop)
        url = f"https://127.0.0.1:{nginx.https_port}/"

        def wait(page: Page, expression: str, what: str) -> Any:
            try:
                return browser.wait_for(page, expression, WAIT)
            except BrowserError as e:
                try:
                    seen = browser.evaluate(page, f"({{status: {STATUS}, log: {LOG}}})")
                except BrowserError as inner:
                    seen = inner
                raise AssertionError(
                    f"{what}: {e}\npage: {seen!r}\nchromium:\n{browser.log_tail()}\n"
                    f"{nginx.describe()}\n{twistd.describe()}"
                ) from None

        def scenario() -> tuple[Any, Any]:
            browser.start()
            a, b = browser.new_page(url), browser.new_page(url)
            for name, page in (("A", a), ("B", b)):
                wait(page, f"{STATE} === 'open'", f"page {name} never opened")
            browser.evaluate(
                a,
                "document.getElementById('message').value = 'over wss';"
                "document.getElementById('send').click();",
            )
            wanted = f"{LOG}.includes('over wss')"
            wait(b, wanted, "page B never showed A's message")
            wait(a, wanted, "page A never showed its own message")
            return browser.evaluate(a, "ws.url"), browser.evaluate(b, LOG)

        ws_url, log_b = yield in_thread(scenario)
        self.assertEqual(ws_url, f"wss://127.0.0.1:{nginx.https_port}/")
        self.assertEqual(log_b, ["over wss"])

    @inlineCallbacks
    def test_twistd_behind_haproxy(self) -> None:
        """wsplugin.service with docs/proxies.md's HAProxy change
        (``--port haproxy:systemd:...``) behind HAProxy: the chat page is
        served, twistd's access log names the real client, and two wss://
        clients chat."""
        tls = TLSFiles(self)
        twistd = yield in_thread(ActivatedTwistd(self, [HAPROXY_EXEC]).run)
        haproxy = HAProxy(self, twistd.port, tls)
        yield in_thread(haproxy.run)

        def scenario() -> tuple[int, bytes, Any, Any]:
            status, _, page = get(haproxy.https_port, "/", tls)
            url = f"wss://127.0.0.1:{haproxy.https_port}/"
            context = tls.client_context()
            with (
                connect(url, ssl=context, open_timeout=WAIT) as a,
                connect(url, ssl=context, open_timeout=WAIT) as b,
            ):
                a.send("through haproxy")
                return status, page, b.recv(timeout=WAIT), a.recv(timeout=WAIT)

        status, page, to_b, to_a = yield in_thread(scenario)
        self.assertEqual(status, 200)
        self.assertIn(b"new WebSocket", page)
        self.assertEqual((to_b, to_a), ("through haproxy", "through haproxy"))
        self.assertIn(f'"{CLIENT_HOST}" - - ', twistd.describe())


class DocsTests(SynchronousTestCase):
    """docs/proxies.md shows the configurations the tests run."""

    def test_docs_show_the_examples(self) -> None:
        """Both example files appear whole and unchanged in a code block."""
        blocks = fenced_blocks(PROXIES_DOC)
        for example in (NGINX_SITE, HAPROXY_SITE):
            self.assertIn(example.read_text(), blocks, example.name)

    def test_docs_give_the_haproxy_command(self) -> None:
        """The ExecStart change docs/proxies.md gives for HAProxy applies to
        wsplugin.service (the test above runs the result)."""
        text = PROXIES_DOC.read_text()
        old, new = HAPROXY_EXEC
        self.assertIn(old, text)
        self.assertIn(new, text)
        self.assertIn(
            "haproxy:systemd:domain=INET:index=0",
            " ".join(service_command([HAPROXY_EXEC])),
        )


class DebianMainConfigTests(SynchronousTestCase):
    """The examples, installed where docs/proxies.md says, fit the main
    configuration of Debian's packages (the how-to's "word for word")."""

    def setUp(self) -> None:
        self.tls = TLSFiles(self)

    def test_nginx_conf_d(self) -> None:
        """examples/nginx/wsplugin.conf in ``conf.d/`` of a copy of Debian's
        /etc/nginx, with the default site removed, passes ``nginx -t``: it
        belongs in the ``http`` block that file includes it in."""
        nginx = require_binary("nginx", "nginx")
        main = require_file("/etc/nginx/nginx.conf", "nginx")
        copy = Path(self.mktemp()).resolve()
        shutil.copytree(main.parent, copy, symlinks=True)
        (copy / "sites-enabled" / "default").unlink(missing_ok=True)
        config = copy / "nginx.conf"
        config.write_text(config.read_text().replace("/etc/nginx/", f"{copy}/"))
        site = NGINX_SITE.read_text()
        self.assertEqual(site.count(TLS_DIR), 2)  # certificate and key
        (copy / "conf.d" / "wsplugin.conf").write_text(
            site.replace(TLS_DIR, f"{self.tls.dir}/")
        )
        result = subprocess.run(
            [nginx, "-t", "-e", "stderr", "-c", str(config)],
            capture_output=True, text=True, timeout=WAIT,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("test is successful", result.stderr)

    def test_haproxy_appended(self) -> None:
        """examples/haproxy/wsplugin.cfg after Debian's
        /etc/haproxy/haproxy.cfg (``haproxy -f`` reads the files in order,
        as if appended) passes ``haproxy -c``."""
        haproxy = require_binary("haproxy", "haproxy")
        main = require_file("/etc/haproxy/haproxy.cfg", "haproxy")
        text = HAPROXY_SITE.read_text()
        self.assertEqual(text.count(TLS_DIR), 1)  # haproxy.pem
        site = Path(self.mktemp())
        site.write_text(text.replace(TLS_DIR, f"{self.tls.dir}/"))
        result = subprocess.run(
            [haproxy, "-c", "-f", str(main), "-f", str(site)],
            capture_output=True, text=True, timeout=WAIT,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("Configuration file is valid", result.stdout)
