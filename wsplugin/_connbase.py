"""What a server connection and a client connection have in common.

:class:`BaseConnection` is the facade an application holds: state, sending,
closing, ``wait_closed`` and ``async for``. Underneath it is an engine, the
Autobahn protocol of either side, which it reaches only through the
:class:`ConnectionEngine` interface, so the same facade serves
:class:`~wsplugin.Connection` (a server route, or an upgrade inside a
``twisted.web`` resource) and :class:`~wsplugin.client.ClientConnection`.
Receiving differs per side (a server route may take messages itself; a
client always queues them), so :meth:`BaseConnection.receive` is each
subclass's.

The engine tells the facade how the connection ended with
:meth:`BaseConnection.mark_closed` (before ``on_disconnect``) and
:meth:`BaseConnection.finish` (after it).
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from wsplugin._frames import MIN_FRAME_SIZE, payload_size_for_frame
from wsplugin.errors import ConnectionClosed, InvalidCloseCode

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from wsplugin._request import Request

__all__ = [
    "BaseConnection",
    "CloseMessage",
    "ConnectionEngine",
    "ConnectionState",
    "Fragment",
    "Message",
    "check_close_code",
    "fragment_size_for",
]


def fragment_size_for(frame_size: int) -> int:
    """The payload per frame of a ``frame_size`` given to ``send_text`` /
    ``send_binary`` (header included, as the ``frame_size`` option); 0
    stays 0 (one frame).

    Raises:
        TypeError: not an int.
        ValueError: negative, or 1 or 2 (no room for payload).
    """
    if not isinstance(frame_size, int) or isinstance(frame_size, bool):
        raise TypeError(f"frame_size must be an int, not {type(frame_size).__name__}")
    if frame_size == 0:
        return 0
    if frame_size < MIN_FRAME_SIZE:
        raise ValueError(
            f"frame_size must be 0 (one frame) or at least {MIN_FRAME_SIZE} "
            f"(a 2-byte header and 1 payload byte), not {frame_size}"
        )
    return payload_size_for_frame(frame_size)


class ConnectionState(str, Enum):
    """Where a connection is in its life (``str`` values for easy logging)."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True)
class Fragment:
    """One data frame, queued for ``receive()`` in frame-by-frame mode.

    Attributes:
        data: The frame's payload (bytes even for text: a frame may end in the
            middle of a UTF-8 sequence).
        is_binary: Whether the message the frame belongs to is binary.
        fin: Whether this is the message's last frame.
    """

    data: bytes
    is_binary: bool
    fin: bool


@dataclass(frozen=True)
class CloseMessage:
    """The peer's close frame, queued for ``receive()`` under ``manual_close``
    (seed: Sparkle ``Receive`` returning a Close message).

    Answer it with ``conn.close(...)``: until then the connection stays in
    the closing state, and after ``close_handshake_timeout`` it is dropped.

    Attributes:
        code: The peer's close code (1005 when its frame had none).
        reason: The peer's close reason, possibly empty.
    """

    code: int
    reason: str


@dataclass(frozen=True)
class Message:
    """A message from ``wait_for_message``.

    Attributes:
        kind: ``"text"``, ``"binary"``, ``"pong"`` or ``"close"``.
        data: What ``receive()`` would give: ``str`` for text, ``bytes`` for
            binary, a :class:`Fragment` in ``frame_by_frame`` mode, a
            :class:`CloseMessage` for a close; a pong's payload (``bytes``).
    """

    kind: str
    data: str | bytes | Fragment | CloseMessage

    @property
    def text(self) -> str:
        """The data as text (bytes decoded as UTF-8, a close's reason)."""
        data = self.data
        if isinstance(data, str):
            return data
        if isinstance(data, bytes):
            return data.decode("utf-8", "replace")
        if isinstance(data, Fragment):
            return data.data.decode("utf-8", "replace")
        return data.reason


_CLOSE_ALLOWED = frozenset([1000, 1001, 1002, 1003, *range(1007, 1015)])


def check_close_code(code: int | None, reason: str) -> None:
    """Raise :class:`~wsplugin.errors.InvalidCloseCode` for an unsendable code."""
    if code is None:
        if reason:
            raise InvalidCloseCode("a close reason needs a close code")
        return
    if isinstance(code, bool) or not isinstance(code, int):
        raise InvalidCloseCode(f"close code must be an int, not {code!r}")
    if code not in _CLOSE_ALLOWED and not 3000 <= code <= 4999:
        raise InvalidCloseCode(
            f"close code {code} may not be sent (RFC 6455 7.4): use 1000-1003, "
            "1007-1014 or 3000-4999"
        )


class ConnectionEngine(Protocol):
    """What the connection facade needs from the protocol underneath.

    The server's :class:`~wsplugin.protocol.WebSocketServerProtocol` and the
    client's :class:`~wsplugin.client.WebSocketClientProtocol` both provide
    it. Every method is called from the reactor thread.
    """

    def connection_state(self) -> ConnectionState:
        """``CONNECTING``, ``OPEN`` or ``CLOSING`` (the facade knows CLOSED)."""

    def send_message(
        self, payload: bytes, is_binary: bool, fragment_size: int | None = None
    ) -> None:
        """Send a whole data message, in frames of at most ``fragment_size``
        payload bytes (0: one frame; None: the connection's default).

        Raises:
            ConnectionClosed: not open.
            FragmentedSendError: a ``send_data_frame`` message is unfinished.
        """

    def send_data_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        """Send one data frame (a continuation while a message is unfinished)."""

    def send_ping(self, payload: bytes) -> None:
        """Send a ping (at most 125 bytes)."""

    def send_pong(self, payload: bytes) -> None:
        """Send a pong (at most 125 bytes)."""

    def close_connection(self, code: int | None, reason: str) -> None:
        """Start (or answer) the closing handshake."""

    def abort_connection(self) -> None:
        """Drop the TCP connection at once."""

    def buffered_amount(self) -> int:
        """Outgoing bytes not yet handed to the socket."""

    def drain(self) -> Deferred[None]:
        """Fires once the outgoing queue is empty."""

    def pause_reading(self) -> None:
        """Stop reading: the receive queue is full."""

    def resume_reading(self) -> None:
        """Read again: the receive queue has room."""


class BaseConnection:
    """The facade of one WebSocket connection, server or client side.

    Attributes:
        id: A unique id (a GUID string), for ``write_data`` and logging.
        request: The handshake :class:`~wsplugin.Request`.
        engine: The protocol underneath (:class:`ConnectionEngine`); the
            server's fan-out and tests use it, applications need not.
        subprotocol: The negotiated subprotocol, or None.
        response_headers: ``(name, value)`` pairs of the 101 response.
        user_data: Anything the application pairs with this connection.
        close_code: The code the connection ended with (None while open).
        close_reason: The reason it ended with.
    """

    log = Logger()

    def __init__(
        self, engine: ConnectionEngine, request: Request, *, clock: IReactorTime
    ) -> None:
        self.id: str = str(uuid.uuid4())
        self.request = request
        self.engine = engine
        self.clock = clock
        self.subprotocol: str | None = None
        self.response_headers: list[tuple[str, str]] = []
        self.user_data: Any = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._closed = False
        self._closed_waiters: list[Deferred[Any]] | None = None

    # -- names -----------------------------------------------------------

    @property
    def protocol(self) -> str | None:
        """Deprecated alias of :attr:`subprotocol` (kept for one release).

        ``protocol`` reads like the Autobahn protocol object; the value is the
        negotiated subprotocol. Reading or setting it warns with
        DeprecationWarning.
        """
        warnings.warn(
            f"{type(self).__name__}.protocol is deprecated; use .subprotocol",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.subprotocol

    @protocol.setter
    def protocol(self, value: str | None) -> None:
        warnings.warn(
            f"{type(self).__name__}.protocol is deprecated; use .subprotocol",
            DeprecationWarning,
            stacklevel=2,
        )
        self.subprotocol = value

    # -- state -----------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """``connecting``, ``open``, ``closing`` or ``closed``.

        ``closing`` covers every moment between the first close frame (ours or
        the peer's) and the end of the TCP connection.
        """
        if self._closed:
            return ConnectionState.CLOSED
        return self.engine.connection_state()

    @property
    def is_open(self) -> bool:
        """True while messages can be sent."""
        return self.state is ConnectionState.OPEN

    @property
    def buffered_amount(self) -> int:
        """Bytes of outgoing data queued for the peer and not yet handed to
        the socket (the browser API's ``bufferedAmount``)."""
        return self.engine.buffered_amount()

    def drain(self) -> Deferred[None]:
        """A Deferred that fires once the outgoing queue is empty.

        ``await conn.drain()`` after sending is how a producer respects a slow
        reader (the ``"wait"`` policy). Fails with ConnectionClosed if the
        connection ends first.
        """
        return self.engine.drain()

    # -- sending ----------------------------------------------------------

    def send(self, message: str | bytes, *, frame_size: int | None = None) -> None:
        """Send a text (``str``) or binary (``bytes``) message (``frame_size``
        as for :meth:`send_text`)."""
        if isinstance(message, str):
            self.send_text(message, frame_size=frame_size)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            self.send_binary(message, frame_size=frame_size)
        else:
            raise TypeError(f"send() takes str or bytes, not {type(message).__name__}")

    def send_text(self, text: str, *, frame_size: int | None = None) -> None:
        """Send a text message.

        Args:
            text: The message.
            frame_size: Split this message into frames of at most this many
                bytes, header included (at least 3; seed FPC
                ``WriteMessage(..., MaxFrameLength)``); 0 sends it as one
                frame. None (the default) follows the route's
                ``split_message`` / ``frame_size``. With
                permessage-deflate the compressed message is split.

        Raises:
            ConnectionClosed: the connection is not open.
            FragmentedSendError: a ``send_frame`` message is unfinished.
            ValueError: ``frame_size`` is 1 or 2, or negative.
        """
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes str, not {type(text).__name__}")
        if frame_size is None:
            self.engine.send_message(text.encode("utf-8"), False)
        else:
            self.engine.send_message(
                text.encode("utf-8"), False, fragment_size_for(frame_size)
            )

    def send_binary(
        self, data: bytes | bytearray | memoryview, *, frame_size: int | None = None
    ) -> None:
        """Send a binary message (``frame_size`` and errors as for
        :meth:`send_text`)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_binary() takes bytes, not {type(data).__name__}")
        if frame_size is None:
            self.engine.send_message(bytes(data), True)
        else:
            self.engine.send_message(bytes(data), True, fragment_size_for(frame_size))

    def send_frame(
        self, data: bytes | str, is_binary: bool = False, fin: bool = True
    ) -> None:
        """Send one data frame (low level; seeds: Sparkle ``SendFrame``).

        The first frame of a message opens it as text or binary; later frames
        continue it whatever ``is_binary`` says, until one has ``fin=True``.
        Frames are sent uncompressed and are not split by ``split_message``.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.engine.send_data_frame(bytes(data), is_binary, fin)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (payload of at most 125 bytes)."""
        self.engine.send_ping(payload)

    def pong(self, payload: bytes = b"") -> None:
        """Send a pong, e.g. from ``on_ping`` with ``manual_pong``."""
        self.engine.send_pong(payload)

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start (or, with ``manual_close``, answer) the closing handshake.

        Codes 1000-1003, 1007-1014 and 3000-4999 may be sent; ``None`` sends
        a close frame without a code. Closing a closed connection does nothing.

        Raises:
            InvalidCloseCode: a code RFC 6455 forbids sending.
        """
        check_close_code(code, reason)
        self.engine.close_connection(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        self.engine.abort_connection()

    # -- receiving ----------------------------------------------------------

    def receive(self) -> Deferred[Any]:
        """The next message (each side defines what it returns)."""
        raise NotImplementedError

    def __aiter__(self) -> BaseConnection:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def wait_closed(self) -> Deferred[Any]:
        """A Deferred that fires with this connection once it has ended."""
        if self._closed:
            return succeed(self)
        if self._closed_waiters is None:
            self._closed_waiters = []
        d: Deferred[Any] = Deferred(self._closed_waiters.remove)
        self._closed_waiters.append(d)
        return d

    # -- called by the engine ------------------------------------------------

    def mark_closed(self, code: int | None, reason: str) -> None:
        """The connection is gone: its state, code and reason (the engine
        calls this before ``on_disconnect``)."""
        self._closed = True
        self.close_code = code
        self.close_reason = reason or ""

    def finish(self) -> None:
        """After ``on_disconnect``: fire :meth:`wait_closed` (the engine calls
        this last; subclasses end their receive loops first)."""
        closed, self._closed_waiters = self._closed_waiters or [], None
        for d in closed:
            d.callback(self)
