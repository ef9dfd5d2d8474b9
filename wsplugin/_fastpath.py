"""The fast receive path: the frame codec instead of Autobahn's parser.

Once a connection is open without permessage-deflate, every read goes to one
:class:`~wsplugin._codec.FrameReader` (compiled C when it is built, else
pure Python; :data:`wsplugin._codec.IMPLEMENTATION` says which) and its
events go straight to the connection's collaborators:

==========================  ================================================
codec event                 goes to
==========================  ================================================
``TEXT``, ``BINARY``        :meth:`~wsplugin._dispatch.Dispatch.message`
``FRAGMENT``                :meth:`~wsplugin._dispatch.Dispatch.fragment`
``PING``, ``PONG``          the protocol's ``onPing`` / ``onPong``
``CLOSE``                   the protocol's ``onCloseFrame`` (checked,
                            answered, ``on_close``: the close handshake
                            stays Autobahn's)
``ERROR``                   ``_fail_connection(code, reason)``, then the TCP
                            connection is closed (RFC 6455 section 7.1.7)
==========================  ================================================

The handshake, connections with permessage-deflate and the close handshake
stay Autobahn's. Semantics are those of the Autobahn path
(:mod:`wsplugin._receiving`): the same events in the same order, the same
limits and close codes, ``frame_by_frame``, ``manual_pong``,
``manual_close``, keep-alive counting; tests run both paths on the same
bytes. One difference: after the peer broke the protocol the connection is
closed right after our close frame instead of parsing on for the peer's
answer (which, after a framing error, cannot be found reliably anyway), so
``on_disconnect`` says ``was_clean=False`` for every protocol error.

**Fairness.** A read of 64 KiB can hold 9,000 one-byte messages. At most
:data:`EVENTS_PER_TURN` events of one connection are handled per reactor
turn: past that the connection stops reading, and the rest of its input is
handled in the next turn (``callLater(0)``), after the other connections'
reads. A client flooding tiny messages then delays others by at most one
budget per turn instead of by its whole backlog.

A mixin of :class:`~wsplugin.protocol.WebSocketServerProtocol`, first in its
bases; it falls back on :class:`~wsplugin._receiving.AutobahnReceiving`
where the codec does not apply. Autobahn private names used:
``_perMessageCompress`` (whether the connection compresses) and
``_fail_connection`` (how Autobahn fails a connection, with its close frame).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.websocket.protocol import WebSocketProtocol as _WSP

from wsplugin._codec import BINARY, CLOSE, FRAGMENT, PING, PONG, TEXT, FrameReader
from wsplugin._lifecycle import Phase

if TYPE_CHECKING:
    from wsplugin._dispatch import Dispatch
    from wsplugin._keepalive import KeepAlive
    from wsplugin._lifecycle import Lifecycle
    from wsplugin._routing import Route, RouteSettings
    from wsplugin.factory import WebSocketServerFactory

__all__ = ["EVENTS_PER_TURN", "FEED_SLICE", "CodecReceiving"]

EVENTS_PER_TURN = 256
"""Codec events (messages, fragments, control frames) one connection may
have handled per reactor turn before it yields to the others. A 64-byte echo
costs a few microseconds, so one budget is about a millisecond of CPU;
workload A (16 messages in flight per connection) never reaches it."""

FEED_SLICE = 16384
"""Bytes of one read fed to the reader at a time (without a copy, as
memoryview slices), so that the events waiting for the next turn, when a
connection has used its budget, are those of one slice at most."""

_TEXT = TEXT
_BINARY = BINARY
_FRAGMENT = FRAGMENT
_PING = PING
_PONG = PONG
_CLOSE = CLOSE
_PEER_CLOSED = Phase.PEER_CLOSED
_CLOSED = _WSP.STATE_CLOSED
_TOO_BIG = _WSP.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG


class CodecReceiving:
    """Feeds reads to the frame codec once the connection is open.

    Attributes:
        fast_path: Whether open connections without permessage-deflate use
            the codec (a class attribute; tests switch it off to compare
            with Autobahn's parser).
    """

    fast_path = True

    # set by the protocol (see WebSocketServerProtocol)
    factory: WebSocketServerFactory
    lifecycle: Lifecycle
    settings: RouteSettings
    dispatch: Dispatch
    keepalive: KeepAlive | None
    route: Route | None
    # the FrameReader on the fast path; False there until the first read;
    # None on Autobahn's path
    _reader: Any = None
    # input left for the next turn: (data, position, events, index)
    _backlog: tuple[Any, int, list[Any] | None, int] | None = None
    _later: list[bytes] | None = None  # reads that arrived meanwhile
    _whole: bytearray | None = None  # assemble_messages: the message so far

    # Autobahn's (the protocol this class is mixed into)
    state: int
    data: bytes
    failedByMe: bool
    wasClean: bool
    wasNotCleanReason: str | None
    _perMessageCompress: Any

    def start_fast_path(self) -> None:
        """Open (the protocol's ``onOpen`` calls this last): without
        permessage-deflate, the codec reads from now on."""
        route = self.route
        if (
            not self.fast_path
            or self._perMessageCompress is not None
            or route is None
            or self.state == _CLOSED
        ):
            return
        # The reader is made on the first read (an idle connection holds
        # none); Autobahn's UTF-8 validator is for its own parser only.
        self._reader = False
        self.__dict__.pop("utf8validator", None)
        rest = self.data
        if rest:
            # frames that came with the handshake: Autobahn leaves them here
            self.data = b""
            self._new_reader()
            self._receive(rest, 0, None, 0)

    def _new_reader(self) -> None:
        route = self.route
        assert route is not None
        cfg = route.config
        self._reader = FrameReader(
            cfg.max_frame_size,
            cfg.max_message_size,
            utf8_validation=cfg.utf8_validation,
            frame_by_frame=cfg.frame_by_frame,
        )

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the peer: to the codec, or (before it is open, or with
        permessage-deflate) to Autobahn's parser."""
        if not self._reader:
            if self._reader is None:
                super().dataReceived(data)  # type: ignore[misc]
                return
            self._new_reader()
        self.bytes_in += len(data)
        ka = self.keepalive
        if ka is not None:
            ka.reads += 1
            if ka.expiry is not None:
                ka.answered()
        if self._backlog is not None:
            # still working through an earlier read: keep the order
            if self._later is None:
                self._later = []
            self._later.append(data)
            return
        self._receive(data, 0, None, 0)

    def _receive(
        self, data: Any, pos: int, events: list[Any] | None, index: int
    ) -> None:
        """Handle ``data[pos:]`` (after ``events[index:]``, left over from its
        previous slice) within this turn's budget; the rest waits."""
        reader = self._reader
        budget = EVENTS_PER_TURN
        end = len(data)
        view = None
        while True:
            if events is not None:
                stop = index + budget
                if stop > len(events):
                    stop = len(events)
                done = self._handle(events, index, stop)
                if done < 0:
                    return  # the connection is failed or closed
                budget -= done - index
                if done < len(events):
                    self._yield((data, pos, events, done))
                    return
                events = None
            if pos >= end or reader.error is not None or self.state == _CLOSED:
                return
            if budget <= 0:
                self._yield((data, pos, None, 0))
                return
            if not pos and end <= FEED_SLICE:
                piece = data
                pos = end
            else:
                if view is None:
                    view = memoryview(data)
                piece = view[pos : pos + FEED_SLICE]
                pos += len(piece)
            events = reader.feed(piece)
            index = 0

    def _yield(self, backlog: tuple[Any, int, list[Any] | None, int]) -> None:
        """This turn's budget is spent: stop reading, go on next turn."""
        self._backlog = backlog
        self.pause_reading("fairness")  # type: ignore[attr-defined]
        self.factory.clock.callLater(0, self._resume)

    def _resume(self) -> None:
        """Next turn: handle what was left, then read again."""
        backlog, self._backlog = self._backlog, None
        if backlog is None:
            return
        if self.state != _CLOSED and self._reader.error is None:
            self._receive(*backlog)
            later = self._later
            while later and self._backlog is None and self.state != _CLOSED:
                self._receive(later.pop(0), 0, None, 0)
            if self._backlog is not None:
                return
        self._later = None
        self.resume_reading("fairness")  # type: ignore[attr-defined]

    def _handle(self, events: list[Any], index: int, stop: int) -> int:
        """Act on ``events[index:stop]``; returns where it stopped, or -1
        when the connection is failed or closed (the rest is dropped)."""
        ka = self.keepalive
        for i in range(index, stop):
            event = events[i]
            kind = event[0]
            if kind == _TEXT or kind == _BINARY:
                if ka is not None:
                    ka.messages += 1
                if self.failedByMe or self.lifecycle.phase is _PEER_CLOSED:
                    continue
                self.dispatch.message(event[1], kind == _BINARY)
            elif kind == _FRAGMENT:
                if ka is not None:
                    ka.messages += 1
                if self.failedByMe or self.lifecycle.phase is _PEER_CLOSED:
                    continue
                if not self._fragment(event[2], event[1] == _BINARY, event[3]):
                    return -1
            elif kind == _PING:
                self.onPing(event[1])  # type: ignore[attr-defined]
            elif kind == _PONG:
                self.onPong(event[1])  # type: ignore[attr-defined]
            elif kind == _CLOSE:
                payload = event[1]
                code = int.from_bytes(payload[:2], "big") if len(payload) > 1 else None
                self.onCloseFrame(code, payload[2:] or None)  # type: ignore[attr-defined]
                if self.state == _CLOSED:
                    return -1
            else:  # ERROR: the peer broke the protocol
                self._protocol_error(event[1], event[2])
                return -1
            if self.state == _CLOSED:
                return -1
        return stop

    def _fragment(self, data: bytes, is_binary: bool, fin: bool) -> bool:
        """One frame, frame by frame; with ``assemble_messages`` also the
        whole message after its last frame. False if it failed the
        connection (a message over ``max_message_size``)."""
        route = self.route
        assert route is not None
        cfg = route.config
        if not cfg.assemble_messages:
            self.dispatch.fragment(data, is_binary, fin)
            return True
        whole = self._whole
        if whole is None:
            whole = self._whole = bytearray()
        whole += data
        limit = cfg.max_message_size
        if limit and len(whole) > limit:
            self._whole = None
            self._protocol_error(
                _TOO_BIG,
                f"message of {len(whole)} bytes is over the limit of {limit}",
            )
            return False
        deliver_whole(self.dispatch, data, is_binary, fin, whole)
        if fin:
            self._whole = None
        return True

    def _protocol_error(self, code: int, reason: str) -> None:
        """Fail the connection (``on_error``, our close frame), then close
        TCP once the close frame is out: its input is no longer read."""
        self._fail_connection(code, reason)  # type: ignore[attr-defined]
        if self.state != _CLOSED:
            self.wasClean = False
            self.wasNotCleanReason = f"protocol error: {reason}"
            self.dropConnection(abort=False)  # type: ignore[attr-defined]


def deliver_whole(
    dispatch: Dispatch, data: bytes, is_binary: bool, fin: bool, whole: bytearray
) -> None:
    """``assemble_messages``: the frame to ``on_fragment``, and after the last
    frame the whole message to ``on_message`` / ``on_binary`` (each only if
    the handler has it, or if the connection queues for ``receive()``)."""
    events = dispatch.events
    queues = dispatch.conn.queues_messages
    if queues or "on_fragment" in events:
        dispatch.fragment(data, is_binary, fin)
    if fin and (queues or ("on_binary" if is_binary else "on_message") in events):
        dispatch.message(bytes(whole), is_binary)
