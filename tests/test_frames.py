"""Frame arithmetic and encoding of server frames (wsplugin._frames)."""

from __future__ import annotations

import itertools
import os
import struct

from autobahn.websocket.xormasker import create_xor_masker
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._frames import (
    MIN_FRAME_SIZE,
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    SMALL_FRAME,
    PayloadBuffer,
    SmallFrameUnmasker,
    encode_frame,
    encode_message,
    header_size,
    payload_size_for_frame,
    read_continuations,
)
from wsplugin.testing import client_frame, parse_frames

settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, database=None
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


class HeaderSizeTests(SynchronousTestCase):
    """header_size gives 2, 4 or 10 bytes around the 125/65535 boundaries."""

    def test_small_payloads(self) -> None:
        """Payloads of 0 to 125 bytes have a 2-byte header."""
        self.assertEqual(header_size(0), 2)
        self.assertEqual(header_size(1), 2)
        self.assertEqual(header_size(125), 2)

    def test_16_bit_lengths(self) -> None:
        """Payloads of 126 to 65535 bytes have a 4-byte header."""
        self.assertEqual(header_size(126), 4)
        self.assertEqual(header_size(1000), 4)
        self.assertEqual(header_size(65535), 4)

    def test_64_bit_lengths(self) -> None:
        """Payloads of 65536 bytes and more have a 10-byte header."""
        self.assertEqual(header_size(65536), 10)
        self.assertEqual(header_size(2**32), 10)

    def test_negative_length(self) -> None:
        """A negative payload length is a ValueError."""
        self.assertRaises(ValueError, header_size, -1)

    def test_matches_encoded_header(self) -> None:
        """header_size equals the header encode_frame actually writes."""
        for length in (0, 125, 126, 65535, 65536):
            frame = encode_frame(OP_BINARY, b"x" * length)
            self.assertEqual(len(frame) - length, header_size(length), length)


class PayloadSizeForFrameTests(SynchronousTestCase):
    """payload_size_for_frame turns a frame size (header included) into payload."""

    def test_boundary_values(self) -> None:
        """Exact payload sizes at every header-size boundary."""
        expected = {
            3: 1,
            127: 125,
            128: 125,
            129: 125,
            130: 126,
            65539: 65535,
            65540: 65535,
            65545: 65535,
            65546: 65536,
        }
        actual = {f: payload_size_for_frame(f) for f in expected}
        self.assertEqual(actual, expected)

    def test_min_frame_size_constant(self) -> None:
        """MIN_FRAME_SIZE is 3: 2 header bytes and one payload byte."""
        self.assertEqual(MIN_FRAME_SIZE, 3)
        self.assertEqual(payload_size_for_frame(MIN_FRAME_SIZE), 1)

    def test_below_minimum(self) -> None:
        """Frame sizes below 3 (including 0 and negatives) are a ValueError."""
        for size in (2, 1, 0, -1):
            self.assertRaises(ValueError, payload_size_for_frame, size)

    def test_frame_of_computed_payload_fits(self) -> None:
        """A frame carrying the computed payload is at most the frame size."""
        for size in (3, 127, 128, 129, 130, 65539, 65540, 65546, 100000):
            payload = b"a" * payload_size_for_frame(size)
            self.assertLessEqual(len(encode_frame(OP_TEXT, payload)), size, size)

    @given(st.integers(min_value=MIN_FRAME_SIZE, max_value=200000))
    def test_largest_payload_that_fits(self, frame_size: int) -> None:
        """For any frame size, p fits with its header and p + 1 does not."""
        p = payload_size_for_frame(frame_size)
        self.assertGreaterEqual(p, 1)
        self.assertLessEqual(p + header_size(p), frame_size)
        self.assertGreater(p + 1 + header_size(p + 1), frame_size)


class EncodeFrameTests(SynchronousTestCase):
    """encode_frame writes unmasked frames that parse back to what went in."""

    def test_small_frame_bytes(self) -> None:
        """A short text frame is FIN|opcode, the length, then the payload."""
        self.assertEqual(encode_frame(OP_TEXT, b"hi"), b"\x81\x02hi")

    def test_not_fin(self) -> None:
        """fin=False clears the top bit of the first byte."""
        self.assertEqual(encode_frame(OP_BINARY, b"", fin=False), b"\x02\x00")

    def test_rsv_bits(self) -> None:
        """rsv lands in bits 4-6 of the first byte (4 is RSV1)."""
        self.assertEqual(encode_frame(OP_TEXT, b"", rsv=4), b"\xc1\x00")
        frames, rest = parse_frames(encode_frame(OP_TEXT, b"z", rsv=5))
        self.assertEqual(rest, b"")
        self.assertEqual(frames[0].rsv, 5)

    def test_16_bit_length_encoding(self) -> None:
        """A 126-byte payload uses the 126 marker and a 2-byte length."""
        frame = encode_frame(OP_BINARY, b"b" * 126)
        self.assertEqual(frame[:4], b"\x82\x7e" + struct.pack("!H", 126))
        self.assertEqual(len(frame), 130)

    def test_64_bit_length_encoding(self) -> None:
        """A 65536-byte payload uses the 127 marker and an 8-byte length."""
        frame = encode_frame(OP_BINARY, b"b" * 65536)
        self.assertEqual(frame[:10], b"\x82\x7f" + struct.pack("!Q", 65536))
        self.assertEqual(len(frame), 65546)

    def test_round_trip(self) -> None:
        """parse_frames reads back opcode, fin, payload and wire size."""
        for length in (0, 1, 125, 126, 65535, 65536):
            payload = bytes(i % 251 for i in range(length))
            data = encode_frame(OP_PING if length <= 125 else OP_BINARY, payload)
            frames, rest = parse_frames(data)
            self.assertEqual(rest, b"")
            self.assertEqual(len(frames), 1)
            frame = frames[0]
            self.assertEqual(frame.opcode, OP_PING if length <= 125 else OP_BINARY)
            self.assertTrue(frame.fin)
            self.assertEqual(frame.rsv, 0)
            self.assertEqual(frame.payload, payload)
            self.assertEqual(frame.size, len(data))


class EncodeMessageTests(SynchronousTestCase):
    """encode_message splits a message into fragments of a payload size."""

    def test_unfragmented_text(self) -> None:
        """Without a fragment size a text message is one FIN text frame."""
        self.assertEqual(encode_message(b"hello", False), b"\x81\x05hello")

    def test_unfragmented_binary(self) -> None:
        """is_binary selects opcode 2."""
        self.assertEqual(encode_message(b"\x00", True), b"\x82\x01\x00")

    def test_payload_that_fits_is_one_frame(self) -> None:
        """A payload no longer than the fragment size is a single frame."""
        self.assertEqual(encode_message(b"abcd", False, 4), b"\x81\x04abcd")

    def test_empty_payload(self) -> None:
        """An empty message is one empty FIN frame, even with a fragment size."""
        self.assertEqual(encode_message(b"", True, 3), b"\x82\x00")

    def test_fragmented_bytes(self) -> None:
        """Five bytes in fragments of 2: text, continuation, final continuation."""
        self.assertEqual(
            encode_message(b"abcde", False, 2),
            b"\x01\x02ab" + b"\x00\x02cd" + b"\x80\x01e",
        )

    def test_exact_multiple(self) -> None:
        """A payload that is an exact multiple gives full frames, the last FIN."""
        frames, rest = parse_frames(encode_message(b"abcdef", True, 3))
        self.assertEqual(rest, b"")
        self.assertEqual(
            [(f.opcode, f.fin, f.payload) for f in frames],
            [(OP_BINARY, False, b"abc"), (OP_CONTINUATION, True, b"def")],
        )

    def test_fragments_from_frame_size(self) -> None:
        """Fragments sized by payload_size_for_frame never exceed the frame size."""
        frame_size = 130
        payload = b"q" * 1000
        data = encode_message(payload, True, payload_size_for_frame(frame_size))
        frames, rest = parse_frames(data)
        self.assertEqual(rest, b"")
        self.assertEqual([f.size for f in frames], [130] * 7 + [2 + 1000 - 7 * 126])
        self.assertEqual(b"".join(f.payload for f in frames), payload)

    @given(
        payload=st.binary(max_size=5000),
        fragment_size=st.integers(min_value=1, max_value=6000),
        is_binary=st.booleans(),
    )
    def test_fragmentation_round_trip(
        self, payload: bytes, fragment_size: int, is_binary: bool
    ) -> None:
        """Any payload and fragment size parse back to the original message:
        first frame text/binary, then continuations, FIN only on the last,
        each frame at most the fragment size plus its header."""
        data = encode_message(payload, is_binary, fragment_size)
        frames, rest = parse_frames(data)
        self.assertEqual(rest, b"")
        self.assertEqual(b"".join(f.payload for f in frames), payload)
        self.assertEqual(frames[0].opcode, OP_BINARY if is_binary else OP_TEXT)
        self.assertEqual(
            [f.opcode for f in frames[1:]], [OP_CONTINUATION] * (len(frames) - 1)
        )
        self.assertEqual([f.fin for f in frames], [False] * (len(frames) - 1) + [True])
        self.assertEqual([f.rsv for f in frames], [0] * len(frames))
        expected_count = max(1, -(-len(payload) // fragment_size))
        self.assertEqual(len(frames), expected_count)
        for frame in frames:
            self.assertLessEqual(len(frame.payload), fragment_size)
            self.assertLessEqual(
                frame.size, fragment_size + header_size(len(frame.payload))
            )


class SmallFrameUnmaskerTests(SynchronousTestCase):
    """The pure-Python unmasker used for payloads up to SMALL_FRAME bytes."""

    @settings(max_examples=300)
    @given(
        mask=st.binary(min_size=4, max_size=4),
        payload=st.binary(max_size=SMALL_FRAME),
        cuts=st.lists(st.integers(min_value=0, max_value=SMALL_FRAME), max_size=6),
    )
    def test_matches_autobahn_in_any_pieces(
        self, mask: bytes, payload: bytes, cuts: list[int]
    ) -> None:
        """Fed in arbitrary pieces, it gives Autobahn's masker's bytes and
        pointer."""
        ours = SmallFrameUnmasker(mask)
        theirs = create_xor_masker(mask, len(payload))
        bounds = sorted({0, len(payload), *(c for c in cuts if c < len(payload))})
        got, want = [], []
        for start, end in itertools.pairwise(bounds):
            got.append(ours.process(payload[start:end]))
            want.append(theirs.process(payload[start:end]))
            self.assertEqual(ours.pointer(), theirs.pointer())
        self.assertEqual(b"".join(got), b"".join(want))

    def test_masking_is_its_own_inverse(self) -> None:
        """Unmasking a masked payload gives the payload back; reset restarts."""
        mask = b"\x01\x80\xfe\x7f"
        payload = bytes(range(256))
        masker = SmallFrameUnmasker(mask)
        masked = masker.process(payload)
        self.assertNotEqual(masked, payload)
        masker.reset()
        self.assertEqual(masker.pointer(), 0)
        self.assertEqual(masker.process(masked), payload)

    def test_bad_key(self) -> None:
        """A key that is not 4 bytes is refused."""
        with self.assertRaises(ValueError):
            SmallFrameUnmasker(b"abc")


class PayloadBufferTests(SynchronousTestCase):
    """PayloadBuffer joins pieces into the payload, in bounded memory."""

    def test_empty(self) -> None:
        """Nothing appended (or only empty pieces) gives b""."""
        buf = PayloadBuffer()
        self.assertEqual(buf.take(), b"")
        for _ in range(1000):
            buf.append(b"")
        self.assertEqual(len(buf), 0)
        self.assertEqual(buf.take(), b"")

    def test_one_piece_is_not_copied(self) -> None:
        """A payload in one piece comes back as the same object."""
        piece = os.urandom(100)
        buf = PayloadBuffer()
        buf.append(piece)
        self.assertIs(buf.take(), piece)

    def test_take_empties(self) -> None:
        """take() leaves the buffer empty and reusable (frame by frame)."""
        buf = PayloadBuffer()
        buf.append(b"ab")
        buf.append(b"cd")
        self.assertEqual(buf.take(), b"abcd")
        self.assertEqual(len(buf), 0)
        buf.append(b"ef")
        self.assertEqual(buf.take(), b"ef")

    def test_many_small_pieces_move_into_one_bytearray(self) -> None:
        """Past MAX_PIECES small pieces the payload is one bytearray, and
        later pieces are appended to it."""
        buf = PayloadBuffer()
        for i in range(PayloadBuffer.MAX_PIECES + 10):
            buf.append(bytes([i % 256, 1]))
        self.assertEqual(len(buf), 2 * (PayloadBuffer.MAX_PIECES + 10))
        out = buf.take()
        self.assertIsInstance(out, bytearray)
        self.assertEqual(
            bytes(out),
            b"".join(bytes([i % 256, 1]) for i in range(PayloadBuffer.MAX_PIECES + 10)),
        )

    def test_large_pieces_stay_a_list(self) -> None:
        """Pieces averaging MIN_AVERAGE bytes or more are joined once at the
        end (a big message over many reads is copied once)."""
        buf = PayloadBuffer()
        piece = b"x" * PayloadBuffer.MIN_AVERAGE
        for _ in range(PayloadBuffer.MAX_PIECES * 3):
            buf.append(piece)
        out = buf.take()
        self.assertIsInstance(out, bytes)
        self.assertEqual(
            len(out), PayloadBuffer.MIN_AVERAGE * PayloadBuffer.MAX_PIECES * 3
        )

    @given(st.lists(st.binary(max_size=40), max_size=300))
    def test_any_pieces(self, pieces: list[bytes]) -> None:
        """Whatever the pieces, take() is their concatenation."""
        buf = PayloadBuffer()
        for piece in pieces:
            buf.append(piece)
        self.assertEqual(len(buf), sum(map(len, pieces)))
        self.assertEqual(bytes(buf.take()), b"".join(pieces))

    def test_memory_bounded_by_payload(self) -> None:
        """100,000 two-byte pieces (200 KB) hold well under 400 KB, where a
        list of the pieces holds about 5 MB."""
        import tracemalloc

        pieces = [bytes([i % 256, 7]) for i in range(100_000)]
        tracemalloc.start()
        try:
            buf = PayloadBuffer()
            before = tracemalloc.get_traced_memory()[0]
            for piece in pieces:
                buf.append(piece)
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertLess(held, 400_000)
        self.assertEqual(len(buf), 200_000)


def _continuations(payloads: list[bytes], fin_last: bool = False) -> bytes:
    return b"".join(
        client_frame(
            OP_CONTINUATION,
            p,
            fin=fin_last and i == len(payloads) - 1,
            mask=bytes([i % 256, 0x5A, (i * 3) % 256, 0xC3]),
        )
        for i, p in enumerate(payloads)
    )


class ReadContinuationsTests(SynchronousTestCase):
    """read_continuations unmasks runs of small non-final continuation frames
    and stops at anything else."""

    def test_run_unmasked(self) -> None:
        """A run of frames of 0 to 125 bytes is read whole and unmasked."""
        payloads = [bytes((i + j) % 256 for j in range(i % 126)) for i in range(300)]
        data = _continuations(payloads)
        pos, count, payload = read_continuations(data, 0, 1 << 40)
        self.assertEqual((pos, count), (len(data), 300))
        self.assertEqual(payload, b"".join(payloads))

    def test_empty_frames(self) -> None:
        """Empty continuation frames are counted and add no payload."""
        data = _continuations([b""] * 1000)
        self.assertEqual(read_continuations(data, 0, 0), (len(data), 1000, b""))

    def test_stops_at_other_frames(self) -> None:
        """A final frame, a data frame, a control frame, a frame over 125
        bytes, an unmasked or RSV frame, or an incomplete one ends the run
        before it."""
        run = _continuations([b"ab", b"cd"])
        stoppers = [
            client_frame(OP_CONTINUATION, b"ef", fin=True),
            client_frame(OP_TEXT, b"ef", fin=False),
            client_frame(OP_PING, b"ef"),
            client_frame(OP_CONTINUATION, b"e" * 126, fin=False),
            client_frame(OP_CONTINUATION, b"ef", fin=False, rsv=4),
            encode_frame(OP_CONTINUATION, b"ef", fin=False),  # unmasked
            client_frame(OP_CONTINUATION, b"ef", fin=False)[:-1],  # incomplete
        ]
        for stopper in stoppers:
            pos, count, payload = read_continuations(run + stopper, 0, 1 << 40)
            self.assertEqual((pos, count, payload), (len(run), 2, b"abcd"))

    def test_budget(self) -> None:
        """The run stops before the frame that would pass the budget."""
        data = _continuations([b"abc", b"def", b"ghi"])
        pos, count, payload = read_continuations(data, 0, 7)
        self.assertEqual((count, payload), (2, b"abcdef"))
        self.assertEqual(pos, 2 * 9)

    def test_skip_without_keeping(self) -> None:
        """With keep=False the run is skipped: same position and count, no
        payload."""
        data = _continuations([b"abc", b"", b"x" * 125])
        self.assertEqual(
            read_continuations(data, 0, 1 << 40, keep=False), (len(data), 3, b"")
        )

    def test_most_frames(self) -> None:
        """``most`` caps the frames of one run; reading on from its end
        gives the rest (the Python codec reads 512 at a time, so a run
        holds at most 512 frames' pieces in memory)."""
        payloads = [bytes([i % 256, 7]) for i in range(1000)]
        data = _continuations(payloads)
        pos, count, first = read_continuations(data, 0, 1 << 40, most=512)
        self.assertEqual((pos, count), (512 * 8, 512))
        rest = read_continuations(data, pos, 1 << 40, most=512)
        self.assertEqual(rest[:2], (len(data), 488))
        self.assertEqual(first + rest[2], b"".join(payloads))

    def test_start_offset(self) -> None:
        """Reading starts at ``pos``."""
        data = b"junk" + _continuations([b"xy"])
        self.assertEqual(read_continuations(data, 4, 100), (len(data), 1, b"xy"))

    @given(
        st.lists(st.binary(max_size=125), max_size=50),
        st.integers(min_value=0, max_value=2000),
    )
    def test_matches_autobahn_unmasking(
        self, payloads: list[bytes], budget: int
    ) -> None:
        """Payload and stop position agree with unmasking each frame with
        Autobahn's masker, for any payloads and budget."""
        data = _continuations(payloads)
        pos, count, payload = read_continuations(data, 0, budget)
        expected = []
        total = 0
        offset = 0
        for p in payloads:
            if total + len(p) > budget:
                break
            frame = data[offset : offset + 6 + len(p)]
            masker = create_xor_masker(frame[2:6], len(p))
            expected.append(masker.process(frame[6:]) if p else b"")
            total += len(p)
            offset += 6 + len(p)
        self.assertEqual(count, len(expected))
        self.assertEqual(pos, offset)
        self.assertEqual(payload, b"".join(expected))


class ClientFrameTests(SynchronousTestCase):
    """Masked client frames and frame headers (what wsplugin.testing uses)."""

    def test_mask_is_its_own_inverse(self) -> None:
        """Masking twice gives the payload back; a bad key is refused."""
        from wsplugin._frames import mask_payload

        mask = b"\xaa\x00\xff\x11"
        for payload in (b"", b"a", b"abcdefghij" * 30):
            self.assertEqual(mask_payload(mask, mask_payload(mask, payload)), payload)
        with self.assertRaises(ValueError):
            mask_payload(b"abc", b"x")

    def test_decode_header_lengths(self) -> None:
        """7-bit, 16-bit and 64-bit lengths, masked or not; None while the
        header is incomplete."""
        from wsplugin._frames import decode_header, encode_client_frame

        for size, head in ((5, 2), (300, 4), (70000, 10)):
            frame = encode_frame(OP_BINARY, b"x" * size)
            self.assertEqual(decode_header(frame), (0x82, False, size, head))
            masked = encode_client_frame(OP_TEXT, b"x" * size, fin=False)
            self.assertEqual(decode_header(masked), (0x01, True, size, head + 4))
            for cut in range(head + 4):
                self.assertIsNone(decode_header(masked[:cut]))
        self.assertEqual(decode_header(b"\x00" + encode_frame(1, b""), 1)[2], 0)
