"""The handshake request as the application sees it: :class:`Request` and
its case-insensitive :class:`Headers` (pure data, no I/O)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING

from twisted.internet.address import IPv4Address, IPv6Address

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

    from wsplugin.tls import PeerCertificate

__all__ = ["Headers", "Request", "forwarded_address"]


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive HTTP headers; ``headers["Host"]``.

    Lookup returns the first value; :meth:`get_all` returns every value of a
    repeated header.
    """

    __slots__ = ("_first_map", "_pairs_kept", "_packed")

    def __init__(self, pairs: tuple[tuple[str, str], ...] = ()) -> None:
        self._pairs_kept: tuple[tuple[str, str], ...] | None = tuple(pairs)
        self._first_map: dict[str, str] | None = None
        self._packed: str | None = None

    @property
    def _pairs(self) -> tuple[tuple[str, str], ...]:
        pairs = self._pairs_kept
        if pairs is None:
            packed = self._packed or ""
            pairs = (
                tuple(
                    (name, value)
                    for name, _, value in (
                        line.partition(":") for line in packed.split("\n")
                    )
                )
                if packed
                else ()
            )
            self._pairs_kept, self._packed = pairs, None
        return pairs

    def compact(self) -> None:
        """Hold the headers as one string until they are read again.

        Called when a connection opens: most applications read headers in
        ``allow`` or not at all, and an idle connection then keeps one string
        instead of two strings and a tuple per header (about 100 bytes a
        header).
        """
        pairs = self._pairs_kept
        if pairs is None or any(
            ":" in name or "\n" in name or "\n" in value for name, value in pairs
        ):
            return
        self._packed = "\n".join(f"{name}:{value}" for name, value in pairs)
        self._pairs_kept = None
        self._first_map = None

    @property
    def _first(self) -> dict[str, str]:
        # built on first lookup: many connections never read their headers
        if self._first_map is None:
            first: dict[str, str] = {}
            for name, value in self._pairs:
                first.setdefault(name.lower(), value)
            self._first_map = first
        return self._first_map

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in the order received."""
        lname = name.lower()
        return [v for k, v in self._pairs if k.lower() == lname]

    def raw(self) -> tuple[tuple[str, str], ...]:
        """The ``(name, value)`` pairs as received."""
        return self._pairs

    def __repr__(self) -> str:
        return f"Headers({list(self._first)!r})"


@dataclass(frozen=True)
class Request:
    """The handshake request of a connection (TMS ``HandshakeRequest``).

    Attributes:
        path: The request path, e.g. ``"/chat"``.
        params: Query parameters, each with all its values.
        headers: Case-insensitive request headers.
        host: The ``Host`` header without its port, lowercased.
        origin: The ``Origin`` header, or ``""``.
        protocols: Subprotocols the client offered, in its order.
        peer: The client's Twisted address (``IPv4Address``, ``UNIXAddress``...).
            Behind a trusted proxy (``trusted_proxies`` N > 0 and an
            ``X-Forwarded-For`` that names an IP address) it is the client
            that proxy saw, with port 0 (the header carries no port); behind
            HAProxy on a ``haproxy:`` endpoint it is the client from the
            PROXY header, port included.
        target: The request target as sent (path and query).
        forwarded_for: The trusted ``X-Forwarded-For`` entry as sent, or None.
        proxy_peer: The socket peer (the trusted proxy itself) when ``peer``
            was taken from ``X-Forwarded-For``; None when ``peer`` is the
            socket peer.
        peer_certificate: The client certificate the TLS handshake verified
            (subject, SANs, SHA-256 fingerprint), or None: no TLS, or no
            certificate sent (see :mod:`wsplugin.tls`).
    """

    path: str
    params: dict[str, list[str]]
    headers: Headers
    host: str
    origin: str
    protocols: tuple[str, ...]
    peer: IAddress | None
    target: str = ""
    forwarded_for: str | None = field(default=None)
    proxy_peer: IAddress | None = field(default=None)
    peer_certificate: PeerCertificate | None = field(default=None)

    @property
    def peer_address(self) -> str:
        """The client's address: the trusted ``X-Forwarded-For`` one if set,
        otherwise the socket peer's host (``"unix"`` for a UNIX socket)."""
        if self.forwarded_for:
            return self.forwarded_for
        host = getattr(self.peer, "host", None)
        return str(host) if host is not None else "unix"

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies sent in the ``Cookie`` header(s); malformed ones are ignored."""
        jar: SimpleCookie = SimpleCookie()
        for value in self.headers.get_all("cookie"):
            try:
                jar.load(value)
            except CookieError:
                continue
        return {name: morsel.value for name, morsel in jar.items()}

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.params.get(name)
        return values[0] if values else default


def forwarded_address(value: str) -> IPv4Address | IPv6Address | None:
    """The Twisted address of one ``X-Forwarded-For`` entry, or None.

    nginx and HAProxy write the client's IP address as is (``203.0.113.7``,
    ``2001:db8::1``); a bracketed IPv6 address is accepted too. The header
    carries no port, so the address has port 0. Anything that is not an IP
    address (``unknown``, a host name, an obfuscated RFC 7239 identifier)
    gives None: the caller keeps the socket peer.
    """
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return IPv6Address("TCP", str(ip), 0)
    return IPv4Address("TCP", str(ip), 0)
