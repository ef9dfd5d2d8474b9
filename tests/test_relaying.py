"""wsplugin._relaying: the client's side of a forwarded request, with fake
requests and upstream producers on a clock (no sockets)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import FileBodyProducer, ResponseFailed, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wsplugin._relaying import (
    MESSAGES,
    BodySpool,
    Call,
    Drop,
    Relay,
    describe,
    is_timeout,
    plain,
    render_instead,
    stop_producer,
)


class Request:
    """What the relaying code uses of a twisted.web request."""

    def __init__(self) -> None:
        self.finished_d: Deferred[None] = Deferred()
        self.channel: Any = object()
        self.code: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.written: list[bytes] = []
        self.finished = False
        self.producer: Any = None
        self.streaming: bool | None = None
        self.unregistered = 0

    def getClientAddress(self) -> Any:
        return IPv4Address("TCP", "192.0.2.5", 40000)

    def notifyFinish(self) -> Deferred[None]:
        return self.finished_d

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.unregistered += 1

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True


class Upstream:
    """The producer of an upstream response's body."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class BodySpoolTests(SynchronousTestCase):
    """The stored body of a forwarded request."""

    def test_small_body_in_memory(self) -> None:
        """A declared body under 100 kB is kept in memory, all of it."""
        spool = BodySpool(10)
        self.assertIsInstance(spool.file, BytesIO)
        spool.write(b"hello ")
        spool.write(b"world")
        self.assertEqual(spool.size, 11)
        self.assertEqual(spool.file.getvalue(), b"hello world")

    def test_large_or_unknown_body_in_a_file(self) -> None:
        """A large or undeclared (chunked) body goes to a temporary file."""
        for length in (100_000, None):
            spool = BodySpool(length)
            self.addCleanup(spool.close)
            self.assertNotIsInstance(spool.file, BytesIO)
            spool.write(b"x" * 5)
            spool.file.seek(0)
            self.assertEqual(spool.file.read(), b"xxxxx")
            self.assertEqual(spool.size, 5)

    def test_reads_as_empty(self) -> None:
        """Twisted reads nothing back (it would parse a form into memory)."""
        spool = BodySpool(3)
        spool.write(b"a=1")
        self.assertEqual((spool.read(), spool.tell(), spool.seek(0, 2)), (b"", 0, 0))
        spool.close()
        self.assertTrue(spool.file.closed)


class CallTests(SynchronousTestCase):
    """The link to the client."""

    def test_peer(self) -> None:
        """The client's host, for the log."""
        self.assertEqual(Call(Request()).peer, "192.0.2.5")

    def test_client_leaves(self) -> None:
        """When the client goes away, the pending upstream request is
        cancelled and the relay stopped."""
        request = Request()
        call = Call(request)
        cancelled: list[Failure] = []
        call.pending = Deferred()
        call.pending.addErrback(cancelled.append)
        relay = Relay(request, Clock(), 0)
        upstream = Upstream()
        relay.makeConnection(upstream)
        call.relay = relay
        request.finished_d.errback(Failure(ConnectionError("gone")))
        self.assertTrue(call.gone)
        self.assertTrue(cancelled[0].check(CancelledError))
        self.assertEqual(upstream.calls, ["stop"])

    def test_request_done(self) -> None:
        """A request that finishes normally stops nothing."""
        request = Request()
        call = Call(request)
        call.pending = Deferred()
        request.finished_d.callback(None)
        self.assertFalse(call.gone)
        self.assertFalse(call.pending.called)


class RelayTests(SynchronousTestCase):
    """The upstream's body relayed at the client's pace."""

    def relay(self, idle: float = 5.0) -> tuple[Relay, Request, Upstream, Clock]:
        request, upstream, clock = Request(), Upstream(), Clock()
        relay = Relay(request, clock, idle)
        relay.makeConnection(upstream)
        return relay, request, upstream, clock

    def test_relayed(self) -> None:
        """The relay registers as the request's streaming producer, writes
        what arrives, and fires ``done`` with the reason when it ends."""
        relay, request, upstream, _ = self.relay()
        self.assertIs(request.producer, relay)
        self.assertTrue(request.streaming)
        relay.dataReceived(b"ab")
        relay.dataReceived(b"c")
        self.assertEqual(request.written, [b"ab", b"c"])
        ended: list[list[Failure]] = []
        relay.done.addCallback(ended.append)
        reason = Failure(ResponseFailed([]))
        relay.connectionLost(reason)
        self.assertEqual(ended, [[reason]])
        self.assertEqual(request.unregistered, 1)
        self.assertEqual(upstream.calls, [])

    def test_stalled(self) -> None:
        """An upstream silent for ``idle`` seconds is stopped; data keeps
        it alive."""
        relay, _, upstream, clock = self.relay(idle=5.0)
        clock.advance(4)
        relay.dataReceived(b"x")
        clock.advance(4)
        self.assertFalse(relay.stalled)
        clock.advance(1)
        self.assertTrue(relay.stalled)
        self.assertEqual(upstream.calls, ["stop"])

    def test_client_pace(self) -> None:
        """The client's pause pauses the upstream and the idle timer (a
        silence the client causes is not the upstream's); resume re-arms."""
        relay, _, upstream, clock = self.relay(idle=5.0)
        relay.pauseProducing()
        clock.advance(60)
        self.assertFalse(relay.stalled)
        relay.resumeProducing()
        self.assertEqual(upstream.calls, ["pause", "resume"])
        clock.advance(5)
        self.assertTrue(relay.stalled)

    def test_no_idle_limit(self) -> None:
        """With idle 0 there is no timer."""
        relay, _, _, clock = self.relay(idle=0)
        self.assertEqual(clock.getDelayedCalls(), [])
        relay.dataReceived(b"x")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stop(self) -> None:
        """stop() (or the client's stopProducing) drops the upstream once,
        cancels the timer, and the end does not unregister again."""
        relay, request, upstream, clock = self.relay()
        relay.stopProducing()
        relay.stop()
        self.assertEqual(upstream.calls, ["stop"])
        self.assertEqual(clock.getDelayedCalls(), [])
        relay.connectionLost(Failure(ResponseFailed([])))
        self.assertEqual(request.unregistered, 0)

    def test_drop(self) -> None:
        """Drop closes the connection of a body nobody wants."""
        upstream = Upstream()
        Drop().makeConnection(upstream)
        self.assertEqual(upstream.calls, ["stop"])


class FailureTests(SynchronousTestCase):
    """Timeouts told apart, and short reasons for the log."""

    def test_is_timeout(self) -> None:
        """Connect and Deferred timeouts, also inside a client library
        failure's reasons; nothing else."""
        inside = ResponseNeverReceived([Failure(net_error.TimeoutError())])
        for timeout in (net_error.TimeoutError(), DeferredTimeout(), inside):
            self.assertTrue(is_timeout(Failure(timeout)), timeout)
        refused = ResponseNeverReceived([Failure(net_error.ConnectionRefusedError())])
        for other in (ValueError("x"), refused, ResponseFailed([])):
            self.assertFalse(is_timeout(Failure(other)), other)

    def test_describe(self) -> None:
        """The failure's kind and message, its reasons joined."""
        self.assertEqual(
            describe(Failure(ResponseFailed([Failure(ValueError("bad header")), "x"]))),
            "ResponseFailed: bad header; x",
        )
        self.assertEqual(
            describe(Failure(ResponseFailed([Failure(CancelledError())]))),
            "ResponseFailed: CancelledError",
        )
        self.assertEqual(describe(Failure(CancelledError())), "CancelledError")
        self.assertEqual(
            describe(Failure(net_error.ConnectionRefusedError())), "connection refused"
        )
        self.assertEqual(describe(Failure(ValueError("odd"))), "ValueError: odd")


class AnswerTests(SynchronousTestCase):
    """The short answers given instead of the upstream's."""

    def test_plain(self) -> None:
        """A status with its short plain-text body."""
        for status in (400, 500, 502, 504):
            request = Request()
            plain(request, status)
            self.assertEqual(request.code, status)
            self.assertEqual(request.written, [MESSAGES[status]])
            self.assertEqual(
                request.headers,
                {
                    b"content-type": b"text/plain; charset=utf-8",
                    b"content-length": b"%d" % len(MESSAGES[status]),
                },
            )
            self.assertTrue(request.finished)

    def test_plain_client_gone(self) -> None:
        """Nothing is written for a client that is gone."""
        request = Request()
        request.channel = None
        plain(request, 502)
        self.assertEqual(
            (request.code, request.written, request.finished), (None, [], False)
        )

    def test_render_instead(self) -> None:
        """A resource's body is sent with its length; one that answers
        later (NOT_DONE_YET) finishes by itself."""

        class Page(Resource):
            """Answers at once."""

            def render(self, request: Any) -> bytes:
                return b"local"

        class Later(Resource):
            """Answers later."""

            def render(self, request: Any) -> Any:
                return NOT_DONE_YET

        request = Request()
        render_instead(request, Page())
        self.assertEqual(request.written, [b"local"])
        self.assertEqual(request.headers, {b"content-length": b"5"})
        self.assertTrue(request.finished)
        request = Request()
        render_instead(request, Later())
        self.assertEqual((request.written, request.finished), ([], False))


class StopProducerTests(SynchronousTestCase):
    """A request body producer stopped without surprises."""

    def test_never_started(self) -> None:
        """A FileBodyProducer that never started is stopped quietly (its
        file closed)."""
        body = BytesIO(b"data")
        producer = FileBodyProducer(body)
        stop_producer(producer)
        self.assertTrue(body.closed)
        stop_producer(producer)  # again: its file already closed

    def test_other_producers_left_alone(self) -> None:
        """Only FileBodyProducer (what the forwarder makes) is stopped."""
        other = Upstream()
        stop_producer(other)
        stop_producer(None)
        self.assertEqual(other.calls, [])
