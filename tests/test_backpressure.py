"""The outgoing queue: bounded per connection, control frames first, policies.

The transport's "buffer full" signal is simulated by calling the protocol's
``pauseProducing()`` (what Twisted's transport calls on its push producer) and
``resumeProducing()`` when it drains.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import ConnectionClosed


def stalled(
    policy: str = "close", limit: int = 1000, **options: Any
) -> tuple[Any, Any]:
    """A server and one open client whose transport reports a full buffer."""
    server, harness = make(
        Recorder(),
        max_send_buffer=limit,
        send_buffer_policy=policy,
        heartbeat_interval=0,
        heartbeat_timeout=0,
        **options,
    )
    client = harness.open()
    client.protocol.pauseProducing()
    return server, client


class QueueTests(SynchronousTestCase):
    """While the transport is full, data waits in order; pongs go first."""

    def test_queued_then_flushed_in_order(self) -> None:
        """Nothing is written while paused; everything is, in order, on resume."""
        _, client = stalled(limit=0)
        for i in range(5):
            client.connection.send_text(str(i))
        self.assertEqual(client.transport.value(), b"")
        self.assertGreater(client.connection.buffered_amount, 0)
        client.protocol.resumeProducing()
        self.assertEqual(client.messages(), ["0", "1", "2", "3", "4"])
        self.assertEqual(client.connection.buffered_amount, 0)

    def test_pong_ahead_of_data(self) -> None:
        """A pong for a ping that arrives while data is queued goes out first."""
        _, client = stalled(limit=0)
        client.connection.send_text("bulk")
        client.send_ping(b"p")
        client.protocol.resumeProducing()
        self.assertEqual([f.opcode for f in client.frames()], [10, 1])

    def test_ping_flood_bounded(self) -> None:
        """Thousands of pings while the client never reads keep one pong."""
        _, client = stalled(limit=0)
        for i in range(5000):
            client.send_ping(b"%d" % i)
        self.assertLessEqual(client.protocol.outbox.control_count, 1)
        client.protocol.resumeProducing()
        self.assertEqual(
            [(f.opcode, f.payload) for f in client.frames()], [(10, b"4999")]
        )

    def test_close_after_queued_data(self) -> None:
        """Our close frame waits behind queued data: nothing sent is lost."""
        _, client = stalled(limit=0)
        client.connection.send_text("last words")
        client.connection.close(1001, "bye")
        client.protocol.resumeProducing()
        frames = client.frames()
        self.assertEqual(
            [(f.opcode, f.payload[:10]) for f in frames][0], (1, b"last words")
        )
        self.assertEqual(frames[-1].close_code, 1001)


class PolicyTests(SynchronousTestCase):
    """What happens past max_send_buffer."""

    def test_single_large_message_accepted(self) -> None:
        """A message larger than the limit is accepted into an empty queue."""
        _, client = stalled(limit=100)
        client.connection.send_binary(b"x" * 10_000)
        self.assertTrue(client.connection.is_open)
        client.protocol.resumeProducing()
        self.assertEqual(client.messages(), [b"x" * 10_000])

    def test_close_policy(self) -> None:
        """Over the limit, "close" frees the queue and closes with 1008."""
        server, client = stalled("close", limit=1000)
        for _ in range(3):
            server.broadcast("y" * 600)
        # the queued data is freed; only the close frame itself waits
        self.assertLess(client.connection.buffered_amount, 130)
        self.assertFalse(client.connection.is_open)
        client.protocol.resumeProducing()
        frames = client.frames()
        self.assertEqual(
            [(f.close_code, f.close_reason) for f in frames[-1:]],
            [(1008, "send buffer overflow")],
        )
        self.assertRaises(ConnectionClosed, client.connection.send_text, "z")

    def test_drop_policy(self) -> None:
        """Over the limit, "drop" skips and counts messages for that client."""
        server, client = stalled("drop", limit=1000)
        sent = [server.broadcast(f"m{i}" + "." * 600) for i in range(4)]
        self.assertEqual(sent, [1, 1, 0, 0])
        self.assertEqual(client.connection.dropped_messages, 2)
        client.protocol.resumeProducing()
        self.assertEqual(len(client.messages()), 2)
        self.assertEqual(server.broadcast("after"), 1)
        self.assertEqual(client.messages(), ["after"])

    def test_wait_policy(self) -> None:
        """Over the limit, "wait" queues, pauses reading, and drain() fires
        once the queue is written; past 8 x the limit it closes."""
        _, client = stalled("wait", limit=1000)
        conn = client.connection
        conn.send_text("a" * 800)
        conn.send_text("b" * 800)
        conn.send_text("c" * 800)
        self.assertTrue(conn.is_open)
        self.assertEqual(client.transport.producerState, "paused")
        drained = conn.drain()
        self.assertNoResult(drained)
        client.protocol.resumeProducing()
        self.successResultOf(drained)
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(len(client.messages()), 3)
        client.protocol.pauseProducing()
        for _ in range(12):
            if conn.is_open:
                conn.send_text("d" * 800)
        self.assertFalse(conn.is_open)
        self.assertLessEqual(conn.buffered_amount, 8 * 1000 + 800)

    def test_drain_fails_when_connection_ends(self) -> None:
        """A pending drain() fails with ConnectionClosed if the client goes."""
        _, client = stalled("wait", limit=0)
        client.connection.send_text("x")
        drained = client.connection.drain()
        client.drop()
        self.failureResultOf(drained, ConnectionClosed)


class LingerAndLogTests(SynchronousTestCase):
    """A graceful close cannot hang on a non-reader; problem logs are bounded."""

    def test_linger_abort(self) -> None:
        """The peer starts the close but never reads the data queued ahead of
        our reply: the TCP connection is aborted after close_handshake_timeout
        instead of waiting for ever."""
        _, client = stalled(limit=0, close_handshake_timeout=2)
        closing: list[bool] = []
        # a real transport finishes loseConnection only once its buffer is
        # written, which never happens for a peer that does not read
        client.transport.loseConnection = lambda: closing.append(True)  # type: ignore[method-assign]
        client.connection.send_text("x" * 1000)
        client.send_close(1000)
        self.assertEqual((closing, client.transport.aborted), ([True], False))
        client.harness.advance(1.9)
        self.assertFalse(client.transport.aborted)
        client.harness.advance(0.2)
        client.harness.flush()
        self.assertTrue(client.transport.aborted)

    def test_problem_logs_rate_limited(self) -> None:
        """50 protocol violations in a burst log 20 lines, then one summary."""
        server, harness = make(Recorder())
        with capturedLogs() as events:
            for _ in range(50):
                harness.open().send_frame(1, b"\xff")
            harness.advance(11)
            harness.open().send_frame(1, b"\xff")
        texts = [formatEvent(e) for e in events]
        failing = [t for t in texts if t.startswith("failing connection")]
        self.assertEqual(len(failing), 21)
        self.assertIn("30 similar connection problems were not logged", texts)
