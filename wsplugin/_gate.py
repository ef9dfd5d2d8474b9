"""Counting every accepted TCP connection, in total and per client address.

:class:`ConnectionGate` is the factory a :class:`~wsplugin.WebSocketServer`
listens with, in front of its WebSocket factory or its same-port
``twisted.web`` site. It counts every connection it accepts, whatever
protocol it speaks (an idle HTTP keep-alive connection counts as much as a
WebSocket), and refuses one over ``max_connections`` or
``max_connections_per_ip`` with ``503 Service Unavailable``.

It hands out the inner factory's own protocol, not a wrapper: a
``ProtocolWrapper`` would add a call to every read and write and hide the
TCP transport from the WebSocket protocol's batched writes. To learn when a
connection ends it replaces that one protocol instance's ``connectionLost``
with a callable that releases the slot and then calls the original
(``twisted.web``'s own WebSocket upgrade replaces a channel's
``connectionLost`` the same way). When a connection changes protocol (a
``twisted.web`` request taken over by a WebSocket protocol),
:func:`hand_over` moves the slot to the new protocol.

On a TLS port the gate sits outside TLS (its inner factory is Twisted's
``TLSMemoryBIOFactory``, ``answer_busy=False``): a connection over a limit
is closed as soon as it is accepted, before any TLS work, and keeps no
descriptor. An HTTP answer there would need a TLS handshake first, which
is the very work a limit is there to refuse; a client that never sends a
ClientHello would hold its descriptor until then. On an ``ssl:`` endpoint
(TLS started by the transport itself) a refused connection is aborted at
once for the same reason.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IProtocolNegotiationFactory, ISSLTransport
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import directlyProvides

__all__ = ["ConnectionGate", "address_key", "hand_over", "listening_gate"]

_log = Logger()

BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Length: 0\r\n"
    b"Connection: close\r\n"
    b"Retry-After: 5\r\n"
    b"\r\n"
)
"""What a connection over a limit gets, before its request is read."""

BUSY_LINGER = 2.0
"""Seconds a refused connection may take to send its request head, which is
read and thrown away so that closing does not reset the connection (a reset
could destroy the 503 before the client reads it)."""

MAX_BUSY = 64
"""Refused connections lingering at once; past it they are closed at once."""


def address_key(
    address: Any, exempt: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str | None:
    """The per-IP counting key of a peer address, or None when not counted.

    IPv4 peers count per address, IPv6 peers per /64 network (one host
    usually owns a whole /64), IPv4-mapped IPv6 peers as IPv4. Peers in an
    ``exempt`` network, and non-IP peers (UNIX sockets), are not counted.
    """
    return _key(address, _masks(exempt))


def _masks(exempt: Iterable[Any]) -> tuple[tuple[int, int, int], ...]:
    """``(address length, network, mask)`` integers of ``exempt`` networks."""
    return tuple(
        (n.max_prefixlen // 8, int(n.network_address), int(n.netmask)) for n in exempt
    )


_MAPPED = bytes(10) + b"\xff\xff"


def _key(address: Any, masks: tuple[tuple[int, int, int], ...]) -> str | None:
    # integers and inet_pton, not ipaddress objects: about 2 us an accept
    if isinstance(address, IPv4Address):
        family = socket.AF_INET
    elif isinstance(address, IPv6Address):
        family = socket.AF_INET6
    else:
        return None
    try:
        packed = socket.inet_pton(family, address.host.partition("%")[0])
    except OSError:
        return None
    if len(packed) == 16 and packed[:12] == _MAPPED:
        packed = packed[12:]
    number = int.from_bytes(packed, "big")
    size = len(packed)
    for length, network, mask in masks:
        if length == size and number & mask == network:
            return None
    if size == 4:
        return socket.inet_ntop(socket.AF_INET, packed)
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


def hand_over(old: Any, new: Any) -> None:
    """Move ``old``'s counted slot to ``new``, which now owns the connection.

    Harmless when ``old`` holds no slot (a server without a gate)."""
    slot = vars(old).get("connectionLost")
    if not isinstance(slot, _Slot):
        return
    del old.connectionLost  # the class's own method again
    slot.original = new.connectionLost
    new.connectionLost = slot


class _Slot:
    """A counted connection: stands in for its protocol's ``connectionLost``,
    releases the count, then calls the protocol's own method. One small
    object per connection (no closures): about 100 bytes."""

    __slots__ = ("gate", "key", "original", "released")

    def __init__(self, gate: ConnectionGate, key: str | None, original: Any) -> None:
        self.gate = gate
        self.key = key
        self.original = original
        self.released = False

    def __call__(self, reason: Any = None) -> Any:
        if not self.released:
            self.released = True
            self.gate.release(self.key)
        return self.original(reason)


class _Busy(Protocol):
    """Answers 503 at once, reads the request head for a moment, and closes.

    Over TLS (an ``ssl:`` endpoint, whose transport starts TLS itself) it
    aborts at once instead: the answer would wait for a TLS handshake that a
    silent client never starts."""

    def __init__(self, gate: ConnectionGate, refusal: dict[str, Any]) -> None:
        self._gate = gate
        self._refusal = refusal
        self._tail = b""
        self._seen = 0
        self._call: Any = None

    def connectionMade(self) -> None:
        gate = self._gate
        gate.busy += 1
        tls = ISSLTransport.providedBy(self.transport)
        gate.log_refusal(answer="closed (TLS)" if tls else "503", **self._refusal)
        if tls:
            self.transport.abortConnection()
            return
        self.transport.write(BUSY_RESPONSE)
        self._call = self._gate.clock.callLater(BUSY_LINGER, self._close)

    def dataReceived(self, data: bytes) -> None:
        self._seen += len(data)
        window = self._tail + data
        if b"\r\n\r\n" in window or self._seen > 16384:
            self._close()
        else:
            self._tail = window[-3:]

    def _close(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._gate.busy -= 1


class ConnectionGate(ServerFactory):
    """A listening factory that counts every connection before ``inner``
    builds its protocol.

    Args:
        inner: The factory that serves accepted connections.
        max_connections: Most connections at once (0: no limit).
        max_per_ip: Most connections from one address (0: no limit); see
            :func:`address_key`.
        exempt: Networks not limited per address.
        clock: The reactor's clock.
        log_limited: A rate-limited logger (``fmt, **fields``); over-limit
            refusals are logged through it, so a flood writes a bounded log.
        answer_busy: Answer a connection over a limit with 503 (plain
            HTTP ports). False closes it as soon as it is accepted, without
            an answer: for a TLS port, where ``inner`` is the TLS wrapper.
    """

    def __init__(
        self,
        inner: Factory,
        *,
        max_connections: int,
        max_per_ip: int,
        exempt: Iterable[str],
        clock: Any,
        log_limited: Callable[..., None],
        answer_busy: bool = True,
    ) -> None:
        self.inner = inner
        self.answer_busy = answer_busy
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in exempt)
        self._masks = _masks(self.exempt)
        self.clock = clock
        self._log_limited = log_limited
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.busy = 0
        if IProtocolNegotiationFactory.providedBy(inner):
            # TLS endpoints ask the listening factory for ALPN protocols
            directlyProvides(self, IProtocolNegotiationFactory)

    def acceptableProtocols(self) -> list[bytes]:
        """The inner factory's ALPN protocols (``twisted.web`` sites have some)."""
        return list(self.inner.acceptableProtocols())  # type: ignore[attr-defined]

    def startFactory(self) -> None:
        """Start the inner factory (a site opens its access log)."""
        self.inner.doStart()

    def stopFactory(self) -> None:
        """Stop the inner factory."""
        self.inner.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        """The inner factory's protocol, counted; or a 503 over a limit."""
        key = _key(addr, self._masks)
        if self.max_connections and self.total >= self.max_connections:
            return self._refuse(addr, "max_connections", self.max_connections)
        if key is not None and self.max_per_ip:
            if self.per_ip.get(key, 0) >= self.max_per_ip:
                return self._refuse(addr, "max_connections_per_ip", self.max_per_ip)
        protocol = self.inner.buildProtocol(addr)
        if protocol is None:
            return None
        self.total += 1
        if key is not None:
            self.per_ip[key] = self.per_ip.get(key, 0) + 1
        protocol.connectionLost = _Slot(self, key, protocol.connectionLost)
        return protocol

    def release(self, key: str | None) -> None:
        """A counted connection ended: its slot (and its address's, under
        ``key``) is free again."""
        self.total -= 1
        if key is not None:
            left = self.per_ip[key] - 1
            if left:
                self.per_ip[key] = left
            else:
                del self.per_ip[key]

    def _refuse(self, addr: Any, option: str, limit: int) -> Protocol | None:
        refusal = {
            "peer": getattr(addr, "host", str(addr)),
            "option": option,
            "limit": limit,
        }
        if not self.answer_busy or self.busy >= MAX_BUSY:
            self.log_refusal(answer="closed", **refusal)
            # the gate is the listening port's own factory: Twisted closes the
            # accepted socket at once (no transport, no descriptor kept)
            return None
        return _Busy(self, refusal)

    def log_refusal(self, **fields: Any) -> None:
        """Log a refused connection (``peer``, ``option``, ``limit`` and the
        ``answer`` it got), rate-limited."""
        self._log_limited(
            "refusing a connection from {peer}: {option} ({limit}) reached: {answer}",
            **fields,
        )


def listening_gate(
    inner: Factory,
    config: Any,
    tls: Any,
    clock: Any,
    log_limited: Callable[..., None],
) -> ConnectionGate:
    """The factory a server listens with: a :class:`ConnectionGate` with
    ``config``'s limits in front of ``inner``, or, with ``tls`` (a server
    connection creator, :class:`~wsplugin.tls.ServerTLS`), in front of
    Twisted's TLS around ``inner``: a connection over a limit is then
    closed when accepted, before any TLS work."""
    if tls is not None:
        inner = TLSMemoryBIOFactory(tls, False, inner, clock=clock)
    return ConnectionGate(
        inner,
        max_connections=config.max_connections,
        max_per_ip=config.max_connections_per_ip,
        exempt=config.per_ip_exempt,
        clock=clock,
        log_limited=log_limited,
        answer_busy=tls is None,
    )
