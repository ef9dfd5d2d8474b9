"""wsplugin.forward in memory: ForwardResource on the same-port site against
a fake upstream agent (timeouts on a clock, bodies relayed piece by piece;
the header rules: tests/test_forwarding.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.test_forwarding import headers, raw
from wsplugin import WebSocketServer, forward
from wsplugin._forwarding import upstream_headers
from wsplugin.errors import ConfigError
from wsplugin.forward import ForwardResource
from wsplugin.testing import FakeTransport
from wsplugin.web import EmptyPage


class HeaderRuleTests(SynchronousTestCase):
    """The forged-header rule, cited by docs/security.md (the other header
    rules: tests/test_forwarding.py)."""

    def test_forged_proto_and_host(self) -> None:
        """Without trusted proxies, a client's X-Forwarded-Proto/-Host are
        replaced by what this server saw; with one, they are kept."""
        forged = headers(X_Forwarded_Proto="https", X_Forwarded_Host="bank.example")
        plain = upstream_headers(forged, client="c", secure=False, host=b"me.example")
        self.assertEqual(plain.getRawHeaders(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(plain.getRawHeaders(b"x-forwarded-host"), [b"me.example"])
        none = upstream_headers(forged, client="c", secure=False, host=None)
        self.assertFalse(none.hasHeader(b"x-forwarded-host"))
        kept = upstream_headers(
            forged, client="c", secure=False, host=b"me.example", trusted_proxies=1
        )
        self.assertEqual(kept.getRawHeaders(b"x-forwarded-proto"), [b"https"])
        self.assertEqual(kept.getRawHeaders(b"x-forwarded-host"), [b"bank.example"])


class BodyTransport:
    """The producer an upstream response's body protocol is given."""

    def __init__(self) -> None:
        self.state = "producing"
        self.protocol: Any = None

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "producing"

    def stopProducing(self) -> None:
        if self.state != "stopped":
            self.state = "stopped"
            self.protocol.connectionLost(
                Failure(ResponseFailed([Failure(CancelledError())]))
            )


class FakeResponse:
    def __init__(
        self,
        code: int = 200,
        phrase: bytes = b"OK",
        response_headers: Headers | None = None,
        length: Any = UNKNOWN_LENGTH,
    ) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = response_headers or Headers()
        self.length = length
        self.body = BodyTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.body.protocol = protocol
        protocol.makeConnection(self.body)

    def send(self, data: bytes) -> None:
        self.body.protocol.dataReceived(data)

    def end(self, reason: Exception | None = None) -> None:
        self.body.state = "done"
        self.body.protocol.connectionLost(Failure(reason or ResponseDone()))


class FakeAgent:
    """An IAgent whose answers the test gives."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.cancelled = 0

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        d: Deferred[Any] = Deferred(cancel)
        self.calls.append(
            {
                "method": method,
                "uri": uri,
                "headers": headers,
                "producer": bodyProducer,
                "d": d,
            }
        )
        return d


class Collect:
    """A consumer for a body producer."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class Peer:
    def __init__(self, server: WebSocketServer, host: str = "198.51.100.20") -> None:
        self.clock = server.reactor
        addr = IPv4Address("TCP", host, 40000)
        self.transport = FakeTransport(self.clock, addr)
        protocol = server.listening_factory.buildProtocol(addr)
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.transport.protocol.dataReceived(data)

    def get(self, path: str, *extra: str) -> None:
        lines = [f"GET {path} HTTP/1.1", "Host: public.example", *extra]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def status(self) -> int:
        data = self.transport.value()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0

    def body(self) -> bytes:
        return self.transport.value().split(b"\r\n\r\n", 1)[1]

    def close(self) -> None:
        self.transport.loseConnection()
        self.clock.advance(0)


class ForwardTestCase(SynchronousTestCase):
    def serve(
        self,
        handler: Any = None,
        at_root: bool = False,
        server_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> tuple[WebSocketServer, FakeAgent, ForwardResource]:
        clock = MemoryReactorClock()
        agent = FakeAgent()
        resource = ForwardResource(
            "http://upstream.internal:9000/v1",
            handler,
            agent=agent,
            reactor=clock,
            **options,
        )
        if at_root:
            http: Any = resource
        else:
            http = Resource()
            http.putChild(b"api", resource)
        server = WebSocketServer(
            None, reactor=clock, http=http, **(server_options or {})
        )
        return server, agent, resource


class ForwardingTests(ForwardTestCase):
    """Requests go upstream with the right URL, headers and body."""

    def test_urls_under_a_mount(self) -> None:
        """Mounted at /api: the path after it follows the base path, the
        query as sent; /api itself is the base path."""
        server, agent, _ = self.serve()
        for path in ["/api/users/7?x=1&y=%20", "/api", "/api/", "/api/a%20b/c"]:
            Peer(server).get(path)
        self.assertEqual(
            [call["uri"] for call in agent.calls],
            [
                b"http://upstream.internal:9000/v1/users/7?x=1&y=%20",
                b"http://upstream.internal:9000/v1",
                b"http://upstream.internal:9000/v1/",
                b"http://upstream.internal:9000/v1/a%20b/c",
            ],
        )

    def test_urls_at_the_root(self) -> None:
        """As the site's http resource, every path is forwarded whole."""
        server, agent, _ = self.serve(at_root=True)
        for path in ["/", "/index.html", "/a/b?q"]:
            Peer(server).get(path)
        self.assertEqual(
            [call["uri"] for call in agent.calls],
            [
                b"http://upstream.internal:9000/v1/",
                b"http://upstream.internal:9000/v1/index.html",
                b"http://upstream.internal:9000/v1/a/b?q",
            ],
        )

    def test_local_children(self) -> None:
        """A child put on the resource is served locally."""
        server, agent, resource = self.serve()
        resource.putChild(b"health", EmptyPage(204))
        peer = Peer(server)
        peer.get("/api/health")
        self.assertEqual((peer.status(), agent.calls), (204, []))

    def test_headers_sent(self) -> None:
        """The upstream gets the request's end-to-end headers plus
        X-Forwarded-* and Via; its Host comes from the URL."""
        server, agent, _ = self.serve()
        Peer(server).get("/api/x", "Connection: X-Trace", "X-Trace: 1", "Accept: */*")
        sent = raw(agent.calls[0]["headers"])
        self.assertEqual(
            sent,
            {
                "accept": ["*/*"],
                "x-forwarded-for": ["198.51.100.20"],
                "x-forwarded-proto": ["http"],
                "x-forwarded-host": ["public.example"],
                "via": ["1.1 wsplugin"],
            },
        )

    def test_body_sent_not_parsed(self) -> None:
        """A POSTed form goes upstream byte for byte and is never parsed
        into request.args; a large one is spooled to a file."""
        server, agent, _ = self.serve(max_request_body=10_000_000)
        body = b"--b\r\n" + b"x" * 200_000
        peer = Peer(server)
        peer.send(
            b"POST /api/form HTTP/1.1\r\nHost: h\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        producer = agent.calls[0]["producer"]
        self.assertEqual(producer.length, len(body))
        consumer = Collect()
        producer.startProducing(consumer)
        for _ in range(10):
            server.reactor.advance(0)
        self.assertEqual(consumer.data, body)

    def test_own_body_limit(self) -> None:
        """The resource's max_request_body replaces the server's for it."""
        server, agent, _ = self.serve(
            max_request_body=100, server_options={"max_request_body": 10_000}
        )
        peer = Peer(server)
        peer.send(b"POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
        self.assertEqual((peer.status(), agent.calls), (413, []))

    def test_relayed(self) -> None:
        """Status, phrase and end-to-end headers come back; the body is
        written as each piece arrives, with the upstream's length."""
        server, agent, _ = self.serve()
        peer = Peer(server)
        peer.get("/api/x")
        response = FakeResponse(
            201,
            b"Made",
            headers(Content_Type="text/csv", Connection="close", Keep_Alive="x"),
            length=6,
        )
        agent.calls[0]["d"].callback(response)
        response.send(b"a,b\n")
        self.assertTrue(peer.transport.value().startswith(b"HTTP/1.1 201 Made\r\n"))
        self.assertTrue(peer.transport.value().endswith(b"a,b\n"))
        response.send(b"c\n")
        response.end()
        value = peer.transport.value()
        self.assertIn(b"Content-Type: text/csv\r\n", value)
        self.assertIn(b"Content-Length: 6\r\n", value)
        self.assertNotIn(b"Keep-Alive", value)
        self.assertTrue(value.endswith(b"\r\n\r\na,b\nc\n"))

    def test_unknown_length_chunked(self) -> None:
        """A body of unknown length is relayed chunked, and a body that ends
        with the upstream closing (HTTP/1.0 style) is complete."""
        server, agent, _ = self.serve()
        peer = Peer(server)
        peer.get("/api/x")
        response = FakeResponse()
        agent.calls[0]["d"].callback(response)
        response.send(b"hello")
        response.end(PotentialDataLoss())
        self.assertIn(b"Transfer-Encoding: chunked", peer.transport.value())
        self.assertTrue(peer.transport.value().endswith(b"5\r\nhello\r\n0\r\n\r\n"))
        self.assertFalse(peer.transport.disconnecting)

    def test_backpressure(self) -> None:
        """When the client's side is full the upstream is paused, and resumed
        when it drains."""
        server, agent, _ = self.serve()
        peer = Peer(server)
        peer.get("/api/x")
        response = FakeResponse()
        agent.calls[0]["d"].callback(response)
        channel = peer.transport.protocol
        channel.pauseProducing()
        self.assertEqual(response.body.state, "paused")
        channel.resumeProducing()
        self.assertEqual(response.body.state, "producing")

    def test_cut_short(self) -> None:
        """An upstream body cut short closes the client's connection (the
        response cannot be completed), with a log line."""
        server, agent, _ = self.serve()
        peer = Peer(server)
        peer.get("/api/x")
        response = FakeResponse(length=100)
        agent.calls[0]["d"].callback(response)
        response.send(b"partial")
        response.end(ResponseFailed([Failure(ConnectionRefusedError())]))
        self.assertTrue(peer.transport.disconnecting)

    def test_stalled_body(self) -> None:
        """An upstream silent for `timeout` seconds in the middle of its body
        is dropped and the client's connection closed; time the client
        keeps the upstream paused does not count."""
        server, agent, _ = self.serve(timeout=5)
        peer = Peer(server)
        peer.get("/api/x")
        response = FakeResponse()
        agent.calls[0]["d"].callback(response)
        response.send(b"x")
        channel = peer.transport.protocol
        channel.pauseProducing()
        server.reactor.advance(60)
        self.assertFalse(peer.transport.disconnecting)
        channel.resumeProducing()
        server.reactor.advance(4.9)
        self.assertFalse(peer.transport.disconnecting)
        server.reactor.advance(0.2)
        self.assertEqual(response.body.state, "stopped")
        self.assertTrue(peer.transport.disconnecting)

    def test_client_leaves(self) -> None:
        """A client that leaves cancels the upstream request, or stops the
        relayed body."""
        server, agent, _ = self.serve()
        waiting = Peer(server)
        waiting.get("/api/slow")
        waiting.close()
        self.assertEqual(agent.cancelled, 1)
        reading = Peer(server)
        reading.get("/api/big")
        response = FakeResponse()
        agent.calls[1]["d"].callback(response)
        response.send(b"x" * 100)
        reading.close()
        self.assertEqual(response.body.state, "stopped")

    def test_head(self) -> None:
        """HEAD is forwarded; no body or length is made up."""
        server, agent, _ = self.serve()
        peer = Peer(server)
        peer.send(b"HEAD /api/x HTTP/1.1\r\nHost: h\r\n\r\n")
        response = FakeResponse(length=0)
        agent.calls[0]["d"].callback(response)
        response.end()
        self.assertEqual(agent.calls[0]["method"], b"HEAD")
        self.assertEqual(peer.status(), 200)
        self.assertNotIn(b"Content-Length", peer.transport.value())

    def test_dot_segments_refused(self) -> None:
        """On a plain twisted.web Site (which does not check targets), a
        path with dot segments or an encoded slash is not forwarded: 400."""
        clock = MemoryReactorClock()
        agent = FakeAgent()
        root = Resource()
        root.putChild(
            b"api", ForwardResource("http://u/v1", agent=agent, reactor=clock)
        )
        for target in [b"/api/../admin", b"/api/%2e%2e/admin", b"/api/a%2Fb"]:
            protocol = Site(root).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
            transport = StringTransport()
            protocol.makeConnection(transport)
            protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400"), target)
            protocol.connectionLost(None)
        self.assertEqual(agent.calls, [])


class ErrorTests(ForwardTestCase):
    """Upstream failures answer 502 or 504, with a log line."""

    def answer(self, failure: Exception, **options: Any) -> Peer:
        server, agent, _ = self.serve(**options)
        peer = Peer(server)
        peer.get("/api/x")
        agent.calls[0]["d"].errback(failure)
        return peer

    def test_refused(self) -> None:
        """A refused connection: 502 with a short text body."""
        peer = self.answer(ConnectionRefusedError())
        self.assertEqual(peer.status(), 502)
        self.assertIn(b"text/plain", peer.transport.value())
        self.assertEqual(
            peer.body(), b"502 Bad Gateway: the upstream server gave no valid answer.\n"
        )

    def test_bad_response(self) -> None:
        """An invalid response, or none: 502."""
        for failure in [
            ResponseFailed([Failure(ValueError("bad status line"))]),
            ResponseNeverReceived([Failure(ConnectionRefusedError())]),
        ]:
            self.assertEqual(self.answer(failure).status(), 502)

    def test_connect_timeout(self) -> None:
        """A connect timeout from the agent: 504."""
        self.assertEqual(self.answer(ConnectTimeout()).status(), 504)

    def test_response_timeout(self) -> None:
        """No response head within `timeout`: the request is cancelled and
        504 answered."""
        server, agent, _ = self.serve(timeout=3)
        peer = Peer(server)
        peer.get("/api/x")
        server.reactor.advance(2.9)
        self.assertEqual(peer.status(), 0)
        server.reactor.advance(0.2)
        self.assertEqual(agent.cancelled, 1)
        self.assertEqual(peer.status(), 504)

    def test_logged(self) -> None:
        """Each upstream error is logged with the upstream and the reason."""
        seen: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.answer(ConnectionRefusedError())
        [event] = [e for e in seen if "upstream" in e and "status" in e]
        self.assertEqual(event["status"], 502)
        self.assertEqual(event["upstream"], "http://upstream.internal:9000/v1")
        self.assertEqual(event["reason"], "connection refused")

    def test_options_checked(self) -> None:
        """A bad upstream URL or timeout is refused at construction."""
        with self.assertRaises(ConfigError):
            ForwardResource("ftp://x/")
        with self.assertRaises(ConfigError):
            ForwardResource("http://x/", timeout=-1)


class HookTests(ForwardTestCase):
    """before_forward and after_forward."""

    def test_rewrite_request(self) -> None:
        """before_forward may change the method, URL, headers and body."""

        class Rewrite:
            def before_forward(self, request: Any, upstream: Any) -> None:
                upstream.method = b"PUT"
                upstream.url = upstream.url.replace(b"/v1/", b"/v2/")
                upstream.headers.setRawHeaders(b"x-user", [b"alice"])
                upstream.body = b"replaced"

        server, agent, _ = self.serve(Rewrite())
        Peer(server).get("/api/item")
        call = agent.calls[0]
        self.assertEqual(
            (call["method"], call["uri"]),
            (b"PUT", b"http://upstream.internal:9000/v2/item"),
        )
        self.assertEqual(call["headers"].getRawHeaders(b"x-user"), [b"alice"])
        self.assertEqual(call["producer"].length, len(b"replaced"))

    def test_answer_instead(self) -> None:
        """before_forward returning a resource (here after a Deferred)
        answers instead of forwarding."""

        class Deny:
            def before_forward(self, request: Any, upstream: Any) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                server.reactor.callLater(1, d.callback, EmptyPage(403))
                return d

        server, agent, _ = self.serve(Deny())
        peer = Peer(server)
        peer.get("/api/admin")
        server.reactor.advance(1)
        self.assertEqual((peer.status(), agent.calls), (403, []))

    def test_change_response(self) -> None:
        """after_forward may change the status and headers of a relayed
        response, or replace its body (the upstream's is then dropped)."""

        class Edit:
            async def after_forward(self, request: Any, response: Any) -> None:
                response.headers.setRawHeaders(b"x-served-by", [b"edge"])
                response.headers.removeHeader(b"server")
                if response.code == 404:
                    response.code, response.phrase = 410, b"Gone"
                    response.body = b"gone for good\n"

        server, agent, _ = self.serve(Edit())
        kept = Peer(server)
        kept.get("/api/ok")
        ok = FakeResponse(response_headers=headers(Server="upstream/1.0"))
        agent.calls[0]["d"].callback(ok)
        ok.send(b"fine")
        ok.end()
        self.assertIn(b"X-Served-By: edge", kept.transport.value())
        self.assertNotIn(b"upstream/1.0", kept.transport.value())
        gone = Peer(server)
        gone.get("/api/missing")
        missing = FakeResponse(404, b"Not Found")
        agent.calls[1]["d"].callback(missing)
        self.assertEqual((gone.status(), gone.body()), (410, b"gone for good\n"))
        self.assertEqual(missing.body.state, "stopped")

    def test_change_error(self) -> None:
        """after_forward sees the error and may answer otherwise."""
        seen: list[Any] = []

        class Maintenance:
            def after_forward(self, request: Any, response: Any) -> None:
                seen.append((response.code, response.error.type))
                response.code = 503
                response.phrase = b"Service Unavailable"
                response.headers.setRawHeaders(b"retry-after", [b"30"])
                response.body = b"back soon\n"

        server, agent, _ = self.serve(Maintenance())
        peer = Peer(server)
        peer.get("/api/x")
        agent.calls[0]["d"].errback(ConnectionRefusedError())
        self.assertEqual(seen, [(502, ConnectionRefusedError)])
        self.assertEqual((peer.status(), peer.body()), (503, b"back soon\n"))
        self.assertIn(b"Retry-After: 30", peer.transport.value())

    def test_hook_raises(self) -> None:
        """A hook that raises answers 500, logged."""

        class Broken:
            def before_forward(self, request: Any, upstream: Any) -> None:
                raise RuntimeError("bug")

        server, agent, _ = self.serve(Broken())
        peer = Peer(server)
        peer.get("/api/x")
        self.assertEqual((peer.status(), agent.calls), (500, []))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_hook_returns_nonsense(self) -> None:
        """before_forward returning something that is not a resource is a
        bug: 500, logged."""

        class Wrong:
            def before_forward(self, request: Any, upstream: Any) -> int:
                return 42

        server, agent, _ = self.serve(Wrong())
        peer = Peer(server)
        peer.get("/api/x")
        self.assertEqual((peer.status(), agent.calls), (500, []))
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)


class ExportTests(SynchronousTestCase):
    """The public names of wsplugin.forward."""

    def test_all(self) -> None:
        """``__all__`` is pinned and every name resolves."""
        self.assertEqual(
            sorted(forward.__all__),
            ["ForwardResource", "ForwardedResponse", "UpstreamRequest"],
        )
        for name in forward.__all__:
            self.assertTrue(hasattr(forward, name))
