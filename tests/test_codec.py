"""The frame codec (wsplugin._codec): both implementations, the choice
between them, and their agreement with each other and with the server.

- ``CodecTests`` states every behaviour and every error case once; it runs
  against the pure-Python codec (``PythonCodecTests``, in
  tests/test_pycodec.py) and the compiled one (``CCodecTests``).
- ``FuzzTests`` feeds both the same byte streams, valid frames and raw
  random bytes, cut at arbitrary points, and requires the same events,
  errors and close codes after every feed.
- ``ServerAgreementTests`` feeds the same streams to the server as it is
  today (Autobahn's parser under wsplugin's protocol) and requires the
  events and close codes the codec gives.

The compiled codec's tests skip when it is not built, except under
``CI=true``, where they fail: CI builds it.
"""

from __future__ import annotations

import gc
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any
from unittest import SkipTest

from autobahn.websocket.utf8validator import Utf8Validator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import _codec, _pycodec
from wsplugin import _frames as frames
from wsplugin.protocol import WebSocketServerProtocol, close_frame_problem

try:
    from wsplugin import _speedups
except ImportError:  # not built: no C compiler at install time
    _speedups = None  # type: ignore[assignment]

settings.register_profile("dev", max_examples=200, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, database=None
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10
FRAGMENT, ERROR = _pycodec.FRAGMENT, _pycodec.ERROR
MASK = b"\x37\xfa\x21\x3d"
MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def need_c(case: SynchronousTestCase) -> Any:
    """The compiled codec module; skip (or fail under CI) when not built."""
    if _speedups is None:
        if os.environ.get("CI") == "true":
            case.fail("wsplugin._speedups is not built; CI must build it")
        raise SkipTest("wsplugin._speedups is not built (no C compiler?)")
    return _speedups


def frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    width: int | None = None,
) -> bytes:
    """One frame as a client sends it: masked with ``mask`` (None: unmasked),
    its length in ``width`` extra bytes (0, 2 or 8; None: the shortest)."""
    n = len(payload)
    if width is None:
        width = 0 if n <= 125 else 2 if n <= 0xFFFF else 8
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    m = 0x80 if mask is not None else 0
    if width == 0:
        head = bytes((b0, m | n))
    elif width == 2:
        head = bytes((b0, m | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, m | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    key = (mask * (n // 4 + 1))[:n]
    return head + mask + bytes(a ^ b for a, b in zip(payload, key, strict=True))


def feed_all(reader: Any, chunks: list[bytes]) -> list[tuple[Any, ...]]:
    """Feed chunks until the reader fails; all events, in order."""
    events: list[tuple[Any, ...]] = []
    for chunk in chunks:
        events += reader.feed(chunk)
        if reader.error is not None:
            break
    return events


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, repeats allowed)."""
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


class CodecTests:
    """The codec's behaviour, stated once for both implementations."""

    impl: Any
    trace_memory = False

    def reader(self, max_frame: int = 0, max_message: int = 0, **kw: Any) -> Any:
        return self.impl.FrameReader(max_frame, max_message, **kw)

    def events(self, data: bytes, **kw: Any) -> list[tuple[Any, ...]]:
        """Events of ``data`` fed at once, checked equal to feeding it one
        byte at a time (cuts never change the outcome)."""
        whole = self.reader(**kw).feed(data)
        bytewise = feed_all(
            self.reader(**kw), [data[i : i + 1] for i in range(len(data))]
        )
        self.assertEqual(whole, bytewise)  # type: ignore[attr-defined]
        return whole

    def error(self, data: bytes, **kw: Any) -> tuple[int, str]:
        events = self.events(data, **kw)
        self.assertEqual(events[-1][0], ERROR, events)  # type: ignore[attr-defined]
        return events[-1][1], events[-1][2]

    # -- messages --------------------------------------------------------

    def test_run_of_tiny_fragments(self) -> None:
        """A message in 2,000 tiny fragments (the Python codec reads such a
        run in one go): assembled, and the same outcome frame by frame;
        the frame crossing max_message_size fails with the same reason,
        and invalid UTF-8 inside the run with 1007."""
        parts = [frame(TEXT, b"a", fin=False)]
        parts += [frame(0, b"bc", fin=False) for _ in range(2000)]
        parts.append(frame(0, b"d"))
        data = b"".join(parts)
        one = feed_all(self.reader(), [data])
        self.assertEqual(one, [(TEXT, "a" + "bc" * 2000 + "d")])  # type: ignore[attr-defined]
        self.assertEqual(feed_all(self.reader(), parts), one)  # type: ignore[attr-defined]
        for limit in (1, 2, 3, 1001, 4000):
            whole = feed_all(self.reader(max_message=limit), [data])
            each = feed_all(self.reader(max_message=limit), parts)
            self.assertEqual(whole, each)  # type: ignore[attr-defined]
            self.assertEqual(whole[-1][:2], (ERROR, 1009))  # type: ignore[attr-defined]
        bad = parts[:500] + [frame(0, b"\xff", fin=False)] + parts[500:]
        self.assertEqual(  # type: ignore[attr-defined]
            feed_all(self.reader(), [b"".join(bad)])[-1][:2], (ERROR, 1007)
        )

    def test_messages(self) -> None:
        """Whole text and binary messages, each in one masked frame, come
        out unmasked and in order; text is str, binary bytes."""
        data = frame(TEXT, "héllo €".encode()) + frame(BINARY, b"\x00\xff" * 100)
        self.assertEqual(  # type: ignore[attr-defined]
            self.events(data),
            [(TEXT, "héllo €"), (BINARY, b"\x00\xff" * 100)],
        )

    def test_empty_messages(self) -> None:
        """Empty text and binary messages are messages too."""
        self.assertEqual(  # type: ignore[attr-defined]
            self.events(frame(TEXT) + frame(BINARY)), [(TEXT, ""), (BINARY, b"")]
        )

    def test_lengths(self) -> None:
        """Payloads of 125, 126, 65535 and 65536 bytes cross the 7-, 16- and
        64-bit length encodings."""
        for n in (125, 126, 65535, 65536):
            payload = os.urandom(n)
            self.assertEqual(  # type: ignore[attr-defined]
                self.reader().feed(frame(BINARY, payload)), [(BINARY, payload)]
            )

    def test_fragmented_message_with_controls(self) -> None:
        """Fragments are assembled into one message; control frames between
        them come out in wire order, before the message they interrupt."""
        data = (
            frame(TEXT, b"he", fin=False)
            + frame(PING, b"1")
            + frame(0, b"l", fin=False)
            + frame(PONG, b"2")
            + frame(0, b"lo")
            + frame(CLOSE, b"\x03\xe8bye")
        )
        self.assertEqual(  # type: ignore[attr-defined]
            self.events(data),
            [(PING, b"1"), (PONG, b"2"), (TEXT, "hello"), (CLOSE, b"\x03\xe8bye")],
        )

    def test_utf8_split_across_frames_and_feeds(self) -> None:
        """A code point cut between fragments, and between reads, is valid."""
        euro = "€".encode()
        data = frame(TEXT, euro[:1], fin=False) + frame(0, euro[1:2], fin=False)
        data += frame(0, euro[2:] + "😀".encode())
        self.assertEqual(self.events(data), [(TEXT, "€😀")])  # type: ignore[attr-defined]

    def test_unmasked_allowed_when_not_required(self) -> None:
        """require_mask=False takes unmasked frames (and masked ones)."""
        data = frame(TEXT, b"plain", mask=None) + frame(TEXT, b"masked")
        self.assertEqual(  # type: ignore[attr-defined]
            self.events(data, require_mask=False),
            [(TEXT, "plain"), (TEXT, "masked")],
        )

    def test_no_validation_replaces(self) -> None:
        """With utf8_validation off, invalid text decodes to U+FFFD."""
        data = (
            frame(TEXT, b"a\xffb") + frame(TEXT, b"c\xe2", fin=False) + frame(0, b"d")
        )
        self.assertEqual(  # type: ignore[attr-defined]
            self.events(data, utf8_validation=False),
            [(TEXT, "a\ufffdb"), (TEXT, "c\ufffdd")],
        )

    def test_frame_by_frame(self) -> None:
        """In frame-by-frame mode each data frame is a FRAGMENT event with
        the message's opcode, empty ones included; single-frame messages
        too; control frames keep their place."""
        data = (
            frame(BINARY, b"ab", fin=False)
            + frame(0, b"", fin=False)
            + frame(PING)
            + frame(0, b"c")
            + frame(TEXT, b"whole")
        )
        self.assertEqual(  # type: ignore[attr-defined]
            self.events(data, frame_by_frame=True),
            [
                (FRAGMENT, BINARY, b"ab", False),
                (FRAGMENT, BINARY, b"", False),
                (PING, b""),
                (FRAGMENT, BINARY, b"c", True),
                (FRAGMENT, TEXT, b"whole", True),
            ],
        )

    def test_frame_by_frame_validates_text(self) -> None:
        """Frame by frame, text is still validated across fragments, and
        the final fragment is held back until its text is known complete."""
        data = (
            frame(TEXT, b"\xe2\x82", fin=False)
            + frame(0, b"\xac")
            + frame(TEXT, b"\xe2")
        )
        events = self.events(data, frame_by_frame=True)
        self.assertEqual(  # type: ignore[attr-defined]
            events[:2],
            [(FRAGMENT, TEXT, b"\xe2\x82", False), (FRAGMENT, TEXT, b"\xac", True)],
        )
        self.assertEqual(events[2][:2], (ERROR, 1007))  # type: ignore[attr-defined]
        self.assertEqual(len(events), 3)  # type: ignore[attr-defined]

    def test_control_payloads(self) -> None:
        """Ping, pong and close payloads come out unmasked, up to 125 bytes,
        also when cut across feeds."""
        data = frame(PING, b"p" * 125) + frame(PONG) + frame(CLOSE)
        self.assertEqual(  # type: ignore[attr-defined]
            self.events(data), [(PING, b"p" * 125), (PONG, b""), (CLOSE, b"")]
        )

    def test_cut_header_is_buffered(self) -> None:
        """A header cut between reads is kept (``buffered``) and completed
        by the next feed; so is a message's payload so far."""
        reader = self.reader()
        data = frame(BINARY, b"x" * 300)
        self.assertEqual(reader.feed(data[:3]), [])  # type: ignore[attr-defined]
        self.assertEqual(reader.buffered, 3)  # type: ignore[attr-defined]
        self.assertEqual(reader.feed(data[3:108]), [])  # type: ignore[attr-defined]
        self.assertEqual(reader.buffered, 100)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            reader.feed(data[108:]), [(BINARY, b"x" * 300)]
        )
        self.assertEqual(reader.buffered, 0)  # type: ignore[attr-defined]

    def test_feed_accepts_bytes_like(self) -> None:
        """feed() takes bytes, bytearray and memoryview alike."""
        data = frame(TEXT, b"hi")
        for wrap in (bytes, bytearray, memoryview):
            self.assertEqual(  # type: ignore[attr-defined]
                self.reader().feed(wrap(data)), [(TEXT, "hi")]
            )

    def test_memory_per_message_is_payload(self) -> None:
        """500,000 two-byte continuation frames (then 500,000 empty ones)
        make one message: no object is kept per fragment, and memory grows
        with the payload (1 MB), not with the frame count.

        Kept objects are counted with sys.getallocatedblocks (a bytes object
        per fragment would be a million blocks); the peak is measured with
        tracemalloc for the compiled codec, where tracing is cheap (the
        Python codec's 6 allocations per frame make it take a minute)."""
        reader = self.reader(0, 0)
        piece = frame(0, b"ab", fin=False, mask=b"\0\0\0\0")
        empty = frame(0, b"", fin=False, mask=b"\0\0\0\0")
        reads = [piece * 8192] * 61 + [empty * 8192] * 61  # 499,712 + 499,712 frames
        payload = 2 * (1 + 61 * 8192)
        self.assertEqual(reader.feed(frame(BINARY, b"ab", fin=False)), [])  # type: ignore[attr-defined]
        blocks = sys.getallocatedblocks()
        if self.trace_memory:
            tracemalloc.start()
        try:
            for data in reads:
                self.assertEqual(reader.feed(data), [])  # type: ignore[attr-defined]
            kept = sys.getallocatedblocks() - blocks
            self.assertEqual(reader.buffered, payload)  # type: ignore[attr-defined]
            [(kind, message)] = reader.feed(frame(0, b"!"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual((kind, len(message)), (BINARY, payload + 1))  # type: ignore[attr-defined]
        self.assertLess(kept, 100)  # type: ignore[attr-defined]
        # the buffer grows by half when full; the message is handed over
        if self.trace_memory:
            self.assertGreater(peak, payload)  # type: ignore[attr-defined]
            self.assertLess(peak, 2 * payload + 256 * 1024)  # type: ignore[attr-defined]

    # -- errors: 1002 ----------------------------------------------------

    def test_reserved_bits(self) -> None:
        """RSV1, RSV2 or RSV3 without an extension: 1002 (this reader never
        has one: deflate connections use Autobahn's parser)."""
        for rsv in range(1, 8):
            code, reason = self.error(frame(TEXT, b"x", rsv=rsv))
            self.assertEqual(code, 1002)  # type: ignore[attr-defined]
            self.assertIn(f"RSV={rsv}", reason)  # type: ignore[attr-defined]

    def test_unmasked(self) -> None:
        """An unmasked client frame: 1002, already at its second byte."""
        reader = self.reader()
        [event] = reader.feed(frame(TEXT, b"x", mask=None)[:2])
        self.assertEqual(  # type: ignore[attr-defined]
            event, (ERROR, 1002, "unmasked client frame")
        )
        self.assertEqual(reader.error, event)  # type: ignore[attr-defined]

    def test_reserved_opcodes(self) -> None:
        """Data opcodes 3-7 and control opcodes 11-15: 1002."""
        for opcode in (*range(3, 8), *range(11, 16)):
            code, reason = self.error(frame(opcode, b"x"))
            self.assertEqual(code, 1002)  # type: ignore[attr-defined]
            self.assertIn(f"opcode {opcode}", reason)  # type: ignore[attr-defined]

    def test_control_frame_rules(self) -> None:
        """A fragmented control frame, one over 125 bytes, and a close frame
        with a 1-byte payload: 1002."""
        for data in (
            frame(PING, b"x", fin=False),
            frame(PONG, b"x" * 126),
            frame(CLOSE, b"\x03"),
        ):
            self.assertEqual(self.error(data)[0], 1002)  # type: ignore[attr-defined]

    def test_fragmentation_rules(self) -> None:
        """A continuation frame with no message started, and a new data
        frame inside a fragmented message: 1002; the messages before are
        still delivered."""
        self.assertEqual(self.error(frame(0, b"x"))[0], 1002)  # type: ignore[attr-defined]
        events = self.events(
            frame(TEXT, b"ok") + frame(TEXT, b"a", fin=False) + frame(BINARY, b"b")
        )
        self.assertEqual(events[0], (TEXT, "ok"))  # type: ignore[attr-defined]
        self.assertEqual(events[1][:2], (ERROR, 1002))  # type: ignore[attr-defined]

    def test_length_encodings(self) -> None:
        """A 64-bit length with its top bit set: 1002. Lengths not in their
        shortest encoding: 1002, as RFC 6455 section 5.2 says they MUST be
        and as the server (Autobahn) has always answered."""
        top = bytes((0x82, 0xFF)) + b"\x80" + b"\0" * 7 + MASK
        self.assertEqual(self.error(top), (1002, _pycodec._R_TOP_BIT))  # type: ignore[attr-defined]
        for payload, width in ((b"x" * 5, 2), (b"x" * 5, 8), (b"x" * 200, 8)):
            self.assertEqual(  # type: ignore[attr-defined]
                self.error(frame(BINARY, payload, width=width)),
                (1002, _pycodec._R_MINIMAL),
            )

    # -- errors: 1007 and 1009 -------------------------------------------

    def test_invalid_utf8(self) -> None:
        """Invalid UTF-8 (overlong, surrogate, beyond U+10FFFF, stray
        continuation) fails with 1007."""
        for bad in (
            b"\xc0\xaf",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"a\x80",
            b"\xff",
        ):
            self.assertEqual(  # type: ignore[attr-defined]
                self.error(frame(TEXT, bad)), (1007, _pycodec._R_UTF8)
            )

    def test_invalid_utf8_fails_fast(self) -> None:
        """Invalid text fails at its first impossible byte, before the rest
        of its frame arrives: even a surrogate's first two bytes (ED A0)."""
        for start in (b"ok\xc0", b"\xed\xa0", b"\xf0\x80"):
            data = frame(TEXT, start + b"x" * 1000)
            header = 8
            reader = self.reader()
            events = reader.feed(data[: header + len(start)])
            self.assertEqual(  # type: ignore[attr-defined]
                events, [(ERROR, 1007, _pycodec._R_UTF8)], start
            )

    def test_text_ends_inside_code_point(self) -> None:
        """A message whose text stops inside a code point fails with 1007
        at its end, in one frame or across fragments."""
        for data in (
            frame(TEXT, b"abc\xe2\x82"),
            frame(TEXT, b"\xf0\x9f", fin=False) + frame(0, b"\x98"),
        ):
            self.assertEqual(  # type: ignore[attr-defined]
                self.error(data), (1007, _pycodec._R_UTF8_END)
            )

    def test_frame_limit(self) -> None:
        """A data frame over max_frame_size fails with 1009 as soon as its
        header is complete; one at the limit passes."""
        ok = frame(BINARY, b"x" * 100)
        self.assertEqual(self.events(ok, max_frame=100), [(BINARY, b"x" * 100)])  # type: ignore[attr-defined]
        reader = self.reader(100, 0)
        [event] = reader.feed(frame(BINARY, b"x" * 101)[:8])
        self.assertEqual(event[:2], (ERROR, 1009))  # type: ignore[attr-defined]
        self.assertIn("101", event[2])  # type: ignore[attr-defined]

    def test_message_limit(self) -> None:
        """Fragments adding up to over max_message_size fail with 1009 at
        the header of the frame that crosses it."""
        data = frame(TEXT, b"x" * 60, fin=False) + frame(0, b"x" * 40, fin=False)
        self.assertEqual(self.events(data, max_message=100), [])  # type: ignore[attr-defined]
        code, reason = self.error(data + frame(0, b"x"), max_message=100)
        self.assertEqual(code, 1009)  # type: ignore[attr-defined]
        self.assertIn("101", reason)  # type: ignore[attr-defined]

    def test_message_limit_frame_by_frame(self) -> None:
        """Frame by frame, messages are never assembled, so the message
        limit bounds each frame instead of their sum."""
        data = frame(BINARY, b"x" * 60, fin=False) + frame(0, b"x" * 60)
        self.assertEqual(  # type: ignore[attr-defined]
            [e[0] for e in self.events(data, max_message=100, frame_by_frame=True)],
            [FRAGMENT, FRAGMENT],
        )
        self.assertEqual(  # type: ignore[attr-defined]
            self.error(frame(BINARY, b"x" * 101), max_message=100, frame_by_frame=True)[
                0
            ],
            1009,
        )

    def test_no_limit(self) -> None:
        """0 means no limit."""
        payload = b"x" * 70000
        self.assertEqual(  # type: ignore[attr-defined]
            self.reader(0, 0).feed(frame(BINARY, payload)), [(BINARY, payload)]
        )

    def test_controls_not_limited(self) -> None:
        """The limits are for data; a 125-byte ping passes a 10-byte limit."""
        self.assertEqual(  # type: ignore[attr-defined]
            self.events(frame(PING, b"p" * 125), max_frame=10, max_message=10),
            [(PING, b"p" * 125)],
        )

    # -- after an error --------------------------------------------------

    def test_no_input_after_error(self) -> None:
        """After its ERROR event the reader takes no more input (RFC 6455
        section 7.1.7: stop processing the failed connection's data)."""
        reader = self.reader()
        events = reader.feed(frame(TEXT, b"a") + frame(0, b"b") + frame(TEXT, b"c"))
        self.assertEqual(events[0], (TEXT, "a"))  # type: ignore[attr-defined]
        self.assertEqual(len(events), 2)  # type: ignore[attr-defined]
        with self.assertRaises(RuntimeError) as caught:  # type: ignore[attr-defined]
            reader.feed(frame(TEXT, b"d"))
        self.assertIn("1002", str(caught.exception))  # type: ignore[attr-defined]
        self.assertEqual(reader.buffered, 0)  # type: ignore[attr-defined]

    def test_bad_arguments(self) -> None:
        """Limits must be ints >= 0; feed() wants bytes-like data."""
        for bad in (-1, 1.5, "10", None, True):
            with self.assertRaises(ValueError):  # type: ignore[attr-defined]
                self.impl.FrameReader(bad, 0)
            with self.assertRaises(ValueError):  # type: ignore[attr-defined]
                self.impl.FrameReader(0, bad)
        with self.assertRaises(TypeError):  # type: ignore[attr-defined]
            self.reader().feed("text")
        with self.assertRaises(TypeError):  # type: ignore[attr-defined]
            self.impl.FrameReader(0, 0, True)

    # -- encoding --------------------------------------------------------

    def test_encode_frame_matches_frames(self) -> None:
        """encode_frame gives wsplugin._frames.encode_frame's bytes, for the
        three length encodings, with FIN and RSV bits."""
        for n in (0, 125, 126, 65535, 65536):
            payload = os.urandom(n)
            for fin, rsv in ((True, 0), (False, 0), (True, 4)):
                self.assertEqual(  # type: ignore[attr-defined]
                    self.impl.encode_frame(BINARY, payload, fin, rsv),
                    frames.encode_frame(BINARY, payload, fin, rsv),
                )

    def test_encode_str_as_utf8(self) -> None:
        """A str payload is sent as UTF-8."""
        self.assertEqual(  # type: ignore[attr-defined]
            self.impl.encode_frame(TEXT, "é€"),
            frames.encode_frame(TEXT, "é€".encode()),
        )
        self.assertEqual(  # type: ignore[attr-defined]
            self.impl.encode_message("é€", False, 2),
            frames.encode_message("é€".encode(), False, 2),
        )

    def test_masked_frames_round_trip(self) -> None:
        """A masked encode_frame (a client's) is read back by a FrameReader."""
        payload = "masked ✓".encode() * 30
        data = self.impl.encode_frame(TEXT, payload, mask=b"\x01\x02\x03\x04")
        self.assertEqual(data[1] & 0x80, 0x80)  # type: ignore[attr-defined]
        self.assertEqual(data, frame(TEXT, payload, mask=b"\x01\x02\x03\x04"))  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            self.reader().feed(data), [(TEXT, payload.decode())]
        )
        with self.assertRaises(ValueError):  # type: ignore[attr-defined]
            self.impl.encode_frame(TEXT, b"x", mask=b"abc")

    def test_frame_header(self) -> None:
        """frame_header is encode_frame's header alone, for writeSequence."""
        for n in (0, 125, 126, 65535, 65536, 2**40):
            header = self.impl.frame_header(BINARY, n, False)
            self.assertEqual(  # type: ignore[attr-defined]
                header,
                frames.encode_frame(BINARY, b"x" * min(n, 70000), False)[: len(header)]
                if n <= 70000
                else bytes((0x02, 127)) + struct.pack("!Q", n),
            )
        with self.assertRaises(ValueError):  # type: ignore[attr-defined]
            self.impl.frame_header(BINARY, -1)
        with self.assertRaises(ValueError):  # type: ignore[attr-defined]
            self.impl.frame_header(BINARY, 2**63)

    def test_encode_message_errors(self) -> None:
        """A negative fragment size is refused; a payload must be bytes-like
        or str."""
        with self.assertRaises(ValueError):  # type: ignore[attr-defined]
            self.impl.encode_message(b"x", True, -1)
        with self.assertRaises(TypeError):  # type: ignore[attr-defined]
            self.impl.encode_message(5, True)


class CCodecTests(CodecTests, SynchronousTestCase):
    """The compiled codec."""

    trace_memory = True

    def setUp(self) -> None:
        self.impl = need_c(self)

    def test_no_leaks(self) -> None:
        """Every path (messages, fragments, controls, each error, a feed
        after an error, a reader dropped with a buffer, the encoders and
        their argument errors) run 200 times keeps no object and no memory.

        (benchmarks/codec_leakcheck.py does the same under a debug CPython
        and also counts references.)"""
        streams = [
            frame(TEXT, "é€".encode() * 30),
            frame(BINARY, b"x" * 70000),
            frame(TEXT, b"a", fin=False)
            + frame(PING, b"p")
            + frame(0, b"\xe2\x82\xac"),
            frame(BINARY, b"x" * 3000, fin=False) + frame(0, b"y"),
            frame(CLOSE, b"\x03\xe8bye"),
            *BAD_FRAMES,
        ]

        def exercise() -> None:
            for data in streams:
                for by_frame in (False, True):
                    reader = self.impl.FrameReader(100, 150, frame_by_frame=by_frame)
                    reader.feed(data)
                    if reader.error is not None:
                        self.assertRaises(RuntimeError, reader.feed, b"x")
                    reader = self.impl.FrameReader(0, 0, frame_by_frame=by_frame)
                    for i in range(0, len(data), 1000):
                        if reader.error is None:
                            reader.feed(memoryview(data)[i : i + 1000])
                    self.impl.FrameReader(0, 0).feed(data[: len(data) // 2])
            self.impl.encode_frame(TEXT, "é€", mask=b"abcd")
            self.impl.encode_message(b"x" * 70000, True, 1000)
            self.impl.frame_header(BINARY, 2**40)
            self.assertRaises(ValueError, self.impl.encode_frame, 1, b"x", mask=b"abc")
            self.assertRaises(TypeError, self.impl.encode_message, 5, True)
            self.assertRaises(ValueError, self.impl.FrameReader, -1, 0)

        for _ in range(3):
            exercise()
        tracemalloc.start()
        try:
            gc.collect()
            blocks = sys.getallocatedblocks()
            traced = tracemalloc.get_traced_memory()[0]
            for _ in range(200):
                exercise()
            gc.collect()  # exceptions and their tracebacks make cycles
            kept_blocks = sys.getallocatedblocks() - blocks
            kept_bytes = tracemalloc.get_traced_memory()[0] - traced
        finally:
            tracemalloc.stop()
        self.assertLess(kept_blocks, 20)
        self.assertLess(kept_bytes, 4096)


class EncodeMessageTests(SynchronousTestCase):
    """Splitting messages, checked on random payloads and frame sizes."""

    @given(
        payload=st.binary(max_size=3000),
        is_binary=st.booleans(),
        frame_size=st.integers(frames.MIN_FRAME_SIZE, 4000),
    )
    def test_encode_message_matches_frames(
        self, payload: bytes, is_binary: bool, frame_size: int
    ) -> None:
        """encode_message splits as wsplugin._frames.encode_message does, with
        the payload per frame that a frame size (header counted) allows."""
        size = frames.payload_size_for_frame(frame_size)
        impls = [_pycodec] + ([_speedups] if _speedups is not None else [])
        for impl in impls:
            for fragment in (0, size):
                self.assertEqual(
                    impl.encode_message(payload, is_binary, fragment),
                    frames.encode_message(payload, is_binary, fragment),
                )


class SelectionTests(SynchronousTestCase):
    """wsplugin._codec picks the compiled codec unless told not to."""

    def test_active_implementation(self) -> None:
        """IMPLEMENTATION names the codec _codec exports."""
        expected = (
            "python" if _speedups is None or _codec.extensions_disabled() else "c"
        )
        self.assertEqual(_codec.IMPLEMENTATION, expected)
        module = _pycodec if expected == "python" else _speedups
        self.assertIs(_codec.FrameReader, module.FrameReader)
        self.assertIs(_codec.encode_message, module.encode_message)

    def test_environment_switch(self) -> None:
        """WSPLUGIN_NO_EXTENSIONS set to anything but empty or 0 disables
        the compiled codec."""
        for value, disabled in (("1", True), ("yes", True), ("0", False), ("", False)):
            env = {"WSPLUGIN_NO_EXTENSIONS": value}
            self.assertEqual(_codec.extensions_disabled(env), disabled, value)
            if disabled:
                self.assertIsNone(_codec.load_speedups(env))
        self.assertFalse(_codec.extensions_disabled({}))

    def test_environment_switch_at_import(self) -> None:
        """In a fresh interpreter, WSPLUGIN_NO_EXTENSIONS=1 gives "python";
        without it, "c" when the extension is built."""
        code = "import wsplugin._codec as c; print(c.IMPLEMENTATION)"
        for value, expected in (
            ("1", "python"),
            ("", "python" if _speedups is None else "c"),
        ):
            env = dict(os.environ, WSPLUGIN_NO_EXTENSIONS=value)
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, check=True
            )
            self.assertEqual(out.stdout.decode().strip(), expected)

    def test_same_constants(self) -> None:
        """Both implementations use the same event kinds and close codes."""
        c = need_c(self)
        for name in (
            "TEXT",
            "BINARY",
            "CLOSE",
            "PING",
            "PONG",
            "FRAGMENT",
            "ERROR",
            "CLOSE_PROTOCOL_ERROR",
            "CLOSE_INVALID_PAYLOAD",
            "CLOSE_MESSAGE_TOO_BIG",
        ):
            self.assertEqual(getattr(c, name), getattr(_pycodec, name), name)


class BuildTests(SynchronousTestCase):
    """The extension is optional at build time, as websockets' speedups."""

    def build(self, **env: str) -> tuple[int, list[Path], str]:
        """Run setup.py build_ext into a temporary directory: its exit
        code, the extension files built and its output."""
        out = Path(self.mktemp()).resolve()
        result = subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext"]
            + ["--build-lib", str(out / "lib"), "--build-temp", str(out / "tmp")],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        built = sorted((out / "lib").glob("wsplugin/_speedups*"))
        return result.returncode, built, result.stdout + result.stderr

    def test_no_compiler(self) -> None:
        """Without a working C compiler the build warns and succeeds, with
        no extension (the pure-Python codec is then used)."""
        # (CI exports WSPLUGIN_BUILD_EXTENSION=yes; this case is without it)
        rc, built, output = self.build(
            CC="/nonexistent/cc", WSPLUGIN_BUILD_EXTENSION=""
        )
        self.assertEqual((rc, built), (0, []), output)
        self.assertIn("wsplugin._speedups", output)

    def test_required(self) -> None:
        """WSPLUGIN_BUILD_EXTENSION=yes makes a failed build an error (CI),
        and =no skips the extension."""
        rc, built, _ = self.build(CC="/nonexistent/cc", WSPLUGIN_BUILD_EXTENSION="yes")
        self.assertNotEqual(rc, 0)
        self.assertEqual(self.build(WSPLUGIN_BUILD_EXTENSION="no")[:2], (0, []))

    def test_compiler(self) -> None:
        """With the compiler the extension builds; the result imports and
        parses a frame."""
        need_c(self)  # a built extension means a compiler is here
        rc, built, output = self.build()
        self.assertEqual(rc, 0, output)
        self.assertEqual(len(built), 1, output)
        code = (
            "import importlib.util as u, sys;"
            "s = u.spec_from_file_location('wsplugin._speedups', sys.argv[1]);"
            "m = u.module_from_spec(s); s.loader.exec_module(m);"
            "print(m.FrameReader(0, 0).feed(sys.argv[2].encode('latin-1')))"
        )
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                str(built[0]),
                frame(TEXT, b"hi").decode("latin-1"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.assertEqual(result.stdout.strip(), "[(1, 'hi')]")


class ClosePayloadTests(SynchronousTestCase):
    """close_payload_problem agrees with the server's close_frame_problem."""

    def test_every_code(self) -> None:
        """Every 16-bit close code is judged as the server judges it."""
        for code in range(65536):
            payload = code.to_bytes(2, "big") + b"why"
            self.assertEqual(
                _codec.close_payload_problem(payload),
                close_frame_problem(code, b"why"),
                code,
            )

    def test_reasons(self) -> None:
        """No payload is fine; a reason that is not UTF-8 is 1007."""
        self.assertIsNone(_codec.close_payload_problem(b""))
        self.assertIsNone(_codec.close_payload_problem(b"\x03\xe8"))
        self.assertIsNone(_codec.close_payload_problem(b"\x03\xe8" + "é".encode()))
        self.assertEqual(
            _codec.close_payload_problem(b"\x03\xe8\xc3")[0],
            1007,  # type: ignore[index]
        )


# -- Hypothesis strategies -------------------------------------------------

text_pieces = st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(
    lambda s: s.encode("utf-8")
)


@st.composite
def message_frames(draw: Any) -> list[bytes]:
    """One message or control frame, as the frames a client would send: a
    data message possibly fragmented anywhere (UTF-8 cut mid code point
    too), with control frames between fragments."""
    kind = draw(st.sampled_from(["text", "binary", "ping", "pong", "close", "big"]))
    mask = draw(st.binary(min_size=4, max_size=4))
    if kind in ("ping", "pong"):
        return [
            frame(
                PING if kind == "ping" else PONG,
                draw(st.binary(max_size=125)),
                mask=mask,
            )
        ]
    if kind == "close":
        code = draw(
            st.sampled_from(
                [1000, 1001, 1005, 1006, 1011, 1015, 2000, 3000, 4999, 5000]
            )
        )
        reason = draw(st.sampled_from([b"", b"bye", "é".encode(), b"\xc3"]))
        payload = b"" if code == 1005 else code.to_bytes(2, "big") + reason
        return [frame(CLOSE, payload, mask=mask)]
    if kind == "text":
        payload = b"".join(draw(st.lists(text_pieces, max_size=6)))
    elif kind == "big":
        payload = bytes(draw(st.sampled_from([126, 300, 65535, 65536, 70001])))
    else:
        payload = draw(st.binary(max_size=300))
    opcode = TEXT if kind == "text" else BINARY
    cuts = sorted(set(draw(st.lists(st.integers(0, len(payload)), max_size=4))))
    parts = [
        payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)
    ]
    out = []
    for i, part in enumerate(parts):
        out.append(
            frame(opcode if i == 0 else 0, part, fin=i == len(parts) - 1, mask=mask)
        )
        if i < len(parts) - 1 and draw(st.booleans()):
            out.append(frame(PING, draw(st.binary(max_size=10)), mask=mask))
    return out


BAD_FRAMES = [
    frame(0, b"x"),
    frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"),
    frame(TEXT, b"\xed\xa0\x80"),
    frame(TEXT, b"\xe2\x82"),
    frame(TEXT, b"ok", rsv=4),
    frame(PING, b"x", fin=False),
    frame(PONG, b"x" * 126),
    frame(11, b""),
    frame(BINARY, b"x" * 5, width=2),
    frame(BINARY, b"x" * 300, width=8),
    bytes((0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1)) + MASK,
    frame(TEXT, b"x", mask=None),
    frame(CLOSE, b"\x03"),
]


@st.composite
def streams(draw: Any) -> bytes:
    """A client's byte stream: valid messages, sometimes broken: a frame
    invalid in its place spliced in between two frames, a bit flipped,
    bytes dropped or inserted."""
    parts = [f for m in draw(st.lists(message_frames(), max_size=6)) for f in m]
    how = draw(st.sampled_from(["none", "none", "frame", "flip", "drop", "insert"]))
    if how == "frame":
        parts.insert(
            draw(st.integers(0, len(parts))), draw(st.sampled_from(BAD_FRAMES))
        )
    data = b"".join(parts)
    if how in ("none", "frame") or not data:
        return data
    at = draw(st.integers(0, len(data) - 1))
    if how == "flip":
        bit = 1 << draw(st.integers(0, 7))
        return data[:at] + bytes((data[at] ^ bit,)) + data[at + 1 :]
    if how == "drop":
        return data[:at] + data[at + draw(st.integers(1, 4)) :]
    return data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]


reader_options = st.fixed_dictionaries(
    {
        "max_frame": st.sampled_from([0, 0, 40, 300, 65536]),
        "max_message": st.sampled_from([0, 0, 100, 1000, 70000]),
        "utf8_validation": st.booleans(),
        "frame_by_frame": st.booleans(),
        "require_mask": st.sampled_from([True, True, False]),
    }
)

cut_points = st.lists(st.integers(0, 1 << 20), max_size=12)


class FuzzTests(SynchronousTestCase):
    """The compiled and the Python codec agree on any input, cut anywhere."""

    def setUp(self) -> None:
        self.c = need_c(self)

    def both(self, options: dict[str, Any]) -> tuple[Any, Any]:
        opts = dict(options)
        args = (opts.pop("max_frame"), opts.pop("max_message"))
        return _pycodec.FrameReader(*args, **opts), self.c.FrameReader(*args, **opts)

    def check(self, data: bytes, points: list[int], options: dict[str, Any]) -> None:
        """Feed both readers the same chunks: the same events after every
        feed, the same ``buffered`` and ``error``; and the same events as
        one feed of everything."""
        py, c = self.both(options)
        chunks = cut(data, points)
        events = []
        for chunk in chunks:
            expected = py.feed(chunk)
            self.assertEqual(c.feed(chunk), expected)
            self.assertEqual(c.buffered, py.buffered)
            self.assertEqual(c.error, py.error)
            events += expected
            if py.error is not None:
                break
        for reader in self.both(options):
            self.assertEqual(reader.feed(data), events)

    @settings(suppress_health_check=[HealthCheck.too_slow])
    @given(data=streams(), points=cut_points, options=reader_options)
    def test_frame_streams(self, data: bytes, points: list[int], options: Any) -> None:
        """Streams of valid frames (fragments, controls, UTF-8 cut anywhere),
        some broken on purpose, cut at arbitrary points."""
        self.check(data, points, options)

    @given(data=st.binary(max_size=400), points=cut_points, options=reader_options)
    def test_random_bytes(self, data: bytes, points: list[int], options: Any) -> None:
        """Raw random bytes, cut at arbitrary points."""
        self.check(data, points, options)

    @given(
        head=st.binary(min_size=2, max_size=14),
        body=st.binary(max_size=64),
        points=cut_points,
        options=reader_options,
    )
    def test_random_headers(
        self, head: bytes, body: bytes, points: list[int], options: Any
    ) -> None:
        """A random header (the part with the most branches) before a
        masked text frame."""
        self.check(head + body + frame(TEXT, b"after"), points, options)

    @given(
        pieces=st.lists(st.binary(max_size=6), max_size=8),
        validate=st.booleans(),
    )
    def test_utf8_against_autobahn(self, pieces: list[bytes], validate: bool) -> None:
        """Text cut in pieces (fragments, then reads) is accepted, failed as
        invalid, or failed as ending mid code point, exactly as Autobahn's
        validator (the server's today) judges the same pieces."""
        validator = Utf8Validator()
        verdict = None
        ended = True
        for piece in pieces:
            valid, ended, _, _ = validator.validate(piece)
            if not valid:
                verdict = _pycodec._R_UTF8
                break
        else:
            if not ended:
                verdict = _pycodec._R_UTF8_END
        data = b"".join(
            frame(TEXT if i == 0 else 0, p, fin=i == len(pieces) - 1)
            for i, p in enumerate(pieces or [b""])
        )
        for impl in (_pycodec, self.c):
            for by_frame in (False, True):
                events = impl.FrameReader(0, 0, frame_by_frame=by_frame).feed(data)
                last = events[-1] if events else None
                if verdict is None:
                    self.assertNotEqual(last and last[0], ERROR, (impl, pieces))
                else:
                    self.assertEqual(last, (ERROR, 1007, verdict), (impl, pieces))


class ServerAgreementTests(SynchronousTestCase):
    """The codec gives what the server gives for the same bytes: the same
    messages, fragments, pings, pongs and close frames to the handler, and
    the same close code when the client breaks the protocol.

    Run twice: here with Autobahn's parser under wsplugin's protocol (the
    server before the codec was wired in, and still the path of connections
    with permessage-deflate), and in ``FastPathAgreementTests`` with the
    server's fast path, which feeds the active codec.
    """

    fast_path = False

    def setUp(self) -> None:
        self.patch(WebSocketServerProtocol, "fast_path", self.fast_path)

    def server_events(
        self, chunks: list[bytes], options: dict[str, Any]
    ) -> tuple[list[tuple[Any, ...]], int | None]:
        """Handler events and the first close code the server sent."""
        recorder = Recorder()
        _, harness = make(
            recorder,
            max_frame_size=options["max_frame"],
            max_message_size=options["max_message"],
            utf8_validation=options["utf8_validation"],
            frame_by_frame=options["frame_by_frame"],
            compression=False,
        )
        client = harness.open()
        self.assertEqual(client.protocol._reader is not None, self.fast_path)
        start = len(recorder.events)
        for chunk in chunks:
            client.send_raw(chunk)
        wanted = (
            "on_message",
            "on_binary",
            "on_fragment",
            "on_ping",
            "on_pong",
            "on_close",
        )
        events = [e for e in recorder.events[start:] if e[0] in wanted]
        codes = [f.close_code for f in client.frames() if f.opcode == CLOSE]
        return events, codes[0] if codes else None

    def codec_events(
        self, impl: Any, chunks: list[bytes], options: dict[str, Any]
    ) -> tuple[list[tuple[Any, ...]], list[bytes], int | None, str]:
        """The handler events the codec's events stand for, the chunks fed
        until a close or an error, its close code, and how it ended: "",
        "close" (a valid close frame) or "bad close" (one the server judges
        invalid)."""
        reader = impl.FrameReader(
            options["max_frame"],
            options["max_message"],
            utf8_validation=options["utf8_validation"],
            frame_by_frame=options["frame_by_frame"],
        )
        out: list[tuple[Any, ...]] = []
        fed = []
        for chunk in chunks:
            fed.append(chunk)
            for event in reader.feed(chunk):
                kind = event[0]
                if kind == TEXT:
                    out.append(("on_message", event[1]))
                elif kind == BINARY:
                    out.append(("on_binary", event[1]))
                elif kind == FRAGMENT:
                    out.append(("on_fragment", event[2], event[1] == BINARY, event[3]))
                elif kind in (PING, PONG):
                    out.append(("on_ping" if kind == PING else "on_pong", event[1]))
                elif kind == CLOSE:
                    problem = _codec.close_payload_problem(event[1])
                    if problem is not None:
                        return out, fed, problem[0], "bad close"
                    payload = event[1]
                    code = int.from_bytes(payload[:2], "big") if payload else 1005
                    out.append(("on_close", code, payload[2:].decode()))
                    return out, fed, None, "close"
                else:
                    return out, fed, event[1], ""
        return out, fed, None, ""

    def agree(self, impl: Any, data: bytes, points: list[int], options: Any) -> None:
        chunks = cut(data, points)
        expected, fed, code, end = self.codec_events(impl, chunks, options)
        events, server_code = self.server_events(fed, options)
        self.assertEqual(events, expected)
        if end == "close":
            return  # the server answered the close frame: its own business
        if end == "bad close":
            # Autobahn drops the TCP connection on an invalid close frame
            # without a close frame of its own; the handler saw no on_close.
            return
        self.assertEqual(server_code, code)

    # differing_executors: FastPathAgreementTests runs the same tests with
    # only the class attribute fast_path changed (set in setUp)
    @settings(
        max_examples=100,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    )
    @given(data=streams(), points=cut_points, options=reader_options)
    def test_python_codec(self, data: bytes, points: list[int], options: Any) -> None:
        """The Python codec agrees with the server on frame streams."""
        options = dict(options, require_mask=True)
        self.agree(_pycodec, data, points, options)

    # differing_executors: FastPathAgreementTests runs the same tests with
    # only the class attribute fast_path changed (set in setUp)
    @settings(
        max_examples=100,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
    )
    @given(data=streams(), points=cut_points, options=reader_options)
    def test_c_codec(self, data: bytes, points: list[int], options: Any) -> None:
        """The compiled codec agrees with the server on frame streams."""
        options = dict(options, require_mask=True)
        self.agree(need_c(self), data, points, options)

    def test_each_error(self) -> None:
        """Each protocol error gets the same close code from both codecs and
        from the server."""
        cases = [
            (frame(TEXT, b"x", rsv=1), {}),
            (frame(TEXT, b"x", mask=None), {}),
            (frame(PING, b"x", fin=False), {}),
            (frame(PONG, b"x" * 126), {}),
            (frame(12, b""), {}),
            (frame(5, b""), {}),
            (frame(CLOSE, b"\x03"), {}),
            (frame(0, b"x"), {}),
            (frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"), {}),
            (bytes((0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0)) + MASK, {}),
            (frame(BINARY, b"x" * 10, width=2), {}),
            (frame(BINARY, b"x" * 300, width=8), {}),
            (frame(TEXT, b"\xed\xa0\x80"), {}),
            (frame(TEXT, b"\xe2\x82"), {}),
            (frame(BINARY, b"x" * 51), {"max_frame": 50}),
            (
                frame(BINARY, b"x" * 30, fin=False) + frame(0, b"x" * 30),
                {"max_message": 50},
            ),
            (frame(BINARY, b"x" * 51), {"max_message": 50, "frame_by_frame": True}),
        ]
        impls = [_pycodec] + ([_speedups] if _speedups is not None else [])
        for data, extra in cases:
            options = {
                "max_frame": 0,
                "max_message": 0,
                "utf8_validation": True,
                "frame_by_frame": False,
                **extra,
            }
            _, server_code = self.server_events([data], options)
            self.assertIn(server_code, (1002, 1007, 1009), data)
            for impl in impls:
                _, _, code, _ = self.codec_events(impl, [data], options)
                self.assertEqual(code, server_code, (impl, data))


class FastPathAgreementTests(ServerAgreementTests):
    """The same agreement with the server's fast path (the codec wired into
    the protocol, ``wsplugin._fastpath``): handler events and close codes
    are those of the codec's events."""

    fast_path = True


class DescribeTests(SynchronousTestCase):
    """_codec.describe(): the start-up log's words for the active codec."""

    def test_active(self) -> None:
        """Compiled, or pure Python with the reason."""
        text = _codec.describe({})
        if _codec.IMPLEMENTATION == "c":
            self.assertEqual(text, "compiled (wsplugin._speedups)")
        else:
            self.assertIn("pure Python", text)

    def test_python_reasons(self) -> None:
        """Disabled on purpose, or not built."""
        self.patch(_codec, "IMPLEMENTATION", "python")
        self.assertIn(
            "WSPLUGIN_NO_EXTENSIONS", _codec.describe({"WSPLUGIN_NO_EXTENSIONS": "1"})
        )
        self.assertIn("not built", _codec.describe({}))
