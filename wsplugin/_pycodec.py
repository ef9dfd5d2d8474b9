"""The pure-Python WebSocket frame codec (RFC 6455): reference and fallback.

A sans-I/O reader of client frames and an encoder of server frames, with the
same API and the same events, errors and close codes as the compiled
``wsplugin._speedups``. :mod:`wsplugin._codec` picks one of the two; the tests
fuzz them against each other. docs/codec.md describes the design.

Events are plain tuples, cheapest to build and to unpack, whose first item is
the kind:

==========================================  =====================================
``(TEXT, text: str)``                       a whole text message
``(BINARY, data: bytes)``                   a whole binary message
``(FRAGMENT, opcode, data: bytes, fin)``    one data frame, in frame-by-frame
                                            mode; ``opcode`` is the message's
                                            (TEXT or BINARY), also on its
                                            continuation frames
``(PING, payload)``, ``(PONG, payload)``    control frames, unmasked payload
``(CLOSE, payload)``                        the close frame's whole payload (see
                                            :func:`close_payload_problem`)
``(ERROR, close_code, reason: str)``        the last event: the peer broke the
                                            protocol; the reader takes no more
==========================================  =====================================

The kinds of message and control events are their opcodes.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any, Final

from autobahn.websocket.xormasker import create_xor_masker

from wsplugin._frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    read_continuations,
)

__all__ = [
    "BINARY",
    "CLOSE",
    "CLOSE_INVALID_PAYLOAD",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_PROTOCOL_ERROR",
    "ERROR",
    "FRAGMENT",
    "PING",
    "PONG",
    "TEXT",
    "Event",
    "FrameReader",
    "close_payload_problem",
    "encode_frame",
    "encode_message",
    "frame_header",
]

TEXT: Final = OP_TEXT
BINARY: Final = OP_BINARY
CLOSE: Final = OP_CLOSE
PING: Final = OP_PING
PONG: Final = OP_PONG
FRAGMENT: Final = 0x10
ERROR: Final = 0x20

CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_PAYLOAD: Final = 1007
CLOSE_MESSAGE_TOO_BIG: Final = 1009

Event = tuple[Any, ...]
"""One event: a tuple whose first item is its kind (see the module docstring)."""

_MAX_LENGTH: Final = 0x7FFF_FFFF_FFFF_FFFF
_RUN_FRAMES: Final = 512
"""Tiny continuation frames read in one run at most: the run holds about
70 bytes per frame until it ends (36 KiB here), and 512 frames are enough
to make the per-run overhead negligible."""
_SMALL: Final = 1024  # payloads unmasked as Python integers; above, by Autobahn

# error reasons shared by the C codec (the fuzz compares them)
_R_UTF8: Final = "invalid UTF-8 in a text message"
_R_UTF8_END: Final = "text message ends inside a UTF-8 code point"
_R_MINIMAL: Final = "frame length not in its shortest encoding"
_R_TOP_BIT: Final = "frame length with the most significant bit set"

_new_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# Close codes a peer may send (RFC 6455 section 7.4.1 and the IANA registry),
# the set the server accepts today (Autobahn's), besides 3000-4999 for
# libraries and applications; 1004-1006 and 1015 are never on the wire.
_SENDABLE_CLOSE_CODES: Final = frozenset(
    (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013)
)


def _unmask(data: bytes, mask: bytes, offset: int) -> bytes:
    """XOR ``data`` with the 4-byte ``mask``, starting ``offset`` bytes into it.

    Up to 1 KiB, one XOR of two Python integers (about 1 us for 64 bytes,
    where building Autobahn's masker costs 5); beyond, Autobahn's masker,
    which is SIMD C (NVX) when Autobahn has it: 13 us for 64 KiB where the
    integers take 330 and grow worse than linearly.
    """
    n = len(data)
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    if n > _SMALL:
        return bytes(create_xor_masker(mask, n).process(data))
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )


def _utf8_problem(payload: bytes) -> str:
    """Why a whole text payload that failed to decode is not UTF-8."""
    decoder = _new_utf8_decoder()
    try:
        decoder.decode(payload)
    except UnicodeDecodeError:
        return _R_UTF8
    if _utf8_pending_invalid(decoder.getstate()[0]):
        return _R_UTF8
    return _R_UTF8_END


def _utf8_pending_invalid(pending: bytes) -> bool:
    """Whether the decoder's pending bytes can already not start a code point.

    CPython's incremental decoder rejects every impossible prefix as soon as
    it arrives, except a surrogate's (``ED A0..BF``), which it only rejects
    at the third byte. RFC 6455 section 8.1 asks for failing fast, and the
    compiled codec (like Autobahn's validator) does, so the check is here.
    """
    return len(pending) > 1 and pending[0] == 0xED and pending[1] > 0x9F


def _start_problem(b0: int, b1: int, in_message: bool, require_mask: bool) -> str:
    """What is wrong with a frame's first two bytes, or ``""``.

    The checks and their order are Autobahn's (RFC 6455 section 5.2): each
    is a protocol error (1002).
    """
    rsv = (b0 >> 4) & 7
    if rsv:
        return f"reserved bits set (RSV={rsv}) without a negotiated extension"
    if require_mask and not b1 & 0x80:
        return "unmasked client frame"
    opcode = b0 & 0xF
    if opcode > 7:
        if not b0 & 0x80:
            return "fragmented control frame"
        length = b1 & 0x7F
        if length > 125:
            return "control frame payload over 125 bytes"
        if opcode > OP_PONG:
            return f"reserved control opcode {opcode}"
        if opcode == OP_CLOSE and length == 1:
            return "close frame with a 1-byte payload"
    elif opcode > OP_BINARY:
        return f"reserved data opcode {opcode}"
    elif opcode == OP_CONTINUATION:
        if not in_message:
            return "continuation frame outside a fragmented message"
    elif in_message:
        return "new data frame inside a fragmented message"
    return ""


class FrameReader:
    """Parses the frames a client sends into events.

    ``feed(data)`` takes the bytes of one read, of any size, cut anywhere,
    and returns the events of every frame it completes. Payload is unmasked
    and validated as it arrives, so a frame spread over many reads costs one
    pass and an invalid one fails at its first bad byte; only a frame
    header cut between reads (at most 13 bytes) waits for the next feed.

    Message payload is assembled in one growing buffer: a message costs its
    payload plus a constant, whatever its fragment count (500,000 empty
    continuation frames add nothing).

    Args:
        max_frame_size: largest data frame payload; larger fails with 1009.
            0 for no limit.
        max_message_size: largest message payload (in frame-by-frame mode,
            largest frame payload, since messages are not assembled); larger
            fails with 1009. 0 for no limit.
        utf8_validation: validate text as UTF-8, incrementally across frames
            and reads; invalid text fails with 1007. When off, invalid bytes
            of a text message decode to U+FFFD.
        frame_by_frame: emit each data frame as a ``FRAGMENT`` event instead
            of assembling messages.
        require_mask: fail unmasked frames with 1002, as RFC 6455 section
            5.1 requires of a server.

    Any reserved bit fails with 1002: this reader is for connections that
    negotiated no extension (permessage-deflate is Autobahn's parser's job).
    """

    __slots__ = (
        "_by_frame",
        "_ctrl",
        "_decoder",
        "_declared",
        "_error",
        "_fin",
        "_head",
        "_in_message",
        "_mask",
        "_max_frame",
        "_max_message",
        "_msg",
        "_msg_opcode",
        "_offset",
        "_opcode",
        "_remaining",
        "_require_mask",
        "_validate",
    )

    def __init__(
        self,
        max_frame_size: int,
        max_message_size: int,
        *,
        utf8_validation: bool = True,
        frame_by_frame: bool = False,
        require_mask: bool = True,
    ) -> None:
        for name, value in (
            ("max_frame_size", max_frame_size),
            ("max_message_size", max_message_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"{name} must be an int >= 0 (0 for no limit), not {value!r}"
                )
        self._max_frame = max_frame_size
        self._max_message = max_message_size
        self._validate = bool(utf8_validation)
        self._by_frame = bool(frame_by_frame)
        self._require_mask = bool(require_mask)
        self._error: Event | None = None
        self._head = b""
        # current frame; _remaining is -1 between frames
        self._remaining = -1
        self._opcode = 0
        self._fin = False
        self._mask: bytes | None = None
        self._offset = 0
        # current message
        self._in_message = False
        self._msg_opcode = 0
        self._declared = 0
        self._msg = bytearray()
        self._decoder: Any = None
        self._ctrl = b""

    @property
    def error(self) -> Event | None:
        """The ``ERROR`` event the reader failed with, or None."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes held between feeds: a cut header, message and control payload."""
        return len(self._head) + len(self._msg) + len(self._ctrl)

    def feed(self, data: bytes) -> list[Event]:
        """Parse the next bytes from the peer; return the events they complete.

        Raises:
            RuntimeError: the reader already failed (its ``ERROR`` event was
                returned): the connection is being failed and its input is
                no longer parsed (RFC 6455 section 7.1.7).
        """
        if self._error is not None:
            raise RuntimeError(
                f"this FrameReader failed with close code {self._error[1]}; "
                "it takes no more input (fail the connection)"
            )
        if type(data) is not bytes:
            data = bytes(memoryview(data))
        if self._head:
            data = self._head + data
            self._head = b""
        events: list[Event] = []
        pos = 0
        end = len(data)
        while pos < end:
            if self._remaining >= 0:
                # inside a frame: take what there is of its payload
                take = min(self._remaining, end - pos)
                chunk = data[pos : pos + take]
                pos += take
                if self._mask is not None:
                    chunk = _unmask(chunk, self._mask, self._offset)
                    self._offset += take
                self._remaining -= take
                if self._opcode > 7:
                    self._ctrl += chunk
                else:
                    if self._decoder is not None:
                        try:
                            self._decoder.decode(chunk)
                        except UnicodeDecodeError:
                            return self._fail(events, CLOSE_INVALID_PAYLOAD, _R_UTF8)
                        if _utf8_pending_invalid(self._decoder.getstate()[0]):
                            return self._fail(events, CLOSE_INVALID_PAYLOAD, _R_UTF8)
                    self._msg += chunk
                if not self._remaining and not self._end_frame(events):
                    return events
                continue

            # between frames: parse a header
            avail = end - pos
            if avail < 2:
                break
            if (
                not data[pos]
                and self._in_message
                and not self._by_frame
                and avail >= 6
                and not 0 < self._max_frame < 126
            ):
                # a run of small masked non-final continuation frames (a
                # message in tiny fragments): read in one go, about twice as
                # fast as frame by frame; the run stops before any other
                # frame, and before one that crosses max_message_size
                limit = self._max_message
                budget = limit - self._declared if limit else _MAX_LENGTH
                run_end, count, payload = read_continuations(
                    data, pos, budget, most=_RUN_FRAMES
                )
                if count:
                    pos = run_end
                    if payload:
                        self._declared += len(payload)
                        if self._decoder is not None:
                            try:
                                self._decoder.decode(payload)
                            except UnicodeDecodeError:
                                return self._fail(
                                    events, CLOSE_INVALID_PAYLOAD, _R_UTF8
                                )
                            if _utf8_pending_invalid(self._decoder.getstate()[0]):
                                return self._fail(
                                    events, CLOSE_INVALID_PAYLOAD, _R_UTF8
                                )
                        self._msg += payload
                    continue
            b0 = data[pos]
            b1 = data[pos + 1]
            problem = _start_problem(b0, b1, self._in_message, self._require_mask)
            if problem:
                return self._fail(events, CLOSE_PROTOCOL_ERROR, problem)
            length = b1 & 0x7F
            masked = b1 & 0x80
            if length < 126:
                size = 2
            elif length == 126:
                size = 4
            else:
                size = 10
            if masked:
                size += 4
            if avail < size:
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                if length < 126:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, _R_MINIMAL)
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                if length > _MAX_LENGTH:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, _R_TOP_BIT)
                if length < 65536:
                    return self._fail(events, CLOSE_PROTOCOL_ERROR, _R_MINIMAL)
            mask = data[pos + size - 4 : pos + size] if masked else None
            pos += size
            opcode = b0 & 0xF
            fin = b0 & 0x80
            if opcode > 7:
                if pos + length <= end:
                    # the whole control frame is here (the common case)
                    payload = data[pos : pos + length]
                    pos += length
                    if mask is not None and length:
                        payload = _unmask(payload, mask, 0)
                    events.append((opcode, payload))
                    continue
            else:
                # a data frame: check the limits as soon as its length is known
                declared = length if self._by_frame else self._declared + length
                if 0 < self._max_message < declared:
                    return self._fail(
                        events,
                        CLOSE_MESSAGE_TOO_BIG,
                        f"message of {declared} bytes is over the limit of "
                        f"{self._max_message}",
                    )
                if 0 < self._max_frame < length:
                    return self._fail(
                        events,
                        CLOSE_MESSAGE_TOO_BIG,
                        f"frame of {length} bytes is over the limit of "
                        f"{self._max_frame}",
                    )
                if fin and opcode and not self._by_frame and pos + length <= end:
                    # a whole single-frame message is here (the common case)
                    payload = data[pos : pos + length]
                    pos += length
                    if mask is not None and length:
                        payload = _unmask(payload, mask, 0)
                    if opcode == OP_BINARY:
                        events.append((OP_BINARY, payload))
                    elif not self._validate:
                        events.append((OP_TEXT, payload.decode("utf-8", "replace")))
                    else:
                        try:
                            events.append((OP_TEXT, payload.decode("utf-8")))
                        except UnicodeDecodeError:
                            return self._fail(
                                events, CLOSE_INVALID_PAYLOAD, _utf8_problem(payload)
                            )
                    continue
                self._declared = declared
                if not self._in_message:
                    self._in_message = True
                    self._msg_opcode = opcode
                    if opcode == OP_TEXT and self._validate:
                        self._decoder = _new_utf8_decoder()
            # a frame whose payload comes in pieces, or a fragment
            self._opcode = opcode
            self._fin = bool(fin)
            self._mask = mask
            self._offset = 0
            self._remaining = length
            if not length and not self._end_frame(events):
                return events
        if pos < end:
            self._head = data[pos:]
        return events

    def _end_frame(self, events: list[Event]) -> bool:
        """The current frame's payload is complete: emit what it finishes.

        Returns False when the reader failed.
        """
        self._remaining = -1
        opcode = self._opcode
        if opcode > 7:
            events.append((opcode, self._ctrl))
            self._ctrl = b""
            return True
        fin = self._fin
        if fin and self._decoder is not None:
            if self._decoder.getstate()[0]:
                self._fail(events, CLOSE_INVALID_PAYLOAD, _R_UTF8_END)
                return False
        if self._by_frame:
            events.append((FRAGMENT, self._msg_opcode, bytes(self._msg), fin))
            self._msg = bytearray()
        elif fin:
            payload = bytes(self._msg)
            self._msg = bytearray()
            if self._msg_opcode == OP_BINARY:
                events.append((OP_BINARY, payload))
            else:
                # valid when validated; otherwise bad bytes become U+FFFD
                events.append((OP_TEXT, payload.decode("utf-8", "replace")))
        if fin:
            self._in_message = False
            self._declared = 0
            self._decoder = None
        return True

    def _fail(self, events: list[Event], code: int, reason: str) -> list[Event]:
        """Append the final ``ERROR`` event and drop the buffered payload."""
        self._error = (ERROR, code, reason)
        events.append(self._error)
        self._msg = bytearray()
        self._ctrl = b""
        self._head = b""
        self._decoder = None
        return events


def frame_header(opcode: int, length: int, fin: bool = True, rsv: int = 0) -> bytes:
    """The header of an unmasked frame of ``length`` payload bytes.

    For large payloads: write the header and the payload with
    ``transport.writeSequence`` instead of joining them.
    """
    if length < 0 or length > _MAX_LENGTH:
        raise ValueError(f"a frame payload is 0 to 2**63-1 bytes, not {length}")
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    if length <= 125:
        return _HEAD_7(b0, length)
    if length <= 0xFFFF:
        return _HEAD_16(b0, 126, length)
    return _HEAD_64(b0, 127, length)


_HEAD_7 = struct.Struct("!BB").pack
_HEAD_16 = struct.Struct("!BBH").pack
_HEAD_64 = struct.Struct("!BBQ").pack


def _as_bytes(payload: bytes | str) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if type(payload) is bytes:
        return payload
    return bytes(memoryview(payload))


def encode_frame(
    opcode: int,
    payload: bytes | str,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
) -> bytes:
    """Encode one frame: unmasked (a server's), or masked with the 4-byte
    ``mask`` (a client's, RFC 6455 section 5.3). A ``str`` payload is sent
    as UTF-8."""
    data = _as_bytes(payload)
    if mask is None:
        return frame_header(opcode, len(data), fin, rsv) + data
    mask = bytes(mask)
    if len(mask) != 4:
        raise ValueError(f"a masking key is 4 bytes, not {len(mask)}")
    head = bytearray(frame_header(opcode, len(data), fin, rsv))
    head[1] |= 0x80
    return bytes(head) + mask + (_unmask(data, mask, 0) if data else b"")


def encode_message(
    payload: bytes | str, is_binary: bool, fragment_size: int = 0
) -> bytes:
    """Encode a whole data message as unmasked frames of at most
    ``fragment_size`` payload bytes each (0: one frame).

    The same bytes as :func:`wsplugin._frames.encode_message` without
    deflate; ``fragment_size`` is what
    :func:`wsplugin._frames.payload_size_for_frame` makes of a frame size
    that counts the header.
    """
    if fragment_size < 0:
        raise ValueError(f"fragment_size must be >= 0, not {fragment_size}")
    data = _as_bytes(payload)
    opcode = OP_BINARY if is_binary else OP_TEXT
    total = len(data)
    if not fragment_size or total <= fragment_size:
        return frame_header(opcode, total) + data
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for start in range(0, total, fragment_size):
        stop = start + fragment_size
        parts.append(
            frame_header(
                opcode if not start else OP_CONTINUATION,
                min(stop, total) - start,
                stop >= total,
            )
        )
        parts.append(view[start:stop])
    return b"".join(parts)


def close_payload_problem(payload: bytes) -> tuple[int, str] | None:
    """Why a received close frame's payload is invalid, as ``(close code,
    reason)``, or None.

    Code and reason as RFC 6455 section 5.5.1 lays them out: a code the peer
    may not send fails with 1002, a reason that is not UTF-8 with 1007. (A
    1-byte payload never gets here: the reader fails it with 1002.)
    """
    if len(payload) < 2:
        return None
    code = int.from_bytes(payload[:2], "big")
    if not (code in _SENDABLE_CLOSE_CODES or 3000 <= code <= 4999):
        return CLOSE_PROTOCOL_ERROR, f"invalid close code {code}"
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        return CLOSE_INVALID_PAYLOAD, "close reason is not UTF-8"
    return None
