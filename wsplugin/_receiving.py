"""The receive side of the server's Autobahn adapter: frames in, messages out.

Framing, unmasking, UTF-8 validation and decompression stay Autobahn's, with
two savings where Autobahn's way costs too much:

* a message's payload is collected in one
  :class:`~wsplugin._frames.PayloadBuffer` instead of an object per frame;
* runs of tiny continuation frames are read in one go
  (:func:`~wsplugin._frames.read_continuations`, see
  :meth:`AutobahnReceiving.processData`), and small payloads are unmasked
  with :class:`~wsplugin._frames.SmallFrameUnmasker`.

Whole messages (or, frame by frame, each frame) go to the connection's
:class:`~wsplugin._dispatch.Dispatch`. This class is a mixin of
:class:`~wsplugin.protocol.WebSocketServerProtocol`, kept apart so that the
receive path can be read (and, for the compiled codec of
``wsplugin._codec``, replaced) on its own. It overrides Autobahn's frame
hooks; the private Autobahn names it uses are commented where they appear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.exception import PayloadCorruptError, PayloadExceededError
from autobahn.websocket.protocol import WebSocketProtocol as _WSP
from autobahn.websocket.xormasker import create_xor_masker

from wsplugin._fastpath import deliver_whole
from wsplugin._frames import (
    SMALL_FRAME,
    PayloadBuffer,
    SmallFrameUnmasker,
    read_continuations,
)
from wsplugin._lifecycle import Phase

if TYPE_CHECKING:
    from wsplugin._dispatch import Dispatch
    from wsplugin._keepalive import KeepAlive
    from wsplugin._lifecycle import Lifecycle
    from wsplugin._routing import RouteSettings

__all__ = ["READ_SLICE", "AutobahnReceiving"]

READ_SLICE = 8192
"""Bytes of a read handed to Autobahn's parser at a time (a frame's remaining
payload, when larger, goes in one piece). Autobahn cuts every frame off the
front of its buffer with a copy of the rest, so a 64 KiB read of tiny frames
copies about 32 KiB per frame: in 8 KiB slices that is 8 times less."""

_OPEN = _WSP.STATE_OPEN
_CLOSED = _WSP.STATE_CLOSED
_PEER_CLOSED = Phase.PEER_CLOSED


class AutobahnReceiving:
    """Autobahn's frame hooks, feeding :class:`~wsplugin._dispatch.Dispatch`.

    Autobahn's per-frame message hooks (``onMessageFrameBegin``/``Data``/
    ``End``) do not fire for the middle frames of a message that arrive as a
    run of small continuation frames: those are read in one go
    (``frame_by_frame`` mode excepted).
    """

    # set by the protocol (see WebSocketServerProtocol)
    lifecycle: Lifecycle
    settings: RouteSettings
    dispatch: Dispatch
    keepalive: KeepAlive | None
    _msg: PayloadBuffer | None = None  # payload of the message being received
    bytes_in = 0  # read from the socket (the connection log's bytes_in)
    _whole: bytearray | None = None  # assemble_messages: the message so far
    _last_fragment = b""

    # Autobahn's (the protocol this class is mixed into)
    state: int
    data: bytes
    current_frame: Any
    current_frame_masker: Any
    inside_message: bool
    failedByMe: bool
    maxFramePayloadSize: int
    maxMessagePayloadSize: int
    message_data_total_length: int
    message_is_binary: bool
    logFrames: bool
    trafficStats: Any
    utf8validateIncomingCurrentMessage: bool
    utf8validateLast: Any
    utf8validator: Any
    wasMaxMessagePayloadSizeExceeded: bool
    # Autobahn private: the negotiated compression and whether the message
    # being read is compressed (read_continuations decompresses a run itself,
    # which Autobahn offers no public call for)
    _perMessageCompress: Any
    _isMessageCompressed: bool
    # Autobahn private methods (no annotations-only stand-ins may shadow
    # them: this class comes first in the protocol's MRO):
    # _dataReceived (Autobahn's read path, fed in slices),
    # _max_message_size_exceeded and _invalid_payload (how Autobahn fails a
    # connection for 1009 and 1007, reused so the close is the same)

    def dataReceived(self, data: bytes) -> None:
        """Bytes from the peer: any traffic answers a pending heartbeat."""
        self.bytes_in += len(data)
        ka = self.keepalive
        if ka is not None:
            ka.reads += 1
            if ka.expiry is not None:
                ka.answered()
        if len(data) <= READ_SLICE or self.state != _OPEN:
            self._dataReceived(data)
            return
        end = len(data)
        pos = 0
        while pos < end and self.state != _CLOSED:
            step = READ_SLICE
            frame = self.current_frame
            if frame is not None:
                # inside a frame: its whole remaining payload in one piece
                rest = frame.length - self.current_frame_masker.pointer()
                step = max(step, rest - len(self.data))
            self._dataReceived(data[pos : pos + step])
            pos += step

    def onFrameBegin(self) -> None:
        """A frame header arrived: choose how its payload is unmasked.

        Autobahn builds an NVX masker for every frame, about 6 us each
        (a quarter of the CPU of a 64-byte echo); small payloads are
        unmasked with :class:`~wsplugin._frames.SmallFrameUnmasker` instead.
        """
        frame = self.current_frame
        if frame.mask is not None and frame.length:
            self.current_frame_masker = (
                SmallFrameUnmasker(frame.mask)
                if frame.length <= SMALL_FRAME
                else create_xor_masker(frame.mask, frame.length)
            )
        super().onFrameBegin()  # type: ignore[misc]

    def processData(self) -> bool:
        """Autobahn's frame parser, with a fast path for tiny fragments.

        Between the first and the last frame of a message, a run of small
        continuation frames already in the buffer is read in one go by
        :func:`~wsplugin._frames.read_continuations` (about 1 us a frame
        instead of ~13 us, and one slice of the buffer per run instead of two
        per frame); everything else, and every decision that is not plain
        arithmetic, stays Autobahn's. Without this a client sending one
        message as 500,000 two-byte frames holds the reactor for seconds.
        After the connection was failed (say with 1009 in the middle of
        such a message), the rest of the run is skipped the same way while
        the peer's close frame is awaited.
        """
        data = self.data
        if (
            self.current_frame is None
            and self.inside_message
            and len(data) >= 6
            and not data[0]
            and (self.failedByMe or self.state == _OPEN)
            and not self.settings.frame_by_frame
            and self._read_continuations(data)
        ):
            return len(self.data) > 0
        return bool(super().processData())  # type: ignore[misc]

    def _read_continuations(self, data: bytes) -> int:
        """Read the run of small continuation frames at the start of ``data``
        into the message (the checks of Autobahn's ``onFrameData``, once per
        run); returns how many frames were read."""
        if 0 < self.maxFramePayloadSize < 125 or self.logFrames:
            return 0  # rare settings: leave every frame to Autobahn
        if self.failedByMe:
            # the rest of a message we failed the connection for (e.g. with
            # 1009) while waiting for the peer's close: skip it cheaply
            pos, count, _ = read_continuations(data, 0, 1 << 62, keep=False)
            self.data = data[pos:]
            return count
        limit = self.maxMessagePayloadSize
        budget = limit - self.message_data_total_length if limit > 0 else 1 << 62
        pos, count, payload = read_continuations(data, 0, budget)
        if not count:
            return 0
        self.data = data[pos:]
        wire_length = len(payload)
        self.message_data_total_length += wire_length
        if self._isMessageCompressed and wire_length:
            before = self.message_data_total_length - wire_length
            try:
                payload = self._perMessageCompress.decompress_message_data(
                    payload, max_output_len=limit - before if limit > 0 else None
                )
            except PayloadExceededError:
                self.wasMaxMessagePayloadSizeExceeded = True
                self._max_message_size_exceeded(
                    limit, limit, f"message over {limit} bytes after decompression"
                )
                return count
            except PayloadCorruptError as e:
                self._invalid_payload(f"message cannot be decompressed: {e}")
                return count
            self.message_data_total_length = before + len(payload)
            if 0 < limit < self.message_data_total_length:
                self.wasMaxMessagePayloadSizeExceeded = True
                self._max_message_size_exceeded(
                    self.message_data_total_length,
                    limit,
                    f"message over {limit} bytes after decompression",
                )
                return count
        if self.state == _OPEN:
            stats = self.trafficStats
            stats.incomingOctetsWebSocketLevel += wire_length
            stats.incomingOctetsAppLevel += len(payload)
            stats.incomingWebSocketFrames += count
        if self.utf8validateIncomingCurrentMessage:
            self.utf8validateLast = self.utf8validator.validate(payload)
            if not self.utf8validateLast[0]:
                self._invalid_payload("invalid UTF-8 in a text message")
                return count
        msg = self._msg
        if msg is not None:
            msg.append(payload)
        return count

    def onMessageBegin(self, isBinary: bool) -> None:
        """A data message starts: its payload goes into one
        :class:`~wsplugin._frames.PayloadBuffer` (Autobahn's list of pieces
        costs about 25 times the payload for a message of two-byte frames)."""
        self.message_is_binary = isBinary
        self.message_data_total_length = 0
        self._msg = PayloadBuffer()

    def onMessageFrameBegin(self, length: int) -> None:
        """In frame-by-frame mode the message limit bounds each frame, since
        messages are never assembled (deflate inflation stays bounded)."""
        settings = self.settings
        if settings.frame_by_frame and not settings.assemble_messages:
            self.message_data_total_length = 0
        super().onMessageFrameBegin(length)  # type: ignore[misc]

    def onMessageFrameData(self, payload: bytes) -> None:
        """Unmasked (and inflated, UTF-8 checked) payload: into the buffer."""
        msg = self._msg
        if msg is not None and not self.failedByMe:
            msg.append(payload)

    def onMessageFrameEnd(self) -> None:
        """Frame-by-frame mode hands every non-final frame out as it ends;
        otherwise the frame's payload is already in the message buffer."""
        if not self.settings.frame_by_frame or self.failedByMe:
            return
        msg = self._msg
        data = bytes(msg.take()) if msg is not None else b""
        if self.current_frame.fin:
            # The final frame waits for onMessageEnd: Autobahn checks there
            # that the UTF-8 text did not stop inside a code point.
            self._last_fragment = data
        else:
            self._deliver_fragment(data, False)

    def onMessageEnd(self) -> None:
        """A whole message (or, frame by frame, the final frame) arrived."""
        msg, self._msg = self._msg, None
        if self.failedByMe:
            return
        if self.settings.frame_by_frame:
            data, self._last_fragment = self._last_fragment, b""
            self._deliver_fragment(data, True)
            return
        ka = self.keepalive
        if ka is not None:
            ka.messages += 1
        if self.lifecycle.phase is _PEER_CLOSED:
            return  # manual_close: nothing after the peer's close frame
        self.dispatch.message(
            msg.take() if msg is not None else b"", self.message_is_binary
        )

    def _deliver_fragment(self, data: bytes, fin: bool) -> None:
        ka = self.keepalive
        if ka is not None:
            ka.messages += 1
        if self.lifecycle.phase is _PEER_CLOSED:
            return
        if not self.settings.assemble_messages:
            self.dispatch.fragment(data, self.message_is_binary, fin)
            return
        # assemble_messages: the message is also kept whole (bounded by
        # max_message_size, which Autobahn checks over the whole message)
        whole = self._whole
        if whole is None:
            whole = self._whole = bytearray()
        whole += data
        if fin:
            self._whole = None
        deliver_whole(self.dispatch, data, self.message_is_binary, fin, whole)
