"""The open connections of one server, by id.

The protocol adds a connection when it opens and removes it when it ends;
the fan-out, ``write_data`` and ``server.connections`` read it. What the
registry and the fan-out need from a connection is :class:`Member`, a small
``typing.Protocol`` (its id, its channels, its subprotocol, whether it
takes publications in the channels envelope, and its engine's
:class:`~wsplugin._fanout.FanoutTarget` side), so neither reaches into a
connection's or a protocol's private state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from wsplugin.connection import Connection
from wsplugin.errors import UnknownConnection

if TYPE_CHECKING:
    from collections.abc import Set as AbstractSet

    from wsplugin._fanout import FanoutTarget

__all__ = ["Connections", "Member", "Registry"]


class Member(Protocol):
    """What the registry and the fan-out need from a connection."""

    id: str
    subprotocol: str | None
    envelope: bool
    """Channel publications reach it wrapped (``wsplugin.channels.v1``)."""

    @property
    def channels(self) -> AbstractSet[str]:
        """The channels it subscribed to."""

    @property
    def engine(self) -> FanoutTarget:
        """The protocol underneath, as the fan-out sends through it."""


class Registry:
    """The open connections, by id (insertion order: the order they opened)."""

    __slots__ = ("_by_id",)

    def __init__(self) -> None:
        self._by_id: dict[str, Connection] = {}

    def add(self, conn: Connection) -> None:
        """``conn`` is open (a connection with the same id is replaced)."""
        self._by_id[conn.id] = conn

    def remove(self, conn: Connection) -> None:
        """``conn`` ended (nothing happens if another one holds its id)."""
        if self._by_id.get(conn.id) is conn:
            del self._by_id[conn.id]

    def get(self, conn_id: str) -> Connection | None:
        """The open connection with ``conn_id``, or None."""
        return self._by_id.get(conn_id)

    def snapshot(self) -> list[Connection]:
        """The open connections now, as a list (safe to iterate while
        connections open and close)."""
        return list(self._by_id.values())

    def ids(self) -> list[str]:
        """The ids of the open connections."""
        return list(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self._by_id


class Connections:
    """The open connections: iterable, sized, and looked up by id.

    ``for conn in server.connections``, ``len(server.connections)``,
    ``server.connections[conn_id]`` (raises :class:`UnknownConnection`),
    ``server.connections.get(conn_id)``, ``conn_id in server.connections``.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def __iter__(self) -> Iterator[Connection]:
        return iter(self._registry.snapshot())

    def __len__(self) -> int:
        return len(self._registry)

    def __getitem__(self, conn_id: str) -> Connection:
        conn = self._registry.get(conn_id)
        if conn is None:
            raise UnknownConnection(conn_id)
        return conn

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Connection):
            return self._registry.get(item.id) is item
        return item in self._registry

    def get(self, conn_id: str, default: Any = None) -> Connection | None:
        """The connection with ``conn_id``, or ``default``."""
        conn = self._registry.get(conn_id)
        return default if conn is None else conn

    def ids(self) -> list[str]:
        """The ids of all open connections."""
        return self._registry.ids()
