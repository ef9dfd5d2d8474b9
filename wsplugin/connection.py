"""One client connection as the application sees it.

:class:`Connection` is the facade handed to every event: it carries the
handshake :class:`Request`, the connection's state, per-connection user data,
and the send, close and receive methods. It talks to the Autobahn protocol
underneath through a small set of private methods, so the same facade serves
connections made by a :class:`~wsplugin.WebSocketServer` route and by an
upgrade inside a ``twisted.web`` resource.

Receiving: messages go to the route handler's ``on_message`` / ``on_binary``
when it has them; otherwise they queue for ``await conn.receive()`` or
``async for message in conn`` (seeds: Sparkle ``Receive``, FPC
``WaitForMessage``). The queue holds at most ``max_queue`` messages; beyond
that, reading from the socket pauses until the application catches up. With
``manual_close``, the peer's close frame arrives there too, as a
:class:`CloseMessage`, for the receive loop to answer with ``conn.close()``.
:meth:`Connection.wait_for_message` waits for a kind of message, pongs
included (FPC ``WaitForPongMessage``), as the client's does.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from wsplugin.errors import ConnectionClosed, ReceiveTimeout, WSPluginError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall

    from wsplugin.config import ServerConfig
    from wsplugin.protocol import WebSocketServerProtocol
    from wsplugin.tls import PeerCertificate

__all__ = [
    "MESSAGE_KINDS",
    "CloseMessage",
    "Connection",
    "ConnectionState",
    "Fragment",
    "Headers",
    "Message",
    "Request",
]

_Data = str | bytes

MESSAGE_KINDS = frozenset({"text", "binary", "pong", "close"})
"""The kinds :meth:`Connection.wait_for_message` can wait for."""

MAX_PONGS = 16
"""Pongs a connection keeps for ``wait_for_message``; older ones are dropped
(each at most 125 bytes, so a pong flood costs at most about 3 KiB)."""

_HEARTBEAT_PREFIX = b"wsplugin-hb-"


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
    """A message from :meth:`Connection.wait_for_message`.

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


_RECEIVE_KINDS = frozenset({"text", "binary", "close"})


class _Pong:
    """A pong's payload in the receive queue (kept apart from binary data)."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


def _kind(item: _Data | Fragment | CloseMessage | _Pong) -> str:
    if isinstance(item, str):
        return "text"
    if isinstance(item, _Pong):
        return "pong"
    if isinstance(item, Fragment):
        return "binary" if item.is_binary else "text"
    if isinstance(item, CloseMessage):
        return "close"
    return "binary"


@dataclass
class _Waiter:
    """A pending ``receive()`` (``raw``) or ``wait_for_message()``."""

    kinds: frozenset[str]
    raw: bool
    deferred: Deferred[Any]
    timer: IDelayedCall | None = None


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

    def _compact(self) -> None:
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


_CLOSE_ALLOWED = frozenset([1000, 1001, 1002, 1003, *range(1007, 1015)])


def check_close_code(code: int | None, reason: str) -> None:
    """Raise :class:`~wsplugin.errors.InvalidCloseCode` for an unsendable code."""
    from wsplugin.errors import InvalidCloseCode

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


class Connection:
    """A client connection: request, state, user data, sending and receiving.

    Applications do not create connections; the server hands them to events.

    Attributes:
        id: A unique id (a GUID string), for ``write_data`` and logging.
        request: The handshake :class:`Request`.
        server: The :class:`~wsplugin.WebSocketServer` serving it (for
            ``conn.server.broadcast(...)``).
        config: The options of the route serving it.
        protocol: The negotiated subprotocol, or None. ``allow`` may set it
            to any subprotocol the client offered.
        response_headers: ``(name, value)`` pairs ``allow`` adds to the 101
            response, e.g. ``("Set-Cookie", "sid=...")``.
        user: The authenticated identity, when the route authenticates.
        owns_user_data: Release ``user_data`` when the connection ends.
        channels: Channels the connection subscribed to.
        close_code: The code the connection ended with (None while open).
        close_reason: The reason it ended with.
        dropped_messages: Messages skipped by the ``"drop"`` send-buffer
            policy because this client was not reading fast enough.
    """

    log = Logger()

    def __init__(
        self,
        protocol: WebSocketServerProtocol,
        request: Request,
        *,
        max_queue: int = 32,
        server: Any = None,
        config: ServerConfig | None = None,
    ) -> None:
        self.id: str = str(uuid.uuid4())
        self.request = request
        self.server = server
        self.config = config
        self.protocol: str | None = None
        self.response_headers: list[tuple[str, str]] = []
        self.user: Any = None
        self.owns_user_data = False
        self.channels: set[str] = set()
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.dropped_messages = 0
        self._user_data: Any = None
        self._protocol = protocol
        self._closed = False
        self._receive_mode = True
        # created on first use: most connections never need them, and a
        # server holds thousands of connections
        self._queue: deque[_Data | Fragment | CloseMessage | _Pong] | None = None
        self._pongs = 0  # how many of the queued items are pongs
        self._waiters: deque[_Waiter] | None = None
        self._closed_waiters: list[Deferred[Connection]] | None = None
        self._max_queue = max_queue
        self._reading_paused = False

    def __repr__(self) -> str:
        return (
            f"<Connection {self.id} {self.request.peer_address} "
            f"{self.request.path} {self.state.value}>"
        )

    # -- state and data ---------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """``connecting``, ``open``, ``closing`` or ``closed``.

        ``closing`` covers every moment between the first close frame (ours or
        the peer's) and the end of the TCP connection.
        """
        if self._closed:
            return ConnectionState.CLOSED
        return self._protocol._ws_state()

    @property
    def is_open(self) -> bool:
        """True while messages can be sent."""
        return self.state is ConnectionState.OPEN

    @property
    def buffered_amount(self) -> int:
        """Bytes of outgoing data queued for this client and not yet handed to
        the transport (the browser API's ``bufferedAmount``)."""
        return self._protocol._ws_buffered()

    def drain(self) -> Deferred[None]:
        """A Deferred that fires once the outgoing queue is empty.

        ``await conn.drain()`` after sending is how a producer respects a slow
        reader (the ``"wait"`` policy). Fails with ConnectionClosed if the
        connection ends first.
        """
        return self._protocol._ws_drain()

    @property
    def user_data(self) -> Any:
        """Anything the application pairs with this connection.

        With ``owns_user_data`` set, the object is released when the
        connection ends: its ``close()`` is called if it has one. Otherwise
        it is left alone.
        """
        return self._user_data

    @user_data.setter
    def user_data(self, value: Any) -> None:
        self._user_data = value

    # -- sending ----------------------------------------------------------

    def send(self, message: _Data) -> None:
        """Send a text (``str``) or binary (``bytes``) message."""
        if isinstance(message, str):
            self._protocol._ws_send_message(message.encode("utf-8"), False)
        elif isinstance(message, (bytes, bytearray, memoryview)):
            self._protocol._ws_send_message(bytes(message), True)
        else:
            raise TypeError(f"send() takes str or bytes, not {type(message).__name__}")

    def send_text(self, text: str) -> None:
        """Send a text message.

        Raises:
            ConnectionClosed: the connection is not open.
            FragmentedSendError: a ``send_frame`` message is unfinished.
        """
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes str, not {type(text).__name__}")
        self._protocol._ws_send_message(text.encode("utf-8"), False)

    def send_binary(self, data: bytes) -> None:
        """Send a binary message (same errors as :meth:`send_text`)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_binary() takes bytes, not {type(data).__name__}")
        self._protocol._ws_send_message(bytes(data), True)

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
        self._protocol._ws_send_frame(bytes(data), is_binary, fin)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (payload of at most 125 bytes)."""
        self._protocol._ws_ping(payload)

    def pong(self, payload: bytes = b"") -> None:
        """Send a pong, e.g. from ``on_ping`` with ``manual_pong``."""
        self._protocol._ws_pong(payload)

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        """Start (or, with ``manual_close``, answer) the closing handshake.

        Codes 1000-1003, 1007-1014 and 3000-4999 may be sent; ``None`` sends
        a close frame without a code. Closing a closed connection does nothing.

        Raises:
            InvalidCloseCode: a code RFC 6455 forbids sending.
        """
        check_close_code(code, reason)
        self._protocol._ws_close(code, reason)

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""
        self._protocol._ws_abort()

    # -- channels ---------------------------------------------------------

    def subscribe(self, channel: str) -> None:
        """Join ``channel``: ``broadcast(..., channel=...)`` reaches this client."""
        self.channels.add(channel)

    def unsubscribe(self, channel: str) -> None:
        """Leave ``channel`` (no error if not subscribed)."""
        self.channels.discard(channel)

    # -- receiving --------------------------------------------------------

    def receive(self) -> Deferred[Any]:
        """The next queued message: ``str``, ``bytes``, :class:`Fragment`, or
        (with ``manual_close``) the peer's :class:`CloseMessage`.

        Returns a Deferred; ``await conn.receive()`` in a coroutine. Pongs are
        not returned here; :meth:`wait_for_message` gets them.

        Raises:
            ConnectionClosed: (through the Deferred) once the connection has
                ended and every queued message has been received.
            WSPluginError: the route's handler takes the messages itself
                (it has ``on_message``, ``on_binary`` or ``on_fragment``).
        """
        return self._wait_for(_RECEIVE_KINDS, True, None)

    def wait_for_message(
        self,
        kinds: Iterable[str] | str = ("text", "binary", "pong"),
        timeout: float | None = None,
    ) -> Deferred[Message]:
        """The next message of one of ``kinds`` (FPC ``WaitForMessage``,
        ``WaitForPongMessage``), as the client's ``wait_for_message``.

        Messages of other kinds stay queued, in order, for :meth:`receive` or
        a later call. Pongs are kept for this method only: at most
        :data:`MAX_PONGS`, the oldest dropped first, and not those answering
        the server's own heartbeat pings. On a connection whose handler takes
        messages (``on_message``, ``on_binary`` or ``on_fragment``), only
        ``"pong"`` may be waited for, and a pong is kept only while someone
        waits for one (``on_pong`` sees every pong anyway).

        Args:
            kinds: Any of ``"text"``, ``"binary"``, ``"pong"``, and
                ``"close"`` (the peer's close frame, with ``manual_close``).
            timeout: Seconds to wait; None waits until the connection ends.

        Returns:
            A Deferred firing with a :class:`Message`; it fails with
            :class:`~wsplugin.errors.ReceiveTimeout` after ``timeout``
            seconds, or with :class:`~wsplugin.errors.ConnectionClosed` once
            the connection has ended with no such message queued.

        Raises:
            ValueError: an unknown kind, or a timeout that is not positive.
            WSPluginError: a kind other than ``"pong"`` on a connection
                whose handler takes the messages itself.
        """
        if isinstance(kinds, str):
            kinds = (kinds,)
        wanted = frozenset(kinds)
        if not wanted or not wanted <= MESSAGE_KINDS:
            raise ValueError(
                "kinds must be some of 'text', 'binary', 'pong', 'close', "
                f"not {sorted(wanted)!r}"
            )
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        return self._wait_for(wanted, False, timeout)

    def _wait_for(
        self, kinds: frozenset[str], raw: bool, timeout: float | None
    ) -> Deferred[Any]:
        queue = self._queue
        if queue:
            for index, item in enumerate(queue):
                kind = _kind(item)
                if kind in kinds:
                    del queue[index]
                    if isinstance(item, _Pong):
                        self._pongs -= 1
                        return succeed(Message(kind, item.payload))
                    self._dequeued()
                    return succeed(item if raw else Message(kind, item))
        if self._closed:
            return fail(ConnectionClosed(self.close_code, self.close_reason))
        if not self._receive_mode and kinds != {"pong"}:
            raise WSPluginError(
                "receive() and wait_for_message() read connections whose handler "
                "has no on_message, on_binary or on_fragment; this one's messages "
                "go to the handler (wait_for_message('pong') works on any)"
            )
        waiter = _Waiter(kinds, raw, Deferred(lambda d: self._cancel_waiter(waiter)))
        if timeout is not None:
            clock = self._protocol.factory.clock
            waiter.timer = clock.callLater(timeout, self._wait_expired, waiter, timeout)
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(waiter)
        return waiter.deferred

    def _dequeued(self) -> None:
        """A message left the queue: resume reading below half of max_queue."""
        if self._reading_paused and self._queued_data() < self._max_queue // 2 + 1:
            self._reading_paused = False
            self._protocol._ws_resume_reading()

    def _queued_data(self) -> int:
        return len(self._queue or ()) - self._pongs

    def _cancel_waiter(self, waiter: _Waiter) -> None:
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()

    def _wait_expired(self, waiter: _Waiter, timeout: float) -> None:
        waiter.timer = None
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)
            kinds = ", ".join(sorted(waiter.kinds))
            waiter.deferred.errback(
                ReceiveTimeout(f"no message of kind {kinds} within {timeout}s")
            )

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def wait_closed(self) -> Deferred[Connection]:
        """A Deferred that fires with this connection once it has ended."""
        if self._closed:
            return succeed(self)
        if self._closed_waiters is None:
            self._closed_waiters = []
        d: Deferred[Connection] = Deferred(self._closed_waiters.remove)
        self._closed_waiters.append(d)
        return d

    # -- called by the protocol adapter -----------------------------------

    def _hand_to_waiter(self, kind: str, item: Any) -> bool:
        waiters = self._waiters
        if not waiters:
            return False
        for waiter in waiters:
            if kind in waiter.kinds:
                waiters.remove(waiter)
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                waiter.deferred.callback(item if waiter.raw else Message(kind, item))
                return True
        return False

    def _enqueue(self, message: _Data | Fragment | CloseMessage) -> None:
        if self._hand_to_waiter(_kind(message), message):
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(message)
        if not self._reading_paused and self._queued_data() >= self._max_queue:
            self._reading_paused = True
            self._protocol._ws_pause_reading()

    def _pong(self, payload: bytes) -> None:
        """A pong arrived: for a waiter, or kept (bounded) in receive mode."""
        if self._hand_to_waiter("pong", payload):
            return
        if not self._receive_mode or payload.startswith(_HEARTBEAT_PREFIX):
            return
        if self._queue is None:
            self._queue = deque()
        queue = self._queue
        queue.append(_Pong(payload))
        self._pongs += 1
        if self._pongs > MAX_PONGS:
            for index, item in enumerate(queue):
                if isinstance(item, _Pong):
                    del queue[index]
                    self._pongs -= 1
                    break

    def _mark_closed(self, code: int | None, reason: str) -> None:
        """The connection is gone: state, code and reason (before on_disconnect)."""
        self._closed = True
        self.close_code = code
        self.close_reason = reason or ""

    def _finish(self) -> None:
        """After on_disconnect: end receive loops, release owned user data."""
        waiters, self._waiters = self._waiters or (), None
        for waiter in waiters:
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.errback(
                ConnectionClosed(self.close_code, self.close_reason)
            )
        if self.owns_user_data and self._user_data is not None:
            data, self._user_data = self._user_data, None
            closer = getattr(data, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:
                    self.log.failure(
                        "user_data.close() of connection {conn_id} raised",
                        conn_id=self.id,
                    )
        closed, self._closed_waiters = self._closed_waiters or [], None
        for d in closed:
            d.callback(self)
