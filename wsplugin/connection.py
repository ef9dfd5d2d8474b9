"""One client connection as a server application sees it.

:class:`Connection` is the facade handed to every event: the handshake
:class:`Request`, the connection's state, per-connection user data, channels,
and the send, close and receive methods (most of them shared with the client
side: :class:`~wsplugin._connbase.BaseConnection`). It talks to the protocol
underneath through the :class:`~wsplugin._connbase.ConnectionEngine`
interface, so the same facade serves connections made by a
:class:`~wsplugin.WebSocketServer` route and by an upgrade inside a
``twisted.web`` resource.

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

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed

from wsplugin._connbase import (
    BaseConnection,
    CloseMessage,
    ConnectionEngine,
    ConnectionState,
    Fragment,
    Message,
    check_close_code,
)
from wsplugin._keepalive import HEARTBEAT_PREFIX
from wsplugin._request import Headers, Request, forwarded_address
from wsplugin.backplane import Recovery, RecoveryStatus, StreamPosition
from wsplugin.errors import ConnectionClosed, ReceiveTimeout, WSPluginError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from wsplugin.config import ServerConfig

__all__ = [
    "MESSAGE_KINDS",
    "ChannelHost",
    "CloseMessage",
    "Connection",
    "ConnectionEngine",
    "ConnectionState",
    "Fragment",
    "Headers",
    "Message",
    "Request",
    "check_close_code",
    "forwarded_address",
]

_Data = str | bytes

MESSAGE_KINDS = frozenset({"text", "binary", "pong", "close"})
"""The kinds :meth:`Connection.wait_for_message` can wait for."""

MAX_PONGS = 16
"""Pongs a connection keeps for ``wait_for_message``; older ones are dropped
(each at most 125 bytes, so a pong flood costs at most about 3 KiB)."""

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


class ChannelHost(Protocol):
    """Where a connection joins and leaves channels: its server's hub
    (``wsplugin._hub.Hub``), which talks to the backplane."""

    def join(
        self,
        conn: Connection,
        channel: str,
        since: StreamPosition | tuple[str, int] | None,
    ) -> Deferred[Recovery]:
        """Subscribe ``conn``; recover from ``since``."""

    def leave(self, conn: Connection, channel: str) -> None:
        """Unsubscribe ``conn``."""


@dataclass
class _Waiter:
    """A pending ``receive()`` (``raw``) or ``wait_for_message()``."""

    kinds: frozenset[str]
    raw: bool
    deferred: Deferred[Any]
    timer: IDelayedCall | None = None


class Connection(BaseConnection):
    """A client connection: request, state, user data, sending and receiving.

    Applications do not create connections; the server hands them to events.

    Attributes:
        id: A unique id (a GUID string), for ``write_data`` and logging.
        request: The handshake :class:`Request`.
        server: The :class:`~wsplugin.WebSocketServer` serving it (for
            ``conn.server.broadcast(...)``).
        config: The options of the route serving it.
        subprotocol: The negotiated subprotocol, or None. ``allow`` may set
            it to any subprotocol the client offered. (``protocol`` is its
            deprecated alias.)
        response_headers: ``(name, value)`` pairs ``allow`` adds to the 101
            response, e.g. ``("Set-Cookie", "sid=...")``.
        user: The authenticated identity, when the route authenticates.
        session: The :class:`~wsplugin.auth.Session` whose cookie opened
            this connection (set by :class:`~wsplugin.auth.SessionAuth`), or
            None.
        user_data: Anything the application pairs with this connection.
        owns_user_data: Release ``user_data`` when the connection ends: its
            ``close()`` is called if it has one. Otherwise it is left alone.
        channels: Channels the connection subscribed to (a channel joins
            the set once :meth:`subscribe` has completed).
        envelope: Channel publications reach this connection wrapped in a
            JSON ``publication`` message carrying their channel, epoch and
            offset (the ``wsplugin.channels.v1`` format of
            :mod:`wsplugin.channels`); set it when the client speaks that.
            Off: the payload as it was published.
        close_code: The code the connection ended with (None while open).
        close_reason: The reason it ended with.
        dropped_messages: Messages skipped by the ``"drop"`` send-buffer
            policy because this client was not reading fast enough.
        queues_messages: Whether received messages wait for :meth:`receive`
            (the route's handler has no ``on_message``, ``on_binary`` or, in
            ``frame_by_frame`` mode, ``on_fragment``); set when it opens.
    """

    session: Any = None  # a class default: most connections have none

    def __init__(
        self,
        engine: ConnectionEngine,
        request: Request,
        *,
        clock: IReactorTime,
        max_queue: int = 32,
        server: Any = None,
        config: ServerConfig | None = None,
        conn_id: str | None = None,
        hub: ChannelHost | None = None,
    ) -> None:
        super().__init__(engine, request, clock=clock)
        if conn_id is not None:
            self.id = conn_id
        self.server = server
        self.config = config
        self.user: Any = None
        self.owns_user_data = False
        self.channels: set[str] = set()
        self.envelope = False
        self._hub = hub
        self.dropped_messages = 0
        self.queues_messages = True
        # created on first use: most connections never need them, and a
        # server holds thousands of connections
        self._queue: deque[_Data | Fragment | CloseMessage | _Pong] | None = None
        self._pongs = 0  # how many of the queued items are pongs
        self._waiters: deque[_Waiter] | None = None
        self._max_queue = max_queue
        self._reading_paused = False

    def __repr__(self) -> str:
        return (
            f"<Connection {self.id} {self.request.peer_address} "
            f"{self.request.path} {self.state.value}>"
        )

    # -- channels ---------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        since: StreamPosition | tuple[str, int] | None = None,
    ) -> Deferred[Recovery]:
        """Join ``channel``: ``broadcast(..., channel=...)`` from any node
        reaches this client.

        With ``since``, the ``(epoch, offset)`` of the last publication the
        client processed, it is first sent the publications of the channel
        it missed, oldest first, then the live ones: each once, in order,
        with no gap. The returned Deferred fires (after the missed ones were
        sent) with a :class:`~wsplugin.backplane.Recovery` whose ``status``
        says how that went: ``RECOVERED``; ``NOT_REQUESTED`` (no
        ``since``); or ``EPOCH_CHANGED`` / ``TOO_OLD`` / ``UNAVAILABLE``,
        when what was missed cannot be known (the history was lost, is
        shorter than the gap, or the backplane is unreachable): the
        application reloads its state then. Its ``position`` is where the
        client stands now. Subscribing again to a channel is a no-op
        (``NOT_REQUESTED``, no position).

        With the in-process backplane it all happens before ``subscribe``
        returns; with Redis, a few milliseconds later (publications made
        meanwhile are not lost: they follow the missed ones). The Deferred
        never fails. Recovery needs history (``history_size``,
        docs/scaling.md).

        Raises:
            TypeError, ValueError: a channel that is not a non-empty
                ``str`` of at most 1024 characters, or a malformed
                ``since``.
        """
        if self._hub is None:  # a connection outside a server (tests)
            self.channels.add(channel)
            return succeed(Recovery(RecoveryStatus.NOT_REQUESTED))
        return self._hub.join(self, channel, since)

    def unsubscribe(self, channel: str) -> None:
        """Leave ``channel`` (no error if not subscribed); a subscription
        still under way is called off."""
        if self._hub is None:
            self.channels.discard(channel)
        else:
            self._hub.leave(self, channel)

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
        ``MAX_PONGS`` (16), the oldest dropped first, and not those answering
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
        if not self.queues_messages and kinds != {"pong"}:
            raise WSPluginError(
                "receive() and wait_for_message() read connections whose handler "
                "has no on_message, on_binary or on_fragment; this one's messages "
                "go to the handler (wait_for_message('pong') works on any)"
            )
        waiter = _Waiter(kinds, raw, Deferred(lambda d: self._cancel_waiter(waiter)))
        if timeout is not None:
            clock = self.clock
            waiter.timer = clock.callLater(timeout, self._wait_expired, waiter, timeout)
        if self._waiters is None:
            self._waiters = deque()
        self._waiters.append(waiter)
        return waiter.deferred

    def _dequeued(self) -> None:
        """A message left the queue: resume reading below half of max_queue."""
        if self._reading_paused and self._queued_data() < self._max_queue // 2 + 1:
            self._reading_paused = False
            self.engine.resume_reading()

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

    # -- called by the engine (the protocol adapter) ----------------------

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

    def enqueue(self, message: _Data | Fragment | CloseMessage) -> None:
        """A message for ``receive()`` arrived (the engine calls this when
        :attr:`queues_messages`): to a waiter, or into the queue; reading
        pauses at ``max_queue`` messages."""
        if self._hand_to_waiter(_kind(message), message):
            return
        if self._queue is None:
            self._queue = deque()
        self._queue.append(message)
        if not self._reading_paused and self._queued_data() >= self._max_queue:
            self._reading_paused = True
            self.engine.pause_reading()

    def pong_received(self, payload: bytes) -> None:
        """A pong arrived: for a waiter, or kept (bounded) when
        :attr:`queues_messages` (not the answers to heartbeat pings)."""
        if self._hand_to_waiter("pong", payload):
            return
        if not self.queues_messages or payload.startswith(HEARTBEAT_PREFIX):
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

    def finish(self) -> None:
        """After on_disconnect: end receive loops, release owned user data,
        fire ``wait_closed``."""
        waiters, self._waiters = self._waiters or (), None
        for waiter in waiters:
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.errback(
                ConnectionClosed(self.close_code, self.close_reason)
            )
        if self.owns_user_data and self.user_data is not None:
            data, self.user_data = self.user_data, None
            closer = getattr(data, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:
                    self.log.failure(
                        "user_data.close() of connection {conn_id} raised",
                        conn_id=self.id,
                    )
        super().finish()
