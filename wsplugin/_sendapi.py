"""The component's sending methods (seeds: TMS, sgc), one implementation for
:class:`~wsplugin.WebSocketServer` and
:class:`~wsplugin.WebSocketServerFactory`.

``broadcast`` (with its filters), ``send_to``, ``write_data``,
``disconnect``, ``ping_all``, ``disconnect_all`` and the cluster-wide
counts check their arguments here and go through the server's
:class:`~wsplugin._hub.Hub` (the backplane: cluster-wide),
:class:`~wsplugin._fanout.Fanout` and :class:`~wsplugin._registry.Registry`
(this node); a class that mixes this in has those as ``hub``, ``fanout``
and ``registry`` (the server shares its factory's).

What is cluster-wide and what is local:

- ``broadcast`` publishes once to the backplane, whatever the number of
  receivers; every node applies the filters to its own connections;
- ``write_data`` and ``disconnect`` act here when this node holds the
  connection, else on the node its id names;
- ``disconnect_all``, ``connection_count`` and ``channel_count`` cover
  every node;
- ``send_to(message, selector)`` and ``ping_all`` are local: a Python
  callable cannot cross processes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from wsplugin._fanout import Fanout
from wsplugin._hub import Hub
from wsplugin._registry import Connections, Registry
from wsplugin.connection import Connection

__all__ = ["SendingMethods"]

Message = str | bytes
Selector = Callable[[Connection], bool]

# the namespace these problems were always logged under (the factory's)
_log = Logger(namespace="wsplugin.factory.WebSocketServerFactory")


def _payload(message: Message) -> tuple[bytes, bool]:
    if isinstance(message, str):
        return message.encode("utf-8"), False
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message), True
    raise TypeError(
        f"a message is str (text) or bytes (binary), not {type(message).__name__}"
    )


def _ids(name: str, value: Any) -> Any:
    """A filter of connection ids as an iterable (one ``str`` is one id; for
    ``exclude``, one Connection is one too)."""
    if isinstance(value, str) or (name == "exclude" and isinstance(value, Connection)):
        return (value,)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"broadcast({name}=...) takes connection ids as str, "
            f"not {type(value).__name__}"
        )
    return value


class SendingMethods:
    """``broadcast``, ``send_to``, ``write_data``, ``disconnect``,
    ``ping_all``, ``disconnect_all``, ``connection_count`` and
    ``channel_count`` over ``self.hub``, ``self.fanout`` and
    ``self.registry``."""

    hub: Hub
    fanout: Fanout
    registry: Registry
    connections: Connections

    def broadcast(
        self,
        message: Message,
        *,
        channel: str | None = None,
        subprotocol: str | None = None,
        ids: str | Iterable[str] | None = None,
        exclude: str | Connection | Iterable[str | Connection] | None = None,
        protocol: str | None = None,
        history_size: int | None = None,
        history_ttl: float | None = None,
    ) -> int:
        """Send ``message`` to every open connection of every node,
        optionally filtered (seed ``BroadcastMessage`` / ``BroadcastData``,
        sgc filtered ``Broadcast``).

        It is published once to the backplane (not once per receiver);
        each node applies the filters to its own connections and encodes
        the frame once for all of them. A channel's publications get the
        next offset of the channel's history, and are kept there when it
        has one (``history_size``), so a subscriber that comes back can
        recover them (``conn.subscribe(channel, since=...)``).

        Args:
            message: ``str`` is sent as text, ``bytes`` as binary.
            channel: Only connections subscribed to this channel.
            subprotocol: Only connections that negotiated this subprotocol.
            ids: Only connections with these ids: an iterable of ids, or one
                id as a ``str`` (not taken apart into characters).
            exclude: Skip these connections: ids or Connection objects, or
                a single id or Connection.
            protocol: Deprecated name of ``subprotocol`` (kept for one
                release; warns with DeprecationWarning).
            history_size: With ``channel``: publications the channel keeps
                (the backplane's ``history_size`` by default, 0 unless
                configured); the newest are kept.
            history_ttl: With ``channel``: seconds its history lives after
                its last publication (the backplane's, 300 by default).

        Returns:
            How many of this node's connections the message was sent to
            during the call. With the in-process backplane (the default)
            that is every receiver, as before backplanes existed. With the
            Redis backplane every node, this one included, delivers when
            Redis hands the publication back (so all nodes see a channel's
            publications in one order): the count is then 0, unless Redis
            is unreachable and this node delivered at once. Use
            :meth:`channel_count` for a cluster-wide number of receivers.

        Raises:
            TypeError: ``ids`` or ``exclude`` is ``bytes`` (ids are ``str``),
                or both ``subprotocol`` and ``protocol`` are given.
            ValueError: a channel name that is empty or over 1024
                characters.
        """
        if protocol is not None:
            warnings.warn(
                "broadcast(protocol=...) is deprecated; use subprotocol=...",
                DeprecationWarning,
                stacklevel=2,
            )
            if subprotocol is not None:
                raise TypeError("give subprotocol= or protocol=, not both")
            subprotocol = protocol
        payload, is_binary = _payload(message)
        ids = _ids("ids", ids)
        exclude = _ids("exclude", exclude)
        skip = (
            ()
            if exclude is None
            else [x.id if isinstance(x, Connection) else x for x in exclude]
        )
        return self.hub.publish(
            payload,
            is_binary,
            channel=channel,
            subprotocol=subprotocol,
            ids=ids,
            exclude=skip,
            history_size=history_size,
            history_ttl=history_ttl,
        )

    def send_to(self, message: Message, selector: Selector | str) -> int:
        """Send ``message`` to each open connection of this node for which
        ``selector(conn)`` is true (TMS ``SendMessageTo``/``SendDataTo``).
        Returns the count.

        ``selector`` may also be a connection id: the message then goes to
        that connection on whichever node holds it, as :meth:`write_data`
        does (and raises as it does), and the count is 1.

        A callable selects on this node only: a Python callable cannot be
        sent to other nodes. For a cluster-wide selection, use ``broadcast``
        with ``channel=``, ``subprotocol=``, ``ids=`` or ``exclude=``.
        """
        if isinstance(selector, str):
            self.write_data(selector, message)
            return 1
        payload, is_binary = _payload(message)
        return self.fanout.send_selected(payload, is_binary, selector)

    def write_data(self, conn_id: str, message: Message) -> None:
        """Send ``message`` to the connection with ``conn_id`` (sgc
        ``WriteData``), on whichever node holds it.

        A connection of this node is sent to at once (with the errors of
        ``Connection.send``). An id another node holds (its id names that
        node: docs/scaling.md) goes through the backplane; that node drops
        it if the connection has closed meanwhile.

        Raises:
            UnknownConnection: no open connection of this node has that id,
                and no other node can hold it.
        """
        conn = self.registry.get(conn_id)
        if conn is not None:
            conn.send(message)
            return
        payload, is_binary = _payload(message)
        self.hub.send(conn_id, payload, is_binary)

    def disconnect(self, conn_id: str, code: int = 1000, reason: str = "") -> None:
        """Close the connection with ``conn_id`` with ``code`` and
        ``reason``, on whichever node holds it (as :meth:`write_data`).

        Raises:
            UnknownConnection: as for :meth:`write_data`.
            InvalidCloseCode: a code RFC 6455 forbids sending.
        """
        conn = self.registry.get(conn_id)
        if conn is not None:
            conn.close(code, reason)
            return
        self.hub.disconnect(conn_id, code, reason)

    def ping_all(self, payload: bytes = b"") -> int:
        """Ping every open connection of this node (sgc ``Ping``); returns
        the count."""
        count = 0
        for conn in self.registry.snapshot():
            if conn.is_open:
                try:
                    conn.ping(payload)
                except Exception:
                    _log.failure("ping to {conn} failed", conn=conn)
                    continue
                count += 1
        return count

    def disconnect_all(self, code: int = 1001, reason: str = "") -> int:
        """Close every open connection of every node with ``code``; the
        servers keep listening (sgc ``DisconnectAll``).

        Returns:
            How many of this node's connections were asked to close.
        """
        return self.hub.disconnect_all(code, reason)

    def connection_count(self) -> Deferred[int]:
        """Open connections on every node, as a Deferred (``len(connections)``
        is this node's alone).

        With the Redis backplane the other nodes' part is their last
        snapshot, at most about half a second old, and the Deferred fails
        with :class:`~wsplugin.backplane.BackplaneUnavailable` while Redis
        is unreachable.
        """
        return self.hub.connection_count()

    def channel_count(self, channel: str) -> Deferred[int]:
        """Subscribers of ``channel`` on every node, as a Deferred (as
        :meth:`connection_count`)."""
        return self.hub.channel_count(channel)
