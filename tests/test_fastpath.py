"""wsplugin._fastpath: the frame codec wired into the server protocol.

The agreement of its events and close codes with Autobahn's parser, on
random frame streams, is in tests/test_codec.py (``FastPathAgreementTests``);
here: which connections take the fast path, the per-turn budget, the
``assemble_messages`` mode, and the protocol's other duties on this path.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import ConfigError, ServerConfig, _codec
from wsplugin._fastpath import EVENTS_PER_TURN, FEED_SLICE
from wsplugin.protocol import WebSocketServerProtocol
from wsplugin.testing import client_frame, handshake_request


def messages(rec: Recorder) -> list[Any]:
    return [e[1] for e in rec.events if e[0] in ("on_message", "on_binary")]


def one_turn(clock: Any) -> None:
    """Run the calls due now, as one reactor turn does (``Clock.advance(0)``
    would also run the calls these make for "now")."""
    due = [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.func(*call.args, **call.kw)


class PathChoiceTests(SynchronousTestCase):
    """Open connections without permessage-deflate use the codec."""

    def test_plain_connection(self) -> None:
        """A plain connection reads with the codec once open."""
        _, harness = make(Recorder())
        client = harness.open()
        self.assertIsNotNone(client.protocol._reader)
        client.send_text("hi")
        self.assertEqual(client.messages(), [])

    def test_deflate_connection(self) -> None:
        """A connection with permessage-deflate keeps Autobahn's parser."""
        rec = Recorder()
        _, harness = make(rec, compression=True)
        client = harness.open(
            headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        self.assertIsNone(client.protocol._reader)
        client.send_text("plain")  # uncompressed frames are allowed too
        self.assertEqual(messages(rec), ["plain"])

    def test_switched_off(self) -> None:
        """fast_path = False keeps Autobahn's parser (the agreement tests)."""
        self.patch(WebSocketServerProtocol, "fast_path", False)
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        self.assertIsNone(client.protocol._reader)
        client.send_text("x")
        self.assertEqual(messages(rec), ["x"])

    def test_frames_with_the_handshake(self) -> None:
        """Frames sent in the same read as the handshake are delivered after
        on_open, by the codec."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.connect()
        client.send_raw(handshake_request("/") + client_frame(1, b"early"))
        self.assertEqual(
            rec.names()[-3:], ["on_handshake_response_sent", "on_open", "on_message"]
        )
        self.assertEqual(messages(rec), ["early"])
        self.assertIsNotNone(client.protocol._reader)

    def test_implementation_is_the_active_codec(self) -> None:
        """The reader is the active codec's (compiled unless disabled)."""
        _, harness = make(Recorder())
        client = harness.open()
        client.send_text("x")
        self.assertIs(type(client.protocol._reader), _codec.FrameReader)

    def test_idle_connection_holds_no_reader(self) -> None:
        """Until the first read an open connection holds no reader, nor
        Autobahn's UTF-8 validator (workload E: memory per idle client)."""
        _, harness = make(Recorder())
        client = harness.open()
        attrs = vars(client.protocol)
        self.assertIs(attrs["_reader"], False)
        self.assertNotIn("utf8validator", attrs)


class BudgetTests(SynchronousTestCase):
    """At most EVENTS_PER_TURN events per connection and reactor turn."""

    def flood(self, count: int) -> bytes:
        return b"".join(client_frame(1, b"%d" % (i % 10)) for i in range(count))

    def test_flood_yields_to_others(self) -> None:
        """A read of many tiny messages is handled a budget per turn; reading
        pauses meanwhile and another connection's message is handled in
        between; every message arrives, in order."""
        rec = Recorder()
        _, harness = make(rec)
        flooder = harness.open()
        other = harness.open()
        total = 3 * EVENTS_PER_TURN + 17
        data = self.flood(total)
        self.assertLess(len(data), FEED_SLICE * 2)
        start = len(rec.events)
        flooder.protocol.dataReceived(data)  # no clock turn
        handled = len(rec.events) - start
        self.assertEqual(handled, EVENTS_PER_TURN)
        self.assertEqual(flooder.transport.producerState, "paused")
        other.protocol.dataReceived(client_frame(1, b"other"))
        self.assertEqual(rec.events[-1], ("on_message", "other"))
        harness.flush()  # the next turns: the rest, then reading resumes
        got = [e[1] for e in rec.events[start:] if e[1] != "other"]
        self.assertEqual(got, [str(i % 10) for i in range(total)])
        self.assertEqual(rec.events.index(("on_message", "other")) - start, handled)
        self.assertEqual(flooder.transport.producerState, "producing")

    def test_one_turn_per_budget(self) -> None:
        """Each reactor turn handles one more budget."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        start = len(rec.events)
        client.protocol.dataReceived(self.flood(2 * EVENTS_PER_TURN + 1))
        counts = [len(rec.events) - start]
        for _ in range(3):
            one_turn(harness.clock)
            counts.append(len(rec.events) - start)
        self.assertEqual(
            counts,
            [EVENTS_PER_TURN, 2 * EVENTS_PER_TURN, 2 * EVENTS_PER_TURN + 1]
            + [2 * EVENTS_PER_TURN + 1],
        )

    def test_reads_during_backlog_keep_order(self) -> None:
        """Bytes delivered while a backlog waits (a transport that reads on
        after a pause) come after it."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        start = len(rec.events)
        client.protocol.dataReceived(self.flood(EVENTS_PER_TURN + 5))
        client.protocol.dataReceived(client_frame(1, b"late"))
        harness.flush()
        got = [e[1] for e in rec.events[start:]]
        self.assertEqual(got[-1], "late")
        self.assertEqual(len(got), EVENTS_PER_TURN + 6)

    def test_closed_during_backlog(self) -> None:
        """A connection that ends while a backlog waits drops it."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        start = len(rec.events)
        client.protocol.dataReceived(self.flood(EVENTS_PER_TURN + 50))
        client.drop()
        harness.flush()
        got = [e for e in rec.events[start:] if e[0] == "on_message"]
        self.assertEqual(len(got), EVENTS_PER_TURN)
        self.assertEqual(rec.names()[-1], "on_disconnect")

    def test_large_read_in_slices(self) -> None:
        """A read larger than FEED_SLICE holding a large message and small
        ones delivers each, in order."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        big = b"y" * (3 * FEED_SLICE)
        client.send_raw(
            client_frame(1, b"a") + client_frame(2, big) + client_frame(1, b"b")
        )
        self.assertEqual(messages(rec), ["a", big, "b"])


class LargeMessageCopyTests(SynchronousTestCase):
    """Between the socket's read and ``on_binary`` a large message is
    copied once, when it is unmasked into the object the handler gets
    (issue 16, item 4): no join of reads, no copy in the dispatch."""

    def peak_per_payload(self, size: int, read: int | None) -> float:
        """The traced peak while a ``size``-byte binary message is fed in
        reads of ``read`` bytes (None: one read), over ``size``; the reads
        themselves exist before tracing starts, as the socket's would."""
        rec = Recorder()
        _, harness = make(rec, max_message_size=0, max_frame_size=0)
        client = harness.open()
        data = client_frame(2, bytes(range(256)) * (size // 256))
        reads = (
            [data]
            if read is None
            else [data[i : i + read] for i in range(0, len(data), read)]
        )
        tracemalloc.start()
        try:
            for chunk in reads:
                client.protocol.dataReceived(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        [got] = [e[1] for e in rec.events if e[0] == "on_binary"]
        self.assertEqual(got, bytes(range(256)) * (size // 256))
        self.assertIs(type(got), bytes)
        return peak / size

    def test_one_copy(self) -> None:
        """1 MiB in one read and in 64 KiB reads: the compiled codec's
        peak is the message itself (one copy, the unmasking); the Python
        codec's adds its assembly buffer (two)."""
        copies = 1 if _codec.IMPLEMENTATION == "c" else 2
        for read in (None, 65536):
            ratio = self.peak_per_payload(1 << 20, read)
            self.assertGreater(ratio, 1.0)
            self.assertLess(ratio, copies + 0.25, (read, ratio))


class ProtocolDutiesTests(SynchronousTestCase):
    """What the protocol does around the codec's events."""

    def test_ping_pong_and_counters(self) -> None:
        """A ping is answered and fired; reads and messages are counted."""
        rec = Recorder()
        _, harness = make(rec, idle_timeout=60)
        client = harness.open()
        client.send_raw(client_frame(9, b"p") + client_frame(1, b"m"))
        client.send_raw(client_frame(10, b"q"))
        self.assertEqual(
            rec.events[-3:], [("on_ping", b"p"), ("on_message", "m"), ("on_pong", b"q")]
        )
        self.assertEqual([(f.opcode, f.payload) for f in client.frames()], [(10, b"p")])
        ka = client.protocol.keepalive
        self.assertEqual((ka.reads, ka.messages), (2, 1))

    def test_manual_pong(self) -> None:
        """manual_pong: pings are not answered."""
        rec = Recorder()
        _, harness = make(rec, manual_pong=True)
        client = harness.open()
        client.send_ping(b"p")
        self.assertEqual(client.frames(), [])
        self.assertEqual(rec.events[-1], ("on_ping", b"p"))

    def test_close_answered_then_nothing(self) -> None:
        """A close frame is answered; bytes after it are not parsed."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_raw(client_frame(8, b"\x03\xe8bye") + client_frame(1, b"late"))
        self.assertEqual([f.close_code for f in client.frames()], [1000])
        self.assertNotIn(("on_message", "late"), rec.events)
        self.assertIn(("on_close", 1000, "bye"), rec.events)
        self.assertEqual(rec.events[-1], ("on_disconnect", True, 1000))

    def test_invalid_close_frame_answered(self) -> None:
        """An invalid close code gets a 1002 close frame, then TCP closes."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_raw(client_frame(8, b"\x03\xed"))  # 1005 may not be sent
        self.assertEqual([f.close_code for f in client.frames()], [1002])
        self.assertTrue(client.closed)
        self.assertNotIn("on_close", rec.names())
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 1002))

    def test_protocol_error_closes_after_close_frame(self) -> None:
        """A protocol error: on_error (ProtocolError), our close frame, then
        the TCP connection closes; later bytes are not read."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_raw(client_frame(0, b"x") + client_frame(1, b"never"))
        self.assertEqual([f.close_code for f in client.frames()], [1002])
        self.assertTrue(client.closed)
        self.assertEqual(
            rec.events[-2:],
            [("on_error", "ProtocolError"), ("on_disconnect", False, 1002)],
        )
        self.assertNotIn(("on_message", "never"), rec.events)

    def test_utf8_validation_off(self) -> None:
        """utf8_validation=False: invalid bytes arrive as U+FFFD."""
        rec = Recorder()
        _, harness = make(rec, utf8_validation=False)
        client = harness.open()
        client.send_raw(client_frame(1, b"a\xffb"))
        self.assertEqual(messages(rec), ["a\ufffdb"])

    def test_missing_handler_1003(self) -> None:
        """A binary message to a handler without on_binary: 1003."""

        class TextOnly:
            def on_message(self, conn: Any, text: str) -> None:
                pass

        _, harness = make(TextOnly())
        client = harness.open()
        client.send_binary(b"x")
        self.assertEqual([f.close_code for f in client.frames()], [1003])

    def test_receive_queue(self) -> None:
        """A handler without message events: messages queue for receive()."""

        class Quiet:
            def on_open(self, conn: Any) -> None:
                pass

        _, harness = make(Quiet())
        client = harness.open()
        client.send_text("queued")
        d = client.connection.receive()
        self.assertEqual(self.successResultOf(d), "queued")


class AssembleMessagesTests(SynchronousTestCase):
    """assemble_messages (sgc frgAll): each frame and the whole message."""

    def frames(self) -> bytes:
        return (
            client_frame(1, "h\u00e9".encode()[:2], fin=False)
            + client_frame(0, "h\u00e9".encode()[2:] + b"l", fin=False)
            + client_frame(0, b"lo")
        )

    def check(self, **options: Any) -> None:
        rec = Recorder()
        _, harness = make(rec, frame_by_frame=True, assemble_messages=True, **options)
        client = harness.open()
        start = len(rec.events)
        client.send_raw(self.frames())
        client.send_raw(client_frame(2, b"one"))
        self.assertEqual(
            rec.events[start:],
            [
                ("on_fragment", b"h\xc3", False, False),
                ("on_fragment", b"\xa9l", False, False),
                ("on_fragment", b"lo", False, True),
                ("on_message", "h\u00e9llo"),
                ("on_fragment", b"one", True, True),
                ("on_binary", b"one"),
            ],
        )

    def test_fast_path(self) -> None:
        """On the codec's path."""
        self.check()

    def test_autobahn_path(self) -> None:
        """On Autobahn's parser (as with permessage-deflate)."""
        self.patch(WebSocketServerProtocol, "fast_path", False)
        self.check()

    def test_deflate(self) -> None:
        """With permessage-deflate negotiated (Autobahn's parser)."""
        rec = Recorder()
        _, harness = make(
            rec, frame_by_frame=True, assemble_messages=True, compression=True
        )
        client = harness.open(
            headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        self.assertIsNone(client.protocol._reader)
        start = len(rec.events)
        client.send_raw(client_frame(2, b"ab", fin=False) + client_frame(0, b"c"))
        self.assertEqual(
            rec.events[start:],
            [
                ("on_fragment", b"ab", True, False),
                ("on_fragment", b"c", True, True),
                ("on_binary", b"abc"),
            ],
        )

    def limit(self, fast: bool) -> None:
        self.patch(WebSocketServerProtocol, "fast_path", fast)
        rec = Recorder()
        _, harness = make(
            rec, frame_by_frame=True, assemble_messages=True, max_message_size=10
        )
        client = harness.open()
        client.send_raw(client_frame(2, b"x" * 6, fin=False))
        client.send_raw(client_frame(0, b"y" * 6))
        self.assertEqual([f.close_code for f in client.frames()], [1009])
        self.assertNotIn("on_binary", rec.names())
        self.assertIn(("on_fragment", b"x" * 6, True, False), rec.events)
        self.assertNotIn(("on_fragment", b"y" * 6, True, True), rec.events)

    def test_limit_bounds_the_message(self) -> None:
        """max_message_size bounds the whole message (not each frame)."""
        self.limit(True)

    def test_limit_bounds_the_message_autobahn(self) -> None:
        """The same on Autobahn's parser."""
        self.limit(False)

    def test_only_fragments_wanted(self) -> None:
        """A handler with on_fragment only gets fragments, no 1003."""

        class Frames:
            def __init__(self) -> None:
                self.got: list[Any] = []

            def on_fragment(self, conn: Any, data: bytes, b: bool, fin: bool) -> None:
                self.got.append((data, fin))

        handler = Frames()
        _, harness = make(handler, frame_by_frame=True, assemble_messages=True)
        client = harness.open()
        client.send_raw(client_frame(2, b"a", fin=False) + client_frame(0, b"b"))
        self.assertEqual(handler.got, [(b"a", False), (b"b", True)])
        self.assertEqual(client.frames(), [])

    def test_needs_frame_by_frame(self) -> None:
        """assemble_messages without frame_by_frame is a config error."""
        with self.assertRaises(ConfigError) as e:
            ServerConfig(assemble_messages=True)
        self.assertIn("frame_by_frame", str(e.exception))
