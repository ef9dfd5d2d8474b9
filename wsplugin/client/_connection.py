"""The client's connection facade: :class:`ClientConnection`, and its
:class:`Inbox` of received messages.

:class:`ClientConnection` shares its base with the server side's
:class:`~wsplugin.connection.Connection`
(:class:`~wsplugin._connbase.BaseConnection`: the same sending, closing and
state), with what a client adds: the URL, the server's :class:`Response`, and
:meth:`~ClientConnection.wait_for_message`, which takes messages by kind
(FPC ``WaitForMessage``). The messages wait in an :class:`Inbox`, plain
Python on an injected clock: the protocol adapter puts messages in
(:meth:`Inbox.deliver`), the connection takes them out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed

from wsplugin._connbase import BaseConnection, ConnectionEngine, Message
from wsplugin._request import Request
from wsplugin.errors import ConnectionClosed, ReceiveTimeout

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from wsplugin.client._config import ClientConfig
    from wsplugin.client._http import Response
    from wsplugin.client._url import URL

__all__ = ["MESSAGE_KINDS", "ClientConnection", "Inbox", "Message"]

MESSAGE_KINDS = frozenset({"text", "binary", "pong"})
"""The kinds :meth:`ClientConnection.wait_for_message` can wait for."""

DATA_KINDS = frozenset({"text", "binary"})
"""The kinds :meth:`ClientConnection.receive` returns."""


@dataclass
class _Waiter:
    kinds: frozenset[str]
    raw: bool
    deferred: Deferred[Any]
    timer: IDelayedCall | None = field(default=None)


class Inbox:
    """Messages received and not yet taken, in arrival order, by kind.

    A message goes to the oldest waiter that wants its kind, or is queued.
    Text and binary messages are bounded by ``max_queue``: when that many
    wait, ``pause_reading`` is called (the socket stops being read), and
    ``resume_reading`` once fewer than half remain, so a server cannot make
    the client hold more than about ``max_queue`` messages. Pongs are kept
    only for :meth:`ClientConnection.wait_for_message`, at most
    ``max_pongs``, the oldest dropped first: pongs nobody asks for cost
    nothing.

    Args:
        clock: The ``IReactorTime`` that runs ``wait`` timeouts (also
            :attr:`clock`).
        max_queue: Text and binary messages queued before reading pauses.
        max_pongs: Pongs kept.
        pause_reading: Called when the queue fills up.
        resume_reading: Called when it has drained to half.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_queue: int,
        max_pongs: int,
        pause_reading: Callable[[], None],
        resume_reading: Callable[[], None],
    ) -> None:
        self.clock = clock
        self._max_queue = max_queue
        self._max_pongs = max_pongs
        self._pause_reading = pause_reading
        self._resume_reading = resume_reading
        self._entries: deque[Message] = deque()
        self._data_queued = 0
        self._pongs_queued = 0
        self._paused = False
        self._waiters: deque[_Waiter] = deque()

    @property
    def queued(self) -> int:
        """Text and binary messages waiting to be taken."""
        return self._data_queued

    @property
    def paused(self) -> bool:
        """Whether the inbox has asked for reading to pause."""
        return self._paused

    def pop(self, kinds: frozenset[str]) -> Message | None:
        """The oldest queued message of one of ``kinds``, or None."""
        for index, entry in enumerate(self._entries):
            if entry.kind in kinds:
                del self._entries[index]
                self._taken(entry)
                return entry
        return None

    def wait(
        self, kinds: frozenset[str], raw: bool, timeout: float | None
    ) -> Deferred[Any]:
        """A Deferred for the next message of one of ``kinds`` to arrive.

        It fires with the :class:`Message` (its ``data`` if ``raw``), or
        fails with :class:`~wsplugin.errors.ReceiveTimeout` after ``timeout``
        seconds (None: no limit). Cancelling it stops the wait.
        """
        waiter = _Waiter(kinds, raw, Deferred(lambda d: self._cancel(waiter)))
        if timeout is not None:
            waiter.timer = self.clock.callLater(timeout, self._expire, waiter, timeout)
        self._waiters.append(waiter)
        return waiter.deferred

    def deliver(self, message: Message) -> None:
        """A message arrived: hand it to a waiter, or queue it."""
        for waiter in self._waiters:
            if message.kind in waiter.kinds:
                self._waiters.remove(waiter)
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                waiter.deferred.callback(message.data if waiter.raw else message)
                return
        self._entries.append(message)
        if message.kind == "pong":
            self._pongs_queued += 1
            if self._pongs_queued > self._max_pongs:
                for index, entry in enumerate(self._entries):
                    if entry.kind == "pong":
                        del self._entries[index]
                        self._pongs_queued -= 1
                        break
            return
        self._data_queued += 1
        if not self._paused and self._data_queued >= self._max_queue:
            self._paused = True
            self._pause_reading()

    def close(self, error: Exception) -> None:
        """The connection ended: fail every waiter with ``error``.

        Queued messages stay, to be taken by later calls.
        """
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.errback(error)

    def _taken(self, entry: Message) -> None:
        if entry.kind == "pong":
            self._pongs_queued -= 1
            return
        self._data_queued -= 1
        if self._paused and self._data_queued < self._max_queue // 2 + 1:
            self._paused = False
            self._resume_reading()

    def _cancel(self, waiter: _Waiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()

    def _expire(self, waiter: _Waiter, timeout: float) -> None:
        waiter.timer = None
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            kinds = ", ".join(sorted(waiter.kinds))
            waiter.deferred.errback(
                ReceiveTimeout(f"no message of kind {kinds} within {timeout}s")
            )


class ClientConnection(BaseConnection):
    """A connection made by :func:`connect`: the server side's API and more.

    Everything :class:`~wsplugin.Connection` offers works the same
    (``send_text``, ``send_binary``, ``send``, ``send_frame``, ``ping``,
    ``pong``, ``close``, ``abort``, ``state``, ``is_open``, ``receive``,
    ``async for``, ``wait_closed``, ``drain``, ``buffered_amount``), with the
    roles turned around: ``request`` is the request this client sent (its
    ``peer`` is the server's address), ``response_headers`` the headers the
    server answered with.

    Attributes:
        url: The URL connected to.
        response: The server's 101 :class:`Response` (FPC
            ``OnHandshakeSuccess``): ``conn.response.headers.get_all("Set-Cookie")``.
        response_headers: The 101's headers as ``(name, value)`` pairs.
        subprotocol: The subprotocol the server chose, or None.
        extensions: The extensions in use, e.g. ``("permessage-deflate",)``.
        options: The :class:`ClientConfig` of the connection.
    """

    def __init__(
        self,
        engine: ConnectionEngine,
        request: Request,
        *,
        url: URL,
        response: Response,
        options: ClientConfig,
        inbox: Inbox,
    ) -> None:
        super().__init__(engine, request, clock=inbox.clock)
        self.url = url
        self.response = response
        self.response_headers = list(response.headers.raw())
        self.options = options
        self.extensions: tuple[str, ...] = ()
        self._inbox = inbox

    def __repr__(self) -> str:
        return f"<ClientConnection {self.id} {self.url} {self.state.value}>"

    def receive(self) -> Deferred[Any]:
        """The next text (``str``) or binary (``bytes``) message.

        Pongs are not returned here; :meth:`wait_for_message` gets them.

        Raises:
            ConnectionClosed: (through the Deferred) once the connection has
                ended and every queued message has been received.
        """
        return self._take(DATA_KINDS, True, None)

    def wait_for_message(
        self,
        kinds: Iterable[str] | str = ("text", "binary", "pong"),
        timeout: float | None = None,
    ) -> Deferred[Message]:
        """The next message of one of ``kinds`` (FPC ``WaitForMessage``).

        Messages of other kinds stay queued, in order, for :meth:`receive`
        or a later call. Pongs are kept only for this method (at most
        ``max_pongs``, the oldest dropped first).

        Args:
            kinds: Any of ``"text"``, ``"binary"``, ``"pong"``.
            timeout: Seconds to wait; None waits until the connection ends.

        Returns:
            A Deferred firing with a :class:`Message`; it fails with
            :class:`ReceiveTimeout` after ``timeout`` seconds, or with
            :class:`~wsplugin.errors.ConnectionClosed` once the connection
            has ended with no such message queued.
        """
        if isinstance(kinds, str):
            kinds = (kinds,)
        wanted = frozenset(kinds)
        if not wanted or not wanted <= MESSAGE_KINDS:
            raise ValueError(
                "kinds must be some of 'text', 'binary', 'pong', "
                f"not {sorted(wanted)!r}"
            )
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive or None, not {timeout!r}")
        return self._take(wanted, False, timeout)

    def _take(
        self, kinds: frozenset[str], raw: bool, timeout: float | None
    ) -> Deferred[Any]:
        entry = self._inbox.pop(kinds)
        if entry is not None:
            return succeed(entry.data if raw else entry)
        if self._closed:
            return fail(ConnectionClosed(self.close_code, self.close_reason))
        return self._inbox.wait(kinds, raw, timeout)
