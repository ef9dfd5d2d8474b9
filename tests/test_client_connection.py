"""Tests for ``wsplugin.client._connection``: the ``Inbox`` on a fake clock
(pure), and the ``ClientConnection`` API in memory against wsplugin's own
server (``iosim``)."""

from __future__ import annotations

import warnings

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.client_support import Echo, open_conn
from wsplugin.client import Message, ReceiveTimeout
from wsplugin.client._connection import Inbox
from wsplugin.connection import ConnectionState
from wsplugin.errors import (
    ConnectionClosed,
    FragmentedSendError,
    InvalidCloseCode,
)

TEXT = frozenset({"text"})
DATA = frozenset({"text", "binary"})
PONG = frozenset({"pong"})


class InboxTests(SynchronousTestCase):
    """The inbox alone: kinds, order, bounds, timeouts, on a ``Clock``."""

    def make(self, max_queue: int = 4, max_pongs: int = 2) -> tuple[Inbox, list[str]]:
        """An inbox whose pause/resume calls are recorded."""
        calls: list[str] = []
        inbox = Inbox(
            Clock(),
            max_queue=max_queue,
            max_pongs=max_pongs,
            pause_reading=lambda: calls.append("pause"),
            resume_reading=lambda: calls.append("resume"),
        )
        return inbox, calls

    def test_kinds_in_order(self) -> None:
        """``pop`` takes the oldest message of the kinds asked for and
        leaves the others in order."""
        inbox, _ = self.make()
        for message in (
            Message("pong", b"p"),
            Message("text", "a"),
            Message("binary", b"b"),
        ):
            inbox.deliver(message)
        self.assertEqual(inbox.pop(frozenset({"binary"})), Message("binary", b"b"))
        self.assertEqual(inbox.pop(DATA), Message("text", "a"))
        self.assertIsNone(inbox.pop(DATA))
        self.assertEqual(inbox.pop(PONG), Message("pong", b"p"))

    def test_waiters_get_their_kind(self) -> None:
        """A message goes to the oldest waiter wanting its kind (its data for
        a raw waiter), not to one waiting for another kind."""
        inbox, _ = self.make()
        pongs = inbox.wait(PONG, False, None)
        texts = inbox.wait(TEXT, True, None)
        inbox.deliver(Message("text", "hi"))
        self.assertNoResult(pongs)
        self.assertEqual(self.successResultOf(texts), "hi")
        inbox.deliver(Message("pong", b"p"))
        self.assertEqual(self.successResultOf(pongs), Message("pong", b"p"))
        self.assertEqual(inbox.queued, 0)

    def test_queue_bound_pauses_and_resumes(self) -> None:
        """At ``max_queue`` data messages reading pauses, once; it resumes
        when fewer than half remain. Pongs do not count."""
        inbox, calls = self.make(max_queue=4, max_pongs=16)
        for n in range(5):
            inbox.deliver(Message("text", str(n)))
            inbox.deliver(Message("pong", b"p"))
        self.assertEqual((calls, inbox.queued, inbox.paused), (["pause"], 5, True))
        for _ in range(2):
            inbox.pop(DATA)
        self.assertEqual(calls, ["pause"])
        inbox.pop(DATA)
        self.assertEqual(
            (calls, inbox.queued, inbox.paused), (["pause", "resume"], 2, False)
        )

    def test_pongs_bounded(self) -> None:
        """Beyond ``max_pongs`` the oldest pong is dropped."""
        inbox, _ = self.make(max_pongs=2)
        for n in range(3):
            inbox.deliver(Message("pong", b"%d" % n))
        got = [inbox.pop(PONG), inbox.pop(PONG), inbox.pop(PONG)]
        self.assertEqual(got, [Message("pong", b"1"), Message("pong", b"2"), None])

    def test_timeout_and_cancel(self) -> None:
        """A wait fails with ReceiveTimeout after its timeout; a cancelled
        one stops waiting; a message arriving later is queued."""
        clock = Clock()
        inbox = Inbox(
            clock,
            max_queue=4,
            max_pongs=2,
            pause_reading=lambda: None,
            resume_reading=lambda: None,
        )
        timed = inbox.wait(TEXT, True, 3)
        cancelled = inbox.wait(TEXT, True, 10)
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        clock.advance(3)
        error = self.failureResultOf(timed, ReceiveTimeout).value
        self.assertEqual(str(error), "no message of kind text within 3s")
        self.assertEqual(clock.getDelayedCalls(), [])
        inbox.deliver(Message("text", "late"))
        self.assertEqual(inbox.queued, 1)

    def test_close_fails_waiters(self) -> None:
        """``close`` fails every waiter and cancels its timer; queued
        messages stay."""
        clock = Clock()
        inbox = Inbox(
            clock,
            max_queue=4,
            max_pongs=2,
            pause_reading=lambda: None,
            resume_reading=lambda: None,
        )
        inbox.deliver(Message("pong", b"kept"))
        waiting = inbox.wait(TEXT, True, 5)
        inbox.close(ConnectionClosed(1001, "bye"))
        self.assertEqual(
            self.failureResultOf(waiting, ConnectionClosed).value.code, 1001
        )
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(inbox.pop(PONG), Message("pong", b"kept"))


class MessagingTests(SynchronousTestCase):
    """The Connection API on the client side."""

    def test_round_trip(self) -> None:
        """Text and binary go out and come back; ``send`` picks by type."""
        conn, harness = open_conn(self)
        conn.send_text("héllo")
        conn.send_binary(b"\x00\x01")
        conn.send("str")
        conn.send(b"bytes")
        harness.flush()
        got = [self.successResultOf(conn.receive()) for _ in range(4)]
        self.assertEqual(got, ["héllo", b"\x00\x01", "str", b"bytes"])
        self.assertRaises(TypeError, conn.send, 42)

    def test_send_frame(self) -> None:
        """``send_frame`` builds one message from frames; a whole message in
        the middle is refused."""
        conn, harness = open_conn(self)
        conn.send_frame("ab", fin=False)
        self.assertRaises(FragmentedSendError, conn.send_text, "no")
        conn.send_frame(b"cd", fin=True)
        harness.flush()
        self.assertEqual(self.successResultOf(conn.receive()), "abcd")

    def test_wait_for_message_kinds(self) -> None:
        """Pongs are queued for ``wait_for_message``; messages of other kinds
        stay queued, in order, for ``receive``; the default takes any kind."""
        conn, harness = open_conn(self)
        conn.send_text("first")
        conn.ping(b"p1")
        conn.send_binary(b"second")
        conn.ping(b"p2")
        harness.flush()
        pong = self.successResultOf(conn.wait_for_message(kinds=("pong",)))
        self.assertEqual(pong, Message("pong", b"p1"))
        self.assertEqual(self.successResultOf(conn.receive()), "first")
        self.assertEqual(
            self.successResultOf(conn.wait_for_message()), Message("binary", b"second")
        )
        self.assertEqual(self.successResultOf(conn.wait_for_message("pong")).text, "p2")
        self.assertNoResult(conn.wait_for_message("text", timeout=1))

    def test_receive_skips_pongs(self) -> None:
        """A pending ``receive`` is not woken by a pong."""
        conn, harness = open_conn(self)
        d = conn.receive()
        conn.ping(b"p")
        harness.flush()
        self.assertNoResult(d)
        conn.send_text("data")
        harness.flush()
        self.assertEqual(self.successResultOf(d), "data")

    def test_wait_timeout(self) -> None:
        """``wait_for_message(timeout=)`` fails with ReceiveTimeout; a later
        message stays queued."""
        conn, harness = open_conn(self)
        d = conn.wait_for_message(("text",), timeout=2)
        harness.clock.advance(2)
        self.assertIn("within 2s", str(self.failureResultOf(d, ReceiveTimeout).value))
        conn.send_text("late")
        harness.flush()
        self.assertEqual(self.successResultOf(conn.receive()), "late")

    def test_wait_arguments(self) -> None:
        """Unknown kinds and a non-positive timeout are refused."""
        conn, _ = open_conn(self)
        self.assertRaises(ValueError, conn.wait_for_message, ("ping",))
        self.assertRaises(ValueError, conn.wait_for_message, ())
        self.assertRaises(ValueError, conn.wait_for_message, timeout=0)

    def test_pongs_bounded(self) -> None:
        """At most ``max_pongs`` pongs are kept; the oldest go first."""
        conn, harness = open_conn(self, max_pongs=2)
        for n in range(3):
            conn.ping(b"%d" % n)
        harness.flush()
        pongs = [self.successResultOf(conn.wait_for_message("pong")) for _ in "ab"]
        self.assertEqual([p.data for p in pongs], [b"1", b"2"])

    def test_receive_queue_pauses_reading(self) -> None:
        """A full receive queue pauses reading; taking messages resumes it."""
        conn, harness = open_conn(self, max_queue=2)
        transport = harness.endpoint.clients[0]
        conn.send_text("1")
        conn.send_text("2")
        harness.flush()
        self.assertEqual(transport.producer_state, "paused")
        self.successResultOf(conn.receive())
        self.assertEqual(transport.producer_state, "producing")

    def test_waiters_fail_on_close(self) -> None:
        """Pending waits fail with ConnectionClosed when the server closes;
        ``async for`` ends; ``wait_closed`` fires."""
        conn, harness = open_conn(self)
        receiving = conn.receive()
        waiting = conn.wait_for_message("pong", timeout=30)
        closed = conn.wait_closed()
        harness.server_conn().close(1001, "bye")
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        error = self.failureResultOf(receiving, ConnectionClosed).value
        self.assertEqual((error.code, error.reason), (1001, "bye"))
        self.failureResultOf(waiting, ConnectionClosed)
        self.assertIs(self.successResultOf(closed), conn)
        self.assertEqual(conn.state, ConnectionState.CLOSED)
        self.assertRaises(ConnectionClosed, conn.send_text, "late")
        self.failureResultOf(conn.receive(), ConnectionClosed)

    def test_close(self) -> None:
        """``close(code, reason)`` reaches the server; forbidden codes raise."""
        recorder = Echo()
        conn, harness = open_conn(self, recorder)
        self.assertRaises(InvalidCloseCode, conn.close, 1005)
        conn.close(4000, "done")
        self.assertEqual(conn.state, ConnectionState.CLOSING)
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.assertIn(("on_close", 4000, "done"), recorder.events)
        # the code the connection ended with is the one the server sent back
        self.assertEqual(conn.close_code, 1000)
        self.assertEqual(conn.state, ConnectionState.CLOSED)
        conn.close()  # closing a closed connection does nothing

    def test_ping_payload_limit(self) -> None:
        """Control payloads are at most 125 bytes."""
        conn, _ = open_conn(self)
        self.assertRaises(ValueError, conn.ping, b"x" * 126)
        self.assertRaises(ValueError, conn.pong, b"x" * 126)
        conn.pong(b"unsolicited")

    def test_message_text(self) -> None:
        """``Message.text`` decodes bytes (invalid UTF-8 replaced)."""
        self.assertEqual(Message("pong", b"h\xc3\xa9").text, "hé")
        self.assertEqual(Message("binary", b"\xff").text, "\ufffd")
        self.assertEqual(Message("text", "x").text, "x")

    def test_protocol_is_a_deprecated_alias(self) -> None:
        """``protocol`` still reads the subprotocol, with a DeprecationWarning
        naming ``subprotocol``; making a connection warns about nothing."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            conn, _ = open_conn(self)
        self.assertEqual([w.category for w in caught], [])
        self.assertIsNone(conn.subprotocol)
        conn.subprotocol = "chat.v2"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.assertEqual(conn.protocol, "chat.v2")
        self.assertEqual([w.category for w in caught], [DeprecationWarning])
        self.assertIn("use .subprotocol", str(caught[0].message))
        self.assertEqual(caught[0].filename, __file__)
