"""A node's high-water marks: per channel, the highest ``(epoch, offset)``
the node has seen Redis hand out.

Redis can come back from an older snapshot (``SAVE`` intervals, AOF
``everysec``, a kill before the next write, a failover to an asynchronous
replica) with a channel's meta hash rolled back *in the same epoch*: its
top offset is below offsets already handed out. Without a check, the next
publications would take those offsets again, and a client that stored one
of them would recover the wrong sequence. A node that saw an offset above
the restored top knows better: its mark goes to the publish and recover
scripts, which then replace the epoch atomically (see
:data:`~._layout.PUBLISH_LUA`).

A mark is only ever what Redis itself said (a live publication, a publish
reply, a history entry, a recovery's top): never a client's ``since``,
which anyone can make up. Offsets only grow within an epoch, so a mark
above the top of the same epoch proves a rollback; a mark of an older
epoch is harmless (it matches nothing).

Plain values: no reactor, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from twisted.logger import Logger

from wsplugin.backplane._types import StreamPosition

__all__ = ["MAX_MARKS", "HighMarks", "MarkBook", "higher", "log_rollback"]

#: Channels whose mark a node keeps beyond those it has local subscribers on
#: (about 200 bytes each: 2 MB at most). The least recently seen is
#: forgotten first; a channel not published to for ``history_ttl`` has lost
#: its history anyway.
MAX_MARKS = 10_000


class MarkBook(Protocol):
    """What the publish path needs: a channel's mark, and a way to raise it."""

    def mark(self, channel: str) -> StreamPosition | None:
        """The highest position of ``channel`` seen, or None."""

    def see(self, channel: str, position: StreamPosition) -> None:
        """Redis handed out ``position`` of ``channel``."""


class HighMarks:
    """Per channel, the highest position seen, for the
    :data:`MAX_MARKS` most recently seen channels.

    Args:
        limit: How many channels to remember.
    """

    def __init__(self, limit: int = MAX_MARKS) -> None:
        self.limit = limit
        self._marks: OrderedDict[str, StreamPosition] = OrderedDict()

    def __len__(self) -> int:
        return len(self._marks)

    def mark(self, channel: str) -> StreamPosition | None:
        """The highest position of ``channel`` seen, or None."""
        return self._marks.get(channel)

    def see(self, channel: str, position: StreamPosition) -> None:
        """Redis handed out ``position``: within its epoch the mark only
        grows; a position of another epoch replaces it (the latest epoch
        seen is the one to guard; an out-of-date one only matches
        nothing)."""
        old = self._marks.pop(channel, None)
        if (
            old is not None
            and old.epoch == position.epoch
            and old.offset > position.offset
        ):
            position = old
        self._marks[channel] = position
        while len(self._marks) > self.limit:
            self._marks.popitem(last=False)


def higher(a: StreamPosition | None, b: StreamPosition | None) -> StreamPosition | None:
    """The higher of two marks of one channel: within one epoch the larger
    offset; across epochs ``a`` (the caller's preferred source)."""
    if a is None:
        return b
    if b is not None and a.epoch == b.epoch and b.offset > a.offset:
        return b
    return a


def log_rollback(log: Logger, node: str, channel: str, epoch: str) -> None:
    """Warn that a script replaced ``channel``'s epoch after a rollback."""
    log.warn(
        "backplane {node}: Redis lost publications of {channel!r} (it came "
        "back from older data: its top offset is below one this node saw); "
        "the channel starts a new epoch {epoch}",
        node=node,
        channel=channel,
        epoch=epoch,
    )
