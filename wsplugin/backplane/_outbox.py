"""The Redis backplane's publish path, with its bounded outage queue.

A publication (or command) for other nodes is sent at once on the command
link: a channel's through the publish script, which assigns its offset and
keeps its history, anything else as a plain ``PUBLISH``. While the command
link is down it waits in a queue bounded by count and by bytes; beyond
either bound the oldest are dropped and counted, so an outage costs bounded
memory. The queue is sent in order when the link is back. One warning is
logged per outage, and the outage's figures go into the reconnect line.

A channel's publication carries the node's high-water mark of the channel
(:mod:`._marks`), read when it is *sent*: the first one sent after Redis
came back from an older snapshot finds the top offset below the mark and
starts a new epoch instead of handing out an offset a second time. The
script's reply raises the mark.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from wsplugin.backplane._layout import PUBLISH_LUA, RedisLayout
from wsplugin.backplane._links import RedisLinks
from wsplugin.backplane._marks import HighMarks, MarkBook, log_rollback
from wsplugin.backplane._types import BackplaneStats, StreamPosition
from wsplugin.backplane._url import RedisURL

__all__ = ["Op", "Outbox"]


@dataclass(slots=True)
class Op:
    """A publication or command on its way to Redis (or waiting in the queue)."""

    topic: str
    payload: bytes
    channel: str | None = None  # set: run the publish script for this channel
    size: int | None = None  # None: the channel's own, else default_size
    ttl_ms: int | None = None  # None: the channel's own, else default_ttl_ms
    default_size: int = 0
    default_ttl_ms: int = 300_000


class Outbox:
    """Sends :class:`Op` values on the command link, queueing them while it
    is down.

    Args:
        layout: The node's key and topic names.
        links: Whose ``command`` link the ops go on.
        stats: Counts ``publish_failures``, ``queued``, ``queue_dropped``
            and ``queue_flushed``.
        log: The logger to write to (the backplane's).
        url: Where Redis is (for log lines; shown redacted).
        max_queue: Ops kept while the link is down (0: none).
        max_queue_bytes: Their total payload bound, in bytes.
        marks: The node's high-water marks: read for each channel's
            publication, raised by the script's reply (the backplane passes
            its :class:`~._channels.Subscriptions`).

    Attributes:
        outage_failures: Ops that could not be sent since the last
            :meth:`end_outage` (queued, or lost in flight).
        outage_dropped: Those dropped because the queue was full.
    """

    def __init__(
        self,
        *,
        layout: RedisLayout,
        links: RedisLinks,
        stats: BackplaneStats,
        log: Logger,
        url: RedisURL,
        max_queue: int,
        max_queue_bytes: int,
        marks: MarkBook | None = None,
    ) -> None:
        self.layout = layout
        self.links = links
        self.stats = stats
        self.log = log
        self.url = url
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.marks: MarkBook = HighMarks() if marks is None else marks
        self.outage_failures = 0
        self.outage_dropped = 0
        self._outage_logged = False
        self._queue: deque[Op] = deque()
        self._queue_bytes = 0

    @property
    def queued_bytes(self) -> int:
        """Payload bytes waiting in the queue now."""
        return self._queue_bytes

    def send(self, op: Op) -> None:
        """Send ``op`` now, or queue it if the command link is down."""
        cmd = self.links.command
        if cmd is None:
            self._enqueue(op)
            return
        try:
            if op.channel is None:
                d = cmd.execute_command("PUBLISH", op.topic, op.payload)
            else:
                mark = self.marks.mark(op.channel)
                d = cmd.eval(
                    PUBLISH_LUA,
                    self.layout.history_keys(op.channel),
                    [
                        op.topic,
                        secrets.token_hex(6),
                        "" if op.size is None else op.size,
                        "" if op.ttl_ms is None else op.ttl_ms,
                        op.payload,
                        op.default_size,
                        op.default_ttl_ms,
                        mark.epoch if mark else "",
                        mark.offset if mark else 0,
                    ],
                )
                d.addCallback(self._published, op.channel)
        except self.links.link_error:
            self._enqueue(op)
            return
        d.addErrback(self._send_failed, op)

    def flush(self) -> None:
        """Send what waited in the queue, oldest first (the command link is
        back)."""
        ops = list(self._queue)
        self._queue.clear()
        self._queue_bytes = 0
        self.stats.queued = 0
        self.stats.queue_flushed += len(ops)
        for op in ops:
            self.send(op)

    def end_outage(self) -> None:
        """The node is connected again: the next failure starts a new
        outage (its own warning and figures)."""
        self._outage_logged = False
        self.outage_failures = 0
        self.outage_dropped = 0

    def _published(self, reply: list[Any], channel: str) -> None:
        """The publish script's reply ``[offset, epoch[, b"rolled"]]``."""
        epoch = reply[1].decode("ascii")
        self.marks.see(channel, StreamPosition(epoch, int(reply[0])))
        if len(reply) > 2 and reply[2] == b"rolled":
            self.stats.rollbacks += 1
            log_rollback(self.log, self.layout.node_id, channel, epoch)

    def _send_failed(self, failure: Any, op: Op) -> None:
        # Sent, but no reply: Redis may or may not have it. Not re-sent
        # (live delivery is at-most-once); counted and logged.
        self.stats.publish_failures += 1
        self.outage_failures += 1
        if not self._outage_logged:
            self._outage_logged = True
            self.log.warn(
                "backplane {node}: a publication to {topic} may be lost: {error}",
                node=self.layout.node_id,
                topic=op.topic,
                error=failure.getErrorMessage(),
            )

    def _enqueue(self, op: Op) -> None:
        self.stats.publish_failures += 1
        self.outage_failures += 1
        if not self._outage_logged:
            self._outage_logged = True
            self.log.warn(
                "backplane {node}: Redis at {url} is unreachable; queueing "
                "publications (at most {count} / {size} bytes, oldest dropped "
                "first)",
                node=self.layout.node_id,
                url=self.url.redacted(),
                count=self.max_queue,
                size=self.max_queue_bytes,
            )
        self._queue.append(op)
        self._queue_bytes += len(op.payload)
        while self._queue and (
            len(self._queue) > self.max_queue
            or self._queue_bytes > self.max_queue_bytes
        ):
            dropped = self._queue.popleft()
            self._queue_bytes -= len(dropped.payload)
            self.stats.queue_dropped += 1
            self.outage_dropped += 1
            if self.outage_dropped == 1:
                self.log.warn(
                    "backplane {node}: publication queue full; dropping the oldest",
                    node=self.layout.node_id,
                )
        self.stats.queued = len(self._queue)
