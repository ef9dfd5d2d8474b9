"""The Redis backplane's subscriptions: channel topics, recovery from
history, and the node's own catch-up after its subscriber link was lost.

A channel's topic is subscribed while the node has a local subscriber of it
(the Centrifugo model). Recovery closes the race between history and live
messages (see :meth:`Subscriptions.subscribe`): the result is the missed
history, then the live messages recorded meanwhile that are newer than it,
with no gap and no duplicate.

When the subscriber link comes back, each channel that may have missed
publications holds its live messages back, and once both links are up
recovers from the last publication the node delivered, into the receiver:
every publication arrives once, in order. A hold that grows past
:data:`MAX_HOLD` is released (the messages are delivered and the gap stays),
so a node whose command link stays down cannot grow without bound.

Every position Redis hands this node (live, from history, a recovery's top)
raises the channel's high-water mark (:mod:`._marks`); each recovery passes
the node's mark to the script, which replaces the epoch when Redis came
back from an older snapshot with offsets below it. The catch-up after the
links return is where a rollback is usually found.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from wsplugin.backplane._layout import RECOVER_LUA, RedisLayout
from wsplugin.backplane._links import RedisLinks
from wsplugin.backplane._marks import HighMarks, higher, log_rollback
from wsplugin.backplane._types import (
    BackplaneStats,
    Publication,
    Recovery,
    RecoveryStatus,
    StreamPosition,
    check_channel,
    coerce_position,
    decode,
)

__all__ = ["MAX_HOLD", "Subscriptions"]

#: Live messages a catch-up holds back per channel, at most. Beyond it the
#: hold is released (the messages are delivered and the gap stays), so a node
#: whose command link stays down cannot grow without bound.
MAX_HOLD = 10_000


@dataclass(slots=True)
class _Pending:
    """A recovery in progress: live messages of its channel seen meanwhile.

    ``hold``: a node-level catch-up; live messages of the channel are kept
    back from the receiver until it ends (a subscriber's recovery only
    records them).
    """

    channel: str
    buffer: list[Publication] = field(default_factory=list)
    hold: bool = False


class Subscriptions:
    """The node's channels: local subscriber counts, their topics, and
    recovery.

    Args:
        layout: The node's key and topic names.
        links: The links the topics and scripts go on.
        stats: Counts ``received``, ``recoveries`` and ``catch_ups``.
        log: The logger to write to (the backplane's).
        history_ttl: Seconds a channel's history lives (a recovery that
            creates the channel's meta hash gives it this lifetime).
        deliver: Hands a publication to the node's receiver.
        on_change: Called when a channel's subscriber count changed.
        marks: The node's high-water marks (shared with the publish path).

    Attributes:
        members: Local subscribers per channel (read it; do not change it).
        marks: The node's high-water marks.
    """

    def __init__(
        self,
        *,
        layout: RedisLayout,
        links: RedisLinks,
        stats: BackplaneStats,
        log: Logger,
        history_ttl: float,
        deliver: Callable[[Publication], None],
        on_change: Callable[[], None],
        marks: HighMarks | None = None,
    ) -> None:
        self.layout = layout
        self.links = links
        self.stats = stats
        self.log = log
        self.history_ttl = history_ttl
        self.deliver = deliver
        self.on_change = on_change
        self.members: dict[str, int] = {}
        self.marks = HighMarks() if marks is None else marks
        self._pending: dict[str, list[_Pending]] = {}
        self._last: dict[str, StreamPosition] = {}
        self._stale: set[str] = set()
        self._holds: list[_Pending] = []

    def subscribe(
        self,
        channel: str,
        since: StreamPosition | tuple[str, int] | None = None,
    ) -> Deferred[Recovery]:
        """One more local subscriber; recover from ``since``.

        The order of steps closes the race between history and live
        messages: (1) the channel's topic is subscribed and a PING on the
        subscriber link returns, so Redis now sends us every later
        publication; live messages of the channel are recorded from this
        point; (2) one script reads the epoch, the top offset and the missed
        entries atomically; (3) a second PING on the subscriber link returns,
        so every publication up to that top offset that Redis sent us live
        has arrived. The result is the history, then the recorded live
        messages newer than the top offset: no gap, no duplicate.
        """
        check_channel(channel)
        position = coerce_position(since)
        count = self.members.get(channel, 0)
        self.members[channel] = count + 1
        if count == 0:
            self.links.subscribe_topic(self.layout.channel_topic(channel))
        self.on_change()
        if self.links.command is None or self.links.subscriber is None:
            status = (
                RecoveryStatus.NOT_REQUESTED
                if position is None
                else RecoveryStatus.UNAVAILABLE
            )
            self.stats.count_recovery(status)
            return succeed(Recovery(status, (), None))
        pending = _Pending(channel)
        self._pending.setdefault(channel, []).append(pending)
        d = Deferred.fromCoroutine(self._recover(pending, position))
        return d.addCallback(self._counted)

    def unsubscribe(self, channel: str) -> None:
        """One local subscriber less; the last one unsubscribes the topic."""
        count = self.members.get(channel, 0)
        if count <= 0:
            return
        if count > 1:
            self.members[channel] = count - 1
        else:
            del self.members[channel]
            self._last.pop(channel, None)
            self.links.unsubscribe_topic(self.layout.channel_topic(channel))
        self.on_change()

    def mark(self, channel: str) -> StreamPosition | None:
        """The highest position of ``channel`` this node has seen (a
        subscribed channel's last delivered one counts even if the marks
        forgot it)."""
        return higher(self.marks.mark(channel), self._last.get(channel))

    def see(self, channel: str, position: StreamPosition) -> None:
        """Redis handed out ``position`` of ``channel`` (a publish reply)."""
        self.marks.see(channel, position)

    def recovering(self) -> list[str]:
        """Channels with a recovery or a catch-up in progress."""
        return sorted(self._pending)

    def observe(self, msg: Publication, local_done: bool) -> bool:
        """A live publication of a channel arrived: record it for the
        recoveries in progress. Whether to deliver it now (False: held back
        by a catch-up, or no local subscriber)."""
        channel = msg.channel
        assert channel is not None
        if msg.position is not None:
            self.marks.see(channel, msg.position)
        held = False
        own = local_done and msg.origin == self.layout.node_id
        for pending in list(self._pending.get(channel, ())):
            if own and pending.hold:
                continue  # delivered here already, when it was made
            pending.buffer.append(msg)
            if pending.hold:
                held = len(pending.buffer) <= MAX_HOLD or self._release(pending)
        if held or not self.members.get(channel):
            return False
        if msg.position is not None:
            self._last[channel] = msg.position
        return True

    # -- catching up after the subscriber link was lost -------------------

    def subscriber_down(self) -> None:
        """The subscriber link was lost: every channel whose last delivered
        position is known may miss publications until it is back."""
        self._stale.update(c for c in self.members if c in self._last)

    def subscriber_up(self) -> None:
        """The subscriber link is back: subscribe every channel's topic
        again, and hold live messages of each channel that may have missed
        some, until its catch-up runs."""
        for channel in self.members:
            self.links.subscribe_topic(self.layout.channel_topic(channel))
        stale, self._stale = self._stale, set()
        for channel in stale:
            if self.members.get(channel) and channel in self._last:
                pending = _Pending(channel, hold=True)
                self._pending.setdefault(channel, []).append(pending)
                self._holds.append(pending)

    def start_catch_ups(self) -> None:
        """Both links are up: recover each held channel from the last
        publication this node delivered, into the receiver."""
        holds, self._holds = self._holds, []
        for pending in holds:
            if not pending.hold:
                continue  # released meanwhile
            since = self._last.get(pending.channel)
            d = Deferred.fromCoroutine(self._recover(pending, since))
            d.addCallback(self._caught_up, pending)

    def _counted(self, result: Recovery) -> Recovery:
        self.stats.count_recovery(result.status)
        return result

    def _caught_up(self, result: Recovery, pending: _Pending) -> None:
        channel = pending.channel
        self.stats.count_catch_up(result.status)
        if result.status is RecoveryStatus.UNAVAILABLE:
            pubs: Iterable[Publication] = pending.buffer
        else:
            pubs = result.publications
        if result.status in (RecoveryStatus.EPOCH_CHANGED, RecoveryStatus.TOO_OLD):
            self.log.warn(
                "backplane {node}: local subscribers of {channel!r} missed "
                "publications no longer in history ({status})",
                node=self.layout.node_id,
                channel=channel,
                status=result.status.value,
            )
        if pending.hold:
            pending.hold = False
            self._deliver_new(channel, pubs)

    def _release(self, pending: _Pending) -> bool:
        """A hold grew past MAX_HOLD: deliver what it kept; stop holding."""
        self.log.warn(
            "backplane {node}: catch-up of {channel!r} waited too long; "
            "delivering live messages without it",
            node=self.layout.node_id,
            channel=pending.channel,
        )
        pending.hold = False
        self._forget(pending)
        held, pending.buffer = pending.buffer[:-1], []
        self._deliver_new(pending.channel, held)
        return False

    def _forget(self, pending: _Pending) -> None:
        waiting = self._pending.get(pending.channel, [])
        if pending in waiting:
            waiting.remove(pending)
        if not waiting:
            self._pending.pop(pending.channel, None)

    def _deliver_new(self, channel: str, pubs: Iterable[Publication]) -> None:
        """Deliver the publications newer than the last one delivered."""
        for pub in pubs:
            if not self.members.get(channel):
                return
            last = self._last.get(channel)
            if (
                last is not None
                and pub.offset is not None
                and pub.epoch == last.epoch
                and pub.offset <= last.offset
            ):
                continue
            if pub.position is not None:
                self._last[channel] = pub.position
                self.marks.see(channel, pub.position)
            self.stats.received += 1
            self.deliver(pub)

    async def _recover(
        self, pending: _Pending, since: StreamPosition | None
    ) -> Recovery:
        channel = pending.channel
        sub, cmd = self.links.subscriber, self.links.command
        try:
            await sub.ping()
            mark = self.mark(channel)
            reply = await cmd.eval(
                RECOVER_LUA,
                self.layout.history_keys(channel),
                [
                    secrets.token_hex(6),
                    max(1, int(self.history_ttl * 1000)),
                    since.epoch if since else "",
                    since.offset if since else 0,
                    mark.epoch if mark else "",
                    mark.offset if mark else 0,
                    "1" if pending.hold else "",
                ],
            )
            await sub.ping()
            if self.links.subscriber is not sub:
                raise self.links.link_error("subscriber link replaced")
            result = self._assemble(reply, pending, since)
        except Exception as e:
            self.log.warn(
                "backplane {node}: could not recover {channel!r}: {error}",
                node=self.layout.node_id,
                channel=channel,
                error=str(e) or type(e).__name__,
            )
            result = Recovery(
                RecoveryStatus.NOT_REQUESTED
                if since is None
                else RecoveryStatus.UNAVAILABLE
            )
        finally:
            self._forget(pending)
        return result

    def _assemble(
        self, reply: list[Any], pending: _Pending, since: StreamPosition | None
    ) -> Recovery:
        epoch = reply[0].decode("ascii")
        top = int(reply[1])
        channel = pending.channel
        self.marks.see(channel, StreamPosition(epoch, top))
        missed: list[Publication] = []
        rolled = len(reply) > 2 and reply[2] == b"rolled"
        if rolled:
            self.stats.rollbacks += 1
            log_rollback(self.log, self.layout.node_id, channel, epoch)
        if since is None:
            status = RecoveryStatus.NOT_REQUESTED
        elif reply[2] in (b"epoch", b"rolled"):
            status = RecoveryStatus.EPOCH_CHANGED
        elif reply[2] == b"old":
            status = RecoveryStatus.TOO_OLD
        else:
            status = RecoveryStatus.RECOVERED
        if status in (RecoveryStatus.RECOVERED, RecoveryStatus.EPOCH_CHANGED):
            # EPOCH_CHANGED has entries for a catch-up: the new epoch's
            for entry_id, fields in reply[3] if len(reply) > 3 else ():
                offset = int(entry_id.split(b"-", 1)[0])
                raw = dict(zip(fields[::2], fields[1::2], strict=True))[b"m"]
                msg, done = decode(raw, offset=offset, epoch=epoch)
                assert isinstance(msg, Publication)
                if pending.hold and done and msg.origin == self.layout.node_id:
                    continue  # a catch-up skips what this node delivered
                missed.append(msg)
        # after a rollback, what was published in the old epoch reused
        # offsets already handed out: it cannot be placed in any sequence
        live = [
            p
            for p in pending.buffer
            if (p.epoch == epoch and p.offset is not None and p.offset > top)
            or (p.epoch != epoch and not rolled)
        ]
        position = StreamPosition(epoch, top)
        last = live[-1].position if live else None
        return Recovery(status, tuple(missed + live), last or position)
