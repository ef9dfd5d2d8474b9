"""wsplugin._connbase: the facade shared by server and client connections."""

from __future__ import annotations

import warnings
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin import ConnectionClosed, InvalidCloseCode
from wsplugin._connbase import (
    BaseConnection,
    ConnectionState,
    Message,
    check_close_code,
    fragment_size_for,
)
from wsplugin._request import Headers, Request


class Engine:
    """A ConnectionEngine recording what the facade asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.state = ConnectionState.OPEN

    def connection_state(self) -> ConnectionState:
        return self.state

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> Any:
            self.calls.append((name, *args))
            return succeed(None) if name == "drain" else 7

        return record


class Queue(BaseConnection):
    """A subclass that receives from a list (each side defines receive)."""

    def __init__(self, engine: Any, items: list[Any]) -> None:
        super().__init__(engine, REQUEST, clock=Clock())
        self.items = items

    def receive(self) -> Deferred[Any]:
        if self.items:
            return succeed(self.items.pop(0))
        d: Deferred[Any] = Deferred()
        d.errback(ConnectionClosed(self.close_code, self.close_reason))
        return d


REQUEST = Request("/", {}, Headers(), "h", "", (), None)


class SendingTests(SynchronousTestCase):
    """The facade checks types, then calls the engine."""

    def test_engine_calls(self) -> None:
        """Each method turns into one engine call with bytes."""
        engine = Engine()
        conn = BaseConnection(engine, REQUEST, clock=Clock())  # type: ignore[arg-type]
        conn.send("t")
        conn.send(b"b")
        conn.send_text("x")
        conn.send_binary(bytearray(b"y"))
        conn.send_frame("z", fin=False)
        conn.ping(b"p")
        conn.pong()
        conn.close(4000, "bye")
        conn.abort()
        self.assertEqual(conn.buffered_amount, 7)
        self.successResultOf(conn.drain())
        self.assertEqual(
            engine.calls,
            [
                ("send_message", b"t", False),
                ("send_message", b"b", True),
                ("send_message", b"x", False),
                ("send_message", b"y", True),
                ("send_data_frame", b"z", False, False),
                ("send_ping", b"p"),
                ("send_pong", b""),
                ("close_connection", 4000, "bye"),
                ("abort_connection",),
                ("buffered_amount",),
                ("drain",),
            ],
        )

    def test_type_errors(self) -> None:
        """Wrong types are refused before the engine sees them."""
        conn = BaseConnection(Engine(), REQUEST, clock=Clock())  # type: ignore[arg-type]
        for call in (
            lambda: conn.send(3),  # type: ignore[arg-type]
            lambda: conn.send_text(b"x"),  # type: ignore[arg-type]
            lambda: conn.send_binary("x"),  # type: ignore[arg-type]
        ):
            self.assertRaises(TypeError, call)

    def test_close_codes(self) -> None:
        """RFC 6455 7.4: only sendable codes; a reason needs a code."""
        check_close_code(1000, "")
        check_close_code(4999, "x")
        check_close_code(None, "")
        for code, reason in [
            (1005, ""),
            (1006, ""),
            (999, ""),
            (5000, ""),
            (None, "r"),
        ]:
            with self.assertRaises(InvalidCloseCode):
                check_close_code(code, reason)
        with self.assertRaises(InvalidCloseCode):
            check_close_code(True, "")  # type: ignore[arg-type]


class StateTests(SynchronousTestCase):
    """State comes from the engine until the engine marks it closed."""

    def test_state_and_end(self) -> None:
        """mark_closed sets CLOSED, code and reason; finish fires wait_closed."""
        engine = Engine()
        conn = BaseConnection(engine, REQUEST, clock=Clock())  # type: ignore[arg-type]
        self.assertTrue(conn.is_open)
        engine.state = ConnectionState.CLOSING
        self.assertIs(conn.state, ConnectionState.CLOSING)
        closed = conn.wait_closed()
        self.assertNoResult(closed)
        conn.mark_closed(1001, "")
        self.assertIs(conn.state, ConnectionState.CLOSED)
        self.assertEqual((conn.close_code, conn.close_reason), (1001, ""))
        self.assertNoResult(closed)
        conn.finish()
        self.assertIs(self.successResultOf(closed), conn)
        self.assertIs(self.successResultOf(conn.wait_closed()), conn)

    def test_cancel_wait_closed(self) -> None:
        """A cancelled wait_closed is forgotten."""
        conn = BaseConnection(Engine(), REQUEST, clock=Clock())  # type: ignore[arg-type]
        d = conn.wait_closed()
        d.cancel()
        self.failureResultOf(d)
        conn.mark_closed(1000, "")
        conn.finish()

    def test_async_iteration(self) -> None:
        """async for ends when receive() says the connection closed."""
        conn = Queue(Engine(), ["a", "b"])
        got: list[Any] = []

        async def loop() -> None:
            async for item in conn:
                got.append(item)

        self.successResultOf(Deferred.fromCoroutine(loop()))
        self.assertEqual(got, ["a", "b"])
        with self.assertRaises(NotImplementedError):
            BaseConnection(Engine(), REQUEST, clock=Clock()).receive()  # type: ignore[arg-type]


class NamesTests(SynchronousTestCase):
    """``protocol`` is the deprecated name of ``subprotocol``."""

    def test_protocol_alias_warns(self) -> None:
        """Reading or setting ``protocol`` works and warns, naming the new
        attribute and the caller's line."""
        conn = BaseConnection(Engine(), REQUEST, clock=Clock())  # type: ignore[arg-type]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            conn.protocol = "chat"
            self.assertEqual(conn.protocol, "chat")
        self.assertEqual(conn.subprotocol, "chat")
        self.assertEqual([w.category for w in caught], [DeprecationWarning] * 2)
        self.assertIn(
            "BaseConnection.protocol is deprecated; use .subprotocol",
            str(caught[0].message),
        )
        self.assertEqual({w.filename for w in caught}, {__file__})

    def test_message_text(self) -> None:
        """Message.text for every kind of data."""
        from wsplugin._connbase import CloseMessage, Fragment

        self.assertEqual(Message("text", "x").text, "x")
        self.assertEqual(Message("binary", b"\xff").text, "\ufffd")
        self.assertEqual(Message("text", Fragment(b"a", False, True)).text, "a")
        self.assertEqual(Message("close", CloseMessage(1000, "bye")).text, "bye")


class FragmentSizeTests(SynchronousTestCase):
    """frame_size= on send_text / send_binary, turned into payload per frame."""

    def test_values(self) -> None:
        """Header included, as the frame_size option; 0 stays 0."""
        self.assertEqual(
            [fragment_size_for(n) for n in (0, 3, 127, 130, 70000)],
            [0, 1, 125, 126, 69990],
        )

    def test_engine_gets_payload_size(self) -> None:
        """The engine gets the payload per frame; None calls it as before."""
        engine = Engine()
        conn = Queue(engine, [])
        conn.send_text("x", frame_size=10)
        conn.send_binary(b"y")
        self.assertEqual(
            engine.calls,
            [("send_message", b"x", False, 8), ("send_message", b"y", True)],
        )

    def test_refused(self) -> None:
        """Sizes with no room for payload, and non-ints, raise."""
        for bad in (1, 2, -1):
            with self.assertRaises(ValueError):
                fragment_size_for(bad)
        for bad in (True, 3.0):
            with self.assertRaises(TypeError):
                fragment_size_for(bad)  # type: ignore[arg-type]
