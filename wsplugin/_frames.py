"""Frame arithmetic for server-to-client frames (RFC 6455, section 5.2).

Pure functions, no I/O. Server frames are never masked, so a frame's header is
2 bytes for payloads up to 125 bytes, 4 up to 65535, and 10 beyond. The TMS
``FrameSize`` semantic counts that header: :func:`payload_size_for_frame`
turns a frame size into the payload bytes each frame may carry.
"""

from __future__ import annotations

import struct
import zlib

__all__ = [
    "MIN_FRAME_SIZE",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "SMALL_FRAME",
    "PayloadBuffer",
    "SmallFrameUnmasker",
    "decode_header",
    "deflate_message",
    "encode_client_frame",
    "encode_frame",
    "encode_message",
    "header_size",
    "mask_payload",
    "payload_size_for_frame",
    "read_continuations",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MIN_FRAME_SIZE = 3
"""Smallest frame size that still carries payload: 2 header bytes + 1 byte."""


def header_size(payload_length: int) -> int:
    """Bytes of an unmasked frame header for a payload of this length."""
    if payload_length < 0:
        raise ValueError("payload length cannot be negative")
    if payload_length <= 125:
        return 2
    if payload_length <= 0xFFFF:
        return 4
    return 10


def payload_size_for_frame(frame_size: int) -> int:
    """Most payload bytes an unmasked frame of at most ``frame_size`` bytes holds.

    The result ``p`` is the largest with ``p + header_size(p) <= frame_size``.

    Raises:
        ValueError: ``frame_size`` is below :data:`MIN_FRAME_SIZE`.
    """
    if frame_size < MIN_FRAME_SIZE:
        raise ValueError(f"frame size must be at least {MIN_FRAME_SIZE} bytes")
    if frame_size - 10 > 0xFFFF:
        return frame_size - 10
    if frame_size - 4 > 125:
        return min(frame_size - 4, 0xFFFF)
    return min(frame_size - 2, 125)


def encode_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """Encode one unmasked frame (as a server sends it)."""
    length = len(payload)
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    if length <= 125:
        head = struct.pack("!BB", b0, length)
    elif length <= 0xFFFF:
        head = struct.pack("!BBH", b0, 126, length)
    else:
        head = struct.pack("!BBQ", b0, 127, length)
    return head + payload


def mask_payload(mask: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking key (RFC 6455, section 5.3);
    masking and unmasking are the same operation."""
    if len(mask) != 4:
        raise ValueError("a masking key is 4 bytes")
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little"
    )


def encode_client_frame(
    opcode: int,
    payload: bytes,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes = b"\x37\xfa\x21\x3d",
) -> bytes:
    """Encode one masked frame, as a client sends it (tests and tools; the
    server only reads these)."""
    length = len(payload)
    b0 = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    if length <= 125:
        head = struct.pack("!BB", b0, 0x80 | length)
    elif length <= 0xFFFF:
        head = struct.pack("!BBH", b0, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, length)
    return head + mask + mask_payload(mask, payload)


def decode_header(data: bytes, pos: int = 0) -> tuple[int, bool, int, int] | None:
    """Read the frame header at ``data[pos:]``.

    Returns:
        ``(first byte, masked, payload length, header length)`` where the
        header length counts the masking key; None while the header is
        incomplete.
    """
    if len(data) - pos < 2:
        return None
    b0, b1 = data[pos], data[pos + 1]
    masked = bool(b1 & 0x80)
    length = b1 & 0x7F
    head = 2
    if length == 126:
        if len(data) - pos < 4:
            return None
        length = struct.unpack_from("!H", data, pos + 2)[0]
        head = 4
    elif length == 127:
        if len(data) - pos < 10:
            return None
        length = struct.unpack_from("!Q", data, pos + 2)[0]
        head = 10
    if masked:
        head += 4
        if len(data) - pos < head:
            return None
    return b0, masked, length, head


def deflate_message(payload: bytes, window_bits: int, mem_level: int) -> bytes:
    """Compress one message for permessage-deflate without context takeover
    (RFC 7692, section 7.2.1): a fresh raw-deflate stream, sync-flushed, with
    the trailing ``00 00 ff ff`` removed.

    The result depends only on the payload and the two parameters, so a
    broadcast compresses once for every receiver that negotiated the same
    ones. ``window_bits`` and ``mem_level`` are passed to zlib as Autobahn
    passes them, so the bytes are those Autobahn would send.
    """
    compressor = zlib.compressobj(
        zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -window_bits, mem_level
    )
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def encode_message(
    payload: bytes,
    is_binary: bool,
    fragment_size: int = 0,
    deflate: tuple[int, int] | None = None,
) -> bytes:
    """Encode a whole data message, split in frames of ``fragment_size`` payload.

    ``fragment_size`` of 0 (or a payload that fits) gives a single frame. The
    result is the same bytes for every receiver, so a broadcast builds it once.
    ``deflate`` is ``(window bits, mem level)`` to compress the message with
    :func:`deflate_message` first; RSV1 is then set on the first frame
    (RFC 7692, section 6).
    """
    opcode = OP_BINARY if is_binary else OP_TEXT
    rsv = 0
    if deflate is not None:
        payload = deflate_message(payload, *deflate)
        rsv = 0x4
    if not fragment_size or len(payload) <= fragment_size:
        return encode_frame(opcode, payload, rsv=rsv)
    view = memoryview(payload)
    parts = []
    last = len(payload)
    for start in range(0, last, fragment_size):
        end = start + fragment_size
        parts.append(
            encode_frame(
                opcode if start == 0 else OP_CONTINUATION,
                bytes(view[start:end]),
                fin=end >= last,
                rsv=rsv if start == 0 else 0,
            )
        )
    return b"".join(parts)


SMALL_FRAME = 512
"""Largest payload :class:`SmallFrameUnmasker` unmasks; past about 1 KiB
Autobahn's NVX (SIMD) masker is faster, below it its set-up cost dominates."""


class SmallFrameUnmasker:
    """Unmasks one client frame's payload (RFC 6455, section 5.3).

    The same interface as Autobahn's maskers (``process``, ``pointer``,
    ``reset``), for small frames: the XOR is done on Python integers,
    which costs about 1.3 us for 64 bytes where building an NVX masker
    costs about 6 us. Payload may arrive in pieces; ``pointer`` counts
    the bytes processed so far.
    """

    __slots__ = ("_mask", "_ptr")

    def __init__(self, mask: bytes) -> None:
        if len(mask) != 4:
            raise ValueError("a masking key is 4 bytes")
        self._mask = bytes(mask)
        self._ptr = 0

    def pointer(self) -> int:
        """Payload bytes processed so far."""
        return self._ptr

    def reset(self) -> None:
        """Start over at the first payload byte."""
        self._ptr = 0

    def process(self, data: bytes) -> bytes:
        """Unmask the next ``len(data)`` payload bytes."""
        n = len(data)
        if not n:
            return b""
        shift = self._ptr & 3
        mask = self._mask[shift:] + self._mask[:shift] if shift else self._mask
        self._ptr += n
        key = (mask * ((n >> 2) + 1))[:n]
        return (
            int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
        ).to_bytes(n, "little")


class PayloadBuffer:
    """The payload of one incoming message (or frame), bounded by its size.

    Autobahn keeps every piece of payload it unmasks as its own ``bytes``
    object in a list until the message ends. A message sent as 500,000
    two-byte frames then costs about 35 bytes of object header and 8 bytes of
    list slot per 2 payload bytes: some 25 MB for 1 MB of payload.

    Here pieces are kept in a list, joined once at the end (the cheapest way
    for a message that arrives in a few large reads), only while that costs
    little: up to :attr:`MAX_PIECES` pieces, or more when they average at
    least :attr:`MIN_AVERAGE` bytes (the per-piece overhead is then under 5%
    of the payload). Past that, the payload moves into one ``bytearray`` and
    later pieces are appended to it, so memory stays within the payload plus
    a constant, whatever the number of frames. Empty pieces cost nothing.
    """

    MAX_PIECES = 64
    MIN_AVERAGE = 1024

    __slots__ = ("_parts", "_rest", "_size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._rest: bytearray | None = None
        self._size = 0

    def __len__(self) -> int:
        rest = self._rest
        return len(rest) if rest is not None else self._size

    def append(self, data: bytes) -> None:
        """Add the next piece of payload."""
        rest = self._rest
        if rest is not None:
            rest += data
            return
        if not data:
            return
        parts = self._parts
        parts.append(data)
        self._size += len(data)
        count = len(parts)
        if count > self.MAX_PIECES and count * self.MIN_AVERAGE > self._size:
            self._rest = bytearray().join(parts)
            self._parts = []

    def take(self) -> bytes | bytearray:
        """The payload so far (the buffer is then empty).

        A ``bytearray`` once the payload has moved into one: text is decoded
        from it without an intermediate ``bytes`` copy.
        """
        rest = self._rest
        if rest is not None:
            self._rest = None
            return rest
        parts, self._parts = self._parts, []
        self._size = 0
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)


def read_continuations(
    data: bytes, pos: int, budget: int, keep: bool = True, most: int = 0
) -> tuple[int, int, bytes]:
    """Unmask a run of small continuation frames from a client (RFC 6455, 5.2).

    Reads, from ``data[pos:]``, consecutive complete frames that are
    non-final continuation frames (first byte 0: FIN, RSV and opcode all
    zero), masked, with at most 125 payload bytes; it stops at any other
    frame, at an incomplete one, and before a frame that would take the
    run's payload past ``budget`` bytes.

    Such frames need no decision beyond those checks, so a message sent as
    many tiny fragments is read at about 1 us a frame instead of the ~13 us
    that a frame costs through Autobahn's general parser. The masking keys
    are concatenated and applied with one XOR over the whole run.

    With ``keep`` false the frames are only skipped (the payload returned is
    empty): for a message the connection was already failed for. ``most``
    (0: no limit) caps the frames of one run: each holds two small ``bytes``
    objects (about 70 bytes) until the run ends, so a cap bounds that
    memory, whatever the size of the read.

    Returns:
        ``(position after the run, number of frames, unmasked payload)``.
    """
    end_of_data = len(data)
    parts: list[bytes] = []
    keys: list[bytes] = []
    total = 0
    count = 0
    while pos + 6 <= end_of_data and data[pos] == 0:
        if count == most and most:
            break
        b1 = data[pos + 1]
        # mask bit set and a 7-bit length of at most 125: 0x80 to 0xfd
        if b1 < 0x80 or b1 > 0xFD:
            break
        length = b1 - 0x80
        end = pos + 6 + length
        if end > end_of_data or total + length > budget:
            break
        if length and keep:
            parts.append(data[pos + 6 : end])
            mask = data[pos + 2 : pos + 6]
            keys.append(mask[:length] if length <= 4 else (mask * 32)[:length])
            total += length
        count += 1
        pos = end
    if not total:
        return pos, count, b""
    payload = int.from_bytes(b"".join(parts), "little") ^ int.from_bytes(
        b"".join(keys), "little"
    )
    return pos, count, payload.to_bytes(total, "little")
