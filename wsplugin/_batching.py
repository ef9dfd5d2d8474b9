"""Write batching: the writes of one reactor turn leave with one ``send()``.

On a plain TCP connection whose transport holds nothing, a server protocol
collects the writes of a reactor turn in a list instead of handing each to
Twisted; at the end of the turn :class:`TurnBatcher` asks every connection
that collected something to send it (:func:`send_now`: as much as the socket
takes at once, the rest through the transport, which then owns the order).
Twisted would write the same bytes at the same point of the loop, but first
register and then unregister the socket for writability: two ``epoll_ctl``
calls per connection and turn, which for a broadcast to many clients cost
more than the writes themselves.

One batcher per server (per factory, hence per reactor): a single delayed
call per turn serves every connection. Plain Python on an injected clock.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["BATCH_LIMIT", "BatchSink", "TurnBatcher", "send_now"]

BATCH_LIMIT = 65536
"""Most bytes one turn's writes collect before they go out at once (Twisted's
transport buffer size: past it, the transport's flow control takes over)."""


class BatchSink(Protocol):
    """What the batcher needs from a connection that collected writes."""

    peer: str

    def flush_batch(self) -> None:
        """Send what was collected this turn."""


class TurnBatcher:
    """Calls :meth:`BatchSink.flush_batch` on each connection that collected
    writes, once, at the end of the reactor turn.

    Args:
        clock: The reactor (``callLater(0, ...)`` runs at the turn's end).
        log: Where a connection whose flush raises is logged (the others
            are still flushed).
    """

    __slots__ = ("_clock", "_log", "_sinks", "_call")

    def __init__(self, clock: IReactorTime, log: Logger) -> None:
        self._clock = clock
        self._log = log
        self._sinks: list[BatchSink] = []
        self._call: IDelayedCall | None = None

    def add(self, sink: BatchSink) -> None:
        """``sink`` collects writes this turn: flush it when the turn ends."""
        self._sinks.append(sink)
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    @property
    def pending(self) -> int:
        """Connections waiting for the end of the turn."""
        return len(self._sinks)

    def flush(self) -> None:
        """Flush every waiting connection (the end of the turn)."""
        self._call = None
        sinks, self._sinks = self._sinks, []
        for sink in sinks:
            try:
                sink.flush_batch()
            except Exception:
                self._log.failure("writing to {peer} failed", peer=sink.peer)


def send_now(transport: Any, data: bytes, writes_now: bool) -> None:
    """Send ``data``: as much as the socket takes now (when ``writes_now``:
    the transport holds nothing and is not closing), the rest through the
    transport."""
    sent = 0
    if writes_now:
        try:
            sent = transport.socket.send(data)
        except OSError:
            # EAGAIN, or a dead socket: the transport retries, or finds the
            # error and reports the connection lost as usual
            sent = 0
    if sent < len(data):
        transport.write(data[sent:] if sent else data)
