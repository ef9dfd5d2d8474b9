"""The Connection facade: user data, sending rules, awaitable receive."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import (
    CloseMessage,
    ConnectionClosed,
    ConnectionState,
    Fragment,
    FragmentedSendError,
    InvalidCloseCode,
    Message,
    ReceiveTimeout,
    WSPluginError,
)
from wsplugin.connection import MAX_PONGS


class Quiet:
    """A handler without message events: messages go to receive()."""


class Pongs(Recorder):
    """A handler that takes messages itself (on_message, on_pong)."""


class Resource:
    """User data that records being released."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class UserDataTests(SynchronousTestCase):
    """user_data with owns_user_data (TMS UserData/OwnsUserData)."""

    def test_owned_released(self) -> None:
        """Owned data has close() called once when the connection ends."""
        _, harness = make(Recorder())
        client = harness.open()
        data = Resource()
        client.connection.user_data = data
        client.connection.owns_user_data = True
        client.drop()
        self.assertEqual(data.closed, 1)
        self.assertIsNone(client.connection.user_data)

    def test_not_owned_left_alone(self) -> None:
        """Data not owned is neither closed nor cleared."""
        _, harness = make(Recorder())
        client = harness.open()
        data = Resource()
        client.connection.user_data = data
        client.drop()
        self.assertEqual(data.closed, 0)
        self.assertIs(client.connection.user_data, data)

    def test_assigned_in_handshake_response_sent(self) -> None:
        """The seed's pattern: assign an id object in on_handshake_response_sent."""

        class Assign(Recorder):
            def on_handshake_response_sent(self, conn: Any) -> None:
                conn.owns_user_data = True
                conn.user_data = Resource()

        _, harness = make(Assign())
        client = harness.open()
        data = client.connection.user_data
        self.assertIsInstance(data, Resource)
        client.send_close(1000)
        harness.flush()
        self.assertEqual(data.closed, 1)


class StateAndSendingTests(SynchronousTestCase):
    """State transitions and what may be sent when."""

    def test_states(self) -> None:
        """open after the handshake, closing after our close, closed at the end."""
        _, harness = make(Recorder())
        client = harness.open()
        conn = client.connection
        self.assertEqual(conn.state, ConnectionState.OPEN)
        conn.close(1000, "done")
        self.assertEqual(conn.state, ConnectionState.CLOSING)
        self.assertEqual(
            [(f.close_code, f.close_reason) for f in client.frames()], [(1000, "done")]
        )
        client.send_close(1000)
        self.assertEqual(conn.state, ConnectionState.CLOSED)
        self.assertEqual(conn.close_code, 1000)

    def test_send_after_close_raises(self) -> None:
        """Sending on a closed connection raises ConnectionClosed."""
        _, harness = make(Recorder())
        client = harness.open()
        client.drop()
        self.assertRaises(ConnectionClosed, client.connection.send_text, "x")
        self.assertRaises(ConnectionClosed, client.connection.send_binary, b"x")

    def test_close_codes(self) -> None:
        """Codes RFC 6455 forbids sending are refused; 1011 and 4000 are fine."""
        _, harness = make(Recorder())
        conn = harness.open().connection
        for bad in (999, 1004, 1005, 1006, 1015, 2000, 5000):
            self.assertRaises(InvalidCloseCode, conn.close, bad)
        self.assertRaises(InvalidCloseCode, conn.close, None, "reason without code")
        conn.close(1011)

    def test_send_frame_fragments(self) -> None:
        """send_frame opens a message, continues it, and fin ends it; a whole
        message in between is refused."""
        _, harness = make(Recorder())
        client = harness.open()
        conn = client.connection
        conn.send_frame(b"ab", is_binary=True, fin=False)
        self.assertRaises(FragmentedSendError, conn.send_text, "no")
        conn.send_frame(b"cd", fin=True)
        conn.send_text("after")
        frames = client.frames()
        self.assertEqual(
            [(f.opcode, f.fin, f.payload) for f in frames],
            [(2, False, b"ab"), (0, True, b"cd"), (1, True, b"after")],
        )

    def test_ping_payload_limit(self) -> None:
        """A ping payload over 125 bytes is a ValueError."""
        _, harness = make(Recorder())
        conn = harness.open().connection
        self.assertRaises(ValueError, conn.ping, b"x" * 126)


class ReceiveTests(SynchronousTestCase):
    """await conn.receive() and async for, when the handler has no on_message."""

    def test_receive_queue(self) -> None:
        """Messages queue in order; receive() returns them, then waits."""

        class Quiet:
            pass

        _, harness = make(Quiet())
        client = harness.open()
        client.send_text("one")
        client.send_binary(b"two")
        conn = client.connection
        self.assertEqual(self.successResultOf(conn.receive()), "one")
        self.assertEqual(self.successResultOf(conn.receive()), b"two")
        pending = conn.receive()
        self.assertNoResult(pending)
        client.send_text("three")
        self.assertEqual(self.successResultOf(pending), "three")

    def test_receive_after_close(self) -> None:
        """A pending receive fails with ConnectionClosed carrying the code."""

        class Quiet:
            pass

        _, harness = make(Quiet())
        client = harness.open()
        pending = client.connection.receive()
        client.send_close(4001, "x")
        failure = self.failureResultOf(pending, ConnectionClosed)
        self.assertEqual(failure.value.code, 4001)

    def test_async_for_loop(self) -> None:
        """The Sparkle echo loop: async for echoes until the peer closes."""
        done: list[str] = []

        class Loop:
            def on_open(self, conn: Any) -> Deferred[None]:
                async def run() -> None:
                    async for message in conn:
                        conn.send_text("echo: " + message)
                    done.append("loop ended")

                return Deferred.fromCoroutine(run())

        _, harness = make(Loop())
        client = harness.open()
        client.send_text("a")
        client.send_text("b")
        self.assertEqual(client.messages(), ["echo: a", "echo: b"])
        client.send_close(1000)
        self.assertEqual(done, ["loop ended"])

    def test_backpressure_pauses_reading(self) -> None:
        """A full receive queue pauses the transport; draining resumes it."""

        class Quiet:
            pass

        _, harness = make(Quiet(), max_queue=4)
        client = harness.open()
        for i in range(4):
            client.send_text(str(i))
        self.assertEqual(client.transport.producerState, "paused")
        conn = client.connection
        for i in range(4):
            self.assertEqual(self.successResultOf(conn.receive()), str(i))
        self.assertEqual(client.transport.producerState, "producing")

    def test_fragments_queue(self) -> None:
        """In frame mode without on_fragment, frames queue as Fragment objects."""

        class Quiet:
            pass

        _, harness = make(Quiet(), frame_by_frame=True)
        client = harness.open()
        client.send_frame(1, b"a", fin=False)
        client.send_frame(0, b"b", fin=True)
        conn = client.connection
        self.assertEqual(
            self.successResultOf(conn.receive()), Fragment(b"a", False, False)
        )
        self.assertEqual(
            self.successResultOf(conn.receive()), Fragment(b"b", False, True)
        )


class HeadersCompactTests(SynchronousTestCase):
    """An open connection holds its request headers as one string until they
    are read again; reading gives exactly what arrived."""

    def test_round_trip_after_open(self) -> None:
        from wsplugin.connection import Headers

        rec = Recorder()
        _, harness = make(rec)
        client = harness.open(
            headers=[
                ("Cookie", "a=1"),
                ("X-Thing", "one: two"),
                ("cookie", "b=2"),
                ("X-Empty", ""),
            ]
        )
        headers = client.connection.request.headers
        self.assertIsInstance(headers, Headers)
        self.assertIsNone(headers._pairs_kept)  # compacted when it opened
        self.assertEqual(headers["x-thing"], "one: two")
        self.assertEqual(headers.get_all("COOKIE"), ["a=1", "b=2"])
        self.assertEqual(headers["X-Empty"], "")
        self.assertEqual(client.connection.request.cookies, {"a": "1", "b": "2"})
        names = [name for name, _ in headers.raw()]
        self.assertEqual(names[-4:], ["Cookie", "X-Thing", "cookie", "X-Empty"])

    def test_unpackable_pairs_stay(self) -> None:
        """Pairs that would not survive packing (built by hand) are kept."""
        from wsplugin.connection import Headers

        odd = Headers((("a:b", "c"), ("d", "e\nf")))
        odd.compact()
        self.assertEqual(odd.raw(), (("a:b", "c"), ("d", "e\nf")))
        plain = Headers((("A", "1"), ("B", "2:3")))
        plain.compact()
        self.assertEqual(plain.raw(), (("A", "1"), ("B", "2:3")))
        self.assertEqual(Headers(())._pairs, ())
        empty = Headers(())
        empty.compact()
        self.assertEqual((empty.raw(), len(empty)), ((), 0))


class ReceiveCloseTests(SynchronousTestCase):
    """With manual_close, receive() yields the peer's close frame as a
    CloseMessage (seed: Sparkle Receive returning a Close message)."""

    def test_receive_loop_answers_close(self) -> None:
        """The Sparkle loop: messages, then the close message, answered with
        conn.close(); the connection then ends cleanly and the loop ends."""
        seen: list[Any] = []

        class Loop:
            def on_open(self, conn: Any) -> Deferred[None]:
                async def run() -> None:
                    async for message in conn:
                        seen.append(message)
                        if isinstance(message, CloseMessage):
                            conn.close(message.code, "bye too")
                    seen.append("loop ended")

                return Deferred.fromCoroutine(run())

            def on_disconnect(
                self, conn: Any, was_clean: bool, code: Any, reason: str
            ) -> None:
                seen.append(("on_disconnect", was_clean, code))

        _, harness = make(Loop(), manual_close=True)
        client = harness.open()
        client.send_text("hi")
        client.send_close(4002, "bye")
        self.assertEqual(
            [(f.close_code, f.close_reason) for f in client.frames()],
            [(4002, "bye too")],
        )
        self.assertTrue(client.transport.lost)
        self.assertEqual(
            seen,
            [
                "hi",
                CloseMessage(4002, "bye"),
                ("on_disconnect", True, 4002),
                "loop ended",
            ],
        )

    def test_close_without_code(self) -> None:
        """A close frame without a code is CloseMessage(1005, "")."""
        _, harness = make(Quiet(), manual_close=True)
        client = harness.open()
        client.send_close(None)
        conn = client.connection
        self.assertEqual(self.successResultOf(conn.receive()), CloseMessage(1005, ""))
        self.assertEqual(conn.state, ConnectionState.CLOSING)

    def test_pending_receive_gets_close(self) -> None:
        """A receive() already waiting gets the close message."""
        _, harness = make(Quiet(), manual_close=True)
        client = harness.open()
        pending = client.connection.receive()
        client.send_close(1000, "done")
        self.assertEqual(self.successResultOf(pending), CloseMessage(1000, "done"))

    def test_unanswered_close_ends_receive(self) -> None:
        """If the loop does not answer, the connection is dropped after
        close_handshake_timeout and receive() fails with ConnectionClosed."""
        _, harness = make(Quiet(), manual_close=True, close_handshake_timeout=2)
        client = harness.open()
        client.send_close(1000)
        conn = client.connection
        self.successResultOf(conn.receive())
        pending = conn.receive()
        self.assertNoResult(pending)
        harness.advance(2)
        self.failureResultOf(pending, ConnectionClosed)

    def test_without_manual_close(self) -> None:
        """Without manual_close the server answers, and receive() ends with
        ConnectionClosed (no close message)."""
        _, harness = make(Quiet())
        client = harness.open()
        client.send_close(1000)
        self.failureResultOf(client.connection.receive(), ConnectionClosed)

    def test_handler_gets_on_close(self) -> None:
        """A handler that takes messages gets on_close; nothing is queued."""
        rec = Recorder()
        _, harness = make(rec, manual_close=True)
        client = harness.open()
        client.send_close(1000, "x")
        self.assertIn(("on_close", 1000, "x"), rec.events)
        self.assertIsNone(client.connection._queue)


class WaitForMessageTests(SynchronousTestCase):
    """wait_for_message(kinds, timeout) as the client has it (FPC
    WaitForMessage / WaitForPongMessage)."""

    def test_wait_for_pong(self) -> None:
        """ping, then wait for the pong: fires with Message("pong", payload)."""
        _, harness = make(Quiet())
        client = harness.open()
        conn = client.connection
        conn.ping(b"are you there")
        d = conn.wait_for_message("pong", timeout=5)
        self.assertNoResult(d)
        client.send_pong(b"are you there")
        self.assertEqual(self.successResultOf(d), Message("pong", b"are you there"))

    def test_wait_for_pong_with_handler(self) -> None:
        """On a connection whose handler takes messages, pongs can still be
        waited for; on_pong sees them too."""
        rec = Pongs()
        _, harness = make(rec)
        client = harness.open()
        conn = client.connection
        d = conn.wait_for_message(("pong",))
        client.send_pong(b"p")
        self.assertEqual(self.successResultOf(d).data, b"p")
        self.assertIn(("on_pong", b"p"), rec.events)
        # not kept when nobody waits: on_pong had it
        client.send_pong(b"q")
        self.assertIsNone(conn._queue)
        self.assertRaises(WSPluginError, conn.wait_for_message, ("text", "pong"))
        self.assertRaises(WSPluginError, conn.receive)

    def test_kinds_keep_order(self) -> None:
        """Other kinds stay queued, in order, for receive() or a later call;
        receive() never returns pongs."""
        _, harness = make(Quiet())
        client = harness.open()
        client.send_text("one")
        client.send_pong(b"p1")
        client.send_binary(b"two")
        client.send_pong(b"p2")
        conn = client.connection
        self.assertEqual(
            self.successResultOf(conn.wait_for_message("binary")),
            Message("binary", b"two"),
        )
        self.assertEqual(
            self.successResultOf(conn.wait_for_message("pong")), Message("pong", b"p1")
        )
        self.assertEqual(self.successResultOf(conn.receive()), "one")
        self.assertNoResult(conn.receive())
        self.assertEqual(
            self.successResultOf(conn.wait_for_message()), Message("pong", b"p2")
        )

    def test_default_kinds_and_text(self) -> None:
        """Without kinds, text, binary and pongs are waited for."""
        _, harness = make(Quiet())
        client = harness.open()
        d = client.connection.wait_for_message()
        client.send_text("héllo")
        message = self.successResultOf(d)
        self.assertEqual((message.kind, message.text), ("text", "héllo"))

    def test_close_kind(self) -> None:
        """With manual_close, "close" waits for the peer's close frame."""
        _, harness = make(Quiet(), manual_close=True)
        client = harness.open()
        conn = client.connection
        d = conn.wait_for_message("close")
        client.send_text("skipped for now")
        self.assertNoResult(d)
        client.send_close(1001, "away")
        message = self.successResultOf(d)
        self.assertEqual(message, Message("close", CloseMessage(1001, "away")))
        self.assertEqual(message.text, "away")
        self.assertEqual(self.successResultOf(conn.receive()), "skipped for now")

    def test_timeout(self) -> None:
        """No such message in time: ReceiveTimeout (a TimeoutError); a later
        pong is kept for the next call."""
        _, harness = make(Quiet())
        client = harness.open()
        conn = client.connection
        d = conn.wait_for_message("pong", timeout=3)
        harness.advance(2.9)
        self.assertNoResult(d)
        harness.advance(0.1)
        failure = self.failureResultOf(d, ReceiveTimeout)
        self.assertIsInstance(failure.value, TimeoutError)
        client.send_pong(b"late")
        self.assertEqual(
            self.successResultOf(conn.wait_for_message("pong")).data, b"late"
        )

    def test_arguments(self) -> None:
        """Unknown kinds and non-positive timeouts are refused at once."""
        _, harness = make(Quiet())
        conn = harness.open().connection
        self.assertRaises(ValueError, conn.wait_for_message, ("ping",))
        self.assertRaises(ValueError, conn.wait_for_message, ())
        self.assertRaises(ValueError, conn.wait_for_message, "pong", 0)
        self.assertRaises(ValueError, conn.wait_for_message, "pong", -1)

    def test_pongs_bounded(self) -> None:
        """At most MAX_PONGS pongs are kept, the oldest dropped; they do not
        count toward max_queue."""
        _, harness = make(Quiet(), max_queue=2)
        client = harness.open()
        for i in range(MAX_PONGS + 5):
            client.send_pong(b"%d" % i)
        self.assertEqual(client.transport.producerState, "producing")
        conn = client.connection
        got = [
            self.successResultOf(conn.wait_for_message("pong")).data
            for _ in range(MAX_PONGS)
        ]
        self.assertEqual(got, [b"%d" % i for i in range(5, MAX_PONGS + 5)])
        self.assertNoResult(conn.wait_for_message("pong"))

    def test_heartbeat_pongs_not_kept(self) -> None:
        """Pongs answering the server's own heartbeat pings are not queued."""
        _, harness = make(Quiet(), heartbeat_interval=10, heartbeat_timeout=5)
        client = harness.open()
        harness.advance(10)
        pings = [f.payload for f in client.frames() if f.opcode == 9]
        self.assertEqual(len(pings), 1)
        client.send_pong(pings[0])
        self.assertIsNone(client.connection._queue)

    def test_waiters_fail_on_close(self) -> None:
        """Pending waits fail with ConnectionClosed when the connection ends,
        and their timers are cancelled."""
        _, harness = make(Quiet())
        client = harness.open()
        conn = client.connection
        d1 = conn.wait_for_message("pong", timeout=30)
        d2 = conn.receive()
        client.drop()
        self.failureResultOf(d1, ConnectionClosed)
        self.failureResultOf(d2, ConnectionClosed)
        self.assertEqual(harness.clock.getDelayedCalls(), [])
        self.failureResultOf(conn.wait_for_message("pong"), ConnectionClosed)

    def test_cancel(self) -> None:
        """A cancelled wait is forgotten: the next message goes elsewhere."""
        _, harness = make(Quiet())
        client = harness.open()
        conn = client.connection
        d = conn.wait_for_message("text", timeout=5)
        d.cancel()
        self.failureResultOf(d)
        client.send_text("kept")
        self.assertEqual(self.successResultOf(conn.receive()), "kept")
