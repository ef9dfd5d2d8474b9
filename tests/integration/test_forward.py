"""Forwarding over real loopback sockets: a twisted.web upstream on another
port, refused and silent upstreams, a bad response, hooks both ways, a large
response streamed under backpressure, a TLS upstream, and
examples/forward_server.py."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import trustme
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from websockets.sync.client import connect
from zope.interface import implementer

from tests.integration.support import (
    ROOT,
    ServerTestCase,
    free_port,
    in_thread,
    wait_for_port,
)
from tests.integration.test_examples import EXAMPLES, Example
from wsplugin import TLSOptions, WebSocketServer
from wsplugin.config import MiB
from wsplugin.forward import ForwardResource
from wsplugin.web import EmptyPage


class EchoApp(Resource):
    """The upstream: answers with what it received, as JSON."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"set-cookie", b"a=1")
        request.responseHeaders.addRawHeader(b"set-cookie", b"b=2")
        return json.dumps(
            {
                "method": request.method.decode(),
                "uri": request.uri.decode(),
                "headers": {
                    k.decode().lower(): [v.decode() for v in vs]
                    for k, vs in request.requestHeaders.getAllRawHeaders()
                },
                "body": request.content.read().decode(),
            }
        ).encode()


@implementer(IPushProducer)
class Stream:
    """Writes ``size`` bytes to a request, 64 KiB at a time, as fast as the
    connection takes them (paused when its buffer is full)."""

    block = bytes(range(256)) * 256

    def __init__(self, request: Any, size: int) -> None:
        self.request = request
        self.size = size
        self.sent = 0
        self.paused = False
        self.stopped = False
        self.done = False

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.stopped and self.sent < self.size:
            piece = self.block[: min(len(self.block), self.size - self.sent)]
            self.sent += len(piece)
            self.request.write(piece)
        if self.sent >= self.size and not self.done and not self.stopped:
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.stopped = True


class Big(Resource):
    """The upstream of large bodies: ``/<size in bytes>``."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[Stream] = []

    def render_GET(self, request: Any) -> Any:
        size = int(request.postpath[0])
        request.setHeader(b"content-length", b"%d" % size)
        stream = Stream(request, size)
        self.streams.append(stream)
        request.notifyFinish().addErrback(lambda _: stream.stopProducing())
        request.registerProducer(stream, True)
        stream.resumeProducing()
        return NOT_DONE_YET


class Silent(Protocol):
    """An upstream that accepts and never answers."""

    def connectionMade(self) -> None:
        self.factory.open.append(self.transport)


class Garbage(Protocol):
    """An upstream that answers something that is not HTTP."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        self.transport.loseConnection()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        data = response.read()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            data,
            response.headers.get_all("set-cookie") or [],
        )
    finally:
        conn.close()


class ForwardLoopbackTests(ServerTestCase):
    """A WebSocketServer's site forwarding /api to a real upstream."""

    timeout = 120

    @inlineCallbacks
    def upstream(self, resource: Any) -> Any:
        port = yield self._listen(Site(resource))
        return port

    def _listen(self, factory: Any) -> Deferred[int]:
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        d: Deferred[int] = Deferred()
        d.callback(listening.getHost().port)
        return d

    @inlineCallbacks
    def proxy(self, upstream: str, handler: Any = None, **options: Any) -> Any:
        resource = ForwardResource(upstream, handler, **options)
        self.addCleanup(resource.close)
        root = Resource()
        root.putChild(b"api", resource)
        yield self.start_server(None, http=root)
        return self.server.ports[0].getHost().port

    def logged(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    @inlineCallbacks
    def test_round_trip(self) -> None:
        """Method, path, query, body and end-to-end headers reach the
        upstream, with X-Forwarded-For/-Proto/-Host and Via and without
        hop-by-hop fields; its status, headers (both cookies) and body come
        back."""
        up = yield self.upstream(EchoApp())
        port = yield self.proxy(f"http://127.0.0.1:{up}/v1")
        status, headers, body, cookies = yield in_thread(
            request,
            port,
            "POST",
            "/api/items/7?sort=name",
            b'{"x": 1}',
            {
                "Content-Type": "application/json",
                "Connection": "keep-alive, X-Private",
                "X-Private": "not for upstream",
                "Keep-Alive": "timeout=5",
                "X-Forwarded-Proto": "https",
            },
        )
        self.assertEqual(status, 200)
        seen = json.loads(body)
        self.assertEqual(
            (seen["method"], seen["uri"], seen["body"]),
            ("POST", "/v1/items/7?sort=name", '{"x": 1}'),
        )
        sent = seen["headers"]
        self.assertEqual(sent["x-forwarded-for"], ["127.0.0.1"])
        self.assertEqual(sent["x-forwarded-proto"], ["http"])  # the forged one replaced
        self.assertEqual(sent["x-forwarded-host"], [f"127.0.0.1:{port}"])
        self.assertEqual(sent["via"], ["1.1 wsplugin"])
        self.assertEqual(sent["host"], [f"127.0.0.1:{up}"])
        self.assertEqual(sent["content-type"], ["application/json"])
        for hop in ("x-private", "keep-alive"):
            self.assertNotIn(hop, sent)
        self.assertEqual(cookies, ["a=1", "b=2"])
        self.assertEqual(headers["content-type"], "application/json")

    @inlineCallbacks
    def test_refused(self) -> None:
        """Nothing listening upstream: 502, with a log line naming it."""
        events = self.logged()
        dead = free_port()
        port = yield self.proxy(f"http://127.0.0.1:{dead}")
        status, _, body, _ = yield in_thread(request, port, "GET", "/api/x")
        self.assertEqual(status, 502)
        self.assertIn(b"502 Bad Gateway", body)
        [line] = [e for e in events if e.get("status") == 502]
        self.assertEqual(line["upstream"], f"http://127.0.0.1:{dead}")
        self.assertEqual(line["reason"], "connection refused")

    @inlineCallbacks
    def test_silent_upstream(self) -> None:
        """An upstream that accepts and never answers: 504 after `timeout`."""
        events = self.logged()
        factory = Factory.forProtocol(Silent)
        factory.open = []  # type: ignore[attr-defined]
        self.addCleanup(lambda: [t.abortConnection() for t in factory.open])  # type: ignore[attr-defined]
        up = yield self._listen(factory)
        port = yield self.proxy(f"http://127.0.0.1:{up}", timeout=0.5)
        status, _, body, _ = yield in_thread(request, port, "GET", "/api/x")
        self.assertEqual(status, 504)
        self.assertIn(b"504 Gateway Timeout", body)
        [line] = [e for e in events if e.get("status") == 504]
        self.assertEqual(line["reason"], "no response within 0.5 s")

    @inlineCallbacks
    def test_bad_response(self) -> None:
        """An upstream that does not speak HTTP: 502."""
        up = yield self._listen(Factory.forProtocol(Garbage))
        port = yield self.proxy(f"http://127.0.0.1:{up}")
        status, _, _, _ = yield in_thread(request, port, "GET", "/api/x")
        self.assertEqual(status, 502)

    @inlineCallbacks
    def test_hooks(self) -> None:
        """before_forward rewrites method, path, headers and body, and may
        answer itself; after_forward changes the answer."""

        class Hooks:
            def before_forward(self, request: Any, upstream: Any) -> Any:
                if request.path == b"/api/private":
                    return EmptyPage(403)
                upstream.method = b"PUT"
                upstream.url = upstream.url.replace(b"/old/", b"/new/")
                upstream.headers.setRawHeaders(b"x-user", [b"alice"])
                upstream.body = b"rewritten"
                return None

            async def after_forward(self, request: Any, response: Any) -> None:
                response.headers.setRawHeaders(b"x-checked", [b"yes"])
                response.code, response.phrase = 202, b"Accepted"

        up = yield self.upstream(EchoApp())
        port = yield self.proxy(f"http://127.0.0.1:{up}", Hooks())
        status, headers, body, _ = yield in_thread(
            request, port, "POST", "/api/old/thing", b"original"
        )
        self.assertEqual((status, headers["x-checked"]), (202, "yes"))
        seen = json.loads(body)
        self.assertEqual(
            (seen["method"], seen["uri"], seen["body"], seen["headers"]["x-user"]),
            ("PUT", "/new/thing", "rewritten", ["alice"]),
        )
        status, _, _, _ = yield in_thread(request, port, "GET", "/api/private")
        self.assertEqual(status, 403)

    @inlineCallbacks
    def test_large_response_streamed(self) -> None:
        """A 256 MiB response reaches the client whole while this process
        (upstream, proxy and client together) never holds more than 16 MiB
        more than before, by tracemalloc."""
        big = Big()
        up = yield self.upstream(big)
        port = yield self.proxy(f"http://127.0.0.1:{up}")
        size = 256 * MiB

        def download() -> tuple[int, int, str]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", f"/api/{size}")
            response = conn.getresponse()
            total = 0
            while piece := response.read(256 * 1024):
                total += len(piece)
            conn.close()
            return response.status, total, response.getheader("content-length")

        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        base = tracemalloc.get_traced_memory()[0]
        status, total, length = yield in_thread(download)
        peak = tracemalloc.get_traced_memory()[1] - base
        self.assertEqual((status, total, length), (200, size, str(size)))
        print(f"\n256 MiB response relayed: tracemalloc peak +{peak / MiB:.1f} MiB")
        self.assertLess(peak, 16 * MiB)

    @inlineCallbacks
    def test_backpressure(self) -> None:
        """A client that does not read: once the buffers between are full the
        upstream stays paused, a few MiB into a 1 GiB body (without
        backpressure it would send it all, in seconds), and it is dropped
        when the client goes."""
        big = Big()
        up = yield self.upstream(big)
        port = yield self.proxy(f"http://127.0.0.1:{up}")
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(f"GET /api/{1024 * MiB} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield self.when(lambda: bool(big.streams), 20)
        stream = big.streams[0]
        # settled: paused, and nothing more sent for 1 s (bounded: 30 s)
        seen = [-1, 0]

        def settled() -> bool:
            if stream.paused and stream.sent == seen[0]:
                seen[1] += 1
            else:
                seen[:] = [stream.sent, 0]
            return seen[1] >= 5 or stream.done

        for _ in range(150):
            yield deferLater(reactor, 0.2, lambda: None)
            if settled():
                break
        print(f"\nupstream held paused after {stream.sent / MiB:.1f} MiB of 1024")
        self.assertFalse(stream.done)
        self.assertLess(stream.sent, 64 * MiB)
        client.close()
        yield self.when(lambda: stream.stopped, 20)

    @inlineCallbacks
    def test_tls_upstream(self) -> None:
        """An https:// upstream whose certificate chains to a trusted CA is
        forwarded to; with the default trust (the system's CAs) the same
        upstream is refused with 502."""
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        cert.private_key_pem.write_to_path(str(directory / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
        upstream = WebSocketServer(
            None,
            endpoints=["tcp:0:interface=127.0.0.1"],
            http=EchoApp(),
            tls=TLSOptions(
                certificate=str(directory / "cert.pem"), key=str(directory / "key.pem")
            ),
        )
        yield upstream.start()
        self.addCleanup(upstream.stop)
        up = upstream.ports[0].getHost().port
        trusted = BrowserLikePolicyForHTTPS(
            trustRoot=Certificate.loadPEM(ca.cert_pem.bytes())
        )
        good = ForwardResource(f"https://127.0.0.1:{up}", tls_policy=trusted)
        bad = ForwardResource(f"https://127.0.0.1:{up}")
        self.addCleanup(good.close)
        self.addCleanup(bad.close)
        root = Resource()
        root.putChild(b"good", good)
        root.putChild(b"bad", bad)
        yield self.start_server(None, http=root)
        port = self.server.ports[0].getHost().port
        status, _, body, _ = yield in_thread(request, port, "GET", "/good/x")
        self.assertEqual((status, json.loads(body)["uri"]), (200, "/x"))
        status, _, _, _ = yield in_thread(request, port, "GET", "/bad/x")
        self.assertEqual(status, 502)


class ForwardExampleTests(ServerTestCase):
    """examples/forward_server.py does what docs/web.md shows."""

    timeout = 120

    @inlineCallbacks
    def test_forward_server(self) -> None:
        """/api is forwarded with a request id, /api/admin refused locally,
        a dead upstream turned into a JSON 503, and /ws echoes."""
        example = Example(
            self, sys.executable, str(EXAMPLES / "forward_server.py"), "{endpoint}"
        )

        def client() -> tuple[Any, ...]:
            wait_for_port(example.port)
            hello = request(example.port, "GET", "/api/hello?name=you")
            admin = request(example.port, "GET", "/api/admin/users")
            legacy = request(example.port, "GET", "/legacy/report")
            with connect(f"ws://127.0.0.1:{example.port}/ws", open_timeout=10) as ws:
                ws.send("ping")
                echo = ws.recv(timeout=10)
            return hello, admin, legacy, echo

        hello, admin, legacy, echo = yield in_thread(client)
        self.assertEqual(hello[0], 200)
        self.assertEqual(hello[1]["x-upstream-status"], "200")
        self.assertEqual(
            json.loads(hello[2]),
            {
                "path": "/hello?name=you",
                "request_id": "1",
                "forwarded_for": "127.0.0.1",
            },
        )
        self.assertEqual(admin[0], 403)
        self.assertEqual((legacy[0], legacy[1]["retry-after"]), (503, "60"))
        self.assertEqual(json.loads(legacy[2]), {"error": "try again later"})
        self.assertEqual(echo, "ping")
        output = yield in_thread(example.stop)
        self.assertIn("forwarding /api/ to http://127.0.0.1:", output)
        self.assertIn("upstream error: 502", output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(example.proc.returncode, 0, output)

    def test_docs_show_the_example(self) -> None:
        """The handler shown in docs/web.md is the example's, verbatim."""
        doc = (ROOT / "docs" / "web.md").read_text()
        start = doc.index("class Hooks:\n    def before_forward")
        shown = doc[start : doc.index("```", start)]
        self.assertIn(shown, (EXAMPLES / "forward_server.py").read_text())
