"""wsplugin._sendqueue: control frames first, bounded, drained; the policy."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsplugin._frames import OP_PING, OP_PONG, OP_TEXT, encode_frame
from wsplugin._sendqueue import (
    MAX_CONTROL_QUEUE,
    WAIT_HARD_CAP,
    Admission,
    SendQueue,
    admission,
)
from wsplugin.errors import ConnectionClosed


class Sink:
    """A transport's ``write`` and the queue's ``on_empty``, recorded."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.emptied = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def empty(self) -> None:
        self.emptied += 1


def queue() -> tuple[SendQueue, Sink]:
    sink = Sink()
    return SendQueue(sink.write, sink.empty), sink


class AdmissionTests(SynchronousTestCase):
    """The send-buffer policies, as values."""

    def test_within_limit_or_no_limit(self) -> None:
        """Under the limit, at it, or with no limit: send."""
        self.assertIs(admission(10, 100, "close"), Admission.SEND)
        self.assertIs(admission(100, 100, "drop"), Admission.SEND)
        self.assertIs(admission(10**9, 0, "close"), Admission.SEND)

    def test_over_limit(self) -> None:
        """Over it: close, drop, or wait up to WAIT_HARD_CAP times the limit."""
        self.assertIs(admission(101, 100, "close"), Admission.CLOSE)
        self.assertIs(admission(101, 100, "drop"), Admission.DROP)
        self.assertIs(admission(101, 100, "wait"), Admission.WAIT)
        self.assertIs(admission(WAIT_HARD_CAP * 100, 100, "wait"), Admission.WAIT)
        self.assertIs(admission(WAIT_HARD_CAP * 100 + 1, 100, "wait"), Admission.CLOSE)


class QueueTests(SynchronousTestCase):
    """Queuing while the transport is full."""

    def test_passing_until_paused(self) -> None:
        """A new queue lets writes through; paused or holding data, it does not."""
        q, _ = queue()
        self.assertTrue(q.passing)
        q.pause()
        self.assertFalse(q.passing)
        q.resume()
        self.assertTrue(q.passing)
        q.push(b"x")
        self.assertFalse(q.passing)

    def test_order_and_control_first(self) -> None:
        """Data goes out in order, after any control frame queued meanwhile."""
        q, sink = queue()
        q.pause()
        q.push(b"a")
        q.push(b"bb")
        q.push_control(encode_frame(OP_PING, b"p"))
        self.assertEqual(q.queued, 3)
        self.assertEqual(sink.written, [])
        q.resume()
        self.assertEqual(sink.written, [encode_frame(OP_PING, b"p"), b"a", b"bb"])
        self.assertEqual((q.queued, q.queuing, sink.emptied), (0, False, 1))

    def test_latest_pong_only(self) -> None:
        """A pong replaces the pong still waiting (RFC 6455 5.5.3)."""
        q, sink = queue()
        q.pause()
        for i in range(100):
            q.push_control(encode_frame(OP_PONG, b"%d" % i))
        self.assertEqual(q.control_count, 1)
        q.resume()
        self.assertEqual(sink.written, [encode_frame(OP_PONG, b"99")])

    def test_control_bounded(self) -> None:
        """At most MAX_CONTROL_QUEUE control frames wait; later ones are dropped."""
        q, _ = queue()
        q.pause()
        for i in range(MAX_CONTROL_QUEUE + 10):
            q.push_control(encode_frame(OP_PING, b"%d" % i))
        self.assertEqual(q.control_count, MAX_CONTROL_QUEUE)

    def test_pause_mid_flush(self) -> None:
        """A transport that fills again while flushing stops the flush."""
        sink = Sink()
        q = SendQueue(lambda data: (sink.write(data), q.pause()), sink.empty)
        q.pause()
        q.push(b"1")
        q.push(b"2")
        q.resume()
        self.assertEqual(sink.written, [b"1"])
        self.assertEqual(q.queued, 1)
        q.resume()
        self.assertEqual(sink.written, [b"1", b"2"])

    def test_drop_data_keeps_control(self) -> None:
        """drop_data (an overflow close) forgets data, not control frames."""
        q, sink = queue()
        q.pause()
        q.push(b"data")
        q.push_control(encode_frame(OP_PING, b""))
        q.drop_data()
        self.assertEqual(q.queued, 0)
        q.resume()
        self.assertEqual(sink.written, [encode_frame(OP_PING, b"")])


class DrainTests(SynchronousTestCase):
    """drain() fires once the queue is empty, or fails when it is cleared."""

    def test_drain_now_when_empty(self) -> None:
        """Nothing queued: drain has fired already."""
        q, _ = queue()
        self.assertIsNone(self.successResultOf(q.drain()))

    def test_drain_after_flush(self) -> None:
        """Queued data: drain fires when the last byte is written."""
        q, _ = queue()
        q.pause()
        q.push(b"x")
        d = q.drain()
        self.assertNoResult(d)
        q.resume()
        self.assertIsNone(self.successResultOf(d))

    def test_clear_fails_waiters(self) -> None:
        """The connection ended: waiters fail with the error given."""
        q, _ = queue()
        q.pause()
        q.push(b"x")
        d = q.drain()
        q.clear(ConnectionClosed(1006, ""))
        self.failureResultOf(d, ConnectionClosed)
        self.assertEqual((q.queued, q.queuing), (0, False))

    def test_drain_after_end(self) -> None:
        """Asked after the end with data still held, drain fails at once."""
        q, _ = queue()
        q.pause()
        q.push(b"x")
        self.failureResultOf(q.drain(ConnectionClosed(1000, "")), ConnectionClosed)


class FragmentTests(SynchronousTestCase):
    """Prepared frames wait behind a message sent frame by frame."""

    def test_hold_until_finished(self) -> None:
        """hold() keeps frames in order; finish_message() gives them back once."""
        q, _ = queue()
        q.fragmenting = True
        q.hold(encode_frame(OP_TEXT, b"a"))
        q.hold(encode_frame(OP_TEXT, b"b"))
        held = q.finish_message()
        self.assertEqual(
            held, [encode_frame(OP_TEXT, b"a"), encode_frame(OP_TEXT, b"b")]
        )
        self.assertFalse(q.fragmenting)
        self.assertEqual(q.finish_message(), [])
