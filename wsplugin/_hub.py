"""The node's side of a backplane: one server acting as part of a cluster.

:class:`Hub` sits between a server's sending API, its connections and its
:class:`~wsplugin.backplane.Backplane` engine:

* it is the engine's :class:`~wsplugin.backplane.BackplaneReceiver`:
  publications go to the :class:`~wsplugin._fanout.Fanout` (filters applied
  to this node's connections, each frame encoded once), commands to the
  connection they name;
* ``broadcast`` publishes once per call (once per channel, never once per
  receiver); ``write_data``, ``disconnect`` and ``disconnect_all`` act here
  when this node holds the connection, else through the engine;
* connections join and leave channels through it, so the engine subscribes
  a channel's topic only while this node has a subscriber, and a
  subscriber that gives ``since`` gets what it missed before anything live;
* connections opening and closing are counted for cluster-wide counts.

The in-process :class:`~wsplugin.backplane.LocalBackplane` goes through the
same paths; it delivers within the caller's reactor turn. Until the engine
is started (a server that has not started yet, or has stopped), sending is
local only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._connbase import check_close_code
from wsplugin._fanout import Fanout
from wsplugin._registry import Registry
from wsplugin.backplane import (
    Backplane,
    Command,
    Publication,
    Recovery,
    RecoveryStatus,
    StreamPosition,
    holder_of,
)
from wsplugin.backplane._types import check_channel, coerce_position
from wsplugin.errors import UnknownConnection

if TYPE_CHECKING:
    from wsplugin.connection import Connection

__all__ = ["Hub"]


class _Join:
    """A subscription waiting for the engine's answer."""

    __slots__ = ("cancelled", "channel", "conn")

    def __init__(self, conn: Connection, channel: str) -> None:
        self.conn = conn
        self.channel = channel
        self.cancelled = False


class Hub:
    """One server's link between its connections and its backplane.

    Args:
        backplane: The engine (:func:`wsplugin.backplane.make_backplane`).
        fanout: The server's fan-out (sends to this node's connections).
        registry: The server's open connections.
        log: Where problems are logged.

    Attributes:
        backplane: The engine.
        running: The engine has been started by :meth:`start` (and not
            stopped since): sending goes through it.
        delivered: Messages handed to this node's connections by
            publications, in all (for ``broadcast``'s return value).
    """

    def __init__(
        self, backplane: Backplane, fanout: Fanout, registry: Registry, log: Logger
    ) -> None:
        self.backplane = backplane
        self.fanout = fanout
        self.registry = registry
        self.log = log
        self.running = False
        self.delivered = 0
        self._closed_by_command = 0
        self._joining: dict[tuple[int, str], _Join] = {}

    # -- life cycle ------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Start the engine, delivering to this hub (it connects in the
        background: a Redis that is down delays nothing)."""
        if self.running:
            return succeed(None)
        self.running = True
        return self.backplane.start(self)

    def stop(self) -> Deferred[None]:
        """Stop the engine (withdraw this node's counts, close its links)."""
        if not self.running:
            return succeed(None)
        self.running = False
        return self.backplane.stop()

    def new_connection_id(self) -> str:
        """A fresh id naming this node (and worker) as its holder."""
        return self.backplane.new_connection_id()

    # -- the engine's receiver ---------------------------------------------------

    def deliver(self, publication: Publication) -> None:
        """A publication (from any node, this one included) to the matching
        connections of this node."""
        self.delivered += self.fanout.deliver(publication)

    def command(self, command: Command) -> None:
        """A targeted order from any node: carried out if this node holds
        the connection (an unknown id is ignored: it may have just closed)."""
        if command.kind == "close_all":
            self._closed_by_command += self.close_local(command.code, command.reason)
            return
        conn = self.registry.get(command.conn_id or "")
        if conn is None:
            return
        if command.kind == "send":
            self.fanout.send(command.data, command.is_binary, [conn])
            return
        try:
            conn.close(command.code, command.reason)
        except Exception:
            self.log.failure(
                "closing {conn} for {origin} failed", conn=conn, origin=command.origin
            )

    # -- connections -------------------------------------------------------------

    def opened(self, conn: Connection) -> None:
        """``conn`` is open: registered here, counted cluster-wide."""
        self.registry.add(conn)
        self.backplane.connection_opened()

    def closed(self, conn: Connection) -> None:
        """``conn`` ended: it leaves the registry, its channels and the
        counts (``conn.channels`` is left as it was, for ``on_disconnect``)."""
        self.registry.remove(conn)
        self.backplane.connection_closed()
        for channel in conn.channels:
            self.backplane.unsubscribe(channel)
        for join in list(self._joining.values()):
            if join.conn is conn:
                join.cancelled = True

    def join(
        self,
        conn: Connection,
        channel: str,
        since: StreamPosition | tuple[str, int] | None = None,
    ) -> Deferred[Recovery]:
        """Subscribe ``conn`` to ``channel``; with ``since``, send it what it
        missed first. See :meth:`wsplugin.Connection.subscribe`.

        The engine's contract is kept here: ``conn`` stays out of the
        channel's fan-out until the engine answers; then, in that reactor
        turn, it is sent the missed publications and joins the fan-out, so
        it gets each publication once, in order.
        """
        check_channel(channel)
        position = coerce_position(since)
        key = (id(conn), channel)
        if channel in conn.channels or key in self._joining:
            return succeed(Recovery(RecoveryStatus.NOT_REQUESTED))
        join = _Join(conn, channel)
        self._joining[key] = join
        try:
            d = self.backplane.subscribe(channel, position)
        except BaseException:
            del self._joining[key]
            raise
        return d.addCallbacks(
            self._joined,
            self._join_failed,
            callbackArgs=(join,),
            errbackArgs=(join,),
        )

    def _join_failed(self, failure: Failure, join: _Join) -> Recovery:
        self.log.failure(
            "subscribing {conn} to {channel!r} failed; it gets live messages only",
            failure,
            conn=join.conn,
            channel=join.channel,
        )
        return self._joined(Recovery(RecoveryStatus.UNAVAILABLE), join)

    def _joined(self, recovery: Recovery, join: _Join) -> Recovery:
        conn, channel = join.conn, join.channel
        if self._joining.get((id(conn), channel)) is join:
            del self._joining[(id(conn), channel)]
        if join.cancelled or self.registry.get(conn.id) is not conn:
            self.backplane.unsubscribe(channel)
            return recovery
        for publication in recovery.publications:
            if _matches(publication, conn):
                self.fanout.deliver(publication, [conn])
        conn.channels.add(channel)
        return recovery

    def leave(self, conn: Connection, channel: str) -> None:
        """Unsubscribe ``conn`` from ``channel`` (nothing if it is not)."""
        if channel in conn.channels:
            conn.channels.discard(channel)
            self.backplane.unsubscribe(channel)
            return
        join = self._joining.pop((id(conn), channel), None)
        if join is not None:
            join.cancelled = True

    # -- sending -------------------------------------------------------------

    def publish(
        self,
        payload: bytes,
        is_binary: bool,
        *,
        channel: str | None = None,
        subprotocol: str | None = None,
        ids: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        history_size: int | None = None,
        history_ttl: float | None = None,
    ) -> int:
        """Publish once; returns how many of this node's connections were
        sent the message during the call (all of them with the in-process
        engine; with Redis, delivery, this node's included, happens when
        Redis hands the publication back, so that every node sees a
        channel's publications in one order)."""
        if not self.running:
            return self.fanout.deliver(
                Publication(
                    channel,
                    payload,
                    is_binary,
                    protocol=subprotocol,
                    ids=None if ids is None else tuple(ids),
                    exclude=tuple(exclude),
                )
            )
        before = self.delivered
        self.backplane.publish(
            channel,
            payload,
            is_binary,
            protocol=subprotocol,
            ids=ids,
            exclude=exclude,
            history_size=history_size,
            history_ttl=history_ttl,
        )
        return self.delivered - before

    def _remote(self, conn_id: str) -> bool:
        """Whether another node may hold ``conn_id`` (this one does not)."""
        if not isinstance(conn_id, str):
            raise TypeError(f"a connection id is a str, not {type(conn_id).__name__}")
        holder = holder_of(conn_id)
        if holder is None or holder == self.backplane.node_id or not self.running:
            raise UnknownConnection(conn_id)
        return True

    def send(self, conn_id: str, payload: bytes, is_binary: bool) -> None:
        """Send to the connection ``conn_id`` held by another node.

        Raises:
            UnknownConnection: this node would hold it and does not (or the
                id names no node, or the engine is not running).
        """
        if self._remote(conn_id):
            self.backplane.send(conn_id, payload, is_binary)

    def disconnect(self, conn_id: str, code: int, reason: str) -> None:
        """Close the connection ``conn_id`` held by another node (raises as
        :meth:`send`, and InvalidCloseCode for an unsendable code)."""
        check_close_code(code, reason)
        if self._remote(conn_id):
            self.backplane.disconnect(conn_id, code, reason)

    def disconnect_all(self, code: int, reason: str) -> int:
        """Close every connection of every node; returns how many of this
        node's were asked to close."""
        check_close_code(code, reason)
        if not self.running:
            return self.close_local(code, reason)
        before = self._closed_by_command
        self.backplane.disconnect_all(code, reason)
        return self._closed_by_command - before

    def close_local(self, code: int, reason: str) -> int:
        """Close this node's open connections (a node shutting down)."""
        count = 0
        for conn in self.registry.snapshot():
            if conn.is_open:
                try:
                    conn.close(code, reason)
                except Exception:
                    self.log.failure("closing {conn} failed", conn=conn)
                    continue
                count += 1
        return count

    # -- counts ------------------------------------------------------------------

    def connection_count(self) -> Deferred[int]:
        """Open connections of every live node."""
        return self.backplane.connection_count()

    def channel_count(self, channel: str) -> Deferred[int]:
        """Subscribers of ``channel`` on every live node."""
        return self.backplane.channel_count(channel)


def _matches(publication: Publication, conn: Connection) -> bool:
    """Whether a publication's filters (other than its channel) let it
    reach ``conn``."""
    return (
        (publication.protocol is None or conn.subprotocol == publication.protocol)
        and (publication.ids is None or conn.id in publication.ids)
        and conn.id not in publication.exclude
    )
