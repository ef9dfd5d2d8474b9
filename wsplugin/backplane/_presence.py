"""The Redis backplane's cluster-wide counts: a heartbeat of each node's
snapshot, and the sums over live nodes.

Each node writes its connection count and its subscribers per channel into
``<p>:counts:<node_id>`` (one script: the hash and the node's entry in
``<p>:nodes``, both expiring after 3 heartbeats) every
``heartbeat_interval`` seconds, and at most ``counts_delay`` seconds after
a change, so a burst of joins and leaves costs one write. A count sums the
other live nodes' snapshots and adds this node's exact figure; a node that
died without withdrawing drops out after 3 heartbeats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from wsplugin.backplane._layout import (
    COUNT_LUA,
    HEARTBEAT_LUA,
    WITHDRAW_LUA,
    RedisLayout,
)
from wsplugin.backplane._links import RedisLinks
from wsplugin.backplane._types import BackplaneUnavailable
from wsplugin.backplane._url import RedisURL

__all__ = ["Presence"]


class Presence:
    """This node's counts in Redis, and the cluster's.

    Args:
        reactor: The clock of the heartbeat and the coalescing delay.
        layout: The node's key and topic names.
        links: Whose ``command`` link the scripts run on.
        log: The logger to write to (the backplane's).
        url: Where Redis is (for error messages; shown redacted).
        channel_counts: Returns the node's local subscribers per channel.
        heartbeat_interval: Seconds between snapshots.
        counts_delay: Seconds a changed count waits before it is written.

    Attributes:
        connections: This node's open connections.
    """

    def __init__(
        self,
        *,
        reactor: Any,
        layout: RedisLayout,
        links: RedisLinks,
        log: Logger,
        url: RedisURL,
        channel_counts: Callable[[], Mapping[str, int]],
        heartbeat_interval: float,
        counts_delay: float,
    ) -> None:
        self.reactor = reactor
        self.layout = layout
        self.links = links
        self.log = log
        self.url = url
        self.channel_counts = channel_counts
        self.heartbeat_interval = heartbeat_interval
        self.counts_delay = counts_delay
        self.connections = 0
        self._heartbeat: LoopingCall | None = None
        self._counts_call: IDelayedCall | None = None

    def start(self) -> None:
        """Write a snapshot every ``heartbeat_interval`` seconds."""
        self._heartbeat = LoopingCall(self.push)
        self._heartbeat.clock = self.reactor
        self._heartbeat.start(self.heartbeat_interval, now=False)

    def stop(self) -> Deferred[None]:
        """Stop the timers and withdraw this node's counts from Redis;
        fires when Redis answered (or at once, without a command link).
        Never fails."""
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._counts_call is not None and self._counts_call.active():
            self._counts_call.cancel()
        self._counts_call = None
        cmd = self.links.command
        if cmd is None:
            return succeed(None)
        try:
            d: Deferred[Any] = cmd.eval(
                WITHDRAW_LUA, self.layout.counts_keys, [self.layout.node_id]
            )
        except Exception:
            d = succeed(None)
        return d.addErrback(lambda _f: None)

    def opened(self) -> None:
        """One more local connection."""
        self.connections += 1
        self.changed()

    def closed(self) -> None:
        """One local connection less."""
        self.connections = max(0, self.connections - 1)
        self.changed()

    def changed(self) -> None:
        """A count changed: write a snapshot within ``counts_delay``."""
        if not self.links.running or self._counts_call is not None:
            return
        self._counts_call = self.reactor.callLater(self.counts_delay, self.push)

    def push(self) -> None:
        """Write this node's snapshot now (if the command link is up)."""
        if self._counts_call is not None and self._counts_call.active():
            self._counts_call.cancel()
        self._counts_call = None
        cmd = self.links.command
        if cmd is None:
            return
        node = self.layout.node_id
        ttl_ms = max(1000, int(self.heartbeat_interval * 3000))
        args: list[Any] = [node, ttl_ms, "c", self.connections]
        for channel, n in self.channel_counts().items():
            args += ["ch:" + channel, n]
        try:
            d = cmd.eval(HEARTBEAT_LUA, self.layout.counts_keys, args)
        except self.links.link_error:
            return
        d.addErrback(
            lambda f: self.log.warn(
                "backplane {node}: counts not written: {error}",
                node=node,
                error=f.getErrorMessage(),
            )
        )

    def count(self, field_name: str, local: int) -> Deferred[int]:
        """The sum of ``field_name`` (``"c"``, or ``"ch:<channel>"``) over
        the other live nodes, plus ``local``, this node's exact figure.

        Fails with :class:`~wsplugin.backplane.BackplaneUnavailable` when
        Redis cannot be asked.
        """
        cmd = self.links.command
        if cmd is None:
            return fail(BackplaneUnavailable(f"Redis at {self.url.redacted()} is down"))
        try:
            d: Deferred[Any] = cmd.eval(
                COUNT_LUA,
                [self.layout.nodes_key],
                [self.layout.counts_prefix, field_name, self.layout.node_id],
            )
        except self.links.link_error:
            return fail(BackplaneUnavailable(f"Redis at {self.url.redacted()} is down"))

        def unavailable(f: Any) -> Any:
            raise BackplaneUnavailable(f.getErrorMessage())

        return d.addCallbacks(lambda n: int(n) + local, unavailable)
