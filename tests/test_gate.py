"""wsplugin._gate: every accepted connection counted, in total and per IP."""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides, implementer

from wsplugin._gate import (
    BUSY_LINGER,
    BUSY_RESPONSE,
    MAX_BUSY,
    ConnectionGate,
    address_key,
    hand_over,
    listening_gate,
)
from wsplugin.config import ServerConfig

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


class Lost(Protocol):
    def __init__(self) -> None:
        self.lost = 0

    def connectionLost(self, reason: Any = None) -> None:
        self.lost += 1


@implementer(IOpenSSLServerConnectionCreator)
class Creator:
    """A TLS connection creator (never asked for a connection here)."""

    def serverConnectionForTLS(self, protocol: Any) -> Any:
        raise NotImplementedError


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

    def test_tls_port_closes_without_answer(self) -> None:
        """answer_busy=False (the gate in front of TLS): a connection over a
        limit gets no protocol (Twisted closes the socket when accepted,
        before any TLS) and the log says it was closed."""
        made, logged = gate(max_connections=1, max_per_ip=0, answer_busy=False)
        self._accept(made, "192.0.2.1")
        self.assertIsNone(made.buildProtocol(v4("192.0.2.2")))
        self.assertEqual(made.busy, 0)
        self.assertEqual(logged[-1][1]["answer"], "closed")
        per_ip, logged = gate(max_per_ip=1, answer_busy=False)
        self._accept(per_ip, "192.0.2.1")
        self.assertIsNone(per_ip.buildProtocol(v4("192.0.2.1")))
        self.assertEqual(logged[-1][1]["option"], "max_connections_per_ip")

    def test_listening_gate(self) -> None:
        """A server's gate: the config's limits, in front of TLS when the
        server has TLS (so that refusals come before any TLS work)."""
        inner = Factory.forProtocol(Lost)
        config = ServerConfig(max_connections=7, max_connections_per_ip=3)
        plain = listening_gate(inner, config, None, Clock(), print)
        self.assertIs(plain.inner, inner)
        self.assertEqual((plain.max_connections, plain.max_per_ip), (7, 3))
        self.assertTrue(plain.answer_busy)
        tls = listening_gate(inner, config, Creator(), Clock(), print)
        self.assertIsInstance(tls.inner, TLSMemoryBIOFactory)
        self.assertIs(tls.inner.wrappedFactory, inner)
        self.assertFalse(tls.answer_busy)

    def test_busy_over_tls_aborts(self) -> None:
        """On a transport that is TLS itself (an ssl: endpoint), a refused
        connection is aborted at once: a 503 would wait for a TLS handshake
        that a silent client never starts."""
        made, logged = gate(max_connections=1)
        self._accept(made, "192.0.2.1")
        busy = made.buildProtocol(v4("192.0.2.2"))
        transport = StringTransport()
        directlyProvides(transport, ISSLTransport)
        busy.makeConnection(transport)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(logged[-1][1]["answer"], "closed (TLS)")
        busy.connectionLost(None)
        self.assertEqual(made.busy, 0)

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
