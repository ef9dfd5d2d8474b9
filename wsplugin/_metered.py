"""The counting side of the metrics: subclasses installed only when a server
has metrics on, so that a server without them runs the code it always ran.

* :class:`Tally` holds the per-message counts as plain integers: counting a
  message is two attribute increments (about 60 ns), against the 1-2 us of
  a ``prometheus_client`` ``Counter.inc()`` with its lock. They are read
  when Prometheus scrapes (:class:`wsplugin.metrics.Metrics`).
* :class:`MeteredDispatch` counts each message received, at
  ``Dispatch.message`` / ``Dispatch.fragment`` (docs/architecture.md).
* :func:`metered_protocol` makes a subclass of the server's protocol class
  that counts at the points where the lifecycle moves: the 101 answer
  (``onOpen``), a refused handshake (``failHandshake``, by HTTP status),
  the end (``onClose``: close codes sent and received), a heartbeat
  timeout, the send-buffer policy acting, and each message the
  application sends.

Broadcasts are counted by the fan-out's ``observe`` hook
(:class:`~wsplugin._fanout.Fanout`), not here.
"""

from __future__ import annotations

from typing import Any, Protocol

from autobahn.websocket.protocol import WebSocketProtocol as _WSP

from wsplugin._dispatch import Dispatch
from wsplugin._lifecycle import Phase

__all__ = ["Meter", "MeteredDispatch", "Tally", "metered_protocol"]

_CONNECTING = _WSP.STATE_CONNECTING
_OPEN = _WSP.STATE_OPEN
_ENDED = Phase.ENDED


def _utf8_size(payload: Any) -> int:
    """The size in bytes of a text payload: the frame codec delivers text
    as ``str`` (already decoded), Autobahn's parser as UTF-8 bytes."""
    if isinstance(payload, str):
        return len(payload.encode("utf-8"))
    return len(payload)


class Tally:
    """Counts kept as plain integers, per server; they only grow."""

    __slots__ = (
        "text_in",
        "text_in_bytes",
        "binary_in",
        "binary_in_bytes",
        "text_out",
        "text_out_bytes",
        "binary_out",
        "binary_out_bytes",
        "heartbeat_timeouts",
        "send_buffer_drops",
        "send_buffer_closes",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def sent(self, count: int, nbytes: int, is_binary: bool) -> None:
        """``count`` messages of ``nbytes`` payload bytes each went out."""
        if is_binary:
            self.binary_out += count
            self.binary_out_bytes += count * nbytes
        else:
            self.text_out += count
            self.text_out_bytes += count * nbytes


class Meter(Protocol):
    """What the metered classes report to (:class:`wsplugin.metrics.Metrics`)."""

    tally: Tally

    def handshake_accepted(self) -> None:
        """A 101 answer was sent."""

    def handshake_refused(self, status: int) -> None:
        """A handshake was answered with HTTP ``status``."""

    def connection_ended(self, sent: int | None, received: int | None) -> None:
        """An open connection ended; the codes of the close frames sent and
        received (None for none)."""


class MeteredDispatch(Dispatch):
    """:class:`~wsplugin._dispatch.Dispatch` that counts what it delivers.

    A per-server subclass sets :attr:`tally` (see :func:`metered_protocol`).
    """

    __slots__ = ()
    tally: Tally

    def message(self, payload: bytes | bytearray | str, is_binary: bool) -> None:
        """Count the message (by kind, with its payload bytes), deliver it."""
        tally = self.tally
        if is_binary:
            tally.binary_in += 1
            tally.binary_in_bytes += len(payload)
        else:
            tally.text_in += 1
            tally.text_in_bytes += _utf8_size(payload)
        Dispatch.message(self, payload, is_binary)

    def fragment(self, data: bytes, is_binary: bool, fin: bool) -> None:
        """Count the frame's bytes, and a message on its last frame."""
        tally = self.tally
        if is_binary:
            tally.binary_in_bytes += len(data)
            tally.binary_in += fin
        else:
            tally.text_in_bytes += _utf8_size(data)
            tally.text_in += fin
        Dispatch.fragment(self, data, is_binary, fin)


class MeteredProtocol:
    """Overrides of the server protocol that count; mixed in ahead of the
    server's protocol class by :func:`metered_protocol`."""

    meter: Meter
    # the server protocol's (this class is mixed into it)
    state: int
    lifecycle: Any
    localCloseCode: int | None
    remoteCloseCode: int | None

    def onOpen(self) -> None:
        """Count the accepted handshake, then open."""
        self.meter.handshake_accepted()
        super().onOpen()  # type: ignore[misc]

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: Any = None
    ) -> None:
        """Count a refusal the protocol will answer (by status), then answer."""
        if self.state == _CONNECTING and self.lifecycle.phase is not _ENDED:
            self.meter.handshake_refused(code)
        super().failHandshake(reason, code, responseHeaders)  # type: ignore[misc]

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        """Count the close codes of a connection that was open, once."""
        life = self.lifecycle
        ending = life.phase is not _ENDED and life.opened
        super().onClose(wasClean, code, reason)  # type: ignore[misc]
        if ending:
            self.meter.connection_ended(self.localCloseCode, self.remoteCloseCode)

    def heartbeat_expired(self) -> None:
        """Count a heartbeat timeout that closes the connection."""
        if self.state == _OPEN:
            self.meter.tally.heartbeat_timeouts += 1
        super().heartbeat_expired()  # type: ignore[misc]

    def send_buffer_overflow(self, action: str) -> None:
        """Count what the send-buffer policy did."""
        tally = self.meter.tally
        if action == "drop":
            tally.send_buffer_drops += 1
        else:
            tally.send_buffer_closes += 1

    def send_message(
        self, payload: bytes, is_binary: bool, fragment_size: int | None = None
    ) -> None:
        """Send (raises if not open), then count the message."""
        super().send_message(payload, is_binary, fragment_size)  # type: ignore[misc]
        tally = self.meter.tally
        if is_binary:
            tally.binary_out += 1
            tally.binary_out_bytes += len(payload)
        else:
            tally.text_out += 1
            tally.text_out_bytes += len(payload)

    def send_data_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        """Send one frame, then count its bytes (and a message on the last)."""
        super().send_data_frame(payload, is_binary, fin)  # type: ignore[misc]
        tally = self.meter.tally
        if is_binary:
            tally.binary_out_bytes += len(payload)
            tally.binary_out += fin
        else:
            tally.text_out_bytes += len(payload)
            tally.text_out += fin


def metered_protocol(base: type, meter: Meter) -> type:
    """A subclass of the server protocol class ``base`` that counts into
    ``meter``, with a :class:`MeteredDispatch` of its own.

    One pair of classes per server, so that two servers in one process
    count apart; made once, when the metrics are installed.
    """
    dispatch = type(
        "MeteredDispatch", (MeteredDispatch,), {"__slots__": (), "tally": meter.tally}
    )
    return type(
        f"Metered{base.__name__}",
        (MeteredProtocol, base),
        {
            "meter": meter,
            "dispatch_type": dispatch,
            "__module__": __name__,
            "__doc__": f"{base.__name__}, counting into its server's metrics.",
        },
    )
