"""``wsplugin.auth._http``: a ``twisted.web`` request as authenticators see
it (real ``Request`` objects on a ``DummyChannel``)."""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tests.auth_support import web_request
from wsplugin.auth import HTTPClient
from wsplugin.auth._http import answer, forwarded_for, peer_of


class HTTPClientTests(SynchronousTestCase):
    def test_request_view(self) -> None:
        """Path (decoded), query parameters, headers, host, origin, cookies
        and the peer's address, as a Connection's request has them."""
        request, _ = web_request(
            b"GET",
            b"/a%20b/c?x=1&x=2&e=",
            {b"origin": b"https://app.example", b"cookie": b"s=tok; t=2"},
        )
        client = HTTPClient(request)
        view = client.request
        self.assertEqual(view.path, "/a b/c")
        self.assertEqual(view.params, {"x": ["1", "2"], "e": [""]})
        self.assertEqual(view.param("x"), "1")
        self.assertEqual(view.host, "app.example")
        self.assertEqual(view.origin, "https://app.example")
        self.assertEqual(view.cookies, {"s": "tok", "t": "2"})
        self.assertEqual(view.headers.get("Origin"), "https://app.example")
        self.assertEqual(view.peer_address, "192.0.2.7")
        self.assertEqual(view.protocols, ())
        self.assertIsNone(client.user)
        self.assertFalse(client.gone)

    def test_gone(self) -> None:
        """A client that disconnects before its answer is marked gone."""
        request, _ = web_request(b"GET", b"/")
        client = HTTPClient(request)
        request.connectionLost(Failure(ConnectionError("gone")))
        self.assertTrue(client.gone)

    def test_forwarded_address(self) -> None:
        """With trusted proxies, the address the nearest of them saw."""
        request, _ = web_request(
            b"GET", b"/", {b"x-forwarded-for": b"198.51.100.1, 203.0.113.5"}
        )
        self.assertEqual(HTTPClient(request, 1).request.peer_address, "203.0.113.5")
        self.assertEqual(HTTPClient(request, 2).request.peer_address, "198.51.100.1")
        self.assertEqual(HTTPClient(request).request.peer_address, "192.0.2.7")


class HelperTests(SynchronousTestCase):
    def test_forwarded_for_and_peer_of(self) -> None:
        """X-Forwarded-For counts only with trusted proxies; the entry
        ``trusted_proxies`` from the end (the first if fewer); the TCP peer
        otherwise."""
        request, _ = web_request(b"GET", b"/", {b"x-forwarded-for": b"a, b, c"})
        self.assertIsNone(forwarded_for(request, 0))
        self.assertEqual(forwarded_for(request, 1), "c")
        self.assertEqual(forwarded_for(request, 3), "a")
        self.assertEqual(forwarded_for(request, 9), "a")
        self.assertEqual(peer_of(request, 2), "b")
        self.assertEqual(peer_of(request), "192.0.2.7")
        bare, _ = web_request(b"GET", b"/")
        self.assertIsNone(forwarded_for(bare, 1))
        self.assertEqual(peer_of(bare, 1), "192.0.2.7")

    def test_answer(self) -> None:
        """A refusal: the status, its headers, an empty body, finished."""
        request = DummyRequest([b""])
        answer(request, 429, [("Retry-After", "3")])
        self.assertEqual(request.responseCode, 429)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"3"])
        self.assertEqual(
            request.responseHeaders.getRawHeaders(b"content-length"), [b"0"]
        )
        self.assertEqual((request.written, request.finished), ([], 1))
