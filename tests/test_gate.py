"""wsplugin._gate: every accepted connection counted, in total and per IP."""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._gate import (
    BUSY_LINGER,
    BUSY_RESPONSE,
    MAX_BUSY,
    ConnectionGate,
    address_key,
    hand_over,
)

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


class Lost(Protocol):
    def __init__(self) -> None:
        self.lost = 0

    def connectionLost(self, reason: Any = None) -> None:
        self.lost += 1


def gate(**kw: Any) -> tuple[ConnectionGate, list[tuple[str, dict[str, Any]]]]:
    logged: list[tuple[str, dict[str, Any]]] = []
    options = dict(max_connections=0, max_per_ip=0, exempt=(), clock=Clock())
    options.update(kw)
    made = ConnectionGate(
        Factory.forProtocol(Lost),
        log_limited=lambda fmt, **f: logged.append((fmt, f)),
        **options,
    )
    return made, logged


def v4(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 5000)


class AddressKeyTests(SynchronousTestCase):
    """Which peers are counted together."""

    def test_keys(self) -> None:
        """IPv4 per address, IPv6 per /64, mapped IPv4 as IPv4; exempt
        networks and UNIX peers are not counted."""
        self.assertEqual(address_key(v4("192.0.2.1"), LOOPBACK), "192.0.2.1")
        self.assertIsNone(address_key(v4("127.0.0.2"), LOOPBACK))
        self.assertEqual(address_key(v4("127.0.0.2"), ()), "127.0.0.2")
        v6 = IPv6Address("TCP", "2001:db8:0:1:2:3:4:5", 1)
        self.assertEqual(address_key(v6, LOOPBACK), "2001:db8:0:1::/64")
        mapped = IPv6Address("TCP", "::ffff:192.0.2.7", 1)
        self.assertEqual(address_key(mapped, LOOPBACK), "192.0.2.7")
        self.assertIsNone(address_key(IPv6Address("TCP", "::1", 1), LOOPBACK))
        self.assertIsNone(address_key(UNIXAddress(b"/run/x.sock"), LOOPBACK))


class LimitTests(SynchronousTestCase):
    """Over a limit the connection gets 503; slots are released on loss."""

    def _accept(self, made: ConnectionGate, host: str) -> tuple[Any, StringTransport]:
        protocol = made.buildProtocol(v4(host))
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_total(self) -> None:
        """The third connection over max_connections=2 gets 503, logged;
        one ending frees its slot and calls the protocol's own handler."""
        made, logged = gate(max_connections=2)
        first, _ = self._accept(made, "192.0.2.1")
        self._accept(made, "192.0.2.2")
        refused, transport = self._accept(made, "192.0.2.3")
        self.assertEqual(transport.value(), BUSY_RESPONSE)
        self.assertIn("max_connections", logged[0][1]["option"])
        first.connectionLost(None)
        first.connectionLost(None)  # released once only
        self.assertEqual((made.total, first.lost), (1, 2))
        self.assertIsInstance(self._accept(made, "192.0.2.4")[0], Lost)

    def test_per_ip(self) -> None:
        """max_per_ip counts one address; others and exempt ones pass."""
        made, _ = gate(max_per_ip=1, exempt=LOOPBACK)
        self._accept(made, "192.0.2.1")
        _, busy = self._accept(made, "192.0.2.1")
        self.assertEqual(busy.value(), BUSY_RESPONSE)
        self.assertIsInstance(self._accept(made, "192.0.2.9")[0], Lost)
        for _ in range(3):
            self.assertIsInstance(self._accept(made, "127.0.0.1")[0], Lost)
        self.assertEqual(made.per_ip, {"192.0.2.1": 1, "192.0.2.9": 1})

    def test_busy_reads_head_then_closes(self) -> None:
        """A refused connection closes once its head is in, or after
        BUSY_LINGER seconds; past MAX_BUSY refusals it is closed at once."""
        clock = Clock()
        made, _ = gate(max_connections=1, clock=clock)
        self._accept(made, "192.0.2.1")
        busy, transport = self._accept(made, "192.0.2.2")
        busy.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertFalse(transport.disconnecting)
        busy.dataReceived(b"\r\n")
        self.assertTrue(transport.disconnecting)
        busy.connectionLost(None)
        silent, quiet = self._accept(made, "192.0.2.3")
        clock.advance(BUSY_LINGER)
        self.assertTrue(quiet.disconnecting)
        made.busy = MAX_BUSY
        self.assertIsNone(made.buildProtocol(v4("192.0.2.4")))

    def test_hand_over(self) -> None:
        """hand_over moves the slot to the protocol that takes over."""
        made, _ = gate(max_connections=5)
        old, _ = self._accept(made, "192.0.2.1")
        new = Lost()
        hand_over(old, new)
        old.connectionLost(None)
        self.assertEqual(made.total, 1)
        new.connectionLost(None)
        self.assertEqual((made.total, made.per_ip), (0, {}))
        hand_over(Lost(), Lost())  # no slot: nothing happens
