"""The Autobahn server protocol subclass: an adapter, nothing more.

It translates Autobahn's camelCase callbacks into the component events of the
route handler (``allow``, ``on_open``, ``on_message``, ...), applies the
route's options to Autobahn's per-connection settings, and carries out the
component options that Autobahn has no switch for (frame-by-frame delivery,
manual pong, manual close, split messages, skip checks). Framing, masking,
UTF-8 validation, compression and the handshake's validation stay Autobahn's,
with three exceptions where Autobahn's way costs too much or is wrong: a
message's payload is collected in one buffer instead of an object per frame,
runs of tiny continuation frames are read in one go (see ``processData``),
and an invalid close frame gets a close frame back instead of a bare TCP
drop (see ``onCloseFrame``).

Event order for one connection::

    on_connect(peer)            server handler, TCP accepted, before any byte
    allow(conn)                 route handler, handshake valid
    on_handshake_response_sent  101 written
    on_open
    on_message / on_binary / on_fragment / on_ping / on_pong   any number
    on_close(code, reason)      when the peer's close frame arrives (first
                                or in reply to ours)
    on_disconnect(was_clean, code, reason)   exactly once, for every opened
                                             connection, however it ended
    on_error(failure)           whenever a handler raises or the peer breaks
                                the protocol

Outgoing data goes straight to the transport until the transport says its
buffer is full (this protocol is its registered push producer); then it
queues here, bounded by ``max_send_buffer`` and the send-buffer policy, with
pings and pongs ahead of queued data so keep-alive is never starved.

Message handlers that return an unfired Deferred or a coroutine run one at a
time per connection, in order: while one is pending, later messages wait and
reading from the socket pauses, so a slow async handler is backpressure, not
an unbounded pile of concurrent calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import txaio
from autobahn.exception import PayloadCorruptError, PayloadExceededError
from autobahn.twisted.websocket import (
    WebSocketServerProtocol as _AutobahnServerProtocol,
)
from autobahn.util import encode_truncate
from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)
from autobahn.websocket.protocol import WebSocketProtocol as _WSP
from autobahn.websocket.types import ConnectionDeny
from autobahn.websocket.utf8validator import Utf8Validator
from autobahn.websocket.xormasker import create_xor_masker
from twisted.internet import tcp
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wsplugin._events import as_deferred
from wsplugin._frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SMALL_FRAME,
    PayloadBuffer,
    SmallFrameUnmasker,
    encode_frame,
    encode_message,
    payload_size_for_frame,
    read_continuations,
)
from wsplugin.connection import (
    CloseMessage,
    Connection,
    ConnectionState,
    Fragment,
    Headers,
    Request,
    forwarded_address,
)
from wsplugin.errors import (
    ConnectionClosed,
    FragmentedSendError,
    HandshakeRejected,
    ProtocolError,
    Reject,
    RouteNotFound,
    WSPluginError,
)
from wsplugin.handshake import (
    RequestHead,
    body_problem,
    check_header,
    normalize_head,
    origin_allowed,
    parse_request_head,
    target_problem,
)
from wsplugin.tls import peer_certificate, with_peer_check

if TYPE_CHECKING:
    from wsplugin._routing import Route
    from wsplugin.config import ServerConfig
    from wsplugin.factory import WebSocketServerFactory

__all__ = ["ROUTE_EVENTS", "WebSocketServerProtocol"]

ROUTE_EVENTS = (
    "allow",
    "before_heartbeat",
    "on_handshake_response_sent",
    "on_open",
    "on_message",
    "on_binary",
    "on_fragment",
    "on_ping",
    "on_pong",
    "on_close",
    "on_disconnect",
    "on_error",
)

_RECEIVABLE_CLOSE_CODES = frozenset(_WSP.CLOSE_STATUS_CODES_ALLOWED)


def _accept_deflate(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def _accept_deflate_no_takeover(
    offers: list[Any],
) -> PerMessageDeflateOfferAccept | None:
    # RFC 7692, 7.1.1.1: a server may always drop its own context; the
    # client's decompressor reads independent messages the same way.
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer, no_context_takeover=True)
    return None


def _accept_nothing(offers: list[Any]) -> None:
    return None


def _writes_now(transport: Any) -> bool:
    """Whether bytes sent on ``transport``'s socket now would go out in order:
    it is connected, not closing, and holds nothing unwritten."""
    return (
        transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataLen
    )


def copy_options(protocol: Any, names: tuple[str, ...]) -> None:
    """Autobahn's per-connection copy of its options, without the rest.

    Autobahn's ``_connectionMade`` copies every name in ``CONFIG_ATTRS`` from
    the factory and then pretty-prints them all for a debug line that is
    never shown (``pformat`` was ~40% of a handshake's CPU). The server and
    client protocols call this instead, with the same rule (a value already
    on the protocol wins), and give Autobahn an empty ``CONFIG_ATTRS``.
    """
    factory = protocol.factory
    for name in names:
        if not hasattr(protocol, name):
            setattr(protocol, name, getattr(factory, name))


def close_frame_problem(
    code: int | None, reason_raw: bytes | None
) -> tuple[int, str] | None:
    """Why a received close frame is invalid, as ``(close code, text)``, or None."""
    if code is not None and not (
        code in _RECEIVABLE_CLOSE_CODES or 3000 <= code <= 4999
    ):
        return _WSP.CLOSE_STATUS_CODE_PROTOCOL_ERROR, f"invalid close code {code}"
    if reason_raw is not None:
        valid, ended, _, _ = Utf8Validator().validate(reason_raw)
        if not (valid and ended):
            return _WSP.CLOSE_STATUS_CODE_INVALID_PAYLOAD, "close reason is not UTF-8"
    return None


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """What the protocol needs per message from a route's config, computed
    once per route and shared by its connections (not copied into each)."""

    frame_by_frame: bool = False
    manual_pong: bool = False
    manual_close: bool = False
    fragment_size: int = 0
    send_limit: int = 0
    send_policy: str = "close"


_DEFAULT_SETTINGS = RouteSettings()
_settings_cache: dict[int, tuple[Route, RouteSettings]] = {}


def route_settings(route: Route) -> RouteSettings:
    """The (cached) per-message settings of ``route``."""
    cached = _settings_cache.get(id(route))
    if cached is not None and cached[0] is route:
        return cached[1]
    cfg = route.config
    settings = RouteSettings(
        frame_by_frame=cfg.frame_by_frame,
        manual_pong=cfg.manual_pong,
        manual_close=cfg.manual_close,
        fragment_size=payload_size_for_frame(cfg.frame_size)
        if cfg.split_message
        else 0,
        send_limit=cfg.max_send_buffer,
        send_policy=cfg.send_buffer_policy,
    )
    _settings_cache[id(route)] = (route, settings)
    return settings


_HANDSHAKE_ONLY = (
    "http_request_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "websocket_protocols",
    "websocket_extensions",
    "websocket_origin",
    "_wskey",
    "send_queue",
    "triggered",
    "_head",
)
"""Attributes only the opening handshake uses; dropped once it is done."""


_WAIT_HARD_CAP = 8
"""With the "wait" policy, a queue over this many times the limit closes."""

_BATCH_LIMIT = 65536
"""Most bytes one turn's writes collect before they go out at once (Twisted's
transport buffer size: past it, the transport's flow control takes over)."""

_MAX_CONTROL_QUEUE = 16
"""Pings and pongs held while the transport is full (each at most 127 bytes)."""

_READ_SLICE = 8192
"""Bytes of a read handed to Autobahn's parser at a time (a frame's remaining
payload, when larger, goes in one piece). Autobahn cuts every frame off the
front of its buffer with a copy of the rest, so a 64 KiB read of tiny frames
copies about 32 KiB per frame: in 8 KiB slices that is 8 times less."""


@implementer(IPushProducer)
class WebSocketServerProtocol(_AutobahnServerProtocol):
    """Autobahn server protocol speaking wsplugin's component events.

    Subclass it only to reach Autobahn directly; applications normally write
    handlers instead. Autobahn's per-frame message hooks
    (``onMessageFrameBegin``/``Data``/``End``) do not fire for the middle
    frames of a message that arrive as a run of small continuation frames:
    those are read in one go (``frame_by_frame`` mode excepted).
    """

    factory: WebSocketServerFactory
    _log = Logger()
    # Autobahn logs every dropped or failed connection at warn level; under
    # attack that floods the log. wsplugin logs those events itself, rate
    # limited, so Autobahn's own logger keeps errors only.
    log = txaio.make_logger(level="error")

    connection: Connection | None = None
    route: Route | None = None
    _head: RequestHead | None = None
    _handshake_started = False
    _opened = False
    _ended = False
    _peer_closed = False
    _manual_close_timer: Any = None
    _fragmenting = False
    # (window bits, mem level) when this connection's outgoing messages are
    # compressed without context takeover: then wsplugin compresses them
    # itself, and a broadcast shares one compressed frame per key
    _deflate_key: tuple[int, int] | None = None
    _after_fragment: list[bytes] | None = None
    _settings: RouteSettings = _DEFAULT_SETTINGS
    _last_fragment = b""
    _msg: PayloadBuffer | None = None  # payload of the message being received
    _reject_headers: list[tuple[str, str]] | None = None
    _reject_reason: str | None = None
    _events: dict[str, Any]
    _end_code: int | None = None
    _end_reason: str | None = None
    # outgoing queue (this protocol is the transport's push producer)
    _write_paused = False
    _queue: deque[bytes] | None = None
    _ctrl: deque[bytes] | None = None
    _queued = 0
    _unregister_after_flush = False
    # writes of this reactor turn, sent with one send() at its end (plain
    # TCP only; see sendData)
    _batch: list[bytes] | None = None
    _batch_size = 0
    _direct = False
    _drain_waiters: list[Deferred[None]] | None = None
    # reading pauses, by reason
    _read_pauses: set[str] | None = None
    # ordered async message handlers
    _busy = False
    _backlog: deque[tuple[Any, tuple[Any, ...]]] | None = None
    # keep-alive
    _hb_call: Any = None
    _hb_timeout_call: Any = None
    _hb_seq = 0
    _idle_call: Any = None
    _rx_count = 0  # reads from the peer, for the heartbeat
    _hb_seen = 0
    _msg_count = 0  # data messages (or frames) from the peer, for idle_timeout
    _idle_seen = 0
    _linger_call: Any = None
    # set by wsplugin.web when a twisted.web request is taken over
    _via_http = False
    _fixed_route: Route | None = None

    # copied by copy_options, not by Autobahn (see there)
    _OPTION_NAMES: tuple[str, ...] = tuple(_AutobahnServerProtocol.CONFIG_ATTRS)
    CONFIG_ATTRS: list[str] = []

    # -- TCP ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """TCP accepted: set Autobahn up, then ask the server's ``on_connect``."""
        self._events = {}
        super().connectionMade()
        self.transport.registerProducer(self, True)
        self._direct = isinstance(self.transport, tcp.Connection)
        hook = self.factory._on_connect
        if hook is None or self._via_http:
            # a connection taken over from twisted.web was accepted (and
            # screened by before_request) as an HTTP connection already
            return
        try:
            result = hook(self.transport.getPeer())
        except Exception:
            self._log.failure("on_connect raised; dropping {peer}", peer=self.peer)
            self._abort_tcp()
            return
        if isinstance(result, bool) or result is None:
            if result is False:
                self._refuse_tcp()
            return
        d = as_deferred(result)
        if not d.called:
            self._pause_reading("on_connect")
        d.addCallbacks(self._on_connect_decided, self._on_connect_failed)

    def _on_connect_decided(self, allowed: Any) -> None:
        if allowed is False:
            self._refuse_tcp()
        else:
            self._resume_reading("on_connect")

    def _on_connect_failed(self, failure: Failure) -> None:
        self._log.failure("on_connect failed; dropping {peer}", failure, peer=self.peer)
        self._abort_tcp()

    def _refuse_tcp(self) -> None:
        self._log.info("on_connect refused {peer}", peer=self.peer)
        self.wasNotCleanReason = "refused by on_connect"
        self._handshake_started = True  # ignore anything the peer still sends
        self.dropConnection(abort=False)

    def _abort_tcp(self) -> None:
        self._handshake_started = True
        self.wasNotCleanReason = "on_connect failed"
        self.dropConnection(abort=True)

    def _connectionMade(self) -> None:
        copy_options(self, self._OPTION_NAMES)
        # Autobahn then leaves client frames masked; onFrameBegin picks the
        # unmasker (RFC 6455 still requires masked client frames: that check
        # is requireMaskedClientFrames, which stays on)
        self.applyMask = False
        super()._connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the peer: any traffic answers a pending heartbeat."""
        self._rx_count += 1
        if self._hb_timeout_call is not None:
            self._hb_timeout_call.cancel()
            self._hb_timeout_call = None
        if len(data) <= _READ_SLICE or self.state != _WSP.STATE_OPEN:
            self._dataReceived(data)
            return
        end = len(data)
        pos = 0
        while pos < end and self.state != _WSP.STATE_CLOSED:
            step = _READ_SLICE
            frame = self.current_frame
            if frame is not None:
                # inside a frame: its whole remaining payload in one piece
                rest = frame.length - self.current_frame_masker.pointer()
                step = max(step, rest - len(self.data))
            self._dataReceived(data[pos : pos + step])
            pos += step

    # -- handshake ---------------------------------------------------------

    def processHandshake(self) -> None:
        """Bound and route the request head, then let Autobahn validate it."""
        if self._handshake_started:
            # Autobahn calls this for every read while allow() is pending;
            # the head was consumed already (and reading is paused).
            return
        factory = self.factory
        try:
            head = parse_request_head(
                self.data,
                factory.config.max_request_head,
                factory.config.max_headers,
            )
        except HandshakeRejected as e:
            self._handshake_started = True
            self._log.info(
                "rejecting handshake from {peer}: {status}",
                peer=self.peer,
                status=e.status,
            )
            self.failHandshake(e.reason, e.status)
            return
        if head is None:
            return
        self._head = head
        self._handshake_started = True
        problem = target_problem(head.target) or body_problem(head)
        if problem is not None:
            self._log.info(
                "bad request target or body from {peer}: {problem}: 400",
                peer=self.peer,
                problem=problem,
            )
            self.failHandshake(problem, 400)
            return
        # a request taken over from twisted.web comes with the route resolved
        # there, from the very path its before_request hook saw: never again
        route = self._fixed_route or factory.router.resolve(
            head.get("host") or "", head.path
        )
        if route is None:
            e = RouteNotFound(head.host, head.path)
            self._log.info(
                "no route for host {host!r} path {path!r} from {peer}: 404",
                host=head.host,
                path=head.path,
                peer=self.peer,
            )
            self.failHandshake(e.reason, e.status)
            return
        self._apply_route(route)
        cfg = route.config
        origin = head.get("origin")
        if origin is not None and not origin_allowed(
            origin,
            cfg.allowed_origins,
            host=head.get("host") or "",
            authenticated=route.auth is not None,
        ):
            self._log.info(
                "origin {origin!r} not allowed from {peer}: 403",
                origin=origin,
                peer=self.peer,
            )
            self.failHandshake("Forbidden", 403)
            return
        normalized = normalize_head(
            head, cfg.skip_upgrade_check, cfg.skip_version_check
        )
        if normalized is not None:
            self.data = normalized + self.data[head.length :]
        super().processHandshake()

    def _apply_route(self, route: Route) -> None:
        """Carry the route's options into Autobahn's per-connection settings."""
        self.route = route
        cfg: ServerConfig = route.config
        self.trustXForwardedFor = cfg.trusted_proxies
        self.maxMessagePayloadSize = cfg.max_message_size
        self.maxFramePayloadSize = cfg.max_frame_size
        self.utf8validateIncoming = cfg.utf8_validation
        self.closeHandshakeTimeout = cfg.close_handshake_timeout
        if not cfg.compression:
            self.perMessageCompressionAccept = _accept_nothing
        elif cfg.compression_context_takeover:
            self.perMessageCompressionAccept = _accept_deflate
        else:
            self.perMessageCompressionAccept = _accept_deflate_no_takeover
        self._settings = route_settings(route)
        self._events = self.factory._route_events(route)

    def onConnect(self, request: Any) -> Any:
        """Handshake valid: build the Connection and ask the route's ``allow``.

        While an async ``allow`` (or authenticator) is deciding, reading
        pauses: frames sent early wait in the socket, not in memory.
        """
        result = self._decide(request)
        if isinstance(result, Deferred) and not result.called:
            self._pause_reading("handshake")
        return result

    def _decide(self, request: Any) -> Any:
        assert self.route is not None and self._head is not None
        cfg = self.route.config
        head = self._head
        forwarded = (
            request.peer
            if self.trustXForwardedFor and "x-forwarded-for" in self.http_headers
            else None
        )
        # behind a trusted proxy the client is the X-Forwarded-For entry
        # Autobahn picked; the socket peer (the proxy) stays as proxy_peer
        socket_peer = self.transport.getPeer()
        client = forwarded_address(forwarded) if forwarded else None
        conn = Connection(
            self,
            Request(
                # the target as sent, up to "?": Autobahn's urlparse'd path
                # would turn "//x/admin" into "/admin" and drop ";params"
                path=head.path,
                params=request.params,
                headers=Headers(head.headers),
                host=request.host.lower(),
                origin=request.origin or "",
                protocols=tuple(request.protocols),
                peer=client or socket_peer,
                target=head.target,
                forwarded_for=forwarded,
                proxy_peer=socket_peer if client else None,
                peer_certificate=peer_certificate(self.transport),
            ),
            max_queue=cfg.max_queue,
            server=self.factory.owner,
            config=cfg,
        )
        self.connection = conn
        self._head = None  # the Request keeps what is needed
        conn.protocol = next(
            (p for p in request.protocols if p in cfg.subprotocols), None
        )
        # verify_peer (wsplugin.tls) runs first, then the authenticator
        auth = with_peer_check(self.route.handler, self.route.auth)
        if auth is None:
            return self._ask_allow(conn)
        try:
            identity = auth.authenticate(conn)
        except Exception:
            return self._allow_failed(Failure(), conn)
        d = as_deferred(identity)
        d.addCallback(self._authenticated, conn)
        d.addErrback(self._allow_failed, conn)
        return d

    def _authenticated(self, identity: Any, conn: Connection) -> Any:
        conn.user = identity
        return self._ask_allow(conn)

    def _ask_allow(self, conn: Connection) -> Any:
        allow = self._events.get("allow")
        if allow is None:
            return self._accepted(None, conn)
        try:
            result = allow(conn)
        except Exception:
            return self._allow_failed(Failure(), conn)
        d = as_deferred(result)
        d.addCallback(self._accepted, conn)
        d.addErrback(self._allow_failed, conn)
        return d

    def _accepted(self, verdict: Any, conn: Connection) -> Any:
        if isinstance(verdict, HandshakeRejected):
            raise verdict
        if verdict is False:
            raise Reject(403, "Forbidden")
        if verdict not in (True, None):
            raise TypeError(
                f"allow() must return True, False, None or a Reject, not {verdict!r}"
            )
        if conn.protocol is not None and conn.protocol not in conn.request.protocols:
            raise ValueError(
                f"allow() chose subprotocol {conn.protocol!r}, which the client "
                f"did not offer ({list(conn.request.protocols)!r})"
            )
        headers: dict[str, list[str]] = {}
        for name, value in conn.response_headers:
            check_header(name, value)
            headers.setdefault(name, []).append(value)
        return (conn.protocol, headers)

    def _allow_failed(self, failure: Failure, conn: Connection) -> None:
        if failure.check(HandshakeRejected):
            rejected: HandshakeRejected = failure.value  # type: ignore[assignment]
            self._log.info(
                "handshake refused for {peer} on {path}: {status} {reason}",
                peer=self.peer,
                path=conn.request.path,
                status=rejected.status,
                reason=rejected.reason,
            )
            self._reject_headers = rejected.headers
            self._reject_reason = rejected.reason
            raise ConnectionDeny(rejected.status, rejected.reason)
        self._report_error(failure, "allow() raised")
        raise ConnectionDeny(500, "Internal Server Error")

    def succeedHandshake(self, res: Any) -> None:
        """Send the 101, unless the client left while ``allow`` was deciding."""
        if self.state != _WSP.STATE_CONNECTING or self._ended:
            return
        self._resume_reading("handshake")
        super().succeedHandshake(res)

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: Any = None
    ) -> None:
        """Answer the upgrade with an HTTP error and close.

        The status line carries the standard reason phrase (or a ``Reject``'s
        own): Autobahn's detailed reason may quote request bytes, so it goes
        to the log only.
        """
        if self.state != _WSP.STATE_CONNECTING or self._ended:
            return
        headers = list(responseHeaders or []) + (self._reject_headers or [])
        if code == 426:
            headers.append(("Upgrade", "websocket"))
        elif code == 405:
            headers.append(("Allow", "GET"))
        headers.append(("Content-Length", "0"))
        headers.append(("Connection", "close"))
        if self._reject_reason is not None:
            phrase = self._reject_reason
        else:
            try:
                phrase = HTTPStatus(code).phrase
            except ValueError:
                phrase = "Error"
        self.wasNotCleanReason = reason
        self.factory._log_limited(
            "failing handshake from {peer} with {code}: {reason!r}",
            peer=self.peer,
            code=code,
            reason=reason[:200],
        )
        self.sendHttpErrorResponse(code, phrase, headers)
        self.dropConnection(abort=False)

    # -- open --------------------------------------------------------------

    def onOpen(self) -> None:
        """101 sent: register the connection and fire the open events."""
        conn = self.connection
        assert conn is not None
        self._opened = True
        # Autobahn's copies of the request are for the handshake only
        # (conn.request keeps what the application sees). Dropping them and
        # compacting the instance dict saves about 2 KiB per connection.
        attrs = self.__dict__
        for name in _HANDSHAKE_ONLY:
            attrs.pop(name, None)
        self.__dict__ = dict(attrs)
        conn.request.headers._compact()
        pmc = self._perMessageCompress
        if isinstance(pmc, PerMessageDeflate) and pmc.server_no_context_takeover:
            self._deflate_key = (pmc.server_max_window_bits, pmc.mem_level)
        events = self._events
        if self._settings.frame_by_frame:
            conn._receive_mode = "on_fragment" not in events
        else:
            conn._receive_mode = (
                "on_message" not in events and "on_binary" not in events
            )
        self.factory._register(conn)
        self._start_keepalive()
        self._fire("on_handshake_response_sent")
        if conn.is_open:
            self._fire("on_open")

    # -- messages ----------------------------------------------------------

    def onFrameBegin(self) -> None:
        """A frame header arrived: choose how its payload is unmasked.

        Autobahn builds an NVX masker for every frame, about 6 us each
        (a quarter of the CPU of a 64-byte echo); small payloads are
        unmasked with :class:`~wsplugin._frames.SmallFrameUnmasker` instead.
        """
        frame = self.current_frame
        if frame.mask is not None and frame.length:
            self.current_frame_masker = (
                SmallFrameUnmasker(frame.mask)
                if frame.length <= SMALL_FRAME
                else create_xor_masker(frame.mask, frame.length)
            )
        super().onFrameBegin()

    def processData(self) -> bool:
        """Autobahn's frame parser, with a fast path for tiny fragments.

        Between the first and the last frame of a message, a run of small
        continuation frames already in the buffer is read in one go by
        :func:`~wsplugin._frames.read_continuations` (about 1 us a frame
        instead of ~13 us, and one slice of the buffer per run instead of two
        per frame); everything else, and every decision that is not plain
        arithmetic, stays Autobahn's. Without this a client sending one
        message as 500,000 two-byte frames holds the reactor for seconds.
        After the connection was failed (say with 1009 in the middle of
        such a message), the rest of the run is skipped the same way while
        the peer's close frame is awaited.
        """
        data = self.data
        if (
            self.current_frame is None
            and self.inside_message
            and len(data) >= 6
            and not data[0]
            and (self.failedByMe or self.state == _WSP.STATE_OPEN)
            and not self._settings.frame_by_frame
            and self._read_continuations(data)
        ):
            return len(self.data) > 0
        return bool(super().processData())

    def _read_continuations(self, data: bytes) -> int:
        """Read the run of small continuation frames at the start of ``data``
        into the message (the checks of Autobahn's ``onFrameData``, once per
        run); returns how many frames were read."""
        if 0 < self.maxFramePayloadSize < 125 or self.logFrames:
            return 0  # rare settings: leave every frame to Autobahn
        if self.failedByMe:
            # the rest of a message we failed the connection for (e.g. with
            # 1009) while waiting for the peer's close: skip it cheaply
            pos, count, _ = read_continuations(data, 0, 1 << 62, keep=False)
            self.data = data[pos:]
            return count
        limit = self.maxMessagePayloadSize
        budget = limit - self.message_data_total_length if limit > 0 else 1 << 62
        pos, count, payload = read_continuations(data, 0, budget)
        if not count:
            return 0
        self.data = data[pos:]
        wire_length = len(payload)
        self.message_data_total_length += wire_length
        if self._isMessageCompressed and wire_length:
            before = self.message_data_total_length - wire_length
            try:
                payload = self._perMessageCompress.decompress_message_data(
                    payload, max_output_len=limit - before if limit > 0 else None
                )
            except PayloadExceededError:
                self.wasMaxMessagePayloadSizeExceeded = True
                self._max_message_size_exceeded(
                    limit, limit, f"message over {limit} bytes after decompression"
                )
                return count
            except PayloadCorruptError as e:
                self._invalid_payload(f"message cannot be decompressed: {e}")
                return count
            self.message_data_total_length = before + len(payload)
            if 0 < limit < self.message_data_total_length:
                self.wasMaxMessagePayloadSizeExceeded = True
                self._max_message_size_exceeded(
                    self.message_data_total_length,
                    limit,
                    f"message over {limit} bytes after decompression",
                )
                return count
        if self.state == _WSP.STATE_OPEN:
            stats = self.trafficStats
            stats.incomingOctetsWebSocketLevel += wire_length
            stats.incomingOctetsAppLevel += len(payload)
            stats.incomingWebSocketFrames += count
        if self.utf8validateIncomingCurrentMessage:
            self.utf8validateLast = self.utf8validator.validate(payload)
            if not self.utf8validateLast[0]:
                self._invalid_payload("invalid UTF-8 in a text message")
                return count
        msg = self._msg
        if msg is not None:
            msg.append(payload)
        return count

    def onMessageBegin(self, isBinary: bool) -> None:
        """A data message starts: its payload goes into one
        :class:`~wsplugin._frames.PayloadBuffer` (Autobahn's list of pieces
        costs about 25 times the payload for a message of two-byte frames)."""
        self.message_is_binary = isBinary
        self.message_data_total_length = 0
        self._msg = PayloadBuffer()

    def onMessageFrameBegin(self, length: int) -> None:
        """In frame-by-frame mode the message limit bounds each frame, since
        messages are never assembled (deflate inflation stays bounded)."""
        if self._settings.frame_by_frame:
            self.message_data_total_length = 0
        super().onMessageFrameBegin(length)

    def onMessageFrameData(self, payload: bytes) -> None:
        """Unmasked (and inflated, UTF-8 checked) payload: into the buffer."""
        msg = self._msg
        if msg is not None and not self.failedByMe:
            msg.append(payload)

    def onMessageFrameEnd(self) -> None:
        """Frame-by-frame mode hands every non-final frame out as it ends;
        otherwise the frame's payload is already in the message buffer."""
        if not self._settings.frame_by_frame or self.failedByMe:
            return
        msg = self._msg
        data = bytes(msg.take()) if msg is not None else b""
        if self.current_frame.fin:
            # The final frame waits for onMessageEnd: Autobahn checks there
            # that the UTF-8 text did not stop inside a code point.
            self._last_fragment = data
        else:
            self._deliver_fragment(data, False)

    def onMessageEnd(self) -> None:
        """A whole message (or, frame by frame, the final frame) arrived."""
        msg, self._msg = self._msg, None
        if self.failedByMe:
            return
        if self._settings.frame_by_frame:
            data, self._last_fragment = self._last_fragment, b""
            self._deliver_fragment(data, True)
        else:
            self._deliver_message(
                msg.take() if msg is not None else b"", self.message_is_binary
            )

    def _deliver_message(self, payload: bytes | bytearray, is_binary: bool) -> None:
        self._msg_count += 1
        conn = self.connection
        if conn is None or self._peer_closed:
            return
        message: str | bytes
        if is_binary:
            message = payload if type(payload) is bytes else bytes(payload)
        else:
            message = payload.decode("utf-8", "replace")
        if conn._receive_mode:
            conn._enqueue(message)
            return
        handler = self._events.get("on_binary" if is_binary else "on_message")
        if handler is None:
            kind = "binary" if is_binary else "text"
            self._fail_connection(
                _WSP.CLOSE_STATUS_CODE_UNSUPPORTED_DATA,
                f"this endpoint takes no {kind} messages",
            )
            return
        self._call_in_order(handler, (conn, message))

    def _deliver_fragment(self, data: bytes, fin: bool) -> None:
        self._msg_count += 1
        conn = self.connection
        if conn is None or self._peer_closed:
            return
        if conn._receive_mode:
            conn._enqueue(Fragment(data, self.message_is_binary, fin))
        else:
            handler = self._events["on_fragment"]
            self._call_in_order(handler, (conn, data, self.message_is_binary, fin))

    def _call_in_order(self, handler: Any, args: tuple[Any, ...]) -> None:
        """Run a message handler now, or after the pending async one."""
        if self._busy:
            assert self._backlog is not None
            self._backlog.append((handler, args))
            return
        self._run_handler(handler, args)

    def _run_handler(self, handler: Any, args: tuple[Any, ...]) -> None:
        try:
            result = handler(*args)
        except Exception:
            self._handler_failed(Failure())
            return
        if result is None or isinstance(result, bool):
            return
        d = as_deferred(result)
        if d.called:
            d.addErrback(self._handler_failed)
            return
        self._busy = True
        if self._backlog is None:
            self._backlog = deque()
        self._pause_reading("handler")
        d.addErrback(self._handler_failed)
        d.addBoth(self._handler_done)

    def _handler_done(self, _: Any) -> None:
        self._busy = False
        backlog = self._backlog
        while backlog and not self._busy:
            handler, args = backlog.popleft()
            if self._ended or self._peer_closed:
                backlog.clear()
                break
            self._run_handler(handler, args)
        if not self._busy:
            self._resume_reading("handler")

    # -- control frames ----------------------------------------------------

    def onPing(self, payload: bytes) -> None:
        """Answer (unless ``manual_pong``), then fire ``on_ping``.

        A ping Autobahn has already failed the connection for (e.g. a payload
        over 125 bytes), or one after the peer's close, is ignored.
        """
        if self.failedByMe or self.state != _WSP.STATE_OPEN or self._peer_closed:
            return
        if not self._settings.manual_pong:
            self._send_control(OP_PONG, payload)
        self._fire("on_ping", payload)

    def onPong(self, payload: bytes) -> None:
        """Fire ``on_pong`` and hand the pong to ``wait_for_message`` (not
        for a pong the connection was failed for)."""
        if self.failedByMe:
            return
        conn = self.connection
        if conn is not None:
            conn._pong(payload)
        self._fire("on_pong", payload)

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> Any:
        """A close frame arrived: check it, answer it, fire ``on_close``.

        An invalid close frame gets a close frame back (RFC 6455 7.1.7), then
        the TCP connection is closed: 1002 for a 1-byte payload or a code
        that may not be received (RFC 6455 7.4: 0-999, 1004-1006, 1015-2999,
        5000 and up), 1007 for a reason that is not UTF-8. Autobahn sends
        the close frame too, but then takes the invalid frame for the answer
        to it and aborts the TCP connection, which throws the close frame
        away unsent. ``on_close`` does not fire for an invalid close frame;
        ``on_error`` gets a ProtocolError and ``on_disconnect`` the code sent.

        A close frame that answers ours (or crosses it) ends the connection
        with a graceful TCP close, so whatever is still queued for the peer,
        our close frame included, goes out first; a peer that does not read
        it is aborted after ``close_handshake_timeout`` (at least 1 s).
        """
        if self._peer_closed:
            return False  # a second close frame (manual_close): ignored
        frame = self.current_frame
        if frame is not None and frame.length == 1:
            # Autobahn has failed the connection for it already (1002)
            problem: tuple[int, str] | None = (
                _WSP.CLOSE_STATUS_CODE_PROTOCOL_ERROR,
                "close frame with a 1-byte payload",
            )
        else:
            problem = close_frame_problem(code, reasonRaw)
        state = self.state
        if state == _WSP.STATE_OPEN:
            if problem is not None:
                self._fail_connection(*problem)  # sends our close frame
                self._end_after_peer_close(clean=False)
                return False
            if not self._settings.manual_close:
                stop = super().onCloseFrame(code, reasonRaw)  # answers, closes
                if self._opened:
                    self._fire(
                        "on_close",
                        self._code_or_none(code),
                        self.remoteCloseReason or "",
                    )
                return stop
            return self._peer_close_manual(code, reasonRaw)
        if state == _WSP.STATE_CLOSING:
            # the peer's close after ours: its answer, or its own close
            # crossing ours on the wire; either way the handshake is over
            if problem is None:
                self.remoteCloseCode = code
                self.remoteCloseReason = (
                    reasonRaw.decode("utf-8") if reasonRaw else None
                )
            elif not self.failedByMe:
                self.factory._log_limited(
                    "closing {peer}: {reason} in answer to our close",
                    peer=self.peer,
                    reason=problem[1],
                )
            self._end_after_peer_close(clean=problem is None)
            if problem is None and not self.failedByMe and self._opened:
                self._fire(
                    "on_close", self._code_or_none(code), self.remoteCloseReason or ""
                )
            return False
        return super().onCloseFrame(code, reasonRaw)

    def _end_after_peer_close(self, clean: bool) -> None:
        """Both close frames have been sent: close the TCP connection (the
        server closes first, RFC 6455 7.1.1), after what is queued."""
        call = self.closeHandshakeTimeoutCall
        if call is not None:
            call.cancel()
            self.closeHandshakeTimeoutCall = None
        self.wasClean = clean
        if not clean:
            self.wasNotCleanReason = "invalid close frame"
        self.dropConnection(abort=False)

    def _peer_close_manual(self, code: int | None, reasonRaw: bytes | None) -> bool:
        """``manual_close``: a valid close frame is left for the application
        to answer (``on_close``, or a close message for ``receive()``)."""
        self.remoteCloseCode = code
        self.remoteCloseReason = reasonRaw.decode("utf-8") if reasonRaw else None
        self._peer_closed = True
        timeout = self.closeHandshakeTimeout
        if timeout > 0:
            self._manual_close_timer = self.factory.clock.callLater(
                timeout, self._manual_close_expired
            )
        reason = self.remoteCloseReason or ""
        conn = self.connection
        if conn is not None and conn._receive_mode:
            conn._enqueue(CloseMessage(self._code_or_none(code), reason))
        self._fire("on_close", self._code_or_none(code), reason)
        return False

    @staticmethod
    def _code_or_none(code: int | None) -> int:
        return _WSP.CLOSE_STATUS_CODE_NULL if code is None else code

    def _manual_close_expired(self) -> None:
        self._manual_close_timer = None
        if self.state != _WSP.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "the application did not answer the close frame"
            self.dropConnection(abort=True)

    # -- keep-alive --------------------------------------------------------

    def _start_keepalive(self) -> None:
        cfg = self.route.config if self.route is not None else self.factory.config
        clock = self.factory.clock
        self._hb_seen = self._rx_count  # the handshake itself is not traffic
        if cfg.heartbeat_interval:
            self._hb_call = clock.callLater(cfg.heartbeat_interval, self._heartbeat)
        if cfg.idle_timeout:
            self._idle_call = clock.callLater(cfg.idle_timeout, self._idle_check)

    def _heartbeat(self) -> None:
        """sgc HeartBeat: a peer silent for a whole interval gets a ping (or
        the app's own keep-alive) and ``heartbeat_timeout`` to answer. A peer
        that sent anything during the interval is plainly alive: no ping."""
        self._hb_call = None
        if self.state != _WSP.STATE_OPEN or self._peer_closed:
            return
        assert self.route is not None
        cfg = self.route.config
        clock = self.factory.clock
        self._hb_call = clock.callLater(cfg.heartbeat_interval, self._heartbeat)
        if self._rx_count != self._hb_seen:
            self._hb_seen = self._rx_count
            return
        handled = False
        hook = self._events.get("before_heartbeat")
        if hook is not None:
            try:
                result = hook(self.connection)
            except Exception:
                self._handler_failed(Failure())
                return
            if isinstance(result, bool) or result is None:
                handled = bool(result)
            else:
                # a Deferred or coroutine sends the app's own keep-alive
                as_deferred(result).addErrback(self._handler_failed)
                handled = True
        if not handled:
            self._hb_seq += 1
            self._send_control(OP_PING, b"wsplugin-hb-%d" % self._hb_seq)
        if cfg.heartbeat_timeout and self._hb_timeout_call is None:
            self._hb_timeout_call = clock.callLater(
                cfg.heartbeat_timeout, self._heartbeat_expired
            )

    def _heartbeat_expired(self) -> None:
        self._hb_timeout_call = None
        if self.state != _WSP.STATE_OPEN:
            return
        self.factory._log_limited(
            "closing {peer}: no answer to the heartbeat in {timeout}s",
            peer=self.peer,
            timeout=self.route.config.heartbeat_timeout if self.route else 0,
        )
        self._close_with(_WSP.CLOSE_STATUS_CODE_INTERNAL_ERROR, "heartbeat timeout")

    def _idle_check(self) -> None:
        self._idle_call = None
        if self.state != _WSP.STATE_OPEN or self._peer_closed:
            return
        assert self.route is not None
        if self._msg_count != self._idle_seen:
            self._idle_seen = self._msg_count
            self._idle_call = self.factory.clock.callLater(
                self.route.config.idle_timeout, self._idle_check
            )
            return
        self._close_with(_WSP.CLOSE_STATUS_CODE_GOING_AWAY, "idle timeout")

    def _close_with(self, code: int, reason: str) -> None:
        """Close from our side, remembering why for ``on_disconnect``."""
        self._end_code, self._end_reason = code, reason
        self.sendCloseFrame(code, reason.encode("utf-8"), isReply=False)

    # -- errors ------------------------------------------------------------

    def _fail_connection(
        self,
        code: int = _WSP.CLOSE_STATUS_CODE_GOING_AWAY,
        reason: str = "going away",
    ) -> None:
        """Autobahn fails the connection: tell ``on_error`` once, then close."""
        if self.state != _WSP.STATE_CLOSED and not self.failedByMe and self._opened:
            self.factory._log_limited(
                "failing connection from {peer} with {code}: {reason}",
                peer=self.peer,
                code=code,
                reason=reason,
            )
            self._end_code, self._end_reason = code, reason
            self._report_error(Failure(ProtocolError(code, reason)), None)
        self._msg = None  # a failed message is never delivered: free it now
        super()._fail_connection(code, reason)

    def _fire(self, name: str, *args: Any) -> None:
        handler = self._events.get(name)
        if handler is None:
            return
        try:
            result = handler(self.connection, *args)
        except Exception:
            self._handler_failed(Failure())
            return
        if result is not None and not isinstance(result, bool):
            as_deferred(result).addErrback(self._handler_failed)

    def _handler_failed(self, failure: Failure) -> None:
        self._report_error(failure, "an event handler raised")
        if self.state == _WSP.STATE_OPEN and not self._peer_closed:
            self._close_with(_WSP.CLOSE_STATUS_CODE_INTERNAL_ERROR, "internal error")
        elif self._peer_closed and self.state != _WSP.STATE_CLOSED:
            self._ws_close(_WSP.CLOSE_STATUS_CODE_INTERNAL_ERROR, "internal error")

    def _report_error(self, failure: Failure, what: str | None) -> None:
        if what is not None:
            self._log.failure(
                "{what} on connection from {peer}", failure, what=what, peer=self.peer
            )
        on_error = self._events.get("on_error")
        if on_error is None or self.connection is None:
            return
        try:
            result = on_error(self.connection, failure)
            if result is not None:
                as_deferred(result).addErrback(
                    lambda f: self._log.failure("on_error failed", f)
                )
        except Exception:
            self._log.failure("on_error raised")

    # -- end ---------------------------------------------------------------

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """The connection is gone: timers stop, ``on_disconnect`` fires once."""
        if self._ended:
            return
        self._ended = True
        self._batch = None
        for name in (
            "_manual_close_timer",
            "_hb_call",
            "_hb_timeout_call",
            "_idle_call",
            "_linger_call",
            "closeHandshakeTimeoutCall",
        ):
            call = getattr(self, name, None)
            if call is not None:
                if call.active():
                    call.cancel()
                setattr(self, name, None)
        self._drop_queue()
        if self._backlog:
            self._backlog.clear()
        conn = self.connection
        if conn is None:
            return
        if self._end_code is not None and (
            self.failedByMe or (not wasClean and self.remoteCloseCode is None)
        ):
            # we ended it (a protocol error, or a close that was never
            # answered): our code says why, not the peer's polite 1000
            code, reason = self._end_code, self._end_reason
        elif code is None and wasClean:
            code = _WSP.CLOSE_STATUS_CODE_NULL
        conn._mark_closed(code, reason or "")
        if self._opened:
            self.factory._unregister(conn)
            self._fire("on_disconnect", wasClean, code, reason or "")
        conn._finish()

    # -- the outgoing queue (IPushProducer for the transport) ---------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: queue further writes here."""
        self._write_paused = True

    def resumeProducing(self) -> None:
        """The transport drained: write what is queued."""
        self._write_paused = False
        self._flush()

    def stopProducing(self) -> None:
        """The transport is gone: free the queue."""
        self._write_paused = True
        self._drop_queue()

    def sendData(
        self, data: bytes, sync: bool = False, chopsize: int | None = None
    ) -> None:
        """Write to the transport, or queue while it is full.

        On a plain TCP connection whose transport holds nothing, the writes
        of one reactor turn are collected and sent with a single ``send()``
        at its end (``_write_batch``); only what the socket does not take
        goes to the transport. Twisted would write the same bytes at the
        same point of the loop, but first register and then unregister the
        socket for writability: two ``epoll_ctl`` calls per connection and
        turn, which for a broadcast to many clients cost more than the
        writes themselves. Past ``_BATCH_LIMIT`` bytes the collected writes
        go out at once and the transport's flow control applies as usual.
        """
        batch = self._batch
        if batch is not None:
            if self._batch_size + len(data) <= _BATCH_LIMIT:
                batch.append(data)
                self._batch_size += len(data)
                return
            self._write_batch()
        if self._queue is None and not self._write_paused:
            transport = self.transport
            if (
                self._direct
                and len(data) <= _BATCH_LIMIT
                and not transport.TLS
                and _writes_now(transport)
            ):
                self._batch = [data]
                self._batch_size = len(data)
                self.factory._batch_ready(self)
                return
            transport.write(data)
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(data)
        self._queued += len(data)

    def _send_control(self, opcode: int, payload: bytes) -> None:
        """A ping or pong: ahead of queued data, so keep-alive is not starved.

        While the transport is full, only the most recent pong is kept (RFC
        6455 5.5.3 allows answering just the latest ping), so a ping flood
        from a peer that never reads cannot grow memory.
        """
        data = encode_frame(opcode, payload)
        if self._queue is None and not self._write_paused:
            self.sendData(data)
            return
        if self._ctrl is None:
            self._ctrl = deque()
        ctrl = self._ctrl
        if opcode == OP_PONG and ctrl and ctrl[-1][0] & 0x0F == OP_PONG:
            ctrl[-1] = data
        elif len(ctrl) < _MAX_CONTROL_QUEUE:
            ctrl.append(data)
        if self._queue is None:
            self._queue = deque()

    def _flush(self) -> None:
        write = self.transport.write
        ctrl, queue = self._ctrl, self._queue
        while not self._write_paused:
            if ctrl:
                write(ctrl.popleft())
            elif queue:
                data = queue.popleft()
                self._queued -= len(data)
                write(data)
            else:
                break
        if queue is not None and not queue and not ctrl:
            self._queue = self._ctrl = None
            self._queued = 0
            self._resume_reading("send buffer")
            waiters, self._drain_waiters = self._drain_waiters, None
            for d in waiters or ():
                d.callback(None)
            if self._unregister_after_flush:
                self._unregister_after_flush = False
                self.transport.unregisterProducer()

    def _write_batch(self) -> None:
        """Send the writes collected this turn: as much as the socket takes
        now, the rest through the transport (which then owns ordering)."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        transport = self.transport
        sent = 0
        if _writes_now(transport):
            try:
                sent = transport.socket.send(data)
            except OSError:
                # EAGAIN, or a dead socket: the transport retries, or finds
                # the error and reports the connection lost as usual
                sent = 0
        if sent < len(data):
            transport.write(data[sent:] if sent else data)

    def _drop_queue(self) -> None:
        self._queue = self._ctrl = None
        self._queued = 0
        waiters, self._drain_waiters = self._drain_waiters, None
        conn = self.connection
        for d in waiters or ():
            d.errback(
                ConnectionClosed(
                    conn.close_code if conn else None, conn.close_reason if conn else ""
                )
            )

    def unregisterProducer(self) -> None:
        """Autobahn unregisters when it closes; wait until the queue is out."""
        if self._queue is not None and self._queued:
            self._unregister_after_flush = True
        else:
            self.transport.unregisterProducer()

    def _closeConnection(self, abort: bool = False) -> None:
        if abort:
            self._batch = None
            self._drop_queue()
        else:
            self._write_batch()  # before the transport starts closing
        if not abort and self._linger_call is None:
            # A graceful close waits for queued data to reach the peer; one
            # that never reads is aborted after the close-handshake timeout.
            self._linger_call = self.factory.clock.callLater(
                max(self.closeHandshakeTimeout, 1.0), self._linger_expired
            )
        super()._closeConnection(abort)

    def _linger_expired(self) -> None:
        self._linger_call = None
        if not self._ended:
            self._drop_queue()
            self.transport.abortConnection()

    def _admit(self) -> bool:
        """Whether one more data message may be queued for this connection."""
        limit = self._settings.send_limit
        if not limit or self._queued <= limit:
            return True
        policy = self._settings.send_policy
        if policy == "drop":
            if self.connection is not None:
                self.connection.dropped_messages += 1
            return False
        if policy == "wait" and self._queued <= _WAIT_HARD_CAP * limit:
            self._pause_reading("send buffer")
            return True
        self.factory._log_limited(
            "closing {peer}: {queued} bytes queued, over max_send_buffer {limit}",
            peer=self.peer,
            queued=self._queued,
            limit=limit,
        )
        if self._queue is not None:
            self._queue.clear()
        self._queued = 0
        self._close_with(
            _WSP.CLOSE_STATUS_CODE_POLICY_VIOLATION, "send buffer overflow"
        )
        return False

    # -- reading pauses ------------------------------------------------------

    def _pause_reading(self, reason: str) -> None:
        if self._read_pauses is None:
            self._read_pauses = set()
        if not self._read_pauses and not self._ended:
            self.transport.pauseProducing()
        self._read_pauses.add(reason)

    def _resume_reading(self, reason: str) -> None:
        pauses = self._read_pauses
        if not pauses or reason not in pauses:
            return
        pauses.discard(reason)
        if not pauses and not self._ended and self.state != _WSP.STATE_CLOSED:
            self.transport.resumeProducing()

    # -- used by Connection ------------------------------------------------

    def _ws_state(self) -> ConnectionState:
        state = self.state
        if state == _WSP.STATE_OPEN and not self._peer_closed:
            return ConnectionState.OPEN
        if state == _WSP.STATE_CONNECTING:
            return ConnectionState.CONNECTING
        return ConnectionState.CLOSING

    def _check_can_send(self) -> None:
        if self.state == _WSP.STATE_CONNECTING:
            raise WSPluginError(
                "the connection is not open yet: send from on_open or later "
                "(allow() and on_connect() run before the handshake completes)"
            )
        if self.state != _WSP.STATE_OPEN or self._peer_closed:
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
        if self._queued and not self._admit():
            return
        self._send_encoded(payload, is_binary)

    def _send_encoded(self, payload: bytes, is_binary: bool) -> None:
        key = self._deflate_key
        if key is not None or self._perMessageCompress is None:
            self.sendData(
                encode_message(payload, is_binary, self._settings.fragment_size, key)
            )
            return
        # Autobahn applies the *incoming* message limit to outgoing messages
        # too; a server may send what it likes, so lift it for this call.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(
                payload, is_binary, fragmentSize=self._settings.fragment_size or None
            )
        finally:
            self.maxMessagePayloadSize = limit

    def _send_prepared(self, data: bytes) -> None:
        """A broadcast's ready-made frames: sent now, or after the message
        this connection is in the middle of (``send_frame``)."""
        if self._fragmenting:
            if self._after_fragment is None:
                self._after_fragment = []
            self._after_fragment.append(data)
        else:
            self.sendData(data)

    def _ws_send_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        if not (self._peer_closed and self._fragmenting):
            # after the peer's close (manual_close) only the message already
            # under way may be finished (RFC 6455 5.5.1)
            self._check_can_send()
        if self._fragmenting:
            opcode = OP_CONTINUATION
        else:
            opcode = OP_BINARY if is_binary else OP_TEXT
        self.sendData(encode_frame(opcode, payload, fin))
        self._fragmenting = not fin
        if fin and self._after_fragment:
            pending, self._after_fragment = self._after_fragment, None
            for data in pending:
                self.sendData(data)

    def _ws_ping(self, payload: bytes) -> None:
        self._check_can_send()
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        self._send_control(OP_PING, payload)

    def _ws_pong(self, payload: bytes) -> None:
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        if self.state == _WSP.STATE_OPEN:
            self._send_control(OP_PONG, payload)

    def _ws_close(self, code: int | None, reason: str) -> None:
        if self.state == _WSP.STATE_CONNECTING:
            raise WSPluginError(
                "the handshake has not completed: refuse it from allow() with Reject"
            )
        if self.state != _WSP.STATE_OPEN:
            return
        reason_utf8 = encode_truncate(reason, 123) if reason else None
        if not self._peer_closed:
            if code is not None:
                self._end_code, self._end_reason = code, reason
            self.sendCloseFrame(code, reason_utf8, isReply=False)
            return
        # manual_close: this is the application's answer to the peer's close
        payload = b""
        if code is not None:
            payload = code.to_bytes(2, "big") + (reason_utf8 or b"")
        self.sendData(encode_frame(OP_CLOSE, payload))
        self.localCloseCode = code
        self.localCloseReason = reason_utf8
        self.wasClean = True
        self.state = _WSP.STATE_CLOSING
        if self._manual_close_timer is not None and self._manual_close_timer.active():
            self._manual_close_timer.cancel()
        self._manual_close_timer = None
        self.dropConnection(abort=False)

    def _ws_abort(self) -> None:
        if self._ended:
            return
        if self.state != _WSP.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "aborted by the application"
            self.dropConnection(abort=True)
        else:
            # a graceful TCP close is under way (queued data still going
            # out to a slow reader): cut it short
            self._batch = None
            self._drop_queue()
            self.transport.abortConnection()

    def _ws_buffered(self) -> int:
        return self._queued

    def _ws_drain(self) -> Deferred[None]:
        if self._queue is None:
            return succeed(None)
        if self._ended:
            conn = self.connection
            return fail(ConnectionClosed(conn.close_code if conn else None))
        d: Deferred[None] = Deferred()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(d)
        return d

    def _ws_pause_reading(self) -> None:
        self._pause_reading("receive queue")

    def _ws_resume_reading(self) -> None:
        self._resume_reading("receive queue")
