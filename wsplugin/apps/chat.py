"""The chat app: every message goes to every connected client.

The FPC ``broadcastServer`` example, rebuilt: a text or binary message from
any client is broadcast, sender included, so every open page shows it.
"""

from __future__ import annotations

from wsplugin.connection import Connection


class Chat:
    """Broadcast chat handler."""

    def on_message(self, conn: Connection, text: str) -> None:
        """Broadcast a text message to everyone."""
        conn.server.broadcast(text)

    def on_binary(self, conn: Connection, data: bytes) -> None:
        """Broadcast a binary message to everyone."""
        conn.server.broadcast(data)
