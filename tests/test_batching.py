"""wsplugin._batching: one flush per reactor turn; what the socket takes now."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._batching import TurnBatcher, send_now


class Sink:
    def __init__(self, peer: str, fail: bool = False) -> None:
        self.peer = peer
        self.fail = fail
        self.flushed = 0

    def flush_batch(self) -> None:
        self.flushed += 1
        if self.fail:
            raise RuntimeError("socket gone")


class TurnBatcherTests(SynchronousTestCase):
    """Connections that collected writes are flushed when the turn ends."""

    def test_one_call_per_turn(self) -> None:
        """Any number of connections share one delayed call; each is flushed
        once, at the end of the turn, in the order they were added."""
        clock = Clock()
        batcher = TurnBatcher(clock, Logger())
        order: list[str] = []
        sinks = [Sink(f"p{i}") for i in range(3)]
        for sink in sinks:
            sink.flush_batch = lambda s=sink: order.append(s.peer)  # type: ignore[method-assign]
            batcher.add(sink)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.assertEqual(batcher.pending, 3)
        self.assertEqual(order, [])
        clock.advance(0)
        self.assertEqual(order, ["p0", "p1", "p2"])
        self.assertEqual(batcher.pending, 0)
        batcher.add(sinks[0])
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_failure_isolated(self) -> None:
        """A connection whose flush raises is logged; the others are flushed."""
        clock = Clock()
        batcher = TurnBatcher(clock, Logger())
        bad, good = Sink("bad", fail=True), Sink("good")
        batcher.add(bad)
        batcher.add(good)
        with capturedLogs() as events:
            clock.advance(0)
        self.assertEqual(good.flushed, 1)
        failed = [e for e in events if "log_failure" in e]
        self.assertEqual([e["peer"] for e in failed], ["bad"])
        self.assertTrue(failed[0]["log_failure"].check(RuntimeError))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FakeSocket:
    def __init__(self, takes: int | None, error: bool = False) -> None:
        self.takes = takes
        self.error = error

    def send(self, data: bytes) -> int:
        if self.error:
            raise BlockingIOError()
        return len(data) if self.takes is None else min(self.takes, len(data))


class FakeTransport:
    def __init__(self, sock: Any) -> None:
        self.socket = sock
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


class SendNowTests(SynchronousTestCase):
    """send_now: the socket first, the transport for the rest."""

    def test_all_taken(self) -> None:
        """The socket takes everything: the transport gets nothing."""
        transport = FakeTransport(FakeSocket(None))
        send_now(transport, b"abc", True)
        self.assertEqual(transport.written, [])

    def test_rest_to_transport(self) -> None:
        """What the socket does not take goes to the transport, in order."""
        transport = FakeTransport(FakeSocket(2))
        send_now(transport, b"abcde", True)
        self.assertEqual(transport.written, [b"cde"])

    def test_error_or_not_writable(self) -> None:
        """EAGAIN, or a transport that holds data: all through the transport."""
        transport = FakeTransport(FakeSocket(None, error=True))
        send_now(transport, b"abc", True)
        self.assertEqual(transport.written, [b"abc"])
        transport = FakeTransport(FakeSocket(None))
        send_now(transport, b"xyz", False)
        self.assertEqual(transport.written, [b"xyz"])
