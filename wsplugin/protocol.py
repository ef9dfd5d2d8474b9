"""The Autobahn server protocol subclass: glue between Autobahn and wsplugin.

:class:`WebSocketServerProtocol` turns Autobahn's camelCase callbacks into
calls on small collaborators, each testable on its own:

========================================  =====================================
:class:`~wsplugin._lifecycle.Lifecycle`   where the connection is (one enum)
:mod:`wsplugin._decision`                 ``on_connect``, the request head,
                                          authentication and ``allow``
:class:`~wsplugin._dispatch.Dispatch`     the route handler's events, in order
:class:`~wsplugin._sendqueue.SendQueue`   control-frame priority, send-buffer
                                          policies, ``drain``
:class:`~wsplugin._batching.TurnBatcher`  one ``send()`` per reactor turn
:class:`~wsplugin._keepalive.KeepAlive`   heartbeat and idle timeout
:class:`CodecReceiving`                   frames in, messages out: the frame
                                          codec (:mod:`wsplugin._codec`) once
                                          open without permessage-deflate
:class:`AutobahnReceiving`                frames in otherwise (Autobahn's
                                          parser with wsplugin's fast paths)
========================================  =====================================

It is the :class:`~wsplugin._connbase.ConnectionEngine` of its
:class:`~wsplugin.Connection` and the
:class:`~wsplugin._fanout.FanoutTarget` of the server's fan-out. Framing,
masking, UTF-8 validation, compression and the handshake's validation stay
Autobahn's, with one correction: an invalid close frame gets a close frame
back instead of a bare TCP drop (see ``onCloseFrame``).

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

The Autobahn callbacks are handled in four parts: the handshake, the open
and control frames here; frames in (:mod:`wsplugin._receiving`), frames out
(:mod:`wsplugin._sending`) and closing (:mod:`wsplugin._closing`) in mixins
of their own. Autobahn private names used here, each because Autobahn
offers no public hook for it: ``_connectionMade`` (copy options without
logging them), ``_perMessageCompress`` (whether this connection compresses,
and how); each mixin lists its own.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import txaio
from autobahn.twisted.websocket import (
    WebSocketServerProtocol as _AutobahnServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)
from autobahn.websocket.protocol import WebSocketProtocol as _WSP
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from wsplugin._autobahn import copy_options
from wsplugin._closing import AutobahnClosing, close_frame_problem
from wsplugin._connbase import ConnectionState
from wsplugin._connlog import log_open
from wsplugin._decision import HandshakeDecision, Refusal, check_head, screen_connection
from wsplugin._dispatch import Dispatch
from wsplugin._events import ROUTE_EVENTS
from wsplugin._fastpath import CodecReceiving
from wsplugin._frames import (
    OP_PONG,
)
from wsplugin._handshaking import LeanHandshake
from wsplugin._keepalive import KeepAlive
from wsplugin._lifecycle import Event, Lifecycle, Phase
from wsplugin._receiving import AutobahnReceiving
from wsplugin._request import Headers, Request, forwarded_address
from wsplugin._routing import DEFAULT_SETTINGS, RouteSettings
from wsplugin._sending import AutobahnSending
from wsplugin._transport import close_without_reading
from wsplugin.connection import Connection
from wsplugin.tls import peer_certificate

if TYPE_CHECKING:
    from wsplugin._routing import Route
    from wsplugin.config import ServerConfig
    from wsplugin.factory import WebSocketServerFactory

__all__ = [
    "ROUTE_EVENTS",
    "WebSocketServerProtocol",
    "close_frame_problem",
    "copy_options",
]

_OPEN = Phase.OPEN
_ENDED = Phase.ENDED
_AWAITING = Phase.AWAITING_REQUEST


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


_HANDSHAKE_ONLY = (
    "http_request_data",
    "http_headers",
    "http_status_line",
    "http_request_uri",
    "http_request_path",
    "http_request_params",
    "http_request_host",
    "http_response_data",
    "websocket_protocols",
    "websocket_extensions",
    "websocket_origin",
    "_wskey",
    "send_queue",
    "triggered",
    "_head",
    "decision",
    # Autobahn's per-connection copies of options it reads only while it
    # accepts a connection and answers its handshake (connectionMade,
    # processHandshake): dropping them leaves the compacted dict room for
    # what is set after it opens, so it is not resized (about 1.7 KiB)
    "allowNullOrigin",
    "allowedOrigins",
    "allowedOriginsPatterns",
    "versions",
    "webStatus",
    "flashSocketPolicy",
    "serveFlashSocketPolicy",
    "maxConnections",
    "perMessageCompressionAccept",
    "trustXForwardedFor",
    "openHandshakeTimeout",
    "tcpNoDelay",
)
"""Attributes only the opening handshake uses; dropped once it is done
(``send_queue`` and ``triggered`` are Autobahn's, for chopped sends)."""


@implementer(IPushProducer)
class WebSocketServerProtocol(
    CodecReceiving,
    LeanHandshake,
    AutobahnReceiving,
    AutobahnSending,
    AutobahnClosing,
    _AutobahnServerProtocol,
):
    """Autobahn server protocol speaking wsplugin's component events.

    Subclass it only to reach Autobahn directly; applications normally write
    handlers instead.

    Attributes:
        lifecycle: Where the connection is (:class:`~wsplugin._lifecycle.Phase`).
        route: The route serving it, once the request head was read.
        settings: That route's per-message settings.
        connection: The :class:`~wsplugin.Connection`, once the handshake was
            valid.
        dispatch: Its event dispatch (from the same moment).
        keepalive: Its heartbeat and idle timers (open, and configured).
        outbox: Its send queue, from the first time the transport was full
            (or a message was sent frame by frame); None until then.
        frame_key: The fan-out's key for the frames it takes (see
            :class:`~wsplugin._fanout.FanoutTarget`).
        fixed_route: The route of a connection taken over from
            ``twisted.web`` (:meth:`take_over_from_http`), else None.
        opened_at: When it opened (the reactor's clock), for the connection
            log's ``duration``; None before.
        bytes_in: Bytes read from the socket, handshake included.
        bytes_out: Bytes written to the socket or queued for it, handshake
            included.
    """

    factory: WebSocketServerFactory
    _log = Logger()
    # Autobahn logs every dropped or failed connection at warn level; under
    # attack that floods the log. wsplugin logs those events itself, rate
    # limited, so Autobahn's own logger keeps errors only.
    log = txaio.make_logger(level="error")

    connection: Connection | None = None
    route: Route | None = None
    settings: RouteSettings = DEFAULT_SETTINGS
    dispatch: Dispatch = None  # type: ignore[assignment]
    keepalive: KeepAlive | None = None
    fixed_route: Route | None = None
    decision: HandshakeDecision | None = None
    _head: Any = None
    opened_at: float | None = None
    # the class of self.dispatch: with metrics on, wsplugin.metrics installs
    # a subclass that counts messages (with them off, nothing is added to
    # the per-message path)
    dispatch_type: type[Dispatch] = Dispatch

    # copied by copy_options, not by Autobahn (see there)
    _OPTION_NAMES: tuple[str, ...] = tuple(_AutobahnServerProtocol.CONFIG_ATTRS)
    CONFIG_ATTRS: list[str] = []

    def take_over_from_http(self, route: Route) -> None:
        """Serve ``route`` whatever the request head says, and skip
        ``on_connect``: the connection comes from ``twisted.web``, which
        accepted (and screened) it, and resolved the route from the path its
        ``before_request`` hook saw. Call before ``makeConnection``."""
        self.fixed_route = route

    # -- TCP ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """TCP accepted: set Autobahn up, then ask the server's ``on_connect``."""
        self.lifecycle = Lifecycle()
        super().connectionMade()
        self.transport.registerProducer(self, True)
        self._direct = isinstance(self.transport, tcp.Connection)
        hook = self.factory.on_connect
        if hook is None or self.fixed_route is not None:
            # a connection taken over from twisted.web was accepted (and
            # screened by before_request) as an HTTP connection already
            return
        screen_connection(
            hook,
            self.transport.getPeer(),
            log=self._log,
            log_peer=self.peer,
            refuse=self._refuse_tcp,
            drop=self._abort_tcp,
            pause=lambda: self.pause_reading("on_connect"),
            resume=lambda: self.resume_reading("on_connect"),
        )

    def _refuse_tcp(self) -> None:
        self.wasNotCleanReason = "refused by on_connect"
        self._refuse()
        self.dropConnection(abort=False)

    def _abort_tcp(self) -> None:
        self.wasNotCleanReason = "on_connect failed"
        self._refuse()
        self.dropConnection(abort=True)

    def _refuse(self) -> None:
        # ignore anything the peer still sends
        if self.lifecycle.phase in (_AWAITING, Phase.HANDSHAKE):
            self.lifecycle.advance(Event.REFUSE)

    def _connectionMade(self) -> None:
        copy_options(self, self._OPTION_NAMES)
        # Autobahn then leaves client frames masked; onFrameBegin picks the
        # unmasker (RFC 6455 still requires masked client frames: that check
        # is requireMaskedClientFrames, which stays on)
        self.applyMask = False
        super()._connectionMade()

    # -- handshake ---------------------------------------------------------

    def processHandshake(self) -> None:
        """Bound and route the request head, then let Autobahn validate it."""
        if self.lifecycle.phase is not _AWAITING:
            # Autobahn calls this for every read while allow() is pending;
            # the head was consumed already (and reading is paused).
            return
        factory = self.factory
        # a request taken over from twisted.web comes with the route resolved
        # there, from the very path its before_request hook saw: never again
        checked = check_head(
            self.data, factory.config, factory.router, self.fixed_route
        )
        if checked is None:
            return
        self.lifecycle.advance(Event.HEAD_READ)
        if isinstance(checked, Refusal):
            self._log.info(checked.log_format, peer=self.peer, **checked.log_fields)
            self.failHandshake(checked.reason, checked.status)
            return
        self._head = checked.head
        self._apply_route(checked.route)
        if checked.data is self.data and self.lean_handshake(checked.head):
            return  # a plain request: checked on this parse (_handshaking)
        self.data = checked.data
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
        self.settings = route.settings

    def onConnect(self, request: Any) -> Any:
        """Handshake valid: build the Connection, then decide (authenticator,
        ``allow``) with :class:`~wsplugin._decision.HandshakeDecision`.

        While an async ``allow`` (or authenticator) is deciding, reading
        pauses: frames sent early wait in the socket, not in memory.
        """
        route = self.route
        assert route is not None
        conn = self.connection = self._make_connection(request, route)
        self._head = None  # the Request keeps what is needed
        self.dispatch = self.dispatch_type(self, conn, route.events)
        decision = self.decision = HandshakeDecision(
            route, conn, self.dispatch, self.peer
        )
        result = decision.decide()
        if isinstance(result, Deferred) and not result.called:
            self.pause_reading("handshake")
        return result

    def _make_connection(self, request: Any, route: Route) -> Connection:
        cfg = route.config
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
            clock=self.factory.clock,
            max_queue=cfg.max_queue,
            server=self.factory.owner,
            config=cfg,
            conn_id=self.factory.hub.new_connection_id(),
            hub=self.factory.hub,
        )
        conn.subprotocol = next(
            (p for p in request.protocols if p in cfg.subprotocols), None
        )
        return conn

    def succeedHandshake(self, res: Any) -> None:
        """Send the 101, unless the client left while ``allow`` was deciding."""
        if self.state != _WSP.STATE_CONNECTING or self.lifecycle.phase is _ENDED:
            return
        self.resume_reading("handshake")
        if not self.lean_succeed(res):
            super().succeedHandshake(res)

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: Any = None
    ) -> None:
        """Answer the upgrade with an HTTP error and close.

        The status line carries the standard reason phrase (or a ``Reject``'s
        own): Autobahn's detailed reason may quote request bytes, so it goes
        to the log only.
        """
        if self.state != _WSP.STATE_CONNECTING or self.lifecycle.phase is _ENDED:
            return
        decision = self.decision
        headers = list(responseHeaders or [])
        if decision is not None and decision.reject_headers:
            headers += decision.reject_headers
        if code == 426:
            headers.append(("Upgrade", "websocket"))
        elif code == 405:
            headers.append(("Allow", "GET"))
        headers.append(("Content-Length", "0"))
        headers.append(("Connection", "close"))
        if decision is not None and decision.reject_reason is not None:
            phrase = decision.reject_reason
        else:
            try:
                phrase = HTTPStatus(code).phrase
            except ValueError:
                phrase = "Error"
        self.wasNotCleanReason = reason
        self.factory.log_limited(
            "failing handshake from {peer} with {code}: {reason!r}",
            peer=self.peer,
            code=code,
            reason=reason[:200],
        )
        self.sendHttpErrorResponse(code, phrase, headers)
        self.dropConnection(abort=False)
        # over TLS, read nothing more (Twisted's TLS would read until the
        # peer's close_notify); plain TCP already stops reading
        close_without_reading(self.transport)

    # -- open --------------------------------------------------------------

    def onOpen(self) -> None:
        """101 sent: register the connection and fire the open events."""
        conn = self.connection
        assert conn is not None and self.route is not None
        self.lifecycle.advance(Event.OPEN)
        self.opened_at = self.factory.clock.seconds()
        # Autobahn's copies of the request (and of its 101 answer) are for
        # the handshake only (conn.request keeps what the application sees).
        # Dropping them and compacting the instance dict saves about 2 KiB
        # per connection.
        attrs = self.__dict__
        for name in _HANDSHAKE_ONLY:
            attrs.pop(name, None)
        self.__dict__ = dict(attrs)
        conn.request.headers.compact()
        settings = self.settings
        pmc = self._perMessageCompress
        if pmc is None:
            self.frame_key = settings.plain_key
        elif isinstance(pmc, PerMessageDeflate) and pmc.server_no_context_takeover:
            # compressed without context takeover: wsplugin compresses each
            # message itself, and a broadcast shares one frame per key
            self.frame_key = (
                settings.fragment_size,
                (pmc.server_max_window_bits, pmc.mem_level),
            )
        events = self.dispatch.events
        if settings.frame_by_frame:
            conn.queues_messages = "on_fragment" not in events
        else:
            conn.queues_messages = (
                "on_message" not in events and "on_binary" not in events
            )
        self.factory.hub.opened(conn)
        if self.route.config.connection_log:
            log_open(self)
        cfg = self.route.config
        if cfg.heartbeat_interval or cfg.idle_timeout:
            self.keepalive = KeepAlive(self.factory.heartbeats, self, cfg)
        self.dispatch.fire("on_handshake_response_sent")
        if conn.is_open:
            self.dispatch.fire("on_open")
        self.start_fast_path()

    # -- control frames ----------------------------------------------------

    def onPing(self, payload: bytes) -> None:
        """Answer (unless ``manual_pong``), then fire ``on_ping``.

        A ping Autobahn has already failed the connection for (e.g. a payload
        over 125 bytes), or one after the peer's close, is ignored.
        """
        if self.failedByMe or self.lifecycle.phase is not _OPEN:
            return
        if not self.settings.manual_pong:
            self._send_control(OP_PONG, payload)
        self.dispatch.fire("on_ping", payload)

    def onPong(self, payload: bytes) -> None:
        """Fire ``on_pong`` and hand the pong to ``wait_for_message`` (not
        for a pong the connection was failed for)."""
        if self.failedByMe:
            return
        conn = self.connection
        if conn is not None:
            conn.pong_received(payload)
        self.dispatch.fire("on_pong", payload)

    # -- ConnectionEngine (what the Connection facade calls) ---------------

    def connection_state(self) -> ConnectionState:
        """``CONNECTING``, ``OPEN`` or ``CLOSING`` (the facade knows CLOSED)."""
        phase = self.lifecycle.phase
        if phase is _OPEN:
            return ConnectionState.OPEN
        if phase is _AWAITING or phase is Phase.HANDSHAKE:
            return ConnectionState.CONNECTING
        return ConnectionState.CLOSING

    # -- KeepAliveHost and EventHost (what keep-alive and dispatch call) ---

    def keepalive_wanted(self) -> bool:
        """Whether the connection is open and the peer has not closed."""
        return self.lifecycle.phase is _OPEN

    def before_heartbeat(self) -> bool | None:
        """The application's ``before_heartbeat`` (see ``KeepAliveHost``)."""
        return self.dispatch.before_heartbeat()

    def heartbeat_expired(self) -> None:
        """No answer to the heartbeat: close with 1011."""
        if self.state != _WSP.STATE_OPEN:
            return
        self.factory.log_limited(
            "closing {peer}: no answer to the heartbeat in {timeout}s",
            peer=self.peer,
            timeout=self.route.config.heartbeat_timeout if self.route else 0,
        )
        self._close_with(_WSP.CLOSE_STATUS_CODE_INTERNAL_ERROR, "heartbeat timeout")

    def idle_expired(self) -> None:
        """No data message within ``idle_timeout``: close with 1001."""
        self._close_with(_WSP.CLOSE_STATUS_CODE_GOING_AWAY, "idle timeout")

    def fail_connection(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` (as Autobahn does for a
        protocol error: ``on_error`` gets a ProtocolError)."""
        self._fail_connection(code, reason)
