"""The client's address behind a reverse proxy: ``X-Forwarded-For`` from
``trusted_proxies`` proxies, in memory (the real nginx and HAProxy are in
tests/integration/test_proxies.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin.connection import forwarded_address


class ForwardedAddressTests(SynchronousTestCase):
    """``forwarded_address`` turns one header entry into a Twisted address."""

    def test_ipv4(self) -> None:
        """An IPv4 entry becomes an IPv4Address with port 0 (no port in the
        header), surrounding blanks ignored."""
        self.assertEqual(
            forwarded_address(" 203.0.113.7 "), IPv4Address("TCP", "203.0.113.7", 0)
        )

    def test_ipv6(self) -> None:
        """An IPv6 entry, bare or bracketed, becomes a normalised IPv6Address."""
        want = IPv6Address("TCP", "2001:db8::1", 0)
        self.assertEqual(forwarded_address("2001:db8:0::1"), want)
        self.assertEqual(forwarded_address("[2001:db8::1]"), want)

    def test_not_an_address(self) -> None:
        """Names, ``unknown``, ports and empty entries are not addresses."""
        for value in ("unknown", "proxy.example", "203.0.113.7:4711", "", "[]"):
            self.assertIsNone(forwarded_address(value), value)


class _Peers(Recorder):
    """Records what ``allow`` sees of the client's address."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, Any, Any, str]] = []

    def allow(self, conn: Any) -> Any:
        r = conn.request
        self.seen.append((r.peer, r.proxy_peer, r.forwarded_for, r.peer_address))
        return True


class TrustedProxyTests(SynchronousTestCase):
    """``conn.request.peer`` is the real client behind trusted proxies only."""

    def handshake(self, xff: str | None, **options: Any) -> tuple[Any, ...]:
        handler = _Peers()
        _, harness = make(handler, **options)
        headers = [] if xff is None else [("X-Forwarded-For", xff)]
        response = harness.connect("192.0.2.10").handshake("/", headers=headers)
        self.assertEqual(response.status, 101)
        (seen,) = handler.seen
        return seen

    def test_untrusted_header_ignored(self) -> None:
        """With trusted_proxies=0 (the default) a client's X-Forwarded-For
        changes nothing: peer is the socket peer, nothing is forwarded."""
        peer, proxy, forwarded, address = self.handshake("203.0.113.7")
        self.assertEqual(peer.host, "192.0.2.10")
        self.assertNotEqual(peer.port, 0)
        self.assertIsNone(proxy)
        self.assertIsNone(forwarded)
        self.assertEqual(address, "192.0.2.10")

    def test_one_trusted_proxy(self) -> None:
        """With trusted_proxies=1 the last entry (the one the proxy appended)
        is the client; entries the client wrote before it are ignored, and
        the proxy's own address stays available as proxy_peer."""
        peer, proxy, forwarded, address = self.handshake(
            "6.6.6.6, 203.0.113.7", trusted_proxies=1
        )
        self.assertEqual(peer, IPv4Address("TCP", "203.0.113.7", 0))
        self.assertEqual(proxy.host, "192.0.2.10")
        self.assertEqual(forwarded, "203.0.113.7")
        self.assertEqual(address, "203.0.113.7")

    def test_two_trusted_proxies(self) -> None:
        """With trusted_proxies=2 the second entry from the end is the client."""
        peer, proxy, _, _ = self.handshake(
            "6.6.6.6, 2001:db8::5, 10.0.0.2", trusted_proxies=2
        )
        self.assertEqual(peer, IPv6Address("TCP", "2001:db8::5", 0))
        self.assertEqual(proxy.host, "192.0.2.10")

    def test_trusted_but_no_header(self) -> None:
        """A trusted route reached without the header (a client bypassing
        the proxy) keeps the socket peer."""
        peer, proxy, forwarded, _ = self.handshake(None, trusted_proxies=1)
        self.assertEqual(peer.host, "192.0.2.10")
        self.assertIsNone(proxy)
        self.assertIsNone(forwarded)

    def test_entry_not_an_address(self) -> None:
        """A trusted entry that is no IP address (``unknown``) leaves peer the
        socket peer; forwarded_for and peer_address still carry the text."""
        peer, proxy, forwarded, address = self.handshake("unknown", trusted_proxies=1)
        self.assertEqual(peer.host, "192.0.2.10")
        self.assertIsNone(proxy)
        self.assertEqual(forwarded, "unknown")
        self.assertEqual(address, "unknown")
