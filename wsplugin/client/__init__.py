"""A WebSocket client with the server side's Connection API (FPC ``TWebsocketClient``).

:func:`connect` opens one connection and fires with a :class:`ClientConnection`:
the same facade a server handler gets (``send_text``, ``send_binary``,
``send_frame``, ``ping``, ``close``, ``await receive()``, ``async for``), plus
the handshake :attr:`~ClientConnection.response` (status, headers: read your
``Set-Cookie`` there, FPC ``OnHandshakeSuccess``) and
:meth:`~ClientConnection.wait_for_message` (FPC ``WaitForMessage``)::

    from wsplugin.client import connect

    async def chat(reactor):
        conn = await connect("ws://127.0.0.1:8888/", reactor=reactor,
                             headers={"Authorization": "Bearer ..."})
        conn.send_text("hello")
        conn.ping(b"are you there?")
        pong = await conn.wait_for_message(kinds=("pong",), timeout=5)
        async for message in conn:       # str (text) or bytes (binary)
            print(message)

A refused upgrade fails the Deferred with :class:`HandshakeFailed`, carrying
the status, headers and body of the server's answer (FPC
``OnHandshakeFailure``). :class:`ReconnectingClient` keeps a connection up
across drops and server restarts, with exponential backoff (Twisted's
``ClientService``). ``python -m wsplugin.client URL`` is an interactive chat
client (FPC ``chatClient``); see :func:`main`.

The protocol and factory are subclasses of Autobahn's
``WebSocketClientProtocol`` / ``WebSocketClientFactory``, adapters only, as on
the server side: Autobahn frames, masks, validates UTF-8, compresses and checks
the handshake. Safe defaults bound what a server can make the client hold:
messages of at most 16 MiB (larger ones close the connection with 1009), a
10 s limit for connecting plus the whole opening handshake, a receive queue of
32 messages (reading from the socket pauses while it is full) and an error
response body of at most 64 KiB.

Exceptions (all :class:`~wsplugin.errors.WSPluginError`)::

    WSPluginError
    └── ClientError                    base of the client's errors
        ├── ConnectFailed              no TCP connection: DNS, refused, unreachable
        │   ├── TLSFailed              the TLS handshake failed (untrusted
        │   │                          certificate, wrong host name, protocol)
        │   └── OpenTimeout            not open within ``open_timeout``
        │       (also TimeoutError)
        ├── HandshakeFailed            the server did not answer with a valid
        │                              101: ``status`` (None if it sent no
        │                              valid HTTP response), ``headers``, ``body``
        └── ReceiveTimeout             ``wait_for_message(timeout=)`` elapsed
            (also TimeoutError)

Sending or receiving on a connection that has ended raises
:class:`~wsplugin.errors.ConnectionClosed`, as on the server.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import random
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import txaio
from autobahn.twisted.websocket import (
    WebSocketClientFactory as _AutobahnClientFactory,
)
from autobahn.twisted.websocket import (
    WebSocketClientProtocol as _AutobahnClientProtocol,
)
from autobahn.util import encode_truncate
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.protocol import WebSocketProtocol as _WSP
from autobahn.websocket.types import ConnectingRequest
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import error as _neterr
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    fail,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wsplugin._events import as_deferred
from wsplugin._version import __version__
from wsplugin.client._http import (
    MAX_RESPONSE_HEAD,
    Response,
    ResponseHead,
    parse_response_head,
)
from wsplugin.client._http import body_progress as _body_progress
from wsplugin.client._http import decode_chunked as decode_chunked
from wsplugin.connection import Connection, ConnectionState, Headers, Request
from wsplugin.errors import (
    ClientError,
    ConfigError,
    ConnectFailed,
    ConnectionClosed,
    FragmentedSendError,
    HandshakeFailed,
    OpenTimeout,
    ReceiveTimeout,
    TLSFailed,
)
from wsplugin.factory import _ReactorTimer, _transport_buffered
from wsplugin.frames import OP_BINARY, OP_CONTINUATION, OP_TEXT
from wsplugin.protocol import copy_options

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall

__all__ = [
    "ClientConfig",
    "ClientConnection",
    "ClientError",
    "ConnectFailed",
    "HandshakeFailed",
    "MESSAGE_KINDS",
    "Message",
    "OpenTimeout",
    "ReceiveTimeout",
    "ReconnectingClient",
    "Response",
    "TLSFailed",
    "URL",
    "WebSocketClientFactory",
    "WebSocketClientProtocol",
    "connect",
    "main",
    "parse_response_head",
    "parse_url",
]

MiB = 1024 * 1024
MESSAGE_KINDS = frozenset({"text", "binary", "pong"})
"""The kinds :meth:`ClientConnection.wait_for_message` can wait for."""

_DATA_KINDS = frozenset({"text", "binary"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# headers the opening handshake sets itself; Origin and User-Agent are allowed
# and replace the defaults
_RESERVED_REQUEST_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "content-length",
        "transfer-encoding",
    }
)


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------
# URLs, responses, options (pure)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class URL:
    """A parsed ``ws://`` or ``wss://`` URL (see :func:`parse_url`).

    Attributes:
        secure: True for ``wss://``.
        host: The host name or IP address (IPv6 without brackets).
        port: The port (80 or 443 when the URL has none).
        path: The path, e.g. ``"/chat"``.
        query: The query string without ``?`` (may be empty).
        text: The URL as given.
    """

    secure: bool
    host: str
    port: int
    path: str
    query: str
    text: str

    @property
    def resource(self) -> str:
        """The request target: path and query, as sent on the request line."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def params(self) -> dict[str, list[str]]:
        """Query parameters, each with all its values."""
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def host_header(self) -> str:
        """The host as it appears in a ``Host`` header (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return self.text


def parse_url(url: str | URL) -> URL:
    """Parse a WebSocket URL (RFC 6455, section 3).

    Raises:
        ConfigError: not a ``ws://`` or ``wss://`` URL with a host, or it has
            a fragment, credentials, or an invalid port.
    """
    if isinstance(url, URL):
        return url
    if not isinstance(url, str):
        raise ConfigError(f"the URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"invalid WebSocket URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ConfigError(
            f"invalid WebSocket URL {url!r}: it must start with ws:// or wss://"
        )
    if not parts.hostname:
        raise ConfigError(f"invalid WebSocket URL {url!r}: no host")
    if parts.fragment or url.rstrip().endswith("#"):
        raise ConfigError(
            f"invalid WebSocket URL {url!r}: a WebSocket URL has no #fragment"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"invalid WebSocket URL {url!r}: send credentials in a header, "
            "e.g. headers={'Authorization': ...}, not in the URL"
        )
    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    if port is None:
        port = 443 if scheme == "wss" else 80
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return URL(scheme == "wss", host, port, path, query, url.strip())


@dataclass(frozen=True)
class Message:
    """A message from :meth:`ClientConnection.wait_for_message`.

    Attributes:
        kind: ``"text"``, ``"binary"`` or ``"pong"``.
        data: ``str`` for text, ``bytes`` for binary messages and pongs.
    """

    kind: str
    data: str | bytes

    @property
    def text(self) -> str:
        """The data as text (a pong's or binary payload decoded as UTF-8)."""
        if isinstance(self.data, str):
            return self.data
        return self.data.decode("utf-8", "replace")


def _header_pairs(headers: Any) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        items: Iterable[Any] = headers.items()
    elif isinstance(headers, (str, bytes)):
        raise ConfigError("headers must be a mapping or (name, value) pairs")
    else:
        items = headers
    pairs = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise ConfigError(
                f"headers must be a mapping or (name, value) pairs, not {item!r}"
            ) from None
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ConfigError(f"invalid request header name {name!r}")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise ConfigError(
                f"request header {name!r} must be a str without control characters"
            )
        if name.lower() in _RESERVED_REQUEST_HEADERS:
            raise ConfigError(
                f"request header {name!r} is set by the handshake itself; use "
                "subprotocols= or compression= for the WebSocket headers"
            )
        pairs.append((name, value))
    return tuple(pairs)


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Options of a client connection; :func:`connect` takes them as keywords.

    Attributes:
        headers: Extra handshake request headers (FPC ``CustomHeaders``): a
            mapping or ``(name, value)`` pairs. ``Origin`` and ``User-Agent``
            replace the defaults; a repeated name is sent once with the values
            joined (``; `` for ``Cookie``, ``, `` otherwise).
        subprotocols: Subprotocols to offer, in order of preference.
        origin: The ``Origin`` header (none by default).
        user_agent: The ``User-Agent`` header.
        compression: Offer permessage-deflate (RFC 7692).
        ca_file: PEM file of the CA certificates to trust for ``wss://``
            instead of the system's.
        trust: A CA to trust for ``wss://``: PEM bytes or text, a Twisted
            ``Certificate``, an ``IOpenSSLTrustRoot``, or an object with a
            ``cert_pem`` (a ``trustme.CA``).
        tls: An ``IOpenSSLClientConnectionCreator`` (e.g. from Twisted's
            ``optionsForClientTLS``) for full control; excludes the two above.
        open_timeout: Seconds for TCP, TLS and the opening handshake together.
        close_timeout: Seconds to wait for the server's close reply.
        max_message_size: Largest message accepted, in bytes (1009 beyond);
            0 turns the limit off.
        max_frame_size: Largest frame accepted, in bytes; 0 turns it off.
        max_queue: Messages queued for ``receive()`` before reading pauses.
        max_pongs: Pongs kept for ``wait_for_message``; older ones are dropped.
        max_error_body: Bytes of an error response's body kept in
            :class:`HandshakeFailed`.
        utf8_validation: Check that text messages are valid UTF-8 (1007).
    """

    headers: Any = ()
    subprotocols: Any = ()
    origin: str | None = None
    user_agent: str = f"wsplugin/{__version__}"
    compression: bool = False
    ca_file: str | Path | None = None
    trust: Any = None
    tls: Any = None
    open_timeout: float = 10.0
    close_timeout: float = 5.0
    max_message_size: int = 16 * MiB
    max_frame_size: int = 16 * MiB
    max_queue: int = 32
    max_pongs: int = 16
    max_error_body: int = 64 * 1024
    utf8_validation: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _header_pairs(self.headers))
        protocols = self.subprotocols
        if isinstance(protocols, str):
            protocols = (protocols,)
        protocols = tuple(protocols or ())
        for p in protocols:
            if not isinstance(p, str) or not _TOKEN.match(p):
                raise ConfigError(f"invalid subprotocol name {p!r}")
        object.__setattr__(self, "subprotocols", protocols)
        for name in ("origin", "user_agent"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, str) or _BAD_VALUE.search(value)
            ):
                raise ConfigError(f"{name} must be a str without control characters")
        for name in ("open_timeout", "close_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number of seconds")
            if not value > 0:
                raise ConfigError(f"{name} must be positive, not {value!r}")
        for name in ("max_message_size", "max_frame_size", "max_error_body"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an int >= 0, not {value!r}")
        for name in ("max_queue", "max_pongs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, not {value!r}")
        if self.tls is not None and (
            self.ca_file is not None or self.trust is not None
        ):
            raise ConfigError(
                "tls= is a complete TLS configuration: give ca_file= or trust= "
                "to it (optionsForClientTLS(host, trustRoot=...)), not besides it"
            )
        if self.ca_file is not None and self.trust is not None:
            raise ConfigError("give ca_file= or trust=, not both")

    def request_headers(self) -> tuple[dict[str, str], str | None, str]:
        """Headers for Autobahn (one value per name), origin and user agent."""
        origin, agent = self.origin, self.user_agent
        merged: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for name, value in self.headers:
            key = name.lower()
            if key == "origin":
                origin = value
            elif key == "user-agent":
                agent = value
            else:
                names.setdefault(key, name)
                merged.setdefault(key, []).append(value)
        headers = {
            names[key]: ("; " if key == "cookie" else ", ").join(values)
            for key, values in merged.items()
        }
        return headers, origin, agent


def _make_config(config: ClientConfig | None, options: dict[str, Any]) -> ClientConfig:
    if config is not None:
        if options:
            raise ConfigError(
                "give either config= or keyword options, not both "
                f"(got {', '.join(sorted(options))})"
            )
        return config
    try:
        return ClientConfig(**options)
    except TypeError as e:
        raise ConfigError(f"unknown client option: {e}") from None


def _trust_root(trust: Any) -> Any:
    from twisted.internet import ssl

    if hasattr(trust, "cert_pem") and hasattr(trust.cert_pem, "bytes"):
        trust = trust.cert_pem.bytes()  # a trustme.CA
    if isinstance(trust, str):
        trust = trust.encode("ascii")
    if isinstance(trust, bytes):
        return ssl.trustRootFromCertificates(_pem_certificates(trust, "trust="))
    if isinstance(trust, ssl.Certificate):
        return ssl.trustRootFromCertificates([trust])
    # the interface is documented, though defined in a private module
    from twisted.internet._sslverify import IOpenSSLTrustRoot

    if IOpenSSLTrustRoot.providedBy(trust):
        return trust
    raise ConfigError(
        "trust= takes PEM bytes, a Certificate, an IOpenSSLTrustRoot or a "
        f"trustme.CA, not {type(trust).__name__}"
    )


def _pem_certificates(pem: bytes, where: str) -> list[Any]:
    from twisted.internet import ssl

    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL
    )
    if not blocks:
        raise ConfigError(f"{where} holds no PEM certificate")
    return [ssl.Certificate.loadPEM(block) for block in blocks]


def _tls_creator(url: URL, config: ClientConfig) -> Any:
    """The TLS connection creator for a ``wss://`` URL."""
    if config.tls is not None:
        return config.tls
    from twisted.internet import ssl

    root = None
    if config.ca_file is not None:
        try:
            pem = Path(config.ca_file).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read ca_file {config.ca_file}: {e}") from None
        root = ssl.trustRootFromCertificates(
            _pem_certificates(pem, f"ca_file {config.ca_file}")
        )
    elif config.trust is not None:
        root = _trust_root(config.trust)
    return ssl.optionsForClientTLS(
        url.host,
        trustRoot=root,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


def _default_endpoint(
    reactor: Any, url: URL, config: ClientConfig
) -> IStreamClientEndpoint:
    """TCP to the URL's host (IP literals need no resolver), TLS for wss."""
    timeout = max(1, int(config.open_timeout + 1))
    endpoint: IStreamClientEndpoint
    try:
        address = ipaddress.ip_address(url.host)
    except ValueError:
        endpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=timeout)
    else:
        kind = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
        endpoint = kind(reactor, url.host, url.port, timeout=timeout)
    if url.secure:
        endpoint = wrapClientTLS(_tls_creator(url, config), endpoint)
    return endpoint


def _reason(exc: BaseException) -> str:
    """A few words for a connection error: "Connection refused"."""
    if isinstance(exc, _neterr.TimeoutError):
        return "connection timed out"
    if isinstance(exc, (_neterr.ConnectError, _neterr.DNSLookupError)):
        if exc.args and isinstance(exc.args[0], str) and exc.args[0]:
            return exc.args[0]
    text = str(exc).strip().rstrip(".")
    return text or type(exc).__name__


def _tls_reason(exc: BaseException) -> str | None:
    """Why a TLS handshake failed, or None if ``exc`` is no TLS error."""
    module = type(exc).__module__ or ""
    if module.startswith("service_identity"):
        return "the certificate is not valid for this host name"
    if module.startswith("OpenSSL"):
        try:
            reasons = [entry[2] for entry in exc.args[0] if entry[2]]
        except (IndexError, TypeError):
            reasons = []
        if reasons:
            return "; ".join(reasons)
        return str(exc) or type(exc).__name__
    return None


# --------------------------------------------------------------------------
# The connection facade
# --------------------------------------------------------------------------


@dataclass
class _Waiter:
    kinds: frozenset[str]
    raw: bool
    deferred: Deferred[Any]
    timer: IDelayedCall | None = field(default=None)


class ClientConnection(Connection):
    """A connection made by :func:`connect`: the server side's API and more.

    Everything :class:`~wsplugin.Connection` offers works the same
    (``send_text``, ``send_binary``, ``send``, ``send_frame``, ``ping``,
    ``pong``, ``close``, ``abort``, ``state``, ``is_open``, ``receive``,
    ``async for``, ``wait_closed``, ``drain``, ``buffered_amount``), with the
    roles turned around: ``request`` is the request this client sent (its
    ``peer`` is the server's address), ``response_headers`` the headers the
    server answered with.

    Attributes:
        url: The URL connected to.
        response: The server's 101 :class:`Response` (FPC
            ``OnHandshakeSuccess``): ``conn.response.headers.get_all("Set-Cookie")``.
        response_headers: The 101's headers as ``(name, value)`` pairs.
        protocol: The subprotocol the server chose, or None.
        extensions: The extensions in use, e.g. ``("permessage-deflate",)``.
        options: The :class:`ClientConfig` of the connection.
    """

    def __init__(
        self,
        protocol: Any,
        request: Request,
        *,
        url: URL,
        response: Response,
        options: ClientConfig,
        clock: Any,
    ) -> None:
        super().__init__(protocol, request, max_queue=options.max_queue)
        self.url = url
        self.response = response
        self.response_headers = list(response.headers.raw())
        self.options = options
        self.extensions: tuple[str, ...] = ()
        self._clock = clock
        self._entries: deque[Message] = deque()
        self._data_queued = 0
        self._pongs_queued = 0
        self._kind_waiters: deque[_Waiter] = deque()

    def __repr__(self) -> str:
        return f"<ClientConnection {self.id} {self.url} {self.state.value}>"

    # -- receiving --------------------------------------------------------

    def receive(self) -> Deferred[Any]:
        """The next text (``str``) or binary (``bytes``) message.

        Pongs are not returned here; :meth:`wait_for_message` gets them.

        Raises:
            ConnectionClosed: (through the Deferred) once the connection has
                ended and every queued message has been received.
        """
        return self._take(_DATA_KINDS, True, None)

    def wait_for_message(
        self,
        kinds: Iterable[str] | str = ("text", "binary", "pong"),
        timeout: float | None = None,
    ) -> Deferred[Message]:
        """The next message of one of ``kinds`` (FPC ``WaitForMessage``).

        Messages of other kinds stay queued, in order, for :meth:`receive`
        or a later call. Pongs are kept only for this method (at most
        ``max_pongs``, the oldest dropped first).

        Args:
            kinds: Any of ``"text"``, ``"binary"``, ``"pong"``.
            timeout: Seconds to wait; None waits until the connection ends.

        Returns:
            A Deferred firing with a :class:`Message`; it fails with
            :class:`ReceiveTimeout` after ``timeout`` seconds, or with
            :class:`~wsplugin.errors.ConnectionClosed` once the connection
            has ended with no such message queued.
        """
        if isinstance(kinds, str):
            kinds = (kinds,)
        wanted = frozenset(kinds)
        if not wanted or not wanted <= MESSAGE_KINDS:
            raise ValueError(
                "kinds must be some of 'text', 'binary', 'pong', "
                f"not {sorted(wanted)!r}"
            )
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        return self._take(wanted, False, timeout)

    def _take(
        self, kinds: frozenset[str], raw: bool, timeout: float | None
    ) -> Deferred[Any]:
        for index, entry in enumerate(self._entries):
            if entry.kind in kinds:
                del self._entries[index]
                self._dequeued(entry)
                return succeed(entry.data if raw else entry)
        if self._closed:
            return fail(ConnectionClosed(self.close_code, self.close_reason))
        waiter = _Waiter(kinds, raw, Deferred(lambda d: self._cancel_wait(waiter)))
        if timeout is not None:
            waiter.timer = self._clock.callLater(timeout, self._expire, waiter, timeout)
        self._kind_waiters.append(waiter)
        return waiter.deferred

    def _cancel_wait(self, waiter: _Waiter) -> None:
        if waiter in self._kind_waiters:
            self._kind_waiters.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()

    def _expire(self, waiter: _Waiter, timeout: float) -> None:
        waiter.timer = None
        if waiter in self._kind_waiters:
            self._kind_waiters.remove(waiter)
            kinds = ", ".join(sorted(waiter.kinds))
            waiter.deferred.errback(
                ReceiveTimeout(f"no message of kind {kinds} within {timeout}s")
            )

    def _dequeued(self, entry: Message) -> None:
        if entry.kind == "pong":
            self._pongs_queued -= 1
            return
        self._data_queued -= 1
        if self._reading_paused and self._data_queued < self._max_queue // 2 + 1:
            self._reading_paused = False
            self._protocol._ws_resume_reading()

    # -- called by the protocol adapter -----------------------------------

    def _deliver(self, message: Message) -> None:
        for waiter in self._kind_waiters:
            if message.kind in waiter.kinds:
                self._kind_waiters.remove(waiter)
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                waiter.deferred.callback(message.data if waiter.raw else message)
                return
        self._entries.append(message)
        if message.kind == "pong":
            self._pongs_queued += 1
            if self._pongs_queued > self.options.max_pongs:
                for index, entry in enumerate(self._entries):
                    if entry.kind == "pong":
                        del self._entries[index]
                        self._pongs_queued -= 1
                        break
            return
        self._data_queued += 1
        if not self._reading_paused and self._data_queued >= self._max_queue:
            self._reading_paused = True
            self._protocol._ws_pause_reading()

    def _finish(self) -> None:
        waiters, self._kind_waiters = self._kind_waiters, deque()
        for waiter in waiters:
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.errback(
                ConnectionClosed(self.close_code, self.close_reason)
            )
        super()._finish()


# --------------------------------------------------------------------------
# The Autobahn adapter
# --------------------------------------------------------------------------


def _accept_deflate(response: Any) -> PerMessageDeflateResponseAccept | None:
    if isinstance(response, PerMessageDeflateResponse):
        return PerMessageDeflateResponseAccept(response)
    return None


def _parse_request_pairs(data: bytes) -> tuple[tuple[str, str], ...]:
    lines = data.decode("latin-1").split("\r\n")[1:]
    pairs = []
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


@implementer(IPushProducer)
class WebSocketClientProtocol(_AutobahnClientProtocol):
    """Autobahn client protocol behind a :class:`ClientConnection`.

    ``opened`` is a Deferred that fires with the connection once the
    handshake succeeded, or fails with :class:`HandshakeFailed`,
    :class:`TLSFailed` or :class:`ConnectFailed`.
    """

    factory: WebSocketClientFactory
    _log = Logger()
    # wsplugin reports failures as exceptions; Autobahn's own per-connection
    # warnings (failed handshakes, dropped connections) would repeat them
    log = txaio.make_logger(level="error")

    connection: ClientConnection | None = None

    # copied by copy_options, not by Autobahn (see there)
    _OPTION_NAMES: tuple[str, ...] = tuple(_AutobahnClientProtocol.CONFIG_ATTRS)
    CONFIG_ATTRS: list[str] = []

    def __init__(self) -> None:
        super().__init__()
        self.opened: Deferred[ClientConnection] = Deferred()
        self._open_done = False
        self._ended = False
        self._response: Response | None = None
        self._error_head: ResponseHead | None = None
        self._handshake_error: ClientError | None = None
        self._lost_reason: Failure | None = None
        self._write_paused = False
        self._drain_waiters: list[Deferred[None]] = []
        self._reading_paused = False
        self._fragmenting = False
        self._lost_listeners: list[Callable[[ClientConnection, Failure], None]] = []

    # -- TCP ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """TCP (and TLS) connected: Autobahn sends the handshake request."""
        super().connectionMade()
        self.transport.registerProducer(self, True)

    def _connectionMade(self) -> None:
        copy_options(self, self._OPTION_NAMES)
        super()._connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Remember why (a TLS error shows here), then let Autobahn end it."""
        self._lost_reason = reason
        super().connectionLost(reason)

    # -- handshake ---------------------------------------------------------

    def onConnecting(self, transport_details: Any) -> ConnectingRequest:
        """The request to send: the URL's host and resource, our headers."""
        factory = self.factory
        headers, origin, agent = factory.config.request_headers()
        return ConnectingRequest(
            host=factory.target.host_header,
            port=factory.target.port,
            resource=factory.target.resource,
            headers=headers,
            useragent=agent,
            origin=origin,
            protocols=list(factory.config.subprotocols),
        )

    def processHandshake(self) -> None:
        """Read the response head; an error status's body is read too (bounded),
        anything else goes to Autobahn's validation of the 101."""
        if self._error_head is not None:
            self._read_error_body(closed=False)
            return
        try:
            head = parse_response_head(self.data)
        except ValueError as e:
            self._fail_open(
                HandshakeFailed(self.factory.url, None, "", Headers(), detail=str(e))
            )
            return
        if head is None:
            if len(self.data) > MAX_RESPONSE_HEAD:
                self._fail_open(
                    HandshakeFailed(
                        self.factory.url,
                        None,
                        "",
                        Headers(),
                        detail=f"response head over {MAX_RESPONSE_HEAD} bytes",
                    )
                )
            return
        if head.status != 101:
            self._error_head = head
            self.data = self.data[head.length :]
            self._read_error_body(closed=False)
            return
        self._response = Response(head.status, head.reason, Headers(head.headers))
        super().processHandshake()

    def _read_error_body(self, closed: bool) -> None:
        head = self._error_head
        assert head is not None
        body, complete = _body_progress(
            head, self.data, self.factory.config.max_error_body
        )
        if not (complete or closed):
            return
        self.data = b""
        self._fail_open(
            HandshakeFailed(
                self.factory.url, head.status, head.reason, Headers(head.headers), body
            ),
            abort=False,
        )

    def _fail_open(self, error: ClientError, abort: bool = True) -> None:
        if self._handshake_error is None:
            self._handshake_error = error
        if self.state != _WSP.STATE_CLOSED:
            self.wasNotCleanReason = str(error)
            self.dropConnection(abort=abort)

    def failHandshake(self, reason: str) -> None:
        """Autobahn found the 101 invalid: remember why, then drop."""
        if self._handshake_error is None:
            response = self._response
            self._handshake_error = HandshakeFailed(
                self.factory.url,
                101 if response is not None else None,
                response.reason if response is not None else "",
                response.headers if response is not None else Headers(),
                detail=reason,
            )
        super().failHandshake(reason)

    def onConnect(self, response: Any) -> None:
        """A valid 101: build the :class:`ClientConnection`."""
        factory = self.factory
        assert self._response is not None
        url = factory.target
        sent = getattr(self, "http_request_data", b"")
        request = Request(
            path=url.path,
            params=url.params,
            headers=Headers(_parse_request_pairs(sent)),
            host=url.host.lower(),
            origin=factory.config.request_headers()[1] or "",
            protocols=tuple(factory.config.subprotocols),
            peer=self.transport.getPeer(),
            target=url.resource,
        )
        conn = ClientConnection(
            self,
            request,
            url=url,
            response=self._response,
            options=factory.config,
            clock=factory.clock,
        )
        conn.protocol = response.protocol
        conn.extensions = tuple(
            str(getattr(ext, "EXTENSION_NAME", ext)) for ext in response.extensions
        )
        self.connection = conn

    def onOpen(self) -> None:
        """Open: hand the connection over."""
        conn = self.connection
        assert conn is not None
        self._open_done = True
        self.opened.callback(conn)

    # -- messages ------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """A whole message: queue it for ``receive`` / ``wait_for_message``
        (also one that arrives after our close frame, which the server sent
        before it saw that)."""
        conn = self.connection
        if conn is None or self.state == _WSP.STATE_CLOSED:
            return
        if isBinary:
            conn._deliver(Message("binary", payload))
        else:
            conn._deliver(Message("text", payload.decode("utf-8", "replace")))

    def onPong(self, payload: bytes) -> None:
        """A pong: queue it for ``wait_for_message``."""
        conn = self.connection
        if conn is not None and not self.failedByMe:
            conn._deliver(Message("pong", payload))

    # -- end -------------------------------------------------------------------

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """The connection is gone: fail the open, or end the facade.

        The close code is the one the server sent (RFC 6455 7.1.5), or the
        one the client failed the connection with when the server broke the
        protocol; 1006 when the TCP connection ended without a close frame.
        """
        if self._ended:
            return
        self._ended = True
        self._fire_drain(ConnectionClosed(code, reason or ""))
        conn = self.connection
        if not self._open_done:
            self._open_done = True
            self.opened.errback(self._open_error())
            return
        assert conn is not None
        if self.failedByMe and self.localCloseCode is not None:
            # the server broke the protocol (1002, 1007, 1009...): that is
            # why the connection ended, whatever the server answered
            code = self.localCloseCode
            local = self.localCloseReason
            reason = local.decode("utf-8", "replace") if local else ""
        elif code is None and wasClean:
            code = _WSP.CLOSE_STATUS_CODE_NULL
        conn._mark_closed(code, reason or "")
        # a ReconnectingClient learns of the loss before receive loops wake
        # up, so one that asks for the next connection gets a new one
        reason_failure = Failure(
            _neterr.ConnectionDone() if wasClean else _neterr.ConnectionLost(reason)
        )
        for listener in list(self._lost_listeners):
            listener(conn, reason_failure)
        conn._finish()

    def _open_error(self) -> ClientError:
        if self._error_head is not None and self._handshake_error is None:
            self._read_error_body(closed=True)
        if self._handshake_error is not None:
            return self._handshake_error
        factory = self.factory
        lost = self._lost_reason.value if self._lost_reason is not None else None
        if lost is not None:
            tls = _tls_reason(lost)
            if tls is not None:
                return TLSFailed(factory.target.host, factory.target.port, tls)
        if self.data:
            detail = "the connection closed in the middle of the response head"
        else:
            detail = "the connection closed before the server answered"
        return HandshakeFailed(factory.url, None, "", Headers(), detail=detail)

    # -- the transport's push producer ----------------------------------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: ``drain()`` waits from now on."""
        self._write_paused = True

    def resumeProducing(self) -> None:
        """The transport drained: fire ``drain()`` waiters."""
        self._write_paused = False
        self._fire_drain(None)

    def stopProducing(self) -> None:
        """The transport is gone."""
        self._write_paused = True

    def _fire_drain(self, error: Exception | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            if error is None:
                d.callback(None)
            else:
                d.errback(error)

    # -- used by Connection ------------------------------------------------------

    def _ws_state(self) -> ConnectionState:
        state = self.state
        if state == _WSP.STATE_OPEN:
            return ConnectionState.OPEN
        if state in (_WSP.STATE_CONNECTING, _WSP.STATE_PROXY_CONNECTING):
            return ConnectionState.CONNECTING
        return ConnectionState.CLOSING

    def _check_can_send(self) -> None:
        if self.state != _WSP.STATE_OPEN:
            conn = self.connection
            raise ConnectionClosed(
                conn.close_code if conn else None, conn.close_reason if conn else ""
            )

    def _ws_send_message(self, payload: bytes, is_binary: bool) -> None:
        self._check_can_send()
        if self._fragmenting:
            raise FragmentedSendError(
                "finish the message started with send_frame() (fin=True) first"
            )
        # Autobahn applies the *incoming* limit to outgoing messages too; the
        # application may send what it likes, so lift it for this call.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(payload, is_binary)
        finally:
            self.maxMessagePayloadSize = limit

    def _ws_send_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        self._check_can_send()
        if self._fragmenting:
            opcode = OP_CONTINUATION
        else:
            opcode = OP_BINARY if is_binary else OP_TEXT
        self.sendFrame(opcode=opcode, payload=payload, fin=fin)
        self._fragmenting = not fin

    def _ws_ping(self, payload: bytes) -> None:
        self._check_can_send()
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        self.sendPing(payload or None)

    def _ws_pong(self, payload: bytes) -> None:
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        if self.state == _WSP.STATE_OPEN:
            self.sendPong(payload or None)

    def _ws_close(self, code: int | None, reason: str) -> None:
        if self.state != _WSP.STATE_OPEN:
            return
        reason_utf8 = encode_truncate(reason, 123) if reason else None
        self.sendCloseFrame(code, reason_utf8, isReply=False)

    def _ws_abort(self) -> None:
        if self.state != _WSP.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "aborted by the application"
            self.dropConnection(abort=True)

    def _ws_buffered(self) -> int:
        return _transport_buffered(self.transport)

    def _ws_drain(self) -> Deferred[None]:
        if self._ended:
            conn = self.connection
            return fail(
                ConnectionClosed(
                    conn.close_code if conn else None, conn.close_reason if conn else ""
                )
            )
        if not self._write_paused:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        return d

    def _ws_pause_reading(self) -> None:
        if not self._reading_paused and not self._ended:
            self._reading_paused = True
            self.transport.pauseProducing()

    def _ws_resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if not self._ended:
                self.transport.resumeProducing()


class WebSocketClientFactory(_AutobahnClientFactory):
    """Autobahn client factory for one URL and one :class:`ClientConfig`.

    Autobahn's timers (close handshake, waiting for the server to drop TCP)
    run on the given reactor, so tests drive them with a fake clock.

    Args:
        url: The ``ws://`` or ``wss://`` URL.
        config: The options (defaults if None).
        reactor: Reactor for connections and timers (the global one if None).
    """

    protocol = WebSocketClientProtocol

    def __init__(
        self,
        url: str | URL,
        config: ClientConfig | None = None,
        *,
        reactor: Any = None,
    ) -> None:
        self.target = parse_url(url)
        self.config = config or ClientConfig()
        super().__init__(
            url=f"{'wss' if self.target.secure else 'ws'}://"
            f"{_netloc(self.target.host, self.target.port)}{self.target.resource}",
            protocols=list(self.config.subprotocols),
            useragent=self.config.user_agent,
            reactor=reactor,
        )
        self.url = self.target.text
        self.clock = self.reactor
        self._batched_timer = _ReactorTimer(self.clock)
        cfg = self.config
        self.setProtocolOptions(
            # a protocol error closes with a close frame, as the server does
            failByDrop=False,
            # wsplugin's own open_timeout covers TCP, TLS and the handshake
            openHandshakeTimeout=0,
            closeHandshakeTimeout=cfg.close_timeout,
            maxMessagePayloadSize=cfg.max_message_size,
            maxFramePayloadSize=cfg.max_frame_size,
            utf8validateIncoming=cfg.utf8_validation,
            perMessageCompressionOffers=(
                [PerMessageDeflateOffer()] if cfg.compression else []
            ),
            perMessageCompressionAccept=_accept_deflate,
            autoPingInterval=0,
            autoPingTimeout=0,
        )


# --------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------


class _Connector:
    """Makes WebSocket connections to one URL: TCP, TLS, handshake, timeout."""

    def __init__(
        self,
        url: URL,
        config: ClientConfig,
        reactor: Any,
        endpoint: IStreamClientEndpoint | None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        if not url.secure and any(
            x is not None for x in (config.tls, config.ca_file, config.trust)
        ):
            raise ConfigError(
                f"{url} is not a wss:// URL: tls=, ca_file= and trust= need one"
            )
        self.url = url
        self.config = config
        self.reactor = reactor
        self.factory = WebSocketClientFactory(url, config, reactor=reactor)
        self.endpoint = endpoint or _default_endpoint(reactor, url, config)

    def connect(self) -> Deferred[ClientConnection]:
        """One attempt; fires with an open connection or fails (see connect)."""
        url, timeout = self.url, self.config.open_timeout
        protocol: list[WebSocketClientProtocol] = []

        def cancel(_: Deferred[ClientConnection]) -> None:
            if timer.active():
                timer.cancel()
            connecting.cancel()
            for proto in protocol:
                proto._ws_abort()

        result: Deferred[ClientConnection] = Deferred(cancel)

        def expired() -> None:
            if not result.called:
                result.errback(
                    OpenTimeout(
                        url.host, url.port, f"not open within {timeout:g} seconds"
                    )
                )
            connecting.cancel()
            for proto in protocol:
                proto._ws_abort()

        def got_protocol(proto: WebSocketClientProtocol) -> None:
            protocol.append(proto)
            proto.opened.addCallbacks(opened, open_failed)

        def opened(conn: ClientConnection) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                conn.abort()  # timed out or cancelled meanwhile
            else:
                result.callback(conn)

        def open_failed(failure: Failure) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                result.errback(failure)

        def connect_failed(failure: Failure) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                return
            if failure.check(CancelledError):
                result.errback(failure)
                return
            result.errback(ConnectFailed(url.host, url.port, _reason(failure.value)))

        timer = self.reactor.callLater(timeout, expired)
        connecting = maybeDeferred(self.endpoint.connect, self.factory)
        connecting.addCallbacks(got_protocol, connect_failed)
        return result


def connect(
    url: str,
    *,
    reactor: Any = None,
    endpoint: IStreamClientEndpoint | None = None,
    config: ClientConfig | None = None,
    **options: Any,
) -> Deferred[ClientConnection]:
    """Open a WebSocket connection (FPC ``TWebsocketClient.Connect``).

    Args:
        url: ``ws://host[:port]/path?query`` or ``wss://...``.
        reactor: The reactor (the global one if None).
        endpoint: Connect through this ``IStreamClientEndpoint`` instead of
            TCP (and TLS for ``wss://``) to the URL's host and port: a UNIX
            socket, a proxy, an in-memory endpoint in tests. The URL still
            gives the request's host and resource.
        config: A :class:`ClientConfig`, instead of keyword options.
        **options: :class:`ClientConfig` fields: ``headers``,
            ``subprotocols``, ``origin``, ``user_agent``, ``compression``,
            ``ca_file``, ``trust``, ``tls``, ``open_timeout``,
            ``close_timeout``, ``max_message_size``, ``max_frame_size``,
            ``max_queue``, ``max_pongs``, ``max_error_body``,
            ``utf8_validation``.

    Returns:
        A Deferred firing with the open :class:`ClientConnection`, or failing
        with :class:`ConnectFailed`, :class:`TLSFailed`, :class:`OpenTimeout`
        or :class:`HandshakeFailed`. Cancelling it aborts the attempt.

    Raises:
        ConfigError: at once, for an invalid URL or option.
    """
    target = parse_url(url)
    return _Connector(
        target, _make_config(config, options), reactor, endpoint
    ).connect()


# --------------------------------------------------------------------------
# Reconnecting
# --------------------------------------------------------------------------


class _ConnectionTransport:
    """What ClientService sees as the transport: closing it closes the
    WebSocket with a closing handshake (1000), not just the TCP connection."""

    def __init__(self, conn: ClientConnection) -> None:
        self.connection = conn

    def loseConnection(self) -> None:
        self.connection.close(1000, "")

    def abortConnection(self) -> None:
        self.connection.abort()

    def getPeer(self) -> IAddress | None:
        return self.connection.request.peer

    def getHost(self) -> Any:
        return self.connection._protocol.transport.getHost()


class _Handle(Protocol):
    """The protocol ClientService manages: a handle on one open connection."""

    connection: ClientConnection | None = None
    prepared = False
    pending_loss: Failure | None = None

    def connectionMade(self) -> None:
        self.connection = self.transport.connection


@implementer(IStreamClientEndpoint)
class _OpenEndpoint:
    """An endpoint whose connections are *open WebSocket connections*.

    ClientService counts a connection as made when this endpoint's Deferred
    fires, so a refused handshake is a failed attempt (retried with backoff),
    and it never hears of a connection that did not open.
    """

    def __init__(self, connector: _Connector, lost: Callable[..., None]) -> None:
        self._connector = connector
        self._lost = lost

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        def opened(conn: ClientConnection) -> Any:
            proxy = protocolFactory.buildProtocol(conn.request.peer)
            proxy.makeConnection(_ConnectionTransport(conn))
            conn._protocol._lost_listeners.append(
                lambda c, reason: self._lost(proxy, c, reason)
            )
            return proxy

        return self._connector.connect().addCallback(opened)


class ReconnectingClient(Service):
    """A connection kept up across drops and server restarts.

    Built on Twisted's ``ClientService`` with ``backoffPolicy``: after a
    failed attempt or a lost connection it waits ``initial_delay * factor**n``
    seconds (at most ``max_delay``, plus up to ``jitter()`` seconds), then
    connects again; a connection that opened resets ``n``. A refused
    handshake counts as a failed attempt.

    It is a Twisted ``Service``: ``start()`` / ``stop()``, or
    ``client.setServiceParent(application)``.

    Args:
        url: The URL to connect to.
        on_connect: Called with each new :class:`ClientConnection` (the first
            and every reconnection); may return a Deferred or coroutine, which
            :meth:`when_connected` waits for. If it raises, the connection is
            closed with 1011 and made again later.
        on_disconnect: Called with each connection once it has ended
            (``conn.close_code`` says how).
        reactor: The reactor (the global one if None).
        endpoint: As for :func:`connect`.
        initial_delay, max_delay, factor, jitter: The backoff policy
            (Twisted's ``backoffPolicy``); ``jitter`` is a callable returning
            extra seconds (``random.random`` by default).
        retry_policy: A ``ClientService`` retry policy replacing the above.
        config: A :class:`ClientConfig`, instead of keyword options.
        **options: :class:`ClientConfig` fields, as for :func:`connect`.

    Attributes:
        connection: The open connection, or None between connections.
        connections_made: How many connections have opened so far.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        on_connect: Callable[[ClientConnection], Any] | None = None,
        *,
        on_disconnect: Callable[[ClientConnection], Any] | None = None,
        reactor: Any = None,
        endpoint: IStreamClientEndpoint | None = None,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
        factor: float = 1.5,
        jitter: Callable[[], float] | None = None,
        retry_policy: Callable[[int], float] | None = None,
        config: ClientConfig | None = None,
        **options: Any,
    ) -> None:
        if on_connect is not None and not callable(on_connect):
            raise TypeError("on_connect must be callable")
        if on_disconnect is not None and not callable(on_disconnect):
            raise TypeError("on_disconnect must be callable")
        if not 0 <= initial_delay <= max_delay or factor < 1:
            raise ConfigError(
                "backoff needs 0 <= initial_delay <= max_delay and factor >= 1"
            )
        self.url = parse_url(url)
        self._connector = _Connector(
            self.url, _make_config(config, options), reactor, endpoint
        )
        self.reactor = self._connector.reactor
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.connection: ClientConnection | None = None
        self.connections_made = 0
        policy = retry_policy or backoffPolicy(
            initial_delay, max_delay, factor, jitter or random
        )
        self._service = ClientService(
            _OpenEndpoint(self._connector, self._lost),
            Factory.forProtocol(_Handle),
            retryPolicy=policy,
            clock=self.reactor,
            prepareConnection=self._prepare,
        )

    def start(self) -> None:
        """Start connecting (and reconnecting); same as ``startService``."""
        if not self.running:
            self.startService()

    def stop(self) -> Deferred[None]:
        """Stop reconnecting and close the connection (1000); fires when done."""
        if not self.running:
            return succeed(None)
        return self.stopService()

    def startService(self) -> None:
        """``Service`` start: begin the connect/retry loop."""
        super().startService()
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        """``Service`` stop: as :meth:`stop`."""
        super().stopService()
        return self._service.stopService()

    def when_connected(
        self, fail_after_failures: int | None = None
    ) -> Deferred[ClientConnection]:
        """The open connection, or the next one to open (after ``on_connect``).

        Args:
            fail_after_failures: Fail with the attempt's error after this many
                consecutive failed attempts (None: wait until stopped, then
                fail with ``CancelledError``).
        """
        d = self._service.whenConnected(failAfterFailures=fail_after_failures)
        return d.addCallback(lambda handle: handle.connection)

    # -- ClientService hooks -------------------------------------------------

    def _prepare(self, proxy: Any) -> Deferred[None]:
        """Run ``on_connect``; never fails (ClientService would leak the
        connection), and holds back a loss until it has finished."""
        conn: ClientConnection = proxy.connection
        self.connection = conn
        self.connections_made += 1
        if self.on_connect is None:
            d: Deferred[Any] = succeed(None)
        else:
            try:
                d = as_deferred(self.on_connect(conn))
            except Exception:
                d = fail(Failure())
        d.addErrback(self._on_connect_failed, conn)
        d.addBoth(self._prepared, proxy)
        return d

    def _on_connect_failed(self, failure: Failure, conn: ClientConnection) -> None:
        self._log.failure("on_connect failed for {url}", failure, url=self.url)
        if conn.is_open:
            conn.close(1011, "on_connect failed")

    def _prepared(self, _: Any, proxy: Any) -> None:
        handle = proxy._protocol
        handle.prepared = True
        if handle.pending_loss is not None:
            # tell ClientService after it has taken the connection
            self.reactor.callLater(0, proxy.connectionLost, handle.pending_loss)

    def _lost(self, proxy: Any, conn: ClientConnection, reason: Failure) -> None:
        if self.connection is conn:
            self.connection = None
        if self.on_disconnect is not None:
            try:
                result = self.on_disconnect(conn)
                if result is not None:
                    as_deferred(result).addErrback(
                        lambda f: self._log.failure("on_disconnect failed", f)
                    )
            except Exception:
                self._log.failure("on_disconnect raised")
        handle = proxy._protocol
        if handle.prepared:
            proxy.connectionLost(reason)
        else:
            handle.pending_loss = reason


# --------------------------------------------------------------------------
# python -m wsplugin.client: the chat client (FPC chatClient)
# --------------------------------------------------------------------------

PROG = "wsplugin-client"
EXIT_OK = 0
EXIT_CLOSED = 1
EXIT_UNREACHABLE = 2
EXIT_TLS = 3
EXIT_REJECTED = 4
EXIT_USAGE = 64

_EPILOG = """\
Lines typed are sent as text messages; messages received are printed with a
"< " prefix. "ping TEXT" sends a ping and prints the pong; "exit" (or the end
of input) closes the connection with 1000 and exits.

exit status:
  0   closed by you ("exit", end of input, Ctrl-C)
  1   the server closed the connection, or it dropped
  2   cannot connect (DNS, refused, unreachable, timeout)
  3   TLS handshake failed
  4   handshake rejected (the HTTP status is printed)
  64  usage error
"""


class _UsageError(Exception):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise _UsageError(message)


def _cli_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=PROG,
        description="Interactive WebSocket chat client (wsplugin.client).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="ws:// or wss:// URL")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra handshake header (repeatable)",
    )
    parser.add_argument(
        "-s",
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="subprotocol to offer (repeatable)",
    )
    parser.add_argument("--origin", help="Origin header to send")
    parser.add_argument(
        "--compression", action="store_true", help="offer permessage-deflate"
    )
    parser.add_argument(
        "--ca-file", metavar="PEM", help="trust these CA certificates for wss://"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="limit for connecting and the handshake (default: 10)",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    return parser


def _cli_options(args: argparse.Namespace) -> dict[str, Any]:
    headers = []
    for text in args.header:
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            raise _UsageError(f"a header is 'NAME: VALUE', not {text!r}")
        headers.append((name.strip(), value.strip()))
    options: dict[str, Any] = {
        "headers": headers,
        "subprotocols": args.subprotocol,
        "compression": args.compression,
        "open_timeout": args.timeout,
    }
    if args.origin:
        options["origin"] = args.origin
    if args.ca_file:
        options["ca_file"] = args.ca_file
    return options


def _exit_status(error: BaseException) -> int:
    if isinstance(error, TLSFailed):
        return EXIT_TLS
    if isinstance(error, ConnectFailed):
        return EXIT_UNREACHABLE
    if isinstance(error, HandshakeFailed):
        return EXIT_REJECTED
    return EXIT_CLOSED


def _format_message(message: Message) -> str:
    if message.kind == "text":
        return f"< {message.data}"
    data = message.data if isinstance(message.data, bytes) else b""
    if message.kind == "pong":
        return f"< [pong] {message.text}"
    preview = data[:64].hex() + ("..." if len(data) > 64 else "")
    return f"< [binary, {len(data)} bytes] {preview}"


def _close_text(code: int | None, reason: str) -> str:
    text = f"code {code}" if code is not None else "no code"
    return f"{text}: {reason}" if reason else text


@implementer(IHalfCloseableProtocol)
class _ChatInput(Protocol):
    """Lines from standard input, through ``StandardIO``; a line over
    ``MAX_LENGTH`` bytes is dropped with an error, never held whole."""

    MAX_LENGTH = 1024 * 1024

    def __init__(self, chat: _Chat) -> None:
        self.chat = chat
        self._buffer = b""
        self._discarding = False

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            if self._discarding:  # the end of a line that was too long
                self._discarding = False
            elif len(line) > self.MAX_LENGTH:
                self._too_long()
            else:
                self.chat.line(line.rstrip(b"\r").decode("utf-8", "replace"))
        if len(self._buffer) > self.MAX_LENGTH:
            if not self._discarding:
                self._too_long()
            self._buffer = b""
            self._discarding = True

    def _too_long(self) -> None:
        self.chat.error(f"line over {self.MAX_LENGTH} bytes ignored")

    def readConnectionLost(self) -> None:
        self.chat.quit()

    def writeConnectionLost(self) -> None:
        self.chat.quit()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.chat.stdio_closed()


class _Chat:
    """The chat client's logic: connect, print, send lines, exit status."""

    def __init__(
        self,
        reactor: Any,
        url: str,
        options: dict[str, Any],
        stderr: Any,
        stdio_factory: Callable[[Protocol], Any] | None = None,
    ) -> None:
        self.reactor = reactor
        self.url = url
        self.options = options
        self.stderr = stderr
        self.stdio_factory = stdio_factory
        self.status: int | None = None
        self.conn: ClientConnection | None = None
        self.stdio: Any = None
        self.quitting = False
        self.shutting_down = False
        self.done: Deferred[int] = Deferred()
        self.printed: list[str] = []
        self._fallback: Any = None

    def start(self) -> Deferred[int]:
        try:
            d = connect(self.url, reactor=self.reactor, **self.options)
        except ConfigError as e:
            self._finish(EXIT_USAGE, str(e))
            return self.done
        d.addCallbacks(self._connected, self._connect_failed)
        return self.done

    def _connect_failed(self, failure: Failure) -> None:
        self._finish(_exit_status(failure.value), str(failure.value))

    def _connected(self, conn: ClientConnection) -> None:
        self.conn = conn
        if self.stdio_factory is not None:
            self.stdio = self.stdio_factory(_ChatInput(self))
        details = f" (subprotocol {conn.protocol})" if conn.protocol else ""
        self.output(
            f"connected to {conn.url}{details}; type a message, "
            '"ping TEXT" to ping, "exit" to quit'
        )
        self._read()
        conn.wait_closed().addCallback(self._closed)

    def _read(self) -> None:
        assert self.conn is not None
        d = self.conn.wait_for_message()
        d.addCallbacks(self._print_and_read, lambda f: f.trap(ConnectionClosed))

    def _print_and_read(self, message: Message) -> None:
        self.output(_format_message(message))
        self._read()

    def output(self, line: str) -> None:
        if self.stdio is not None:
            self.stdio.write(line.encode("utf-8", "replace") + b"\n")
        else:
            self.printed.append(line)

    def error(self, text: str) -> None:
        self.stderr.write(f"{PROG}: {text}\n")
        self.stderr.flush()

    def line(self, text: str) -> None:
        conn = self.conn
        if conn is None or self.quitting:
            return
        command = text.strip()
        try:
            if command == "exit":
                self.quit()
            elif command == "ping" or command.startswith("ping "):
                conn.ping(command[5:].encode("utf-8"))
            elif text:
                conn.send_text(text)
        except ConnectionClosed:
            pass
        except ValueError as e:
            self.error(str(e))

    def quit(self) -> None:
        if self.quitting:
            return
        self.quitting = True
        if self.conn is not None and self.conn.is_open:
            self.conn.close(1000, "")

    def _closed(self, conn: ClientConnection) -> None:
        code, reason = conn.close_code, conn.close_reason
        if self.quitting:
            self.output(f"closed ({_close_text(code, reason)})")
            self._finish(EXIT_OK, None)
        elif code == _WSP.CLOSE_STATUS_CODE_ABNORMAL_CLOSE:
            self._finish(EXIT_CLOSED, f"connection to {conn.url} lost")
        else:
            self._finish(
                EXIT_CLOSED,
                f"the server closed the connection ({_close_text(code, reason)})",
            )

    def _finish(self, status: int, message: str | None) -> None:
        if self.status is not None:
            return
        self.status = status
        if message:
            self.error(message)
        if self.stdio is not None:
            # stdio_closed() fires done once the output is written; in case
            # standard output never drains, give up after a while
            self._fallback = self.reactor.callLater(2.0, self._fire_done)
            self.stdio.loseConnection()
        else:
            self._fire_done()

    def stdio_closed(self) -> None:
        if self.status is None:
            self.quit()
        else:
            self._fire_done()

    def _fire_done(self) -> None:
        fallback, self._fallback = self._fallback, None
        if fallback is not None and fallback.active():
            fallback.cancel()
        if not self.done.called:
            self.done.callback(self.status if self.status is not None else EXIT_OK)

    def shutdown(self) -> Deferred[None] | None:
        """Before the reactor stops (Ctrl-C): close gracefully, bounded."""
        self.shutting_down = True
        conn = self.conn
        if conn is None or not conn.is_open:
            return None
        self.quit()
        # wait for the closing handshake and the last output line (bounded)
        finished: Deferred[None] = Deferred()

        def fire(result: Any) -> Any:
            if not finished.called:
                finished.callback(None)
            return result

        self.done.addBoth(fire)
        finished.addTimeout(conn.options.close_timeout + 3, self.reactor)
        return finished.addErrback(lambda _: None)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wsplugin.client URL`` / ``wsplugin-client URL``: chat.

    Returns the exit status (see ``--help``): 0 closed by the user, 1 closed
    by the server or dropped, 2 cannot connect, 3 TLS failure, 4 handshake
    rejected, 64 usage error. Errors are one line on standard error.
    """
    try:
        args = _cli_parser().parse_args(argv)
        options = _cli_options(args)
        parse_url(args.url)
        ClientConfig(**options)
    except (_UsageError, ConfigError) as e:
        sys.stderr.write(f"{PROG}: {e} (see {PROG} --help)\n")
        return EXIT_USAGE

    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    chat = _Chat(reactor, args.url, options, sys.stderr, StandardIO)
    result: list[int] = []

    def run() -> None:
        d = chat.start()
        d.addCallback(result.append)
        d.addBoth(lambda _: None if chat.shutting_down else reactor.stop())

    reactor.callWhenRunning(run)
    reactor.addSystemEventTrigger("before", "shutdown", chat.shutdown)
    reactor.run()
    if result:
        return result[0]
    return chat.status if chat.status is not None else EXIT_OK
