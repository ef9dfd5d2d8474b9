"""permessage-deflate on outgoing messages: compress once, no context kept.

By default wsplugin compresses each outgoing message on its own (RFC 7692
``server_no_context_takeover``), which lets a broadcast compress once for
every receiver with the same window size and keeps no zlib state per
connection. ``compression_context_takeover=True`` keeps Autobahn's
per-connection compressor.
"""

from __future__ import annotations

import zlib
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import wsplugin._frames
from tests.helpers import Recorder, make
from wsplugin._frames import deflate_message
from wsplugin.testing import ClientFrame

DEFLATE = [("Sec-WebSocket-Extensions", "permessage-deflate")]
TEXT = "the same sixty-four byte text, sent to all of them, every time.."


def inflate(frames: list[ClientFrame], window_bits: int = 15) -> bytes:
    """Decompress one message made of ``frames`` (a client's view)."""
    data = b"".join(f.payload for f in frames)
    return zlib.decompressobj(-window_bits).decompress(data + b"\x00\x00\xff\xff")


def data_frames(client: Any) -> list[ClientFrame]:
    return [f for f in client.frames() if f.opcode in (0, 1, 2)]


class CountingDeflate:
    """Wraps ``deflate_message`` to count how often a broadcast compresses."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, payload: bytes, window_bits: int, mem_level: int) -> bytes:
        self.calls.append((window_bits, mem_level))
        return deflate_message(payload, window_bits, mem_level)


class DeflateMessageTests(SynchronousTestCase):
    """The pure helper."""

    def test_round_trip(self) -> None:
        """What deflate_message makes, a permessage-deflate reader inflates."""
        for payload in (b"", b"x", TEXT.encode() * 50, bytes(range(256)) * 40):
            for bits in (9, 12, 15):
                data = deflate_message(payload, bits, 8)
                self.assertFalse(data.endswith(b"\x00\x00\xff\xff"))
                inflater = zlib.decompressobj(-bits)
                self.assertEqual(
                    inflater.decompress(data + b"\x00\x00\xff\xff"), payload
                )

    def test_no_history(self) -> None:
        """Each call starts a fresh stream: the same input, the same bytes."""
        self.assertEqual(
            deflate_message(TEXT.encode(), 15, 8), deflate_message(TEXT.encode(), 15, 8)
        )


class NoContextTakeoverTests(SynchronousTestCase):
    """The default: compression without context takeover."""

    def test_send_compressed_and_stateless(self) -> None:
        """A message to one connection has RSV1 set, inflates to the text, and
        leaves no compressor behind on the connection."""
        _, harness = make(Recorder(), compression=True)
        client = harness.open(headers=DEFLATE)
        client.connection.send_text(TEXT)
        client.connection.send_text(TEXT)
        frames = data_frames(client)
        self.assertEqual([f.rsv for f in frames], [4, 4])
        self.assertEqual(inflate(frames[:1]), TEXT.encode())
        # no context: the second copy is not a back-reference to the first
        self.assertEqual(frames[0].payload, frames[1].payload)
        self.assertIsNone(client.protocol._perMessageCompress._compressor)

    def test_client_keeping_context_reads_every_message(self) -> None:
        """A client that keeps its inflater across messages (as browsers do)
        reads a run of independently compressed messages."""
        _, harness = make(Recorder(), compression=True)
        client = harness.open(headers=DEFLATE)
        texts = [TEXT, TEXT[::-1], TEXT, "short", TEXT * 3]
        for text in texts:
            client.connection.send_text(text)
        inflater = zlib.decompressobj(-15)
        got = [
            inflater.decompress(f.payload + b"\x00\x00\xff\xff").decode()
            for f in data_frames(client)
        ]
        self.assertEqual(got, texts)

    def test_broadcast_compresses_once(self) -> None:
        """Receivers with the same parameters get one compression and the
        very same frame bytes."""
        server, harness = make(Recorder(), compression=True)
        clients = [harness.open(headers=DEFLATE) for _ in range(5)]
        counter = CountingDeflate()
        self.patch(wsplugin._frames, "deflate_message", counter)
        self.assertEqual(server.broadcast(TEXT), 5)
        self.assertEqual(counter.calls, [(15, 8)])
        sent = {data_frames(c)[0] for c in clients}
        self.assertEqual(len(sent), 1)
        frame = sent.pop()
        self.assertEqual(frame.rsv, 4)
        self.assertEqual(inflate([frame]), TEXT.encode())

    def test_broadcast_per_window_size(self) -> None:
        """A client that limits the server's window gets a stream made with
        that window (one more compression, shared by its group), and plain
        clients get plain frames."""
        server, harness = make(Recorder(), compression=True)
        wide = [harness.open(headers=DEFLATE) for _ in range(2)]
        narrow = [
            harness.open(
                headers=[
                    (
                        "Sec-WebSocket-Extensions",
                        "permessage-deflate; server_max_window_bits=10",
                    )
                ]
            )
            for _ in range(2)
        ]
        plain = harness.open()
        counter = CountingDeflate()
        self.patch(wsplugin._frames, "deflate_message", counter)
        payload = bytes(range(256)) * 20
        self.assertEqual(server.broadcast(payload), 5)
        self.assertEqual(sorted(counter.calls), [(10, 8), (15, 8)])
        for client in narrow:
            self.assertEqual(inflate(data_frames(client), 10), payload)
        for client in wide:
            self.assertEqual(inflate(data_frames(client), 15), payload)
        self.assertEqual(
            [(f.rsv, f.payload) for f in data_frames(plain)], [(0, payload)]
        )

    def test_broadcast_split_compressed(self) -> None:
        """With split_message, the compressed broadcast is cut in frames of at
        most frame_size, RSV1 on the first frame only."""
        server, harness = make(
            Recorder(), compression=True, split_message=True, frame_size=40
        )
        clients = [harness.open(headers=DEFLATE) for _ in range(2)]
        payload = bytes(range(256)) * 8
        server.broadcast(payload)
        for client in clients:
            frames = data_frames(client)
            self.assertGreater(len(frames), 1)
            self.assertTrue(all(f.size <= 40 for f in frames))
            self.assertEqual([f.rsv for f in frames], [4] + [0] * (len(frames) - 1))
            self.assertEqual(inflate(frames), payload)


class ContextTakeoverTests(SynchronousTestCase):
    """compression_context_takeover=True: Autobahn's compressor per connection."""

    def test_context_kept(self) -> None:
        """The second copy of a message refers back to the first, so it is
        shorter, and the client reads both with one inflater."""
        server, harness = make(
            Recorder(), compression=True, compression_context_takeover=True
        )
        client = harness.open(headers=DEFLATE)
        counter = CountingDeflate()
        self.patch(wsplugin._frames, "deflate_message", counter)
        server.broadcast(TEXT)
        server.broadcast(TEXT)
        self.assertEqual(counter.calls, [])
        frames = data_frames(client)
        self.assertEqual([f.rsv for f in frames], [4, 4])
        self.assertLess(len(frames[1].payload), len(frames[0].payload))
        inflater = zlib.decompressobj(-15)
        for frame in frames:
            self.assertEqual(
                inflater.decompress(frame.payload + b"\x00\x00\xff\xff"),
                TEXT.encode(),
            )

    def test_client_requested_no_takeover_still_honoured(self) -> None:
        """A client asking for server_no_context_takeover gets it even when the
        option is on (RFC 7692, 7.1.1.1), and then shares broadcast frames."""
        server, harness = make(
            Recorder(), compression=True, compression_context_takeover=True
        )
        offer = [
            (
                "Sec-WebSocket-Extensions",
                "permessage-deflate; server_no_context_takeover",
            )
        ]
        client = harness.open(headers=offer)
        self.assertIn(
            "server_no_context_takeover",
            client.response.header("Sec-WebSocket-Extensions") or "",
        )
        counter = CountingDeflate()
        self.patch(wsplugin._frames, "deflate_message", counter)
        server.broadcast(TEXT)
        server.broadcast(TEXT)
        self.assertEqual(len(counter.calls), 2)
        frames = data_frames(client)
        self.assertEqual(frames[0].payload, frames[1].payload)
