"""The in-process backplane: one node, no engine, bounded in-memory history.

It is the default: a server without ``--backplane`` uses it, so the factory
has one code path (publish to the backplane, receive from it) whether it runs
alone or in a cluster, and a single node recovers reconnecting subscribers
too.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable
from dataclasses import replace

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsplugin.backplane._types import (
    BackplaneReceiver,
    BackplaneStats,
    Command,
    Publication,
    Recovery,
    RecoveryStatus,
    StreamPosition,
    check_channel,
    check_history,
    check_node_id,
    check_payload,
    coerce_position,
    make_node_id,
    new_connection_id,
    validate_publish_args,
)

__all__ = ["ChannelLog", "LocalBackplane", "recover_from_log"]

#: Seconds between sweeps of expired channel logs (at most; a sweep runs on
#: the next publish or subscribe after that). Bounds memory held for channels
#: nobody publishes to any more, without a timer.
SWEEP_INTERVAL = 60.0


class ChannelLog:
    """A channel's offsets and bounded history in memory.

    ``epoch`` is random per log: a log that expired (no publication for
    ``ttl`` seconds) is replaced by one with a new epoch, so a subscriber
    holding a position in the old one learns that history was lost.
    """

    __slots__ = ("entries", "epoch", "expires", "offset", "size", "ttl")

    def __init__(self, size: int, expires: float) -> None:
        self.epoch = secrets.token_hex(6)
        self.offset = 0
        self.entries: deque[Publication] = deque(maxlen=size)
        self.expires = expires
        #: The channel's own history size and TTL, once a publisher gave
        #: them (None: the backplane's defaults).
        self.size: int | None = None
        self.ttl: float | None = None

    def resize(self, size: int) -> None:
        """Keep at most ``size`` entries from now on (the newest ones)."""
        if self.entries.maxlen != size:
            self.entries = deque(self.entries, maxlen=size)

    def append(self, pub: Publication) -> Publication:
        """Give ``pub`` the next offset, keep it, and return it."""
        self.offset += 1
        pub = replace(pub, offset=self.offset, epoch=self.epoch)
        if self.entries.maxlen:
            self.entries.append(pub)
        return pub


def recover_from_log(log: ChannelLog, since: StreamPosition) -> Recovery:
    """What a subscriber at ``since`` missed, from ``log``."""
    position = StreamPosition(log.epoch, log.offset)
    if since.epoch != log.epoch or since.offset > log.offset:
        return Recovery(RecoveryStatus.EPOCH_CHANGED, (), position)
    missed = log.offset - since.offset
    if missed == 0:
        return Recovery(RecoveryStatus.RECOVERED, (), position)
    if missed > len(log.entries):
        return Recovery(RecoveryStatus.TOO_OLD, (), position)
    entries = list(log.entries)[-missed:]
    return Recovery(RecoveryStatus.RECOVERED, tuple(entries), position)


class LocalBackplane:
    """The single-process :class:`~wsplugin.backplane.Backplane`.

    Publications and commands are delivered to the receiver at once, in the
    caller's reactor turn. Each channel keeps its offsets and, when
    ``history_size`` is above 0, its last publications in memory.

    Args:
        node_id: ``<name>.<worker>`` (see :func:`make_node_id`); random by
            default.
        clock: Time source for history expiry (the global reactor if None).
        history_size: Publications kept per channel by default (0: none, but
            offsets are still assigned). Memory is bounded by
            ``history_size`` x the channels published to within
            ``history_ttl``.
        history_ttl: Seconds a channel's history (and epoch) lives after its
            last publication; 300 by default, as long as a phone's network
            usually takes to come back.
    """

    _log = Logger()

    def __init__(
        self,
        *,
        node_id: str | None = None,
        clock: IReactorTime | None = None,
        history_size: int = 0,
        history_ttl: float = 300.0,
    ) -> None:
        self.node_id = check_node_id(node_id) if node_id else make_node_id()
        check_history(history_size, history_ttl)
        self.history_size = history_size
        self.history_ttl = float(history_ttl)
        self.stats = BackplaneStats()
        self._clock = clock
        self._receiver: BackplaneReceiver | None = None
        self._logs: dict[str, ChannelLog] = {}
        self._members: dict[str, int] = {}
        self._connections = 0
        self._next_sweep = 0.0

    def __repr__(self) -> str:
        return f"<LocalBackplane {self.node_id} {self.state}>"

    @property
    def clock(self) -> IReactorTime:
        """The injected clock, or the global reactor."""
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        assert self._clock is not None
        return self._clock

    @property
    def state(self) -> str:
        """``"connected"`` while started, else ``"stopped"``."""
        return "connected" if self._receiver is not None else "stopped"

    def start(self, receiver: BackplaneReceiver) -> Deferred[None]:
        """Deliver to ``receiver`` from now on."""
        self._receiver = receiver
        return succeed(None)

    def stop(self) -> Deferred[None]:
        """Stop delivering; history is kept (a restart resumes it)."""
        self._receiver = None
        return succeed(None)

    def new_connection_id(self) -> str:
        """A fresh id ``<node_id>.<32 hex>``."""
        return new_connection_id(self.node_id)

    # -- history -----------------------------------------------------------

    def _live_log(self, channel: str) -> ChannelLog:
        """The channel's log, a new one (new epoch) if it had none or it
        expired."""
        now = self.clock.seconds()
        if now >= self._next_sweep:
            self._sweep(now)
        log = self._logs.get(channel)
        if log is None or now >= log.expires:
            log = self._logs[channel] = ChannelLog(
                self.history_size, now + self.history_ttl
            )
        return log

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + min(SWEEP_INTERVAL, self.history_ttl)
        for channel in [c for c, log in self._logs.items() if now >= log.expires]:
            del self._logs[channel]

    # -- sending -----------------------------------------------------------

    def publish(
        self,
        channel: str | None,
        data: bytes,
        is_binary: bool = False,
        *,
        protocol: str | None = None,
        ids: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        history_size: int | None = None,
        history_ttl: float | None = None,
    ) -> None:
        """Assign the channel's next offset, keep the publication if the
        channel has history, and deliver it now.

        ``history_size`` and ``history_ttl``, when given, become the
        channel's own until its history expires; when not, the channel
        keeps its own, or gets this backplane's defaults."""
        pub = validate_publish_args(
            channel, data, is_binary, protocol, ids, exclude, self.node_id
        )
        check_history(
            self.history_size if history_size is None else history_size,
            self.history_ttl if history_ttl is None else history_ttl,
        )
        self.stats.published += 1
        if channel is not None:
            log = self._live_log(channel)
            if history_size is not None:
                log.size = history_size
            if history_ttl is not None:
                log.ttl = float(history_ttl)
            size = self.history_size if log.size is None else log.size
            ttl = self.history_ttl if log.ttl is None else log.ttl
            log.resize(size)
            log.expires = self.clock.seconds() + ttl
            pub = log.append(pub)
        self._deliver(pub)

    def send(self, conn_id: str, data: bytes, is_binary: bool = False) -> None:
        """Hand ``data`` for ``conn_id`` to the receiver."""
        data = check_payload(data, is_binary)
        self._command(Command("send", conn_id, data, bool(is_binary)))

    def disconnect(self, conn_id: str, code: int = 1000, reason: str = "") -> None:
        """Ask the receiver to close ``conn_id``."""
        self._command(Command("close", conn_id, code=code, reason=reason))

    def disconnect_all(self, code: int = 1001, reason: str = "") -> None:
        """Ask the receiver to close every connection."""
        self._command(Command("close_all", None, code=code, reason=reason))

    def _command(self, cmd: Command) -> None:
        if not isinstance(cmd.conn_id, (str, type(None))):
            raise TypeError("a connection id is a str")
        self.stats.published += 1
        cmd = replace(cmd, origin=self.node_id)
        receiver = self._receiver
        if receiver is None:
            self._log.warn("backplane stopped: command {kind} dropped", kind=cmd.kind)
            return
        try:
            receiver.command(cmd)
        except Exception:
            self._log.failure("the receiver failed on command {kind}", kind=cmd.kind)

    def _deliver(self, pub: Publication) -> None:
        receiver = self._receiver
        if receiver is None:
            self._log.warn("backplane stopped: publication dropped")
            return
        try:
            receiver.deliver(pub)
        except Exception:
            self._log.failure("the receiver failed on a publication")

    # -- subscriptions -----------------------------------------------------

    def subscribe(
        self,
        channel: str,
        since: StreamPosition | tuple[str, int] | None = None,
    ) -> Deferred[Recovery]:
        """Count one more subscriber; recover from ``since`` (at once)."""
        check_channel(channel)
        position = coerce_position(since)
        self._members[channel] = self._members.get(channel, 0) + 1
        log = self._live_log(channel)
        if position is None:
            result = Recovery(
                RecoveryStatus.NOT_REQUESTED,
                (),
                StreamPosition(log.epoch, log.offset),
            )
        else:
            result = recover_from_log(log, position)
        self.stats.count_recovery(result.status)
        return succeed(result)

    def unsubscribe(self, channel: str) -> None:
        """Count one subscriber less (never below zero)."""
        n = self._members.get(channel, 0) - 1
        if n > 0:
            self._members[channel] = n
        else:
            self._members.pop(channel, None)

    # -- counts ------------------------------------------------------------

    def connection_opened(self) -> None:
        """Count one more connection."""
        self._connections += 1

    def connection_closed(self) -> None:
        """Count one connection less (never below zero)."""
        self._connections = max(0, self._connections - 1)

    def connection_count(self) -> Deferred[int]:
        """The local connection count (this is the whole cluster)."""
        return succeed(self._connections)

    def channel_count(self, channel: str) -> Deferred[int]:
        """The local subscriber count of ``channel``."""
        return succeed(self._members.get(channel, 0))

    def local_channels(self) -> dict[str, int]:
        """Channels with local subscribers, and how many each has."""
        return dict(self._members)

    def history_channels(self) -> list[str]:
        """Channels whose history (epoch, offsets, kept publications) is in
        memory now. An idle channel is forgotten ``history_ttl`` after its
        last publication, at the next sweep, so memory stays bounded."""
        return list(self._logs)
