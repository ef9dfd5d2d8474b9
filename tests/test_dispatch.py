"""wsplugin._dispatch: events called in order, failures reported, 1011."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._connbase import Fragment
from wsplugin._dispatch import Dispatch


@dataclass
class Host:
    """The protocol as dispatch sees it, recording what it is asked."""

    peer: str = "tcp4:192.0.2.1:5000"
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def pause_reading(self, reason: str) -> None:
        self.calls.append(("pause", reason))

    def resume_reading(self, reason: str) -> None:
        self.calls.append(("resume", reason))

    def fail_connection(self, code: int, reason: str) -> None:
        self.calls.append(("fail", code, reason))

    def close_after_error(self) -> None:
        self.calls.append(("1011",))


@dataclass
class Conn:
    """The connection facade's receiving side."""

    queues_messages: bool = False
    queued: list[Any] = field(default_factory=list)

    def enqueue(self, item: Any) -> None:
        self.queued.append(item)


def dispatch(**events: Any) -> tuple[Dispatch, Host, Conn]:
    host, conn = Host(), Conn()
    return Dispatch(host, conn, events), host, conn  # type: ignore[arg-type]


class FireTests(SynchronousTestCase):
    """fire() calls an event with the connection and its arguments."""

    def test_called_with_connection(self) -> None:
        """The handler gets the connection first; a missing event is skipped."""
        seen: list[Any] = []
        d, _, conn = dispatch(on_close=lambda c, code, reason: seen.append((c, code)))
        d.fire("on_close", 1000, "bye")
        d.fire("on_open")
        self.assertEqual(seen, [(conn, 1000)])

    def test_raise_reports_and_closes(self) -> None:
        """A handler that raises: on_error gets the failure, then 1011."""
        errors: list[Failure] = []

        def boom(conn: Any) -> None:
            raise ValueError("boom")

        d, host, _ = dispatch(on_open=boom, on_error=lambda c, f: errors.append(f))
        d.fire("on_open")
        self.assertTrue(errors[0].check(ValueError))
        self.assertEqual(host.calls, [("1011",)])
        self.flushLoggedErrors(ValueError)

    def test_failed_deferred_reports(self) -> None:
        """A Deferred that fails counts as raising."""
        d, host, _ = dispatch(on_open=lambda c: fail(KeyError("k")))
        d.fire("on_open")
        self.assertEqual(host.calls, [("1011",)])
        self.flushLoggedErrors(KeyError)

    def test_on_error_failing_is_only_logged(self) -> None:
        """on_error raising does not recurse; it is logged."""

        def bad(conn: Any, failure: Any) -> None:
            raise RuntimeError("in on_error")

        d, _, _ = dispatch(on_error=bad)
        d.report(Failure(ValueError("x")), None)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MessageTests(SynchronousTestCase):
    """Messages go to the handler, or to the receive queue."""

    def test_text_and_binary(self) -> None:
        """Text is decoded (bad UTF-8 replaced), binary stays bytes."""
        seen: list[Any] = []
        d, _, _ = dispatch(
            on_message=lambda c, t: seen.append(t),
            on_binary=lambda c, b: seen.append(b),
        )
        d.message(b"h\xc3\xa9", False)
        d.message(bytearray(b"\x00"), True)
        self.assertEqual(seen, ["hé", b"\x00"])
        self.assertIs(type(seen[1]), bytes)

    def test_queued_for_receive(self) -> None:
        """A connection that queues messages gets them, fragments too."""
        d, _, conn = dispatch()
        conn.queues_messages = True
        d.message(b"t", False)
        d.fragment(b"f", True, False)
        self.assertEqual(conn.queued, ["t", Fragment(b"f", True, False)])

    def test_no_handler_fails_1003(self) -> None:
        """A kind the handler does not take fails the connection with 1003."""
        d, host, _ = dispatch(on_message=lambda c, t: None)
        d.message(b"\x01", True)
        self.assertEqual(
            host.calls, [("fail", 1003, "this endpoint takes no binary messages")]
        )

    def test_async_handlers_in_order(self) -> None:
        """While an async handler is pending, later messages wait (reading
        paused); they run in order when it finishes, then reading resumes."""
        pending: list[Deferred[None]] = []
        seen: list[str] = []

        def handler(conn: Any, text: str) -> Any:
            seen.append(text)
            if text == "slow":
                d: Deferred[None] = Deferred()
                pending.append(d)
                return d
            return None

        d, host, _ = dispatch(on_message=handler)
        d.message(b"slow", False)
        d.message(b"a", False)
        d.message(b"b", False)
        self.assertEqual(seen, ["slow"])
        self.assertTrue(d.busy)
        self.assertEqual(d.waiting, 2)
        self.assertEqual(host.calls, [("pause", "handler")])
        pending[0].callback(None)
        self.assertEqual(seen, ["slow", "a", "b"])
        self.assertEqual(host.calls[-1], ("resume", "handler"))
        self.assertFalse(d.busy)

    def test_second_async_keeps_order(self) -> None:
        """An async handler among the waiting ones holds the rest again."""
        pending: list[Deferred[None]] = []
        seen: list[str] = []

        def handler(conn: Any, text: str) -> Any:
            seen.append(text)
            if text.startswith("slow"):
                d: Deferred[None] = Deferred()
                pending.append(d)
                return d
            return None

        d, host, _ = dispatch(on_message=handler)
        for text in (b"slow1", b"slow2", b"c"):
            d.message(text, False)
        pending[0].callback(None)
        self.assertEqual(seen, ["slow1", "slow2"])
        self.assertEqual(d.waiting, 1)
        pending[1].callback(None)
        self.assertEqual(seen, ["slow1", "slow2", "c"])
        self.assertEqual(host.calls.count(("resume", "handler")), 1)

    def test_stop_drops_waiting(self) -> None:
        """After stop() the waiting messages never run."""
        pending: list[Deferred[None]] = []
        seen: list[str] = []

        def handler(conn: Any, text: str) -> Any:
            seen.append(text)
            d: Deferred[None] = Deferred()
            pending.append(d)
            return d

        d, _, _ = dispatch(on_message=handler)
        d.message(b"1", False)
        d.message(b"2", False)
        d.stop()
        pending[0].callback(None)
        self.assertEqual(seen, ["1"])


class HeartbeatHookTests(SynchronousTestCase):
    """before_heartbeat's three outcomes."""

    def test_outcomes(self) -> None:
        """None without a hook or a false value is False (ping); a true
        value or a Deferred is True; a raise is None (reported)."""
        self.assertFalse(dispatch()[0].before_heartbeat())
        self.assertFalse(
            dispatch(before_heartbeat=lambda c: None)[0].before_heartbeat()
        )
        self.assertTrue(dispatch(before_heartbeat=lambda c: True)[0].before_heartbeat())
        self.assertTrue(
            dispatch(before_heartbeat=lambda c: Deferred())[0].before_heartbeat()
        )

        def boom(conn: Any) -> None:
            raise ValueError()

        d, host, _ = dispatch(before_heartbeat=boom)
        self.assertIsNone(d.before_heartbeat())
        self.assertEqual(host.calls, [("1011",)])
        self.flushLoggedErrors(ValueError)
