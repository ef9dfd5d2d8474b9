"""The chat app: every message goes to every connected client.

The FPC ``broadcastServer`` example, rebuilt on a channel: a text or binary
message from any client is published to the room ``chat``, sender
included, so every open page shows it, on every server of a cluster
(``twistd ws --backplane URL``).

Two kinds of client share the room:

* plain clients (``wscat``, ``python -m wsplugin.client``): they join the
  room when they connect, send messages as they are and get them back as
  they are;
* clients that offer the ``wsplugin.channels.v1`` subprotocol, such as its
  browser page (``static/chat.html``, served at ``/`` over HTTP on the same
  port): they subscribe with the position of the last message they showed,
  so a page that lost its connection and comes back within the history
  window (the last 100 messages, 5 minutes) gets what it missed, in order,
  before anything new (docs/scaling.md).

Messages are at most :data:`MAX_CHAT_MESSAGE` bytes, so the room's history
stays small (100 x 128 KiB, 12.5 MiB at most).
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.resource import Resource

from wsplugin.channels import ChannelHandler
from wsplugin.connection import Connection
from wsplugin.web import File

PAGE = Path(__file__).with_name("static") / "chat.html"

ROOM = "chat"
"""The one room of the demo."""

MAX_CHAT_MESSAGE = 128 * 1024
"""Largest chat message in bytes; a larger one closes the sender's
connection with 1009 (message too big)."""


class Chat(ChannelHandler):
    """Broadcast chat handler: one room, with 100 messages of history."""

    history_size = 100
    history_ttl = 300.0
    max_channels = 1

    def channel_allowed(self, conn: Connection, channel: str) -> bool:
        """Only the room ``chat``."""
        return channel == ROOM

    def on_plain_open(self, conn: Connection) -> None:
        """A plain client joins the room at once."""
        conn.subscribe(ROOM)

    def on_plain_message(self, conn: Connection, text: str) -> None:
        """Publish a text message to the room."""
        self.publish(conn, ROOM, text)

    def on_plain_binary(self, conn: Connection, data: bytes) -> None:
        """Publish a binary message to the room."""
        self.publish(conn, ROOM, data)

    def publish(self, conn: Connection, channel: str, message: str | bytes) -> None:
        """Publish to the room, unless the message is too big (1009)."""
        size = len(message.encode("utf-8") if isinstance(message, str) else message)
        if size > MAX_CHAT_MESSAGE:
            conn.close(1009, f"chat messages are at most {MAX_CHAT_MESSAGE} bytes")
            return
        super().publish(conn, channel, message)

    def resource(self) -> Resource:
        """The test page at ``/``, for HTTP requests on the same port."""
        root = Resource()
        root.putChild(b"", File(str(PAGE), defaultType="text/html"))
        return root
