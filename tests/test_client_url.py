"""Tests for ``wsplugin.client._url``: WebSocket URLs, pure."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsplugin.client import URL, parse_url
from wsplugin.client._url import netloc
from wsplugin.errors import ConfigError


class URLTests(SynchronousTestCase):
    """``parse_url`` accepts WebSocket URLs only, with clear errors."""

    def test_defaults(self) -> None:
        """Ports default by scheme; the path defaults to ``/``."""
        url = parse_url("ws://example.com")
        self.assertEqual((url.secure, url.host, url.port), (False, "example.com", 80))
        self.assertEqual(url.resource, "/")
        secure = parse_url("wss://example.com/x")
        self.assertEqual((secure.secure, secure.port, secure.path), (True, 443, "/x"))

    def test_ipv6_query_and_params(self) -> None:
        """IPv6 hosts lose their brackets except in the Host header; the
        query stays on the request line and parses into params."""
        url = parse_url("ws://[::1]:9000/a?x=1&x=2&y=")
        self.assertEqual(url.host, "::1")
        self.assertEqual(url.host_header, "[::1]")
        self.assertEqual(url.resource, "/a?x=1&x=2&y=")
        self.assertEqual(url.params, {"x": ["1", "2"], "y": [""]})
        self.assertEqual(str(url), "ws://[::1]:9000/a?x=1&x=2&y=")

    def test_non_ascii_is_encoded(self) -> None:
        """A non-ASCII path is percent-encoded, a non-ASCII host IDNA-encoded."""
        url = parse_url("ws://bücher.example/ä b")
        self.assertEqual(url.host, "xn--bcher-kva.example")
        self.assertEqual(url.path, "/%C3%A4%20b")

    def test_rejected(self) -> None:
        """Other schemes, no host, fragments, credentials and bad ports are
        ConfigErrors (ValueErrors) whose message names the problem."""
        cases = {
            "http://example.com/": "ws:// or wss://",
            "ws:///path": "no host",
            "ws://example.com/#frag": "fragment",
            "ws://user:pw@example.com/": "header",
            "ws://example.com:99999/": "Port out of range",
        }
        for url, words in cases.items():
            with self.assertRaises(ConfigError) as caught:
                parse_url(url)
            self.assertIn(words, str(caught.exception))
            self.assertIsInstance(caught.exception, ValueError)

    def test_url_object_passes_through(self) -> None:
        """A parsed URL parses to itself; anything but str or URL is refused."""
        url = parse_url("ws://example.com/a")
        self.assertIs(parse_url(url), url)
        self.assertIsInstance(url, URL)
        with self.assertRaises(ConfigError) as caught:
            parse_url(b"ws://example.com/")  # type: ignore[arg-type]
        self.assertIn("must be a str, not bytes", str(caught.exception))

    def test_netloc(self) -> None:
        """IPv6 hosts get brackets in ``host:port``, others do not."""
        self.assertEqual(netloc("::1", 80), "[::1]:80")
        self.assertEqual(netloc("example.com", 443), "example.com:443")
