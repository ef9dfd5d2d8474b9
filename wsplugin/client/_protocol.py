"""The Autobahn adapter of the client: :class:`WebSocketClientProtocol` and
:class:`WebSocketClientFactory`.

As on the server side, these subclasses are adapters only: Autobahn frames,
masks, validates UTF-8, compresses and checks the server's 101. The protocol
reads the response head itself (so a refusal's status, headers and body reach
:class:`~wsplugin.errors.HandshakeFailed`), builds the
:class:`ClientConnection` on a valid 101, feeds received messages to its
:class:`Inbox`, and implements the methods the
:class:`~wsplugin.connection.Connection` facade sends through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from twisted.internet import error as _neterr
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wsplugin._autobahn import ReactorTimer, copy_options
from wsplugin._connbase import ConnectionState
from wsplugin._frames import OP_BINARY, OP_CONTINUATION, OP_TEXT
from wsplugin._request import Headers, Request
from wsplugin._transport import transport_buffered
from wsplugin.client._config import ClientConfig
from wsplugin.client._connection import ClientConnection, Inbox, Message
from wsplugin.client._http import (
    MAX_RESPONSE_HEAD,
    Response,
    ResponseHead,
    body_progress,
    parse_response_head,
)
from wsplugin.client._tls import tls_reason
from wsplugin.client._url import URL, netloc, parse_url
from wsplugin.errors import (
    ClientError,
    ConnectionClosed,
    FragmentedSendError,
    HandshakeFailed,
    TLSFailed,
)

__all__ = ["WebSocketClientFactory", "WebSocketClientProtocol"]

LostListener = Callable[[ClientConnection, Failure], None]
"""Called with a connection and why it ended (see ``add_lost_listener``)."""


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

    Attributes:
        opened: Fires with the open :class:`ClientConnection`.
        connection: That connection, once the server's 101 was valid.
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
        self._inbox: Inbox | None = None
        self._write_paused = False
        self._drain_waiters: list[Deferred[None]] = []
        self._reading_paused = False
        self._fragmenting = False
        self._lost_listeners: list[LostListener] = []

    def add_lost_listener(self, listener: LostListener) -> None:
        """Call ``listener(connection, reason)`` when the open connection ends.

        It runs once the connection's state is ``closed`` and before pending
        ``receive()`` calls fail, so a :class:`ReconnectingClient` forgets the
        connection before a receive loop that asks it for the next one wakes
        up. ``reason`` is a ``ConnectionDone`` or ``ConnectionLost`` Failure.
        """
        self._lost_listeners.append(listener)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake (an
        open timeout, a cancelled connect, ``ClientConnection.abort()``)."""
        if self.state != _WSP.STATE_CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = "aborted by the application"
            self.dropConnection(abort=True)

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
            self._fail_open(self._no_http_answer(str(e)))
            return
        if head is None:
            if len(self.data) > MAX_RESPONSE_HEAD:
                self._fail_open(
                    self._no_http_answer(
                        f"response head over {MAX_RESPONSE_HEAD} bytes"
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

    def _no_http_answer(self, detail: str) -> HandshakeFailed:
        return HandshakeFailed(self.factory.url, None, "", Headers(), detail=detail)

    def _read_error_body(self, closed: bool) -> None:
        head = self._error_head
        assert head is not None
        body, complete = body_progress(
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
        config = factory.config
        assert self._response is not None
        url = factory.target
        sent = getattr(self, "http_request_data", b"")
        request = Request(
            path=url.path,
            params=url.params,
            headers=Headers(_parse_request_pairs(sent)),
            host=url.host.lower(),
            origin=config.request_headers()[1] or "",
            protocols=tuple(config.subprotocols),
            peer=self.transport.getPeer(),
            target=url.resource,
        )
        self._inbox = Inbox(
            factory.clock,
            max_queue=config.max_queue,
            max_pongs=config.max_pongs,
            pause_reading=self.pause_reading,
            resume_reading=self.resume_reading,
        )
        conn = ClientConnection(
            self,
            request,
            url=url,
            response=self._response,
            options=config,
            inbox=self._inbox,
        )
        conn.subprotocol = response.protocol
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
        inbox = self._inbox
        if inbox is None or self.state == _WSP.STATE_CLOSED:
            return
        if isBinary:
            inbox.deliver(Message("binary", payload))
        else:
            inbox.deliver(Message("text", payload.decode("utf-8", "replace")))

    def onPong(self, payload: bytes) -> None:
        """A pong: queue it for ``wait_for_message``."""
        inbox = self._inbox
        if inbox is not None and not self.failedByMe:
            inbox.deliver(Message("pong", payload))

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
        assert conn is not None and self._inbox is not None
        if self.failedByMe and self.localCloseCode is not None:
            # the server broke the protocol (1002, 1007, 1009...): that is
            # why the connection ended, whatever the server answered
            code = self.localCloseCode
            local = self.localCloseReason
            reason = local.decode("utf-8", "replace") if local else ""
        elif code is None and wasClean:
            code = _WSP.CLOSE_STATUS_CODE_NULL
        conn.mark_closed(code, reason or "")
        # a ReconnectingClient learns of the loss before receive loops wake
        # up, so one that asks for the next connection gets a new one
        reason_failure = Failure(
            _neterr.ConnectionDone() if wasClean else _neterr.ConnectionLost(reason)
        )
        for listener in list(self._lost_listeners):
            listener(conn, reason_failure)
        self._inbox.close(ConnectionClosed(conn.close_code, conn.close_reason))
        conn.finish()

    def _open_error(self) -> ClientError:
        if self._error_head is not None and self._handshake_error is None:
            self._read_error_body(closed=True)
        if self._handshake_error is not None:
            return self._handshake_error
        factory = self.factory
        lost = self._lost_reason.value if self._lost_reason is not None else None
        if lost is not None:
            tls = tls_reason(lost)
            if tls is not None:
                return TLSFailed(factory.target.host, factory.target.port, tls)
        if self.data:
            detail = "the connection closed in the middle of the response head"
        else:
            detail = "the connection closed before the server answered"
        return self._no_http_answer(detail)

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

    # -- the ConnectionEngine of the ClientConnection facade -------------------

    def connection_state(self) -> ConnectionState:
        """The facade's state while the connection lasts (Autobahn's)."""
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

    def send_message(
        self, payload: bytes, is_binary: bool, size: int | None = None
    ) -> None:
        """Send a whole data message, masked and framed (``size``) by Autobahn."""
        self._check_can_send()
        if self._fragmenting:
            raise FragmentedSendError(
                "finish the message started with send_frame() (fin=True) first"
            )
        # Autobahn applies the *incoming* limit to outgoing messages too; the
        # application may send what it likes, so lift it for this call.
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(payload, is_binary, fragmentSize=size or None)
        finally:
            self.maxMessagePayloadSize = limit

    def send_data_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        """Send one data frame; a continuation while a message is unfinished."""
        self._check_can_send()
        if self._fragmenting:
            opcode = OP_CONTINUATION
        else:
            opcode = OP_BINARY if is_binary else OP_TEXT
        self.sendFrame(opcode=opcode, payload=payload, fin=fin)
        self._fragmenting = not fin

    def send_ping(self, payload: bytes) -> None:
        """Send a ping (at most 125 bytes)."""
        self._check_can_send()
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        self.sendPing(payload or None)

    def send_pong(self, payload: bytes) -> None:
        """Send a pong (at most 125 bytes), while open."""
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        if self.state == _WSP.STATE_OPEN:
            self.sendPong(payload or None)

    def close_connection(self, code: int | None, reason: str) -> None:
        """Start the closing handshake (nothing once it has started)."""
        if self.state != _WSP.STATE_OPEN:
            return
        reason_utf8 = encode_truncate(reason, 123) if reason else None
        self.sendCloseFrame(code, reason_utf8, isReply=False)

    def abort_connection(self) -> None:
        """Drop the TCP connection at once."""
        self.abort()

    def buffered_amount(self) -> int:
        """Bytes the transport holds unwritten (the client queues nothing)."""
        return transport_buffered(self.transport)

    def drain(self) -> Deferred[None]:
        """Fires once the transport is no longer full."""
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

    def pause_reading(self) -> None:
        """Stop reading: the inbox is full."""
        if not self._reading_paused and not self._ended:
            self._reading_paused = True
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """Read again: the inbox has room."""
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

    Attributes:
        target: The parsed :class:`URL`.
        url: The URL as given (text).
        config: The :class:`ClientConfig`.
        clock: The reactor its timers run on.
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
            f"{netloc(self.target.host, self.target.port)}{self.target.resource}",
            protocols=list(self.config.subprotocols),
            useragent=self.config.user_agent,
            reactor=reactor,
        )
        self.url = self.target.text
        self.clock = self.reactor
        # Autobahn's timers on our reactor instead of txaio's global loop
        self._batched_timer = ReactorTimer(self.clock)
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
