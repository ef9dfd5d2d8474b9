"""The outgoing side of one connection while its transport is full.

A server protocol writes straight to its transport until the transport says
its buffer is full (``pauseProducing``: the protocol is its registered push
producer). From then on, and until everything queued has gone out, writes
wait in a :class:`SendQueue`:

* control frames (pings, pongs) go ahead of queued data, so keep-alive is
  never starved by a slow reader; while the transport is full only the most
  recent pong is kept (RFC 6455 5.5.3) and at most :data:`MAX_CONTROL_QUEUE`
  control frames wait, so a ping flood from a peer that never reads cannot
  grow memory;
* data is bounded by the route's ``max_send_buffer`` through a send-buffer
  policy (:func:`admission`: close, drop or wait);
* :meth:`SendQueue.drain` gives a Deferred that fires once it is empty;
* a message being sent frame by frame (``send_frame``) holds back prepared
  frames (a broadcast's) until its last frame (:meth:`SendQueue.hold`).

A connection gets a queue only when it first needs one (most never do: a
server holds thousands of connections). Plain Python on a ``write``
callable: no reactor, no transport.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, succeed

from wsplugin._frames import OP_PONG

__all__ = [
    "MAX_CONTROL_QUEUE",
    "WAIT_HARD_CAP",
    "Admission",
    "SendQueue",
    "admission",
]

MAX_CONTROL_QUEUE = 16
"""Pings and pongs held while the transport is full (each at most 127 bytes)."""

WAIT_HARD_CAP = 8
"""With the "wait" policy, a queue over this many times the limit closes."""


class Admission(enum.Enum):
    """What the send-buffer policy says about one more message."""

    SEND = "send"
    """Queue it."""
    DROP = "drop"
    """Skip it (``"drop"``: the client misses messages, it is not closed)."""
    WAIT = "wait"
    """Queue it and stop reading from this client until the queue drains."""
    CLOSE = "close"
    """Skip it and close the connection (1008 "send buffer overflow")."""


def admission(queued: int, limit: int, policy: str) -> Admission:
    """Whether one more data message may be queued behind ``queued`` bytes.

    Args:
        queued: Bytes already queued.
        limit: ``max_send_buffer`` (0: no limit).
        policy: ``"close"``, ``"drop"`` or ``"wait"``; ``"wait"`` turns into
            close past :data:`WAIT_HARD_CAP` times the limit, so a client
            that never reads cannot hold the server's memory for ever.
    """
    if not limit or queued <= limit:
        return Admission.SEND
    if policy == "drop":
        return Admission.DROP
    if policy == "wait" and queued <= WAIT_HARD_CAP * limit:
        return Admission.WAIT
    return Admission.CLOSE


class SendQueue:
    """The queue of one connection's outgoing frames.

    Args:
        write: Writes bytes to the transport.
        on_empty: Called each time everything queued has been written,
            after the :meth:`drain` waiters (the protocol resumes reading and
            finishes a pending producer unregistration there).

    Attributes:
        paused: The transport's buffer is full (set by :meth:`pause`).
        queuing: Frames wait here; new data must queue behind them.
        queued: Bytes of data frames queued (control frames not counted).
        fragmenting: A message sent with ``send_frame`` is unfinished.
        closing: The connection is closing; the protocol unregisters from
            its transport once everything queued is out (``on_empty``).
    """

    __slots__ = (
        "_write",
        "_on_empty",
        "_data",
        "_ctrl",
        "_held",
        "_waiters",
        "paused",
        "queuing",
        "queued",
        "fragmenting",
        "closing",
    )

    def __init__(
        self, write: Callable[[bytes], object], on_empty: Callable[[], None]
    ) -> None:
        self._write = write
        self._on_empty = on_empty
        self._data: deque[bytes] = deque()
        self._ctrl: deque[bytes] | None = None
        self._held: list[bytes] | None = None
        self._waiters: list[Deferred[None]] | None = None
        self.paused = False
        self.queuing = False
        self.queued = 0
        self.fragmenting = False
        self.closing = False

    @property
    def passing(self) -> bool:
        """Whether a write may go straight to the transport now."""
        return not (self.paused or self.queuing)

    @property
    def control_count(self) -> int:
        """Control frames waiting."""
        return len(self._ctrl or ())

    # -- the transport's push-producer calls ------------------------------

    def pause(self) -> None:
        """The transport's buffer is full: queue further writes here."""
        self.paused = True

    def resume(self) -> None:
        """The transport drained: write what is queued."""
        self.paused = False
        self.flush()

    # -- queuing -------------------------------------------------------------

    def push(self, data: bytes) -> None:
        """Queue a data frame (or any bytes that keep their order)."""
        self._data.append(data)
        self.queued += len(data)
        self.queuing = True

    def push_control(self, frame: bytes) -> None:
        """Queue a ping or pong ahead of the data: a pong replaces a pong
        still waiting, and past :data:`MAX_CONTROL_QUEUE` frames new ones are
        dropped."""
        ctrl = self._ctrl
        if ctrl is None:
            ctrl = self._ctrl = deque()
        if frame[0] & 0x0F == OP_PONG and ctrl and ctrl[-1][0] & 0x0F == OP_PONG:
            ctrl[-1] = frame
        elif len(ctrl) < MAX_CONTROL_QUEUE:
            ctrl.append(frame)
        self.queuing = True

    def flush(self) -> None:
        """Write queued frames, control frames first, while the transport
        takes them; when all are out, fire :meth:`drain` waiters."""
        write = self._write
        ctrl, data = self._ctrl, self._data
        while not self.paused:
            if ctrl:
                write(ctrl.popleft())
            elif data:
                frame = data.popleft()
                self.queued -= len(frame)
                write(frame)
            else:
                break
        if self.queuing and not data and not ctrl:
            self.queuing = False
            self.queued = 0
            waiters, self._waiters = self._waiters, None
            for d in waiters or ():
                d.callback(None)
            self._on_empty()

    def drop_data(self) -> None:
        """Forget the queued data frames (control frames stay): the
        connection is being closed for overflowing its buffer."""
        self._data.clear()
        self.queued = 0

    def clear(self, error: Exception) -> None:
        """Forget everything queued; :meth:`drain` waiters fail with ``error``
        (the connection ended)."""
        self._data.clear()
        self._ctrl = None
        self._held = None
        self.queued = 0
        self.queuing = False
        waiters, self._waiters = self._waiters, None
        for d in waiters or ():
            d.errback(error)

    def drain(self, ended: Exception | None = None) -> Deferred[None]:
        """A Deferred that fires once nothing is queued (at once if nothing
        is); with ``ended`` (the connection is gone) it fails with it."""
        if not self.queuing:
            return succeed(None)
        if ended is not None:
            return fail(ended)
        d: Deferred[None] = Deferred()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(d)
        return d

    # -- frame-by-frame messages -------------------------------------------

    def hold(self, data: bytes) -> None:
        """Keep ``data`` (whole frames) until the unfinished message ends."""
        if self._held is None:
            self._held = []
        self._held.append(data)

    def finish_message(self) -> list[bytes]:
        """The message sent frame by frame ended: what :meth:`hold` kept, to
        be sent now, in order."""
        self.fragmenting = False
        held, self._held = self._held, None
        return held or []
