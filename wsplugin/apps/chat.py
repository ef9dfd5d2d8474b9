"""The chat app: every message goes to every connected client.

The FPC ``broadcastServer`` example, rebuilt: a text or binary message from
any client is broadcast, sender included, so every open page shows it. Its
browser test page (``static/chat.html``) is served over HTTP on the same port
at ``/``; the page connects back to its own path.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.resource import Resource

from wsplugin.connection import Connection
from wsplugin.web import File

PAGE = Path(__file__).with_name("static") / "chat.html"


class Chat:
    """Broadcast chat handler."""

    def on_message(self, conn: Connection, text: str) -> None:
        """Broadcast a text message to everyone."""
        conn.server.broadcast(text)

    def on_binary(self, conn: Connection, data: bytes) -> None:
        """Broadcast a binary message to everyone."""
        conn.server.broadcast(data)

    def resource(self) -> Resource:
        """The test page at ``/``, for HTTP requests on the same port."""
        root = Resource()
        root.putChild(b"", File(str(PAGE), defaultType="text/html"))
        return root
