"""Channels kept across reconnections, with recovery: :class:`ChannelSubscriptions`.

The client side of ``wsplugin.channels.v1`` (the server side is
:class:`wsplugin.channels.ChannelHandler`). It remembers, per channel, the
position (epoch, offset) of the last publication the application
*processed*, and on every new connection subscribes again from there, so
a client that drops and comes back within the history window misses
nothing, and is told when it did (the history was lost or is too short).

Give it to :class:`~wsplugin.client.ReconnectingClient` (``channels=``),
which attaches it to each connection it opens; or call :meth:`attach`
yourself on a connection made with ``subprotocols=[SUBPROTOCOL]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from wsplugin._envelope import (
    SUBPROTOCOL,
    EnvelopeError,
    encode_request,
    parse_server_message,
)
from wsplugin._events import as_deferred
from wsplugin.client._connection import ClientConnection
from wsplugin.errors import ConnectionClosed, WSPluginError

__all__ = ["SUBPROTOCOL", "ChannelPublication", "ChannelSubscriptions"]

#: Statuses of a ``subscribed`` answer after which the application must
#: reload its state: what was missed cannot be known.
LOST = frozenset({"epoch_changed", "too_old", "unavailable"})


@dataclass(frozen=True, slots=True)
class ChannelPublication:
    """One publication, as the server sent it.

    Attributes:
        channel: Its channel (None for a broadcast to every connection).
        data: The payload: ``str`` (text) or ``bytes`` (binary).
        epoch: Its channel history's epoch, or None (not numbered).
        offset: Its offset in that history, or None.
    """

    channel: str | None
    data: str | bytes
    epoch: str | None
    offset: int | None


class ChannelSubscriptions:
    """Channel subscriptions that survive reconnections.

    Args:
        on_publication: Called with each :class:`ChannelPublication`, in
            order; may return a Deferred or coroutine, which is waited for
            before the next one (and before the position moves past it:
            a publication whose processing did not finish is delivered
            again after a reconnection).
        channels: Channels to subscribe to from the start.
        on_reset: Called with ``(channel, status)`` when a reconnection
            could not recover what was missed (``epoch_changed``,
            ``too_old``, ``unavailable``): reload that channel's state from
            the application's source. May return a Deferred or coroutine.
        on_message: Called with any message that is not part of the
            format (the server's own messages), else they are logged.
        positions: Positions to start from, ``{channel: (epoch, offset)}``
            (stored by an earlier run of the program).

    Attributes:
        positions: Per channel, ``(epoch, offset)`` of the last publication
            processed, or None: store it to resume in a later run.
        connection: The connection it is attached to, or None.
    """

    log = Logger()

    def __init__(
        self,
        on_publication: Callable[[ChannelPublication], Any],
        *,
        channels: Iterable[str] = (),
        on_reset: Callable[[str, str], Any] | None = None,
        on_message: Callable[[str | bytes], Any] | None = None,
        positions: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.on_publication = on_publication
        self.on_reset = on_reset
        self.on_message = on_message
        self.positions: dict[str, tuple[str, int] | None] = {c: None for c in channels}
        for channel, position in (positions or {}).items():
            epoch, offset = position
            self.positions[channel] = (str(epoch), int(offset))
        self.connection: ClientConnection | None = None
        self._waiting: dict[str, list[Deferred[str]]] = {}

    # -- what the application calls ------------------------------------------

    def subscribe(self, channel: str) -> Deferred[str]:
        """Subscribe to ``channel`` now (if attached) and after every
        reconnection; fires with the server's status once it answered."""
        if not isinstance(channel, str) or not channel:
            raise ValueError("a channel is a non-empty str")
        self.positions.setdefault(channel, None)
        if self.connection is None:
            return succeed("pending")
        return self._request_subscribe(self.connection, channel)

    def unsubscribe(self, channel: str) -> None:
        """Stop following ``channel`` (its position is forgotten)."""
        self.positions.pop(channel, None)
        conn = self.connection
        if conn is not None and conn.is_open:
            conn.send_text(encode_request("unsubscribe", channel))

    def publish(self, channel: str, message: str | bytes) -> None:
        """Ask the server to publish ``message`` to ``channel``.

        Raises:
            ConnectionClosed: not connected now.
        """
        conn = self.connection
        if conn is None or not conn.is_open:
            raise ConnectionClosed(None, "not connected")
        conn.send_text(encode_request("publish", channel, data=message))

    # -- the connection ------------------------------------------------------

    def attach(self, conn: ClientConnection) -> Deferred[dict[str, str]]:
        """Use ``conn`` (it must have agreed on ``wsplugin.channels.v1``):
        subscribe every channel from its position, and read the connection
        until it ends. Fires with ``{channel: status}`` once the server
        answered every subscription (the missed publications were
        processed before).
        """
        if conn.subprotocol != SUBPROTOCOL:
            conn.close(1002, "expected the wsplugin.channels.v1 subprotocol")
            return fail(
                WSPluginError(
                    f"the server did not pick {SUBPROTOCOL} (it answered "
                    f"{conn.subprotocol!r}): it does not serve channels there"
                )
            )
        self.connection = conn
        waits = {c: self._request_subscribe(conn, c) for c in list(self.positions)}
        Deferred.fromCoroutine(self._read(conn)).addErrback(
            lambda f: self.log.failure("reading channels failed", f)
        )

        async def answered() -> dict[str, str]:
            statuses: dict[str, str] = {}
            error: Exception | None = None
            for channel, wait in waits.items():  # each awaited: none unhandled
                try:
                    statuses[channel] = await wait
                except Exception as e:
                    error = error or e
            if error is not None:
                raise error
            return statuses

        return Deferred.fromCoroutine(answered())

    def _request_subscribe(self, conn: ClientConnection, channel: str) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self._waiting.setdefault(channel, []).append(d)
        conn.send_text(
            encode_request("subscribe", channel, since=self.positions.get(channel))
        )
        return d

    def _answer(self, channel: str | None, result: Any) -> None:
        for d in self._waiting.pop(channel, []) if channel is not None else []:
            if isinstance(result, Exception):
                d.errback(result)
            else:
                d.callback(result)

    async def _read(self, conn: ClientConnection) -> None:
        try:
            async for message in conn:
                await self._handle(message)
        finally:
            if self.connection is conn:
                self.connection = None
            for channel in list(self._waiting):
                self._answer(
                    channel, ConnectionClosed(conn.close_code, conn.close_reason)
                )

    async def _handle(self, message: str | bytes) -> None:
        try:
            if not isinstance(message, str):
                raise EnvelopeError("binary message")
            msg = parse_server_message(message)
        except EnvelopeError as e:
            if self.on_message is not None:
                await as_deferred(self.on_message(message))
            else:
                self.log.warn("ignored a message outside the format: {e}", e=str(e))
            return
        kind = msg["type"]
        if kind == "publication":
            pub = ChannelPublication(
                msg["channel"], msg["data"], msg["epoch"], msg["offset"]
            )
            await as_deferred(self.on_publication(pub))
            if pub.channel in self.positions and pub.epoch is not None:
                assert pub.offset is not None
                self.positions[pub.channel] = (pub.epoch, pub.offset)
        elif kind == "subscribed":
            channel, status = msg["channel"], msg["status"]
            if status in LOST and self.on_reset is not None:
                await as_deferred(self.on_reset(channel, status))
            if channel in self.positions and msg["position"] is not None:
                self.positions[channel] = msg["position"]
            self._answer(channel, status)
        elif kind == "error":
            error = str(msg.get("error"))
            self.log.warn("the server refused: {error}", error=error)
            self._answer(msg.get("channel"), WSPluginError(f"refused: {error}"))
