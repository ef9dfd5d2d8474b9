"""The Autobahn server protocol subclass: an adapter, nothing more.

It translates Autobahn's camelCase callbacks into the component events of the
route handler (``allow``, ``on_open``, ``on_message``, ...), applies the
route's options to Autobahn's per-connection settings, and carries out the
component options that Autobahn has no switch for (frame-by-frame delivery,
manual pong, manual close, split messages, skip checks). Framing, masking,
UTF-8 validation, compression and the handshake's validation stay Autobahn's.

Event order for one connection::

    on_connect(peer)            server handler, TCP accepted, before any byte
    allow(conn)                 route handler, handshake valid
    on_handshake_response_sent  101 written
    on_open
    on_message / on_binary / on_fragment / on_ping / on_pong   any number
    on_close(code, reason)      when the peer's close frame arrives
    on_disconnect(was_clean, code, reason)   exactly once, for every opened
                                             connection, however it ended
    on_error(failure)           whenever a handler raises or the peer breaks
                                the protocol
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import (
    WebSocketServerProtocol as _AutobahnServerProtocol,
)
from autobahn.util import encode_truncate
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)
from autobahn.websocket.protocol import WebSocketProtocol as _WSP
from autobahn.websocket.types import ConnectionDeny
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._events import as_deferred
from wsplugin.connection import Connection, ConnectionState, Fragment, Headers, Request
from wsplugin.errors import (
    ConnectionClosed,
    FragmentedSendError,
    HandshakeRejected,
    ProtocolError,
    Reject,
    RouteNotFound,
)
from wsplugin.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_TEXT,
    encode_frame,
    encode_message,
    payload_size_for_frame,
)
from wsplugin.handshake import (
    RequestHead,
    normalize_head,
    origin_allowed,
    parse_request_head,
)

if TYPE_CHECKING:
    from wsplugin.config import ServerConfig
    from wsplugin.factory import WebSocketServerFactory
    from wsplugin.routing import Route

__all__ = ["ROUTE_EVENTS", "WebSocketServerProtocol"]

ROUTE_EVENTS = (
    "allow",
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


class WebSocketServerProtocol(_AutobahnServerProtocol):
    """Autobahn server protocol speaking wsplugin's component events.

    Subclass it only to reach Autobahn directly; applications normally write
    handlers instead.
    """

    factory: WebSocketServerFactory
    _log = Logger()

    connection: Connection | None = None
    route: Route | None = None
    _head: RequestHead | None = None
    _handshake_started = False
    _opened = False
    _ended = False
    _peer_closed = False
    _manual_close_timer: Any = None
    _fragmenting = False
    _fragment_size = 0
    _frame_by_frame = False
    _manual_pong = False
    _manual_close = False
    _last_fragment = b""
    _reject_headers: list[tuple[str, str]] | None = None
    _events: dict[str, Any]

    # -- TCP ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """TCP accepted: set Autobahn up, then ask the server's ``on_connect``."""
        self._events = {}
        super().connectionMade()
        hook = self.factory._on_connect
        if hook is None:
            return
        try:
            result = hook(self.transport.getPeer())
        except Exception:
            self._log.failure("on_connect raised; dropping {peer}", peer=self.peer)
            self.transport.abortConnection()
            return
        if isinstance(result, bool) or result is None:
            if result is False:
                self._refuse_tcp()
            return
        d = as_deferred(result)
        if not d.called:
            self.transport.pauseProducing()
        d.addCallbacks(self._on_connect_decided, self._on_connect_failed)

    def _on_connect_decided(self, allowed: Any) -> None:
        if allowed is False:
            self._refuse_tcp()
        elif self.state != _WSP.STATE_CLOSED:
            self.transport.resumeProducing()

    def _on_connect_failed(self, failure: Failure) -> None:
        self._log.failure("on_connect failed; dropping {peer}", failure, peer=self.peer)
        self.transport.abortConnection()

    def _refuse_tcp(self) -> None:
        self._log.info("on_connect refused {peer}", peer=self.peer)
        self.wasNotCleanReason = "refused by on_connect"
        self.transport.loseConnection()

    # -- handshake ---------------------------------------------------------

    def processHandshake(self) -> None:
        """Bound and route the request head, then let Autobahn validate it."""
        if self._handshake_started:
            # Autobahn calls this for every read while allow() is pending;
            # the head was consumed already, the rest is frame data.
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
                "rejecting handshake from {peer}: {status} {reason}",
                peer=self.peer,
                status=e.status,
                reason=e.reason,
            )
            self.failHandshake(e.reason, e.status)
            return
        if head is None:
            return
        self._head = head
        self._handshake_started = True
        route = factory.router.resolve(head.get("host") or "", head.path)
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
        if origin is not None and not origin_allowed(origin, cfg.allowed_origins):
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
        self.maxMessagePayloadSize = cfg.max_message_size
        self.maxFramePayloadSize = cfg.max_frame_size
        self.utf8validateIncoming = cfg.utf8_validation
        self.closeHandshakeTimeout = cfg.close_handshake_timeout
        self.autoPingInterval = cfg.heartbeat_interval
        self.autoPingTimeout = cfg.heartbeat_timeout
        self.perMessageCompressionAccept = (
            _accept_deflate if cfg.compression else _accept_nothing
        )
        self._frame_by_frame = cfg.frame_by_frame
        self._manual_pong = cfg.manual_pong
        self._manual_close = cfg.manual_close
        self._fragment_size = (
            payload_size_for_frame(cfg.frame_size) if cfg.split_message else 0
        )
        self._events = self.factory._route_events(route)

    def onConnect(self, request: Any) -> Any:
        """Handshake valid: build the Connection and ask the route's ``allow``."""
        assert self.route is not None and self._head is not None
        cfg = self.route.config
        head = self._head
        forwarded = request.peer if self.trustXForwardedFor else None
        conn = Connection(
            self,
            Request(
                path=request.path,
                params=request.params,
                headers=Headers(head.headers),
                host=request.host.lower(),
                origin=request.origin or "",
                protocols=tuple(request.protocols),
                peer=self.transport.getPeer(),
                target=head.target,
                forwarded_for=forwarded,
            ),
            max_queue=cfg.max_queue,
            server=self.factory.owner,
            config=cfg,
        )
        self.connection = conn
        conn.protocol = next(
            (p for p in request.protocols if p in cfg.subprotocols), None
        )
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
            if any(c in name + value for c in "\r\n"):
                raise ValueError(f"response header {name!r} contains a line break")
            headers.setdefault(name, []).append(value)
        return (conn.protocol, headers)

    def _allow_failed(self, failure: Failure, conn: Connection) -> None:
        if failure.check(HandshakeRejected):
            rejected: HandshakeRejected = failure.value  # type: ignore[assignment]
            self._log.info(
                "allow() rejected {peer} on {path}: {status} {reason}",
                peer=self.peer,
                path=conn.request.path,
                status=rejected.status,
                reason=rejected.reason,
            )
            self._reject_headers = rejected.headers
            raise ConnectionDeny(rejected.status, rejected.reason)
        self._report_error(failure, "allow() raised")
        raise ConnectionDeny(500, "Internal Server Error")

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: Any = None
    ) -> None:
        """Answer the upgrade with an HTTP error (adds headers from ``Reject``)."""
        headers = list(responseHeaders or []) + (self._reject_headers or [])
        if code == 426:
            headers.append(("Upgrade", "websocket"))
        headers.append(("Content-Length", "0"))
        headers.append(("Connection", "close"))
        super().failHandshake(reason, code, headers)

    # -- open --------------------------------------------------------------

    def onOpen(self) -> None:
        """101 sent: register the connection and fire the open events."""
        conn = self.connection
        assert conn is not None
        self._opened = True
        conn._set_state(ConnectionState.OPEN)
        self.factory._register(conn)
        self._fire("on_handshake_response_sent")
        if conn.is_open:
            self._fire("on_open")

    # -- messages ----------------------------------------------------------

    def onMessageFrameEnd(self) -> None:
        """Frame-by-frame mode hands every non-final frame out as it ends."""
        if not self._frame_by_frame:
            super().onMessageFrameEnd()
            return
        data = b"".join(self.frame_data)
        self.frame_data = None
        if self.failedByMe:
            return
        if self.current_frame.fin:
            # The final frame waits for onMessageEnd: Autobahn checks there
            # that the UTF-8 text did not stop inside a code point.
            self._last_fragment = data
        else:
            self._deliver_fragment(data, False)

    def onMessageEnd(self) -> None:
        """A whole message (or, frame by frame, the final frame) arrived."""
        if not self.failedByMe:
            if self._frame_by_frame:
                data, self._last_fragment = self._last_fragment, b""
                self._deliver_fragment(data, True)
            else:
                self._deliver_message(
                    b"".join(self.message_data), self.message_is_binary
                )
        self.message_data = None

    def _deliver_message(self, payload: bytes, is_binary: bool) -> None:
        conn = self.connection
        if conn is None or self._peer_closed:
            return
        if is_binary:
            handler = self._events.get("on_binary")
            message: str | bytes = payload
        else:
            handler = self._events.get("on_message")
            message = payload.decode("utf-8", "replace")
        if handler is None:
            conn._enqueue(message)
        else:
            self._call(handler, conn, message)

    def _deliver_fragment(self, data: bytes, fin: bool) -> None:
        conn = self.connection
        if conn is None or self._peer_closed:
            return
        handler = self._events.get("on_fragment")
        if handler is None:
            conn._enqueue(Fragment(data, self.message_is_binary, fin))
        else:
            self._call(handler, conn, data, self.message_is_binary, fin)

    # -- control frames ----------------------------------------------------

    def onPing(self, payload: bytes) -> None:
        """Answer (unless ``manual_pong``), then fire ``on_ping``.

        A ping Autobahn has already failed the connection for (e.g. a payload
        over 125 bytes) is neither answered nor handed to the application.
        """
        if self.failedByMe or self.state != _WSP.STATE_OPEN:
            return
        if not self._manual_pong:
            self.sendPong(payload)
        self._fire("on_ping", payload)

    def onPong(self, payload: bytes) -> None:
        """Fire ``on_pong`` (not for a pong the connection was failed for)."""
        if self.failedByMe:
            return
        self._fire("on_pong", payload)

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> Any:
        """A close frame arrived: reply (unless ``manual_close``), fire ``on_close``."""
        if not (self._manual_close and self.state == _WSP.STATE_OPEN):
            opened = self.state == _WSP.STATE_OPEN
            stop = super().onCloseFrame(code, reasonRaw)
            if opened and not self.failedByMe:
                self._fire("on_close", code, self.remoteCloseReason or "")
            return stop
        problem = close_frame_problem(code, reasonRaw)
        if problem is not None:
            self._fail_connection(*problem)
            return False
        self.remoteCloseCode = code
        self.remoteCloseReason = reasonRaw.decode("utf-8") if reasonRaw else None
        self._peer_closed = True
        timeout = self.closeHandshakeTimeout
        if timeout > 0:
            self._manual_close_timer = self.factory.clock.callLater(
                timeout, self._manual_close_expired
            )
        self._fire("on_close", code, self.remoteCloseReason or "")
        return False

    def _manual_close_expired(self) -> None:
        self._manual_close_timer = None
        if self.state != _WSP.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "the application did not answer the close frame"
            self.dropConnection(abort=True)

    # -- errors ------------------------------------------------------------

    def _fail_connection(
        self,
        code: int = _WSP.CLOSE_STATUS_CODE_GOING_AWAY,
        reason: str = "going away",
    ) -> None:
        """Autobahn fails the connection: tell ``on_error`` once, then close."""
        if self.state != _WSP.STATE_CLOSED and not self.failedByMe and self._opened:
            self._report_error(Failure(ProtocolError(code, reason)), None)
        super()._fail_connection(code, reason)

    def _call(self, handler: Any, *args: Any) -> None:
        try:
            result = handler(*args)
        except Exception:
            self._handler_failed(Failure())
            return
        if result is not None and not isinstance(result, bool):
            as_deferred(result).addErrback(self._handler_failed)

    def _fire(self, name: str, *args: Any) -> None:
        handler = self._events.get(name)
        if handler is not None:
            self._call(handler, self.connection, *args)

    def _handler_failed(self, failure: Failure) -> None:
        self._report_error(failure, "an event handler raised")
        if self.state == _WSP.STATE_OPEN and not self._peer_closed:
            self.sendCloseFrame(
                _WSP.CLOSE_STATUS_CODE_INTERNAL_ERROR, b"internal error"
            )
        elif self._peer_closed and self.state != _WSP.STATE_CLOSED:
            self._ws_close(_WSP.CLOSE_STATUS_CODE_INTERNAL_ERROR, "internal error")

    def _report_error(self, failure: Failure, what: str | None) -> None:
        if what is not None:
            self._log.failure(
                "{what} on connection from {peer}", failure, what=what, peer=self.peer
            )
        else:
            self._log.info(
                "failing connection from {peer}: {error}",
                peer=self.peer,
                error=failure.getErrorMessage(),
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
        """The connection is gone: ``on_disconnect`` fires, exactly once."""
        if self._ended:
            return
        self._ended = True
        if self._manual_close_timer is not None and self._manual_close_timer.active():
            self._manual_close_timer.cancel()
        conn = self.connection
        if conn is None or not self._opened:
            if conn is not None:
                conn._ended(code, reason or "")
            return
        if code is None and wasClean:
            code = _WSP.CLOSE_STATUS_CODE_NULL
        self.factory._unregister(conn)
        conn._ended(code, reason or "")
        self._fire("on_disconnect", wasClean, code, reason or "")

    # -- used by Connection ------------------------------------------------

    def _check_can_send(self) -> None:
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
        if self._perMessageCompress is None:
            self.sendData(encode_message(payload, is_binary, self._fragment_size))
            return
        # Autobahn applies the *incoming* message limit to outgoing messages
        # too; a server may send what it likes, so lift it for this call.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(
                payload, is_binary, fragmentSize=self._fragment_size or None
            )
        finally:
            self.maxMessagePayloadSize = limit

    def _ws_send_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        self._check_can_send()
        if self._fragmenting:
            opcode = OP_CONTINUATION
        else:
            opcode = OP_BINARY if is_binary else OP_TEXT
        self.sendData(encode_frame(opcode, payload, fin))
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
        reason_utf8 = encode_truncate(reason, 123) if reason else None
        if self.state == _WSP.STATE_CONNECTING:
            raise ConnectionClosed(None, "the handshake has not completed; use Reject")
        if self.state != _WSP.STATE_OPEN:
            return
        if not self._peer_closed:
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
        if self.state != _WSP.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "aborted by the application"
            self.dropConnection(abort=True)

    def _ws_pause_reading(self) -> None:
        if self.state != _WSP.STATE_CLOSED:
            self.transport.pauseProducing()

    def _ws_resume_reading(self) -> None:
        if self.state != _WSP.STATE_CLOSED:
            self.transport.resumeProducing()

    def sendCloseFrame(
        self,
        code: int | None = None,
        reasonUtf8: bytes | None = None,
        isReply: bool = False,
    ) -> None:
        """Send a close frame and keep the facade's state in step."""
        super().sendCloseFrame(code, reasonUtf8, isReply)
        if self.connection is not None and self.state == _WSP.STATE_CLOSING:
            self.connection._set_state(ConnectionState.CLOSING)
