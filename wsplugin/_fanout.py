"""Sending one message to many connections, encoded once.

:class:`Fanout` is the server's one path for ``broadcast``, ``send_to`` and,
with a backplane, for publications that arrive from other nodes
(:meth:`Fanout.deliver`): the filters (channel, subprotocol, ids, exclude)
are applied to this node's connections, the frame is built once per
distinct :data:`FrameKey` (fragment size, and compression parameters for
permessage-deflate without context takeover) and the same bytes are written
to every connection that shares it. Only a connection that keeps its
compression context compresses for itself.

It reaches each connection's protocol only through :class:`FanoutTarget`:
whether it is open and admits one more message (its send-buffer policy),
which prepared frames it takes, and how to send it a message of its own.
Plain Python: no reactor, no transport.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger

from wsplugin._envelope import encode_publication
from wsplugin._frames import encode_message

if TYPE_CHECKING:
    from wsplugin._registry import Member, Registry

__all__ = ["FanoutTarget", "FrameKey", "Fanout"]

FrameKey = tuple[int, tuple[int, int] | None]
"""``(payload bytes per frame, (window bits, mem level) or None)``: two
connections with the same key take the same bytes for a message."""


class FanoutTarget(Protocol):
    """What the fan-out needs from one connection's protocol."""

    frame_key: FrameKey | None
    """The key of the prepared frames it takes, or None when it compresses
    each message itself (permessage-deflate with context takeover)."""

    def offer_prepared(self, data: bytes) -> bool:
        """Send ready-made frames, if the connection is open and its
        send-buffer policy admits one more message; whether it did."""

    def offer_message(self, payload: bytes, is_binary: bool) -> bool:
        """Encode and send a message itself, on the same terms."""

    def held_bytes(self) -> int:
        """Outgoing bytes held for it: its queue and its transport's buffer."""


class Fanout:
    """The fan-out of one server over its :class:`~wsplugin._registry.Registry`.

    Args:
        registry: The open connections.
        log: Where a connection that fails to take a message is logged (the
            others still get it).

    Attributes:
        observe: None, or called after each :meth:`send` with the payload's
            length, whether it is binary, how many connections took it and
            the ``time.perf_counter()`` at its start (:mod:`wsplugin.metrics`
            sets it; None costs one test per broadcast, not per receiver).
    """

    __slots__ = ("registry", "_log", "observe")

    def __init__(self, registry: Registry, log: Logger) -> None:
        self.registry = registry
        self._log = log
        self.observe: Callable[[int, bool, int, float], None] | None = None

    def select(
        self,
        *,
        channel: str | None = None,
        subprotocol: str | None = None,
        ids: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Member]:
        """The open connections that match every filter given.

        Args:
            channel: Subscribed to this channel.
            subprotocol: Negotiated this subprotocol.
            ids: Have one of these ids (unknown ids are ignored, a repeated
                one counts once); None: any id.
            exclude: Do not have one of these ids.
        """
        registry = self.registry
        targets: list[Member]
        if ids is not None:
            wanted = [registry.get(i) for i in dict.fromkeys(ids)]
            targets = [c for c in wanted if c is not None]
        else:
            targets = registry.snapshot()
        if channel is not None:
            targets = [c for c in targets if channel in c.channels]
        if subprotocol is not None:
            targets = [c for c in targets if c.subprotocol == subprotocol]
        skip = set(exclude)
        if skip:
            targets = [c for c in targets if c.id not in skip]
        return targets

    def send(self, payload: bytes, is_binary: bool, targets: Iterable[Member]) -> int:
        """Send one message to ``targets``; returns how many took it.

        A connection that is not open, or whose send-buffer policy refuses
        the message, is skipped; one that raises is logged and skipped.
        """
        observe = self.observe
        started = perf_counter() if observe is not None else 0.0
        encoded: dict[FrameKey, bytes] = {}
        count = 0
        for conn in targets:
            engine = conn.engine
            key = engine.frame_key
            try:
                if key is None:
                    sent = engine.offer_message(payload, is_binary)
                else:
                    data = encoded.get(key)
                    if data is None:
                        data = encoded[key] = encode_message(
                            payload, is_binary, key[0], key[1]
                        )
                    sent = engine.offer_prepared(data)
            except Exception:
                self._log.failure("sending to {conn} failed", conn=conn)
                continue
            if sent:
                count += 1
        if observe is not None:
            observe(len(payload), is_binary, count, started)
        return count

    def send_selected(
        self, payload: bytes, is_binary: bool, selector: Callable[[Any], bool]
    ) -> int:
        """Send to each open connection for which ``selector(conn)`` is true."""
        targets = [c for c in self.registry.snapshot() if selector(c)]
        return self.send(payload, is_binary, targets)

    def publish_local(
        self,
        payload: bytes,
        is_binary: bool,
        *,
        channel: str | None = None,
        subprotocol: str | None = None,
        ids: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
    ) -> int:
        """Send to this node's connections that match the filters (see
        :meth:`select`), encoding once; returns the count."""
        targets = self.select(
            channel=channel, subprotocol=subprotocol, ids=ids, exclude=exclude
        )
        return self.send(payload, is_binary, targets)

    def deliver(self, publication: Any, targets: Iterable[Member] | None = None) -> int:
        """A publication from any node (``wsplugin.backplane.Publication``:
        ``channel``, ``data``, ``is_binary``, ``protocol``, ``ids``,
        ``exclude``, ``epoch``, ``offset``) to this node's matching
        connections (or to ``targets``): what a backplane's receiver does
        with it.

        A connection with ``envelope`` set (it speaks
        ``wsplugin.channels.v1``, :mod:`wsplugin.channels`) gets the
        publication wrapped in a JSON ``publication`` message that carries
        its channel, epoch and offset; the others get the payload as it
        was published. Each form is encoded once.
        """
        if targets is None:
            targets = self.select(
                channel=publication.channel,
                subprotocol=publication.protocol,
                ids=publication.ids,
                exclude=publication.exclude,
            )
        wrapped = [c for c in targets if c.envelope]
        if not wrapped:
            return self.send(publication.data, publication.is_binary, targets)
        plain = [c for c in targets if not c.envelope]
        count = self.send(publication.data, publication.is_binary, plain)
        envelope = encode_publication(
            publication.channel,
            publication.data,
            publication.is_binary,
            publication.epoch,
            publication.offset,
        )
        return count + self.send(envelope, False, wrapped)
