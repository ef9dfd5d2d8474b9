"""Channels for clients: subscribe, recover what was missed, publish.

:class:`ChannelHandler` is a route handler that lets WebSocket clients use a
server's channels directly, with recovery, over the ``wsplugin.channels.v1``
subprotocol: a JSON message per frame (the format is described in
docs/scaling.md and :mod:`wsplugin._envelope`). A client that offers the
subprotocol sends ``subscribe`` (with the ``since`` position of the last
publication it processed, after a reconnection), ``unsubscribe`` and
``publish`` requests, and gets each publication as a ``publication``
message carrying its channel, epoch and offset. A client that does not
offer it is *plain*: the ``on_plain_*`` methods handle it (override them),
so one route can serve both.

It works the same on one server and on many behind a backplane
(docs/scaling.md): a client that drops and comes back, to the same node or
another, within the history window, misses nothing.

Example::

    from wsplugin.channels import ChannelHandler

    class Rooms(ChannelHandler):
        history_size = 100          # publications kept per channel

        def channel_allowed(self, conn, channel):
            return channel.startswith("room:")

    WebSocketServer(Rooms(), endpoints=["tcp:8888"]).run()

The browser side, and the client library's
:class:`~wsplugin.client.ChannelSubscriptions`, speak the same format.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from wsplugin._envelope import (
    SUBPROTOCOL,
    EnvelopeError,
    Request,
    encode_error,
    encode_subscribed,
    encode_unsubscribed,
    parse_request,
)
from wsplugin.backplane import Recovery
from wsplugin.backplane._types import MAX_CHANNEL_LENGTH
from wsplugin.connection import Connection

__all__ = ["SUBPROTOCOL", "ChannelHandler", "EnvelopeError"]


class ChannelHandler:
    """A route handler speaking ``wsplugin.channels.v1`` to the clients that
    offer it (see the module docstring).

    Override :meth:`channel_allowed` and :meth:`publish_allowed` to say who
    may use which channel, and the ``on_plain_*`` methods for clients that
    do not speak the format. A subclass that defines ``allow``, ``on_open``,
    ``on_message`` or ``on_binary`` calls this class's too.

    A malformed request (not JSON, unknown type, a bad field) closes the
    connection with 1008 and is logged; a refused one (a channel not
    allowed, too many channels) is answered with an ``error`` message and
    logged, and the connection stays open.

    Attributes:
        history_size: Publications each channel keeps for clients that come
            back (None: the backplane's default, 0 unless configured).
        history_ttl: Seconds a channel's history lives after its last
            publication (None: the backplane's default, 300).
        max_channels: Channels one connection may be subscribed to at once
            (16): each costs a subscription on the backplane.
    """

    history_size: int | None = None
    history_ttl: float | None = None
    max_channels = 16

    log = Logger()

    # -- what a subclass decides -------------------------------------------

    def channel_allowed(self, conn: Connection, channel: str) -> bool:
        """Whether ``conn`` may subscribe to ``channel`` (default: any)."""
        return True

    def publish_allowed(self, conn: Connection, channel: str) -> bool:
        """Whether ``conn`` may publish to ``channel`` (default: when it is
        subscribed to it)."""
        return channel in conn.channels

    def publish(self, conn: Connection, channel: str, message: str | bytes) -> None:
        """Publish a client's allowed ``publish`` request: broadcast it to
        the channel, with this handler's history options. Override it to
        check or change messages."""
        server: Any = conn.server
        server.broadcast(
            message,
            channel=channel,
            history_size=self.history_size,
            history_ttl=self.history_ttl,
        )

    def on_plain_open(self, conn: Connection) -> None:
        """A client that does not speak the format opened (default:
        nothing)."""

    def on_plain_message(self, conn: Connection, text: str) -> None:
        """A text message from a plain client (default: ignored)."""

    def on_plain_binary(self, conn: Connection, data: bytes) -> None:
        """A binary message from a plain client (default: ignored)."""

    # -- events ----------------------------------------------------------------

    def allow(self, conn: Connection) -> bool:
        """Pick ``wsplugin.channels.v1`` when the client offers it (no
        ``subprotocols`` option needed)."""
        if SUBPROTOCOL in conn.request.protocols:
            conn.subprotocol = SUBPROTOCOL
        return True

    def on_open(self, conn: Connection) -> None:
        """Clients of the format get publications wrapped (``envelope``)."""
        if conn.subprotocol == SUBPROTOCOL:
            conn.envelope = True
        else:
            self.on_plain_open(conn)

    def on_message(self, conn: Connection, text: str) -> None:
        """A request from a client of the format, or a plain message."""
        if not conn.envelope:
            self.on_plain_message(conn, text)
            return
        try:
            request = parse_request(text)
            if len(request.channel) > MAX_CHANNEL_LENGTH:
                raise EnvelopeError(
                    f"'channel' is longer than {MAX_CHANNEL_LENGTH} characters"
                )
        except EnvelopeError as e:
            self.log.warn(
                "{conn}: bad wsplugin.channels.v1 request: {error}",
                conn=conn,
                error=str(e),
            )
            conn.close(1008, f"bad request: {e}"[:120])
            return
        if request.type == "subscribe":
            self._subscribe(conn, request)
        elif request.type == "unsubscribe":
            conn.unsubscribe(request.channel)
            conn.send_text(encode_unsubscribed(request.channel))
        else:
            self._publish(conn, request)

    def on_binary(self, conn: Connection, data: bytes) -> None:
        """Clients of the format send JSON text only (1003 otherwise)."""
        if not conn.envelope:
            self.on_plain_binary(conn, data)
            return
        self.log.warn("{conn}: binary frame on wsplugin.channels.v1", conn=conn)
        conn.close(1003, "wsplugin.channels.v1 takes JSON text messages")

    # -- requests --------------------------------------------------------------

    def _refuse(self, conn: Connection, channel: str, why: str) -> None:
        self.log.info("{conn}: refused: {why}", conn=conn, why=why)
        conn.send_text(encode_error(why, channel))

    def _subscribe(self, conn: Connection, request: Request) -> None:
        channel = request.channel
        if not self.channel_allowed(conn, channel):
            self._refuse(conn, channel, f"channel {channel!r} is not allowed")
            return
        if channel not in conn.channels and len(conn.channels) >= self.max_channels:
            self._refuse(
                conn, channel, f"at most {self.max_channels} channels per connection"
            )
            return
        d = conn.subscribe(channel, since=request.since)
        d.addCallback(self._subscribed, conn, channel)

    def _subscribed(self, recovery: Recovery, conn: Connection, channel: str) -> None:
        if conn.is_open:
            conn.send_text(
                encode_subscribed(
                    channel,
                    recovery.status.value,
                    recovery.position,
                    len(recovery.publications),
                )
            )

    def _publish(self, conn: Connection, request: Request) -> None:
        channel = request.channel
        if not self.publish_allowed(conn, channel):
            self._refuse(conn, channel, f"publishing to {channel!r} is not allowed")
            return
        assert request.data is not None
        self.publish(conn, channel, request.data)
