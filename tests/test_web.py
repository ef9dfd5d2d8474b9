"""The same-port site (wsplugin.web) in memory: one route resolution, the
access log, ``upgrade()`` and its factory, ``make_site``."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest

from tests.helpers import Recorder
from tests.web_support import Echo, Peer, site
from wsplugin import WebSocketServer, WSPluginError
from wsplugin.testing import handshake_request
from wsplugin.web import (
    BoundedHTTPChannel,
    BoundedSite,
    EmptyPage,
    access_log_formatter,
    make_site,
    redact_query,
    site_factory,
)


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


class SiteFactoryTests(SynchronousTestCase):
    """upgrade() without server= uses a factory kept on the request's site."""

    def test_one_per_site_on_its_reactor(self) -> None:
        """The first request makes it, on the site's reactor; later requests
        of the same site share it; another site has its own; no module
        keeps either."""
        clock = MemoryReactorClock()
        first, second = Site(Resource(), reactor=clock), Site(Resource())
        a, b, c = DummyRequest([]), DummyRequest([]), DummyRequest([])
        a.site, b.site, c.site = first, first, second
        factory = site_factory(a)
        self.assertIs(site_factory(b), factory)
        self.assertIs(factory.clock, clock)
        self.assertIs(first.wsplugin_factory, factory)
        self.assertIsNot(site_factory(c), factory)

    def test_no_site(self) -> None:
        """A request of no site gets a clear error naming server=."""
        request = DummyRequest([])
        request.channel = None
        request.site = None

        class Channel:
            site = None

        request.channel = Channel()
        with self.assertRaisesRegex(WSPluginError, "pass server="):
            site_factory(request)


class MakeSiteTests(SynchronousTestCase):
    """make_site: what a WebSocketServer with http=/static= listens with."""

    def test_channel_limits_from_config(self) -> None:
        """Each channel gets the server's limits, clock, on_connect and log."""

        class Handler(Recorder):
            def on_connect(self, peer: Any) -> bool:
                return True

        server = WebSocketServer(
            Handler(),
            reactor=MemoryReactorClock(),
            open_handshake_timeout=3,
            request_body_timeout=4,
            max_request_body=5,
        )
        made = make_site(server.factory, Resource())
        self.assertIsInstance(made, BoundedSite)
        channel = made.protocol()
        self.assertIsInstance(channel, BoundedHTTPChannel)
        self.assertEqual(
            (channel.head_timeout, channel.body_timeout, channel.max_request_body),
            (3, 4, 5),
        )
        self.assertIs(channel.clock, server.reactor)
        self.assertEqual(channel.on_connect, server.handler.on_connect)
        self.assertIs(channel.log_limited, server.factory.log_limited)
        self.assertFalse(made.displayTracebacks)

    def test_websocket_and_http_on_one_port(self) -> None:
        """Through a server's gate: an upgrade reaches the route, a GET the
        HTTP resource."""
        server, _ = site(Echo())
        ws = Peer(server)
        ws.send(handshake_request("/"))
        self.assertEqual(ws.status(), 101)
        http = Peer(server)
        http.send(b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        self.assertEqual(http.status(), 200)
