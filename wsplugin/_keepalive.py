"""Keep-alive for one connection: the heartbeat and the idle timeout.

* **Heartbeat** (sgc HeartBeat): a peer silent for a whole
  ``heartbeat_interval`` gets a ping (or the application's own keep-alive,
  from ``before_heartbeat``) and ``heartbeat_timeout`` seconds to answer with
  anything; a peer that sent anything during the interval is plainly alive
  and is not pinged.
* **Idle timeout**: a connection that sent no data message for
  ``idle_timeout`` seconds is closed (checked every ``idle_timeout``
  seconds, so it acts within one to two periods).

The host (the protocol) counts reads and messages on :attr:`KeepAlive.reads`
and :attr:`KeepAlive.messages`, and calls :meth:`KeepAlive.answered` when
data arrives while a heartbeat waits for an answer. What to send and how to
close stays the host's (:class:`KeepAliveHost`). Plain Python on an
injected clock: tests drive it with ``task.Clock``.

The heartbeat timers of a factory's connections with the same interval
share one :class:`Beats` queue and one ``DelayedCall`` (the factory holds
the queues in a :class:`Heartbeats`): each interval starts "now", so due
times arrive in insertion order and a FIFO queue is exact. A
``DelayedCall`` per idle connection cost about 700 bytes of RSS (issue 16,
workload E); a queue entry costs a slot and a float.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "COMPACT_AT",
    "HEARTBEAT_PREFIX",
    "Beats",
    "KeepAlive",
    "KeepAliveHost",
    "Heartbeats",
]

HEARTBEAT_PREFIX = b"wsplugin-hb-"
"""The payload prefix of the server's heartbeat pings (their pongs are not
queued for ``wait_for_message``)."""


class KeepAliveHost(Protocol):
    """What keep-alive needs from its connection."""

    def keepalive_wanted(self) -> bool:
        """Whether the connection is open and the peer has not closed."""

    def before_heartbeat(self) -> bool | None:
        """Run the application's ``before_heartbeat``: True if it sent its
        own keep-alive, False to send a ping, None if it failed (the host
        handled the failure; no answer is awaited)."""

    def send_ping(self, payload: bytes) -> None:
        """Send a ping ahead of queued data."""

    def heartbeat_expired(self) -> None:
        """No answer within ``heartbeat_timeout``: close (1011)."""

    def idle_expired(self) -> None:
        """No data message within ``idle_timeout``: close (1001)."""


class _Stopped:
    """The host of a stopped :class:`KeepAlive`: wants nothing, does
    nothing."""

    def keepalive_wanted(self) -> bool:
        return False

    def before_heartbeat(self) -> bool | None:
        return None

    def send_ping(self, payload: bytes) -> None:
        pass

    def heartbeat_expired(self) -> None:
        pass

    def idle_expired(self) -> None:
        pass


_STOPPED: KeepAliveHost = _Stopped()


class Beats:
    """The heartbeat due times of a factory's connections with one
    interval, in one FIFO queue behind a single ``DelayedCall``.

    An entry is a :class:`KeepAlive` whose ``due`` says when it is due; a
    stopped one (``due`` None) stays queued until it reaches the head, or
    until stopped entries outnumber live ones (and :data:`COMPACT_AT`),
    when the queue is rebuilt without them: under connection churn the
    queue stays within a small multiple of the live connections.

    A reactor's clock is the wall clock, which a time step can move back;
    then the queued due times move back with it, so the queue stays in due
    order and a connection opened after the step is still checked one
    interval later.

    Attributes:
        live: Connections waiting for their heartbeat check.
    """

    __slots__ = (
        "_clock",
        "_interval",
        "_queue",
        "_call",
        "_firing",
        "_last",
        "live",
    )

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self._clock = clock
        self._interval = interval
        self._queue: deque[KeepAlive] = deque()
        self._call: IDelayedCall | None = None
        self._firing = False
        self._last = float("-inf")
        self.live = 0

    @property
    def queued(self) -> int:
        """Entries in the queue, stopped ones included."""
        return len(self._queue)

    def add(self, ka: KeepAlive) -> None:
        """Due one interval from now."""
        due = self._clock.seconds() + self._interval
        queue = self._queue
        stepped_back = due < self._last
        if stepped_back:
            shift = self._last - due
            for other in queue:
                if other.due is not None:
                    other.due -= shift
        self._last = ka.due = due
        queue.append(ka)
        self.live += 1
        if self._firing:
            return  # _fire schedules once it is done
        call = self._call
        if call is not None and call.active():
            if not stepped_back:
                return
            call.cancel()  # set for a time that moved back with the clock
        self._schedule()

    def discard(self, ka: KeepAlive) -> None:
        """Not due any more (left in the queue, skipped at the head)."""
        if ka.due is None:
            return
        ka.due = None
        self.live -= 1
        queue = self._queue
        if not self.live and not self._firing:
            queue.clear()
            call, self._call = self._call, None
            if call is not None and call.active():
                call.cancel()
        else:
            dead = len(queue) - self.live
            if dead > COMPACT_AT and dead > self.live:
                # in place: _fire may be walking this very deque
                kept = [k for k in queue if k.due is not None]
                queue.clear()
                queue.extend(kept)

    def _schedule(self) -> None:
        """One call for the first live entry (none if there is none)."""
        queue = self._queue
        while queue and queue[0].due is None:
            queue.popleft()
        if queue:
            head: float = queue[0].due  # type: ignore[assignment]
            delay = max(0.0, head - self._clock.seconds())
            self._call = self._clock.callLater(delay, self._fire)
        else:
            self._call = None

    def _fire(self) -> None:
        self._call = None
        self._firing = True
        queue = self._queue
        try:
            now = self._clock.seconds()
            while queue:
                ka = queue[0]
                due = ka.due
                if due is not None and due > now:
                    break
                queue.popleft()
                if due is not None:
                    ka.due = None
                    self.live -= 1
                    ka()
        finally:
            self._firing = False
            self._schedule()


COMPACT_AT = 64
"""Stopped entries a heartbeat queue tolerates before it may drop them
(and only while they outnumber the live ones)."""


class Heartbeats:
    """The shared heartbeat queues of one clock, one per interval.

    A factory holds one for its connections (and lives as long as they
    do), so the queues go away with it.

    Args:
        clock: The reactor's clock.

    Attributes:
        clock: That clock.
    """

    __slots__ = ("clock", "_queues")

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._queues: dict[float, Beats] = {}

    def queue(self, interval: float) -> Beats:
        """The queue for ``interval`` (made on first use)."""
        beats = self._queues.get(interval)
        if beats is None:
            beats = self._queues[interval] = Beats(self.clock, interval)
        return beats


class KeepAlive:
    """The heartbeat and idle timers of one connection.

    Created when the connection opens, and only if ``heartbeat_interval`` or
    ``idle_timeout`` is set. The heartbeat waits in the queue its clock and
    interval share (no ``DelayedCall`` per connection); the object itself
    is what the queue calls.

    Args:
        heartbeats: The factory's shared queues (:class:`Heartbeats`), on
            the reactor's clock.
        host: The connection (:class:`KeepAliveHost`).
        config: The route's options (``heartbeat_interval``,
            ``heartbeat_timeout``, ``idle_timeout``).

    Attributes:
        reads: Reads from the peer (the host adds one per read).
        messages: Data messages (or frames) from the peer.
        seq: Heartbeat pings sent.
        expiry: The pending heartbeat timeout, or None.
        due: When the next heartbeat check is due, on the clock (None when
            none is queued); set by the shared queue.
    """

    __slots__ = (
        "_clock",
        "_host",
        "_config",
        "reads",
        "messages",
        "seq",
        "_seen",
        "_idle_seen",
        "_beats",
        "due",
        "expiry",
        "_idle_call",
    )

    def __init__(
        self, heartbeats: Heartbeats, host: KeepAliveHost, config: Any
    ) -> None:
        self._clock = heartbeats.clock
        self._host = host
        self._config = config
        self.reads = 0
        self.messages = 0
        self.seq = 0
        self._seen = 0
        self._idle_seen = 0
        self._beats: Beats | None = None
        self.due: float | None = None
        self.expiry: IDelayedCall | None = None
        self._idle_call: IDelayedCall | None = None
        if config.heartbeat_interval:
            self._beats = heartbeats.queue(config.heartbeat_interval)
            self._beats.add(self)
        if config.idle_timeout:
            self._idle_call = heartbeats.clock.callLater(
                config.idle_timeout, self._idle_check
            )

    def answered(self) -> None:
        """Data arrived: a pending heartbeat is answered."""
        expiry, self.expiry = self.expiry, None
        if expiry is not None:
            expiry.cancel()

    def __call__(self) -> None:
        """The heartbeat interval passed (called by the shared queue)."""
        host = self._host
        if not host.keepalive_wanted():
            return
        cfg = self._config
        self._beats.add(self)  # type: ignore[union-attr]
        if self.reads != self._seen:
            self._seen = self.reads
            return
        handled = host.before_heartbeat()
        if handled is None:
            return
        if not handled:
            self.seq += 1
            host.send_ping(HEARTBEAT_PREFIX + b"%d" % self.seq)
        if cfg.heartbeat_timeout and self.expiry is None:
            self.expiry = self._clock.callLater(cfg.heartbeat_timeout, self._expired)

    def _expired(self) -> None:
        self.expiry = None
        self._host.heartbeat_expired()

    def _idle_check(self) -> None:
        self._idle_call = None
        if not self._host.keepalive_wanted():
            return
        if self.messages != self._idle_seen:
            self._idle_seen = self.messages
            self._idle_call = self._clock.callLater(
                self._config.idle_timeout, self._idle_check
            )
            return
        self._host.idle_expired()

    def stop(self) -> None:
        """The connection ended: cancel every timer, and let go of the
        connection (a stopped entry may wait in the shared queue for up to
        an interval)."""
        self._host = _STOPPED
        if self._beats is not None:
            self._beats.discard(self)
        for name in ("expiry", "_idle_call"):
            call = getattr(self, name)
            if call is not None:
                if call.active():
                    call.cancel()
                setattr(self, name, None)
