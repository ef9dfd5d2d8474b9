"""The closing side of the server's Autobahn adapter: close frames, failed
connections and the end.

* a close frame from the peer is checked (an invalid one gets a close frame
  back, RFC 6455 7.1.7, where Autobahn would drop TCP), answered (or, with
  ``manual_close``, left for the application), and reported (``on_close``);
* a protocol error is reported to ``on_error`` once, then Autobahn fails the
  connection;
* ``conn.close()`` and ``conn.abort()`` (the
  :class:`~wsplugin._connbase.ConnectionEngine` side);
* the end: timers stop, the connection leaves the registry,
  ``on_disconnect`` fires exactly once, and the facade is finished.

Every close frame sent and every TCP close moves the connection's
:class:`~wsplugin._lifecycle.Lifecycle` (``sendCloseFrame`` and
``dropConnection`` are overridden for that). A mixin of
:class:`~wsplugin.protocol.WebSocketServerProtocol`, kept apart so that the
close path can be read on its own. Autobahn private names used: the
``_fail_connection`` hook (no public one reports protocol errors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.util import encode_truncate
from autobahn.websocket.protocol import WebSocketProtocol as _WSP
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.python.failure import Failure

from wsplugin._connlog import log_close
from wsplugin._frames import OP_CLOSE, encode_frame
from wsplugin._lifecycle import Event, Phase
from wsplugin.connection import CloseMessage
from wsplugin.errors import ProtocolError, WSPluginError

if TYPE_CHECKING:
    from wsplugin._dispatch import Dispatch
    from wsplugin._keepalive import KeepAlive
    from wsplugin._lifecycle import Lifecycle
    from wsplugin._routing import Route, RouteSettings
    from wsplugin.connection import Connection
    from wsplugin.factory import WebSocketServerFactory

__all__ = ["AutobahnClosing", "close_frame_problem"]

_RECEIVABLE_CLOSE_CODES = frozenset(_WSP.CLOSE_STATUS_CODES_ALLOWED)
_OPEN = Phase.OPEN
_PEER_CLOSED = Phase.PEER_CLOSED
_ENDED = Phase.ENDED


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


class AutobahnClosing:
    """Autobahn's close hooks, and the engine's ``close``/``abort``."""

    # set by the protocol (see WebSocketServerProtocol)
    factory: WebSocketServerFactory
    lifecycle: Lifecycle
    settings: RouteSettings
    dispatch: Dispatch
    keepalive: KeepAlive | None
    connection: Connection | None
    route: Route | None
    _manual_close_timer: Any = None
    _linger_call: Any = None
    _end_code: int | None = None
    _end_reason: str | None = None

    # Autobahn's (the protocol this class is mixed into)
    state: int
    peer: str
    current_frame: Any
    failedByMe: bool
    closeHandshakeTimeout: float
    closeHandshakeTimeoutCall: Any
    remoteCloseCode: int | None
    remoteCloseReason: str | None
    localCloseCode: int | None
    localCloseReason: bytes | None
    wasClean: bool
    wasNotCleanReason: str | None
    transport: Any

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
            if self.route is not None and self.route.config.connection_log:
                log_close(self, code, reason or "", wasClean)
            self.factory.hub.closed(conn)
            self.dispatch.fire("on_disconnect", wasClean, code, reason or "")
        conn.finish()

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
