"""wsplugin._receiving: Autobahn's frames in, whole messages to dispatch."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin._receiving import READ_SLICE
from wsplugin.testing import client_frame


class ReadTests(SynchronousTestCase):
    """Reads of any size reach the handler as whole messages."""

    def test_large_read_of_small_frames(self) -> None:
        """A read far larger than READ_SLICE, of small messages, delivers
        every one, in order."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        count = 3 * READ_SLICE // 10
        data = b"".join(client_frame(1, b"%04d" % i) for i in range(count))
        self.assertGreater(len(data), READ_SLICE)
        client.send_raw(data)
        got = [e[1] for e in rec.events if e[0] == "on_message"]
        self.assertEqual(got, [f"{i:04d}" for i in range(count)])

    def test_large_frame_in_one_read(self) -> None:
        """A frame larger than a slice is read whole."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_raw(client_frame(2, b"x" * (5 * READ_SLICE)))
        self.assertEqual(
            [e[1] for e in rec.events if e[0] == "on_binary"], [b"x" * (5 * READ_SLICE)]
        )

    def test_run_of_continuations(self) -> None:
        """A message in many tiny continuation frames is assembled."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        frames = [client_frame(1, b"a", fin=False)]
        frames += [client_frame(0, b"b", fin=False) for _ in range(1000)]
        frames.append(client_frame(0, b"c"))
        client.send_raw(b"".join(frames))
        self.assertEqual(rec.events[-1], ("on_message", "a" + "b" * 1000 + "c"))


class CountingTests(SynchronousTestCase):
    """Reads and messages are counted for keep-alive."""

    def test_counters(self) -> None:
        """Every read counts for the heartbeat, every message for idle."""
        _, harness = make(Recorder(), idle_timeout=60)
        client = harness.open()
        ka = client.protocol.keepalive
        client.send_text("one")
        client.send_ping(b"")
        self.assertEqual((ka.reads, ka.messages), (2, 1))

    def test_nothing_after_peer_close(self) -> None:
        """manual_close: a message after the peer's close frame is ignored."""
        rec = Recorder()
        _, harness = make(rec, manual_close=True)
        client = harness.open()
        client.send_raw(client_frame(8, b"\x03\xe8") + client_frame(1, b"late"))
        self.assertNotIn(("on_message", "late"), rec.events)
        self.assertIn(("on_close", 1000, ""), rec.events)


class FrameByFrameTests(SynchronousTestCase):
    """frame_by_frame: each frame as it ends, the last one after the checks."""

    def test_fragments(self) -> None:
        """Every frame reaches on_fragment with its fin bit."""
        rec = Recorder()
        _, harness = make(rec, frame_by_frame=True)
        client = harness.open()
        client.send_raw(client_frame(1, b"ab", fin=False) + client_frame(0, b"c"))
        frags: list[Any] = [e[1:] for e in rec.events if e[0] == "on_fragment"]
        self.assertEqual(frags, [(b"ab", False, False), (b"c", False, True)])
