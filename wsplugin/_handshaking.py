"""The lean opening handshake: the common request checked from wsplugin's
own parse of its head, answered from precomputed pieces.

Autobahn parses the request head a second time (``parseHttpHeader``) after
wsplugin's bounded parse (:func:`wsplugin.handshake.parse_request_head`),
and formats debug arguments it never logs (``hltype``, ``hlval``,
``pformat``) on every connection. For a request that is valid and plain —
``GET`` over HTTP/1.1, one ``Host``, ``Upgrade: websocket``,
``Connection: upgrade``, version 13, a well-formed key, no
``Sec-WebSocket-Extensions``, no ``Origin``, each header once — this mixin
makes Autobahn's checks on the head wsplugin parsed, builds Autobahn's
``ConnectionRequest`` from it, and writes the 101 from a prefix computed
once per server. Anything else (an error to answer, an extension offer, an
``Origin`` to check, an option that changes the handshake) goes through
Autobahn's ``processHandshake`` / ``succeedHandshake`` unchanged, so every
refusal keeps Autobahn's status and wording.

A mixin of :class:`~wsplugin.protocol.WebSocketServerProtocol`. Autobahn
private names used, because Autobahn has no public hook for them:
``_connectionMade`` / ``_connectionLost`` (replaced, see there),
``_wskey``, ``_perMessageCompress``, ``_onOpen`` (the adapter's call of
``onOpen``).
"""

from __future__ import annotations

import base64
import hashlib
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import txaio
from autobahn.twisted.util import create_transport_details
from autobahn.wamp.types import TransportDetails
from autobahn.websocket.protocol import TrafficStats
from autobahn.websocket.protocol import WebSocketProtocol as _WSP
from autobahn.websocket.protocol import (
    WebSocketServerProtocol as _AutobahnServerSide,
)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from autobahn.websocket.utf8validator import Utf8Validator
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from wsplugin._autobahn import Cancellable

if TYPE_CHECKING:
    from wsplugin.factory import WebSocketServerFactory
    from wsplugin.handshake import RequestHead

__all__ = ["LeanHandshake", "accept_key", "plain_request"]

_MAGIC = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
)
# headers whose presence sends the request to Autobahn's full checks
_NOT_PLAIN = frozenset({"sec-websocket-extensions", "origin", "sec-websocket-origin"})
_PREFIXES: dict[tuple[Any, ...], str] = {}


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + _MAGIC).digest()
    return base64.b64encode(digest).decode("ascii")


def plain_request(
    head: RequestHead,
) -> tuple[dict[str, str], str, int | None] | None:
    """The lower-cased headers, the key and the port (None when none) of a
    plain valid upgrade request (see the module docstring), or None when
    Autobahn must judge it."""
    if head.method != "GET" or head.version != "HTTP/1.1":
        return None
    headers: dict[str, str] = {}
    for name, value in head.headers:
        lname = name.lower()
        if lname in headers or lname in _NOT_PLAIN:
            return None
        headers[lname] = value
    host = headers.get("host")
    if not host:
        return None
    port = None
    if ":" in host and not host.endswith("]"):
        text = host.rpartition(":")[2].strip()
        if not text.isdigit():
            return None
        port = int(text)
    if "websocket" not in [
        u.strip().lower() for u in headers.get("upgrade", "").split(",")
    ]:
        return None
    if "upgrade" not in [
        c.strip().lower() for c in headers.get("connection", "").split(",")
    ]:
        return None
    if headers.get("sec-websocket-version") != "13":
        return None
    key = headers.get("sec-websocket-key", "")
    if len(key) != 24 or key[-2:] != "==" or not _KEY_CHARS.issuperset(key[:-2]):
        return None
    return headers, key, port


class LeanHandshake:
    """The plain handshake without Autobahn's second parse and debug
    formatting; Autobahn's own code for everything else."""

    # Autobahn's (the protocol this class is mixed into)
    factory: WebSocketServerFactory
    transport: Any
    is_server: bool
    tcpNoDelay: bool
    log: Any
    data: bytes
    peer: str
    state: int
    versions: Any
    maxConnections: int
    trustXForwardedFor: int
    openHandshakeTimeout: float
    openHandshakeTimeoutCall: Any
    autoPingInterval: float
    trackTimings: bool
    trackedTimings: Any
    websocket_protocols: list[str]
    websocket_extensions: list[Any]
    is_open: Any
    _wskey: str

    def lean_handshake(self, head: RequestHead) -> bool:
        """Take the request at ``self.data``'s start through the lean path
        if it is plain; False leaves it to Autobahn's ``processHandshake``."""
        plain = plain_request(head)
        factory = self.factory
        if (
            plain is None
            or 13 not in self.versions
            or 0 < self.maxConnections < factory.countConnections
            or (self.trustXForwardedFor and "x-forwarded-for" in plain[0])
        ):
            return False  # Autobahn answers (503 over maxConnections)
        headers, key, port = plain
        if port is not None and factory.externalPort and port != factory.externalPort:
            return False
        path, _, query = head.target.partition("?")
        if ";" in path:
            return False  # Autobahn's urlparse would cut ";params" off
        host = headers["host"]
        if port is not None:
            host = host.rpartition(":")[0]
        protocols = [
            p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")
        ]
        if "sec-websocket-protocol" not in headers:
            protocols = []
        elif len(set(protocols)) != len(protocols):
            return False
        params = parse_qs(query)
        # what Autobahn's processHandshake leaves on the protocol
        self.http_status_line = f"GET {head.target} HTTP/1.1"
        self.http_headers = headers
        self.http_request_uri = head.target
        self.http_request_path = path
        self.http_request_params = params
        self.http_request_host = host
        self.websocket_version = 13
        self.websocket_protocols = protocols
        self.websocket_origin = ""
        self.websocket_extensions = []
        self._wskey = key
        self.data = self.data[head.length :]
        request = ConnectionRequest(
            self.peer, headers, host, path, params, 13, "", protocols, []
        )
        try:
            result = self.onConnect(request)  # type: ignore[attr-defined]
        except Exception:
            self._connect_failed(Failure())
            return True
        if isinstance(result, Deferred):
            result.addCallbacks(self.succeedHandshake, self._connect_failed)  # type: ignore[attr-defined]
        else:
            self.succeedHandshake(result)  # type: ignore[attr-defined]
        return True

    def _connect_failed(self, failure: Failure) -> None:
        """``onConnect`` refused or failed: as Autobahn answers it."""
        value = failure.value
        if isinstance(value, ConnectionDeny):
            self.failHandshake(value.reason, value.code)  # type: ignore[attr-defined]
        else:
            self.failHandshake(  # type: ignore[attr-defined]
                f"Internal server error: {value}",
                ConnectionDeny.INTERNAL_SERVER_ERROR,
            )

    def lean_succeed(self, res: Any) -> bool:
        """Write the 101 for a request that offered no extension; False
        leaves it to Autobahn's ``succeedHandshake`` (extensions to
        negotiate, auto-ping or timing tracking on)."""
        if self.websocket_extensions or self.autoPingInterval or self.trackedTimings:
            return False
        protocol = None
        headers: Any = {}
        if type(res) is tuple:
            if res:
                protocol = res[0]
            if len(res) > 1:
                headers = res[1]
        else:
            protocol = res
        if protocol is not None and protocol not in self.websocket_protocols:
            raise Exception(
                "protocol accepted must be from the list client sent or None"
            )
        self.websocket_protocol_in_use = protocol
        self.websocket_extensions_in_use: list[Any] = []
        factory = self.factory
        parts = [response_prefix(factory.server, factory.headers)]
        if headers:
            parts += header_lines(headers)
        if protocol is not None:
            parts.append(f"Sec-WebSocket-Protocol: {protocol}\r\n")
        parts.append(f"Sec-WebSocket-Accept: {accept_key(self._wskey)}\r\n\r\n")
        self.sendData("".join(parts).encode("utf-8"))  # type: ignore[attr-defined]
        self.state = _WSP.STATE_OPEN
        call = self.openHandshakeTimeoutCall
        if call is not None:
            call.cancel()
            self.openHandshakeTimeoutCall = None
        self.inside_message = False
        self.current_frame = None
        self._onOpen()  # type: ignore[attr-defined]
        txaio.resolve(self.is_open, None)
        if self.data:
            self.consumeData()  # type: ignore[attr-defined]
        return True

    def connectionMade(self) -> None:
        """Autobahn's Twisted entry point (``WebSocketAdapterProtocol.
        connectionMade``) without its debug line, whose ``hltype``/``hlval``
        arguments are formatted for every connection (about 1% of a
        handshake's CPU)."""
        details = create_transport_details(self.transport, self.is_server)
        details.channel_framing = TransportDetails.CHANNEL_FRAMING_WEBSOCKET
        self._transport_details = details
        self.peer = details.peer
        try:
            self.transport.setTcpNoDelay(self.tcpNoDelay)
        except Exception:  # as Autobahn: not a TCP socket (UNIX, TLS wrappers)
            pass
        self._connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Autobahn's Twisted entry point without its closing debug lines
        (``hltype``/``hlval`` formatted for every connection); a TLS error
        is logged as Autobahn logs it."""
        value = reason.value
        if isinstance(value, SSL.Error):
            try:
                detail = value.args[0][0]
                text = f"SSL error: {detail[2]} (in {detail[1]})"
            except (IndexError, TypeError):
                text = f"SSL error: {value}"
            self.log.error(text)
        self._connectionLost(reason)

    def _connectionMade(self) -> None:
        """Autobahn's per-connection set-up (``WebSocketProtocol.
        _connectionMade`` and the server's), without its debug lines: they
        format ``hltype(...)`` and ``pformat`` of the option list for every
        connection even with debug logging off (about 4% of a handshake's
        CPU). The protocol has copied the options itself (``copy_options``)."""
        self._perMessageCompress = None
        self.trackedTimings = None
        self.setTrackTimings(self.trackTimings)  # type: ignore[attr-defined]
        self.trafficStats = TrafficStats()
        self.state = _WSP.STATE_CONNECTING
        self.send_state = _WSP.SEND_STATE_GROUND
        self.data = b""
        self.send_queue: deque[Any] = deque()
        self.triggered = False
        self.utf8validator = Utf8Validator()
        self.wasMaxFramePayloadSizeExceeded = False
        self.wasMaxMessagePayloadSizeExceeded = False
        self.closedByMe = False
        self.failedByMe = False
        self.droppedByMe = False
        self.wasClean = False
        self.wasNotCleanReason = None
        self.wasServerConnectionDropTimeout = False
        self.wasOpenHandshakeTimeout = False
        self.wasCloseHandshakeTimeout = False
        self.wasServingFlashSocketPolicyFile = False
        self.localCloseCode = None
        self.localCloseReason = None
        self.remoteCloseCode = None
        self.remoteCloseReason = None
        self.openHandshakeTimeoutCall = None
        self.closeHandshakeTimeoutCall = None
        self.autoPingTimeoutCall = None
        self.autoPingPending = None
        self.autoPingPendingCall = None
        self.autoPingPendingSeq = 0
        self.autoPingPendingSent = None
        if self.openHandshakeTimeout > 0:
            # on the factory's clock, as Autobahn's own call through the
            # factory's timer (a ReactorTimer on that clock) would be
            self.openHandshakeTimeoutCall = Cancellable(
                self.factory.clock.callLater(
                    self.openHandshakeTimeout,
                    self.onOpenHandshakeTimeout,  # type: ignore[attr-defined]
                )
            )
        self.factory.countConnections += 1

    def _connectionLost(self, reason: Any) -> None:
        """Autobahn's, without the server's eager debug arguments."""
        super(_AutobahnServerSide, self)._connectionLost(reason)  # type: ignore[misc]
        self.factory.countConnections -= 1


def response_prefix(server: str | None, headers: Any) -> str:
    """The 101's status line and fixed headers for a server: built once per
    (``Server`` header, factory headers), then reused."""
    items = tuple(headers.items()) if headers else ()
    key = (server, items)
    prefix = _PREFIXES.get(key)
    if prefix is None:
        parts = ["HTTP/1.1 101 Switching Protocols\r\n"]
        if server:
            parts.append(f"Server: {server}\r\n")
        parts.append("Upgrade: WebSocket\r\nConnection: Upgrade\r\n")
        if headers:
            parts += header_lines(headers)
        prefix = "".join(parts)
        if len(_PREFIXES) < 64:
            _PREFIXES[key] = prefix
    return prefix


def header_lines(headers: Any) -> list[str]:
    """``Name: value`` lines, one per value (as Autobahn writes them: a
    value that is not a string but iterable gives one line per item)."""
    lines = []
    for name, value in headers.items():
        if isinstance(value, str):
            values: Any = [value]
        else:
            try:
                values = iter(value)
            except TypeError:
                values = [value]
        for item in values:
            lines.append(f"{name}: {item}\r\n")
    return lines
