"""wsplugin._request: the handshake request, its headers, X-Forwarded-For."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._request import Headers, Request, forwarded_address


class HeadersTests(SynchronousTestCase):
    """Read-only, case-insensitive headers, compacted when a connection opens."""

    def test_lookup(self) -> None:
        """First value by any case; every value with get_all; raw pairs."""
        h = Headers((("Cookie", "a=1"), ("cookie", "b=2"), ("Host", "x")))
        self.assertEqual(h["COOKIE"], "a=1")
        self.assertEqual(h.get_all("Cookie"), ["a=1", "b=2"])
        self.assertIn("host", h)
        self.assertNotIn(3, h)
        self.assertEqual(len(h), 2)
        self.assertEqual(h.raw()[1], ("cookie", "b=2"))

    def test_compact_round_trip(self) -> None:
        """compact() keeps what is read back, exactly."""
        pairs = (("A", "1"), ("b", "two words"), ("A", "3"))
        h = Headers(pairs)
        h.compact()
        self.assertEqual(h.raw(), pairs)
        self.assertEqual(h.get_all("a"), ["1", "3"])


class RequestTests(SynchronousTestCase):
    """What the application reads of a request."""

    def test_cookies_and_params(self) -> None:
        """Cookies from every Cookie header (bad ones ignored); first param."""
        r = Request(
            "/",
            {"t": ["1", "2"]},
            Headers((("Cookie", "a=1"), ("Cookie", "b=2; =bad"))),
            "h",
            "",
            (),
            None,
        )
        self.assertEqual(r.cookies.get("a"), "1")
        self.assertEqual(r.param("t"), "1")
        self.assertEqual(r.param("none", "d"), "d")

    def test_peer_address(self) -> None:
        """The forwarded address if trusted, the socket's host, or "unix"."""
        peer = IPv4Address("TCP", "192.0.2.1", 5)
        base = ("/", {}, Headers(), "h", "", ())
        self.assertEqual(Request(*base, peer).peer_address, "192.0.2.1")
        self.assertEqual(
            Request(*base, peer, forwarded_for="203.0.113.9").peer_address,
            "203.0.113.9",
        )
        self.assertEqual(Request(*base, UNIXAddress(None)).peer_address, "unix")


class ForwardedAddressTests(SynchronousTestCase):
    """One X-Forwarded-For entry as a Twisted address."""

    def test_entries(self) -> None:
        """IPv4, IPv6 (bracketed too), and anything else is None."""
        self.assertEqual(
            forwarded_address(" 198.51.100.2 "), IPv4Address("TCP", "198.51.100.2", 0)
        )
        self.assertEqual(
            forwarded_address("[2001:db8::1]"), IPv6Address("TCP", "2001:db8::1", 0)
        )
        self.assertIsNone(forwarded_address("unknown"))
