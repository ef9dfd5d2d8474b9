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
:class:`AutobahnReceiving`                frames in, messages out (Autobahn's
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

Autobahn private names used here, each because Autobahn offers no public
hook for it: ``_connectionMade`` (copy options without logging them),
``_fail_connection`` (report protocol errors to ``on_error``),
``_closeConnection`` (flush the batch, bound a graceful close),
``_perMessageCompress`` (whether this connection compresses, and how), the
factory's ``_batched_timer`` (its timers on our reactor, see
``wsplugin.factory``); the receive side's are in :mod:`wsplugin._receiving`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import txaio
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
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wsplugin._autobahn import copy_options
from wsplugin._batching import BATCH_LIMIT, send_now
from wsplugin._connbase import ConnectionState
from wsplugin._decision import HandshakeDecision, Refusal, check_head, screen_connection
from wsplugin._dispatch import Dispatch
from wsplugin._events import ROUTE_EVENTS
from wsplugin._frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    encode_frame,
    encode_message,
)
from wsplugin._keepalive import KeepAlive
from wsplugin._lifecycle import Event, Lifecycle, Phase
from wsplugin._receiving import AutobahnReceiving
from wsplugin._request import Headers, Request, forwarded_address
from wsplugin._routing import DEFAULT_SETTINGS, RouteSettings
from wsplugin._sendqueue import Admission, SendQueue, admission
from wsplugin._transport import transport_buffered, writes_now
from wsplugin.connection import CloseMessage, Connection
from wsplugin.errors import (
    ConnectionClosed,
    FragmentedSendError,
    ProtocolError,
    WSPluginError,
)
from wsplugin.tls import peer_certificate

if TYPE_CHECKING:
    from wsplugin._fanout import FrameKey
    from wsplugin._routing import Route
    from wsplugin.config import ServerConfig
    from wsplugin.factory import WebSocketServerFactory

__all__ = [
    "ROUTE_EVENTS",
    "WebSocketServerProtocol",
    "close_frame_problem",
    "copy_options",
]

_RECEIVABLE_CLOSE_CODES = frozenset(_WSP.CLOSE_STATUS_CODES_ALLOWED)
_OPEN = Phase.OPEN
_PEER_CLOSED = Phase.PEER_CLOSED
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
)
"""Attributes only the opening handshake uses; dropped once it is done
(``send_queue`` and ``triggered`` are Autobahn's, for chopped sends)."""


@implementer(IPushProducer)
class WebSocketServerProtocol(AutobahnReceiving, _AutobahnServerProtocol):
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
    outbox: SendQueue | None = None
    frame_key: FrameKey | None = None
    fixed_route: Route | None = None
    decision: HandshakeDecision | None = None
    _head: Any = None
    _manual_close_timer: Any = None
    _linger_call: Any = None
    _end_code: int | None = None
    _end_reason: str | None = None
    _read_pauses: set[str] | None = None
    # writes of this reactor turn, sent with one send() at its end (plain
    # TCP only; see sendData)
    _batch: list[bytes] | None = None
    _batch_size = 0
    _direct = False

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
        self.dispatch = Dispatch(self, conn, route.events)
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

    # -- open --------------------------------------------------------------

    def onOpen(self) -> None:
        """101 sent: register the connection and fire the open events."""
        conn = self.connection
        assert conn is not None and self.route is not None
        self.lifecycle.advance(Event.OPEN)
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
        self.factory.registry.add(conn)
        cfg = self.route.config
        if cfg.heartbeat_interval or cfg.idle_timeout:
            self.keepalive = KeepAlive(self.factory.clock, self, cfg)
        self.dispatch.fire("on_handshake_response_sent")
        if conn.is_open:
            self.dispatch.fire("on_open")

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

    # -- closing -----------------------------------------------------------

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
        if self.lifecycle.phase is _PEER_CLOSED:
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
            if not self.settings.manual_close:
                stop = super().onCloseFrame(code, reasonRaw)  # answers, closes
                if self.lifecycle.opened:
                    self.dispatch.fire(
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
                self.factory.log_limited(
                    "closing {peer}: {reason} in answer to our close",
                    peer=self.peer,
                    reason=problem[1],
                )
            opened = self.lifecycle.opened
            self._end_after_peer_close(clean=problem is None)
            if problem is None and not self.failedByMe and opened:
                self.dispatch.fire(
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
        self.lifecycle.advance(Event.PEER_CLOSE)
        self.dispatch.stop()
        timeout = self.closeHandshakeTimeout
        if timeout > 0:
            self._manual_close_timer = self.factory.clock.callLater(
                timeout, self._manual_close_expired
            )
        reason = self.remoteCloseReason or ""
        conn = self.connection
        if conn is not None and conn.queues_messages:
            conn.enqueue(CloseMessage(self._code_or_none(code), reason))
        self.dispatch.fire("on_close", self._code_or_none(code), reason)
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

    def _close_with(self, code: int, reason: str) -> None:
        """Close from our side, remembering why for ``on_disconnect``."""
        self._end_code, self._end_reason = code, reason
        self.sendCloseFrame(code, reason.encode("utf-8"), isReply=False)

    def sendCloseFrame(
        self,
        code: int | None = None,
        reasonUtf8: bytes | None = None,
        isReply: bool = False,
    ) -> None:
        """Autobahn's close frame; an open connection is closing from here."""
        if self.lifecycle.phase is _OPEN and self.state == _WSP.STATE_OPEN:
            self.lifecycle.advance(Event.CLOSE)
        super().sendCloseFrame(code, reasonUtf8, isReply)

    def dropConnection(self, abort: bool = False) -> None:
        """Autobahn closes the TCP connection: the connection is closing (or,
        before it opened, refused) from here."""
        if self.lifecycle.phase is not _ENDED:
            self.lifecycle.advance(Event.CLOSE)
        super().dropConnection(abort)

    # -- errors ------------------------------------------------------------

    def _fail_connection(
        self,
        code: int = _WSP.CLOSE_STATUS_CODE_GOING_AWAY,
        reason: str = "going away",
    ) -> None:
        """Autobahn fails the connection: tell ``on_error`` once, then close."""
        if (
            self.state != _WSP.STATE_CLOSED
            and not self.failedByMe
            and self.lifecycle.opened
        ):
            self.factory.log_limited(
                "failing connection from {peer} with {code}: {reason}",
                peer=self.peer,
                code=code,
                reason=reason,
            )
            self._end_code, self._end_reason = code, reason
            self.dispatch.report(Failure(ProtocolError(code, reason)), None)
        self._msg = None  # a failed message is never delivered: free it now
        super()._fail_connection(code, reason)

    # -- end ---------------------------------------------------------------

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """The connection is gone: timers stop, ``on_disconnect`` fires once."""
        life = self.lifecycle
        if life.phase is _ENDED:
            return
        opened = life.opened
        life.advance(Event.END)
        self._batch = None
        for name in (
            "_manual_close_timer",
            "_linger_call",
            "closeHandshakeTimeoutCall",
        ):
            call = getattr(self, name, None)
            if call is not None:
                if call.active():
                    call.cancel()
                setattr(self, name, None)
        if self.keepalive is not None:
            self.keepalive.stop()
        self._drop_queue()
        conn = self.connection
        if conn is None:
            return
        self.dispatch.stop()
        if self._end_code is not None and (
            self.failedByMe or (not wasClean and self.remoteCloseCode is None)
        ):
            # we ended it (a protocol error, or a close that was never
            # answered): our code says why, not the peer's polite 1000
            code, reason = self._end_code, self._end_reason
        elif code is None and wasClean:
            code = _WSP.CLOSE_STATUS_CODE_NULL
        conn.mark_closed(code, reason or "")
        if opened:
            self.factory.registry.remove(conn)
            self.dispatch.fire("on_disconnect", wasClean, code, reason or "")
        conn.finish()

    # -- the outgoing side (IPushProducer for the transport) -----------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: queue further writes here."""
        self._outbox().pause()

    def resumeProducing(self) -> None:
        """The transport drained: write what is queued."""
        self._outbox().resume()

    def stopProducing(self) -> None:
        """The transport is gone: free the queue."""
        self._outbox().pause()
        self._drop_queue()

    def _outbox(self) -> SendQueue:
        queue = self.outbox
        if queue is None:
            queue = self.outbox = SendQueue(self.transport.write, self._outbox_empty)
        return queue

    def _outbox_empty(self) -> None:
        self.resume_reading("send buffer")
        queue = self.outbox
        if queue is not None and queue.closing:
            queue.closing = False
            self.transport.unregisterProducer()

    def sendData(
        self, data: bytes, sync: bool = False, chopsize: int | None = None
    ) -> None:
        """Write to the transport, or queue while it is full.

        On a plain TCP connection whose transport holds nothing, the writes
        of one reactor turn are collected and sent with a single ``send()``
        at its end (:mod:`wsplugin._batching`); past
        :data:`~wsplugin._batching.BATCH_LIMIT` bytes the collected writes go
        out at once and the transport's flow control applies as usual.
        """
        batch = self._batch
        if batch is not None:
            if self._batch_size + len(data) <= BATCH_LIMIT:
                batch.append(data)
                self._batch_size += len(data)
                return
            self.flush_batch()
        queue = self.outbox
        if queue is None or not (queue.paused or queue.queuing):
            transport = self.transport
            if (
                self._direct
                and len(data) <= BATCH_LIMIT
                and not transport.TLS
                and writes_now(transport)
            ):
                self._batch = [data]
                self._batch_size = len(data)
                self.factory.batcher.add(self)
                return
            transport.write(data)
            return
        queue.push(data)

    @property
    def pending_writes(self) -> int:
        """Bytes written this reactor turn and waiting for its end (the
        batcher's), 0 when none."""
        return self._batch_size if self._batch is not None else 0

    def flush_batch(self) -> None:
        """Send the writes collected this turn (the batcher calls this at the
        turn's end): as much as the socket takes now, the rest through the
        transport (which then owns ordering)."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        transport = self.transport
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        send_now(transport, data, writes_now(transport))

    def _send_control(self, opcode: int, payload: bytes) -> None:
        """A ping or pong: ahead of queued data, so keep-alive is not starved."""
        frame = encode_frame(opcode, payload)
        queue = self.outbox
        if queue is None or not (queue.paused or queue.queuing):
            self.sendData(frame)
        else:
            queue.push_control(frame)

    def _drop_queue(self) -> None:
        queue = self.outbox
        if queue is not None:
            conn = self.connection
            queue.clear(
                ConnectionClosed(
                    conn.close_code if conn else None, conn.close_reason if conn else ""
                )
            )

    def unregisterProducer(self) -> None:
        """Autobahn unregisters when it closes; wait until the queue is out."""
        queue = self.outbox
        if queue is not None and queue.queuing and queue.queued:
            queue.closing = True
        else:
            self.transport.unregisterProducer()

    def _closeConnection(self, abort: bool = False) -> None:
        if abort:
            self._batch = None
            self._drop_queue()
        else:
            self.flush_batch()  # before the transport starts closing
        if not abort and self._linger_call is None:
            # A graceful close waits for queued data to reach the peer; one
            # that never reads is aborted after the close-handshake timeout.
            self._linger_call = self.factory.clock.callLater(
                max(self.closeHandshakeTimeout, 1.0), self._linger_expired
            )
        super()._closeConnection(abort)

    def _linger_expired(self) -> None:
        self._linger_call = None
        if self.lifecycle.phase is not _ENDED:
            self._drop_queue()
            self.transport.abortConnection()

    def _admit(self, queue: SendQueue) -> bool:
        """Whether one more data message may be queued (the send-buffer
        policy of :func:`~wsplugin._sendqueue.admission`)."""
        settings = self.settings
        verdict = admission(queue.queued, settings.send_limit, settings.send_policy)
        if verdict is Admission.SEND:
            return True
        if verdict is Admission.DROP:
            if self.connection is not None:
                self.connection.dropped_messages += 1
            return False
        if verdict is Admission.WAIT:
            self.pause_reading("send buffer")
            return True
        self.factory.log_limited(
            "closing {peer}: {queued} bytes queued, over max_send_buffer {limit}",
            peer=self.peer,
            queued=queue.queued,
            limit=settings.send_limit,
        )
        queue.drop_data()
        self._close_with(
            _WSP.CLOSE_STATUS_CODE_POLICY_VIOLATION, "send buffer overflow"
        )
        return False

    # -- reading pauses ------------------------------------------------------

    def pause_reading(self, reason: str = "receive queue") -> None:
        """Stop reading from the socket for ``reason`` (the receive queue is
        full, an async handler or ``allow`` is pending, the send buffer is
        over its limit with the "wait" policy...)."""
        if self._read_pauses is None:
            self._read_pauses = set()
        if not self._read_pauses and self.lifecycle.phase is not _ENDED:
            self.transport.pauseProducing()
        self._read_pauses.add(reason)

    def resume_reading(self, reason: str = "receive queue") -> None:
        """``reason`` to pause is gone: read again once none is left."""
        pauses = self._read_pauses
        if not pauses or reason not in pauses:
            return
        pauses.discard(reason)
        if (
            not pauses
            and self.lifecycle.phase is not _ENDED
            and self.state != _WSP.STATE_CLOSED
        ):
            self.transport.resumeProducing()

    # -- ConnectionEngine (what the Connection facade calls) ---------------

    def connection_state(self) -> ConnectionState:
        """``CONNECTING``, ``OPEN`` or ``CLOSING`` (the facade knows CLOSED)."""
        phase = self.lifecycle.phase
        if phase is _OPEN:
            return ConnectionState.OPEN
        if phase is _AWAITING or phase is Phase.HANDSHAKE:
            return ConnectionState.CONNECTING
        return ConnectionState.CLOSING

    def _not_open(self) -> Exception:
        if self.lifecycle.phase in (_AWAITING, Phase.HANDSHAKE):
            return WSPluginError(
                "the connection is not open yet: send from on_open or later "
                "(allow() and on_connect() run before the handshake completes)"
            )
        conn = self.connection
        return ConnectionClosed(
            conn.close_code if conn else None, conn.close_reason if conn else ""
        )

    def send_message(self, payload: bytes, is_binary: bool) -> None:
        """Send a whole data message (see ``ConnectionEngine``)."""
        if self.lifecycle.phase is not _OPEN:
            raise self._not_open()
        queue = self.outbox
        if queue is not None:
            if queue.fragmenting:
                raise FragmentedSendError(
                    "finish the message started with send_frame() (fin=True) first"
                )
            if queue.queued and not self._admit(queue):
                return
        self._send_own(payload, is_binary)

    def _send_own(self, payload: bytes, is_binary: bool) -> None:
        key = self.frame_key
        if key is None:
            # Autobahn compresses, with its context: it applies the
            # *incoming* message limit to outgoing messages too; a server may
            # send what it likes, so lift it for this call.
            limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
            try:
                self.sendMessage(
                    payload, is_binary, fragmentSize=self.settings.fragment_size or None
                )
            finally:
                self.maxMessagePayloadSize = limit
        elif key[0] or key[1] is not None:
            self.sendData(encode_message(payload, is_binary, key[0], key[1]))
        else:
            self.sendData(encode_frame(OP_BINARY if is_binary else OP_TEXT, payload))

    def send_data_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        """Send one data frame (see ``ConnectionEngine``); prepared frames of
        a broadcast wait until its message is finished."""
        queue = self.outbox
        fragmenting = queue is not None and queue.fragmenting
        if not (fragmenting and self.lifecycle.phase is _PEER_CLOSED):
            # after the peer's close (manual_close) only the message already
            # under way may be finished (RFC 6455 5.5.1)
            if self.lifecycle.phase is not _OPEN:
                raise self._not_open()
        if fragmenting:
            opcode = OP_CONTINUATION
        else:
            opcode = OP_BINARY if is_binary else OP_TEXT
        self.sendData(encode_frame(opcode, payload, fin))
        if not fin:
            self._outbox().fragmenting = True
        elif queue is not None and fragmenting:
            for data in queue.finish_message():
                self.sendData(data)

    def send_ping(self, payload: bytes) -> None:
        """Send a ping (at most 125 bytes) ahead of queued data."""
        if self.lifecycle.phase is not _OPEN:
            raise self._not_open()
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        self._send_control(OP_PING, payload)

    def send_pong(self, payload: bytes) -> None:
        """Send a pong (at most 125 bytes), while the WebSocket is open."""
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        if self.state == _WSP.STATE_OPEN:
            self._send_control(OP_PONG, payload)

    def close_connection(self, code: int | None, reason: str) -> None:
        """Start the closing handshake, or (``manual_close``) answer the
        peer's close frame and close the TCP connection."""
        if self.state == _WSP.STATE_CONNECTING:
            raise WSPluginError(
                "the handshake has not completed: refuse it from allow() with Reject"
            )
        if self.state != _WSP.STATE_OPEN:
            return
        reason_utf8 = encode_truncate(reason, 123) if reason else None
        if self.lifecycle.phase is not _PEER_CLOSED:
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

    def abort_connection(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        if self.lifecycle.phase is _ENDED:
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

    def buffered_amount(self) -> int:
        """Bytes of data frames queued here (not yet given to the transport)."""
        queue = self.outbox
        return queue.queued if queue is not None else 0

    def drain(self) -> Deferred[None]:
        """Fires once nothing is queued here."""
        queue = self.outbox
        if queue is None:
            return succeed(None)
        ended = None
        if self.lifecycle.phase is _ENDED:
            conn = self.connection
            ended = ConnectionClosed(conn.close_code if conn else None)
        return queue.drain(ended)

    # -- FanoutTarget (what the server's fan-out calls) --------------------

    def offer_prepared(self, data: bytes) -> bool:
        """A broadcast's ready-made frames: sent now, after the message this
        connection is in the middle of (``send_frame``), or not at all (not
        open, or refused by the send-buffer policy)."""
        if self.lifecycle.phase is not _OPEN:
            return False
        queue = self.outbox
        if queue is not None:
            if queue.queued and not self._admit(queue):
                return False
            if queue.fragmenting:
                queue.hold(data)
                return True
        self.sendData(data)
        return True

    def offer_message(self, payload: bytes, is_binary: bool) -> bool:
        """A broadcast's message, compressed with this connection's own
        context (or, behind a ``send_frame`` message, held uncompressed)."""
        if self.lifecycle.phase is not _OPEN:
            return False
        queue = self.outbox
        if queue is not None:
            if queue.queued and not self._admit(queue):
                return False
            if queue.fragmenting:
                size = self.settings.fragment_size
                queue.hold(encode_message(payload, is_binary, size))
                return True
        self._send_own(payload, is_binary)
        return True

    def held_bytes(self) -> int:
        """Outgoing bytes held for this connection: queued here, and not yet
        written by the transport."""
        return self.buffered_amount() + transport_buffered(self.transport)

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

    def close_after_error(self) -> None:
        """A handler failed: close with 1011 (or, after the peer's close under
        ``manual_close``, answer it with 1011)."""
        phase = self.lifecycle.phase
        if phase is _OPEN:
            self._close_with(_WSP.CLOSE_STATUS_CODE_INTERNAL_ERROR, "internal error")
        elif phase is _PEER_CLOSED and self.state != _WSP.STATE_CLOSED:
            self.close_connection(
                _WSP.CLOSE_STATUS_CODE_INTERNAL_ERROR, "internal error"
            )
