"""The component's sending methods (seeds: TMS, sgc), one implementation for
:class:`~wsplugin.WebSocketServer` and
:class:`~wsplugin.WebSocketServerFactory`.

``broadcast`` (with its filters), ``send_to``, ``write_data``, ``ping_all``
and ``disconnect_all`` check their arguments here and go through the
server's :class:`~wsplugin._fanout.Fanout` and
:class:`~wsplugin._registry.Registry`; a class that mixes this in has those
two as ``fanout`` and ``registry`` (the server shares its factory's).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

from wsplugin._fanout import Fanout
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
    """``broadcast``, ``send_to``, ``write_data``, ``ping_all`` and
    ``disconnect_all`` over ``self.fanout`` and ``self.registry``."""

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
    ) -> int:
        """Send ``message`` to every open connection, optionally filtered
        (seed ``BroadcastMessage`` / ``BroadcastData``, sgc filtered
        ``Broadcast``). The frame is encoded once for all receivers.

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

        Returns:
            How many connections the message was sent to.

        Raises:
            TypeError: ``ids`` or ``exclude`` is ``bytes`` (ids are ``str``),
                or both ``subprotocol`` and ``protocol`` are given.
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
        return self.fanout.publish_local(
            payload,
            is_binary,
            channel=channel,
            subprotocol=subprotocol,
            ids=ids,
            exclude=skip,
        )

    def send_to(self, message: Message, selector: Selector) -> int:
        """Send ``message`` to each open connection for which ``selector(conn)``
        is true (TMS ``SendMessageTo``/``SendDataTo``). Returns the count."""
        payload, is_binary = _payload(message)
        return self.fanout.send_selected(payload, is_binary, selector)

    def write_data(self, conn_id: str, message: Message) -> None:
        """Send ``message`` to the connection with ``conn_id`` (sgc ``WriteData``).

        Raises:
            UnknownConnection: no open connection has that id.
        """
        self.connections[conn_id].send(message)

    def ping_all(self, payload: bytes = b"") -> int:
        """Ping every open connection (sgc ``Ping``); returns the count."""
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
        """Close every open connection with ``code``; the server keeps
        listening (sgc ``DisconnectAll``).

        Returns:
            How many connections were asked to close.
        """
        count = 0
        for conn in self.registry.snapshot():
            if conn.is_open:
                try:
                    conn.close(code, reason)
                except Exception:
                    _log.failure("closing {conn} failed", conn=conn)
                    continue
                count += 1
        return count
