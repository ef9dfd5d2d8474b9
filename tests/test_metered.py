"""wsplugin._metered: the counting subclasses, on a stand-in protocol and
dispatch (what the server's lifecycle calls, recorded)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._dispatch import Dispatch
from wsplugin._lifecycle import Phase
from wsplugin._metered import MeteredDispatch, MeteredProtocol, Tally, metered_protocol


class Meter:
    """A Meter that records what it is told."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.events: list[tuple[Any, ...]] = []

    def handshake_accepted(self) -> None:
        self.events.append(("accepted",))

    def handshake_refused(self, status: int) -> None:
        self.events.append(("refused", status))

    def connection_ended(self, sent: int | None, received: int | None) -> None:
        self.events.append(("ended", sent, received))


class Base:
    """The server protocol's methods the metered class overrides."""

    dispatch_type = Dispatch

    def __init__(self) -> None:
        self.state = WebSocketProtocol.STATE_CONNECTING
        self.lifecycle = SimpleNamespace(phase=Phase.HANDSHAKE, opened=False)
        self.localCloseCode: int | None = None
        self.remoteCloseCode: int | None = None
        self.calls: list[tuple[Any, ...]] = []
        self.fail_send = False

    def onOpen(self) -> None:
        self.calls.append(("onOpen",))

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: Any = None
    ) -> None:
        self.calls.append(("failHandshake", reason, code))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.calls.append(("onClose", code))
        self.lifecycle.phase = Phase.ENDED

    def heartbeat_expired(self) -> None:
        self.calls.append(("heartbeat_expired",))

    def send_message(
        self, payload: bytes, is_binary: bool, fragment_size: Any = None
    ) -> None:
        if self.fail_send:
            raise RuntimeError("not open")
        self.calls.append(("send_message", payload, is_binary, fragment_size))

    def send_data_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        self.calls.append(("send_data_frame", payload, is_binary, fin))


class Host:
    """The dispatch's host: reading is not part of counting."""

    peer = "tcp:192.0.2.1:1"

    def pause_reading(self, reason: str) -> None:
        pass

    def resume_reading(self, reason: str) -> None:
        pass

    def fail_connection(self, code: int, reason: str) -> None:
        raise AssertionError("not expected")

    def close_after_error(self) -> None:
        raise AssertionError("not expected")


class TallyTests(SynchronousTestCase):
    """The plain integer counts."""

    def test_starts_at_zero(self) -> None:
        """Every count starts at 0."""
        tally = Tally()
        self.assertEqual({getattr(tally, n) for n in Tally.__slots__}, {0})

    def test_sent(self) -> None:
        """sent() counts messages and their bytes by kind (a broadcast of
        one message to many counts each copy)."""
        tally = Tally()
        tally.sent(3, 10, is_binary=False)
        tally.sent(2, 4, is_binary=True)
        self.assertEqual((tally.text_out, tally.text_out_bytes), (3, 30))
        self.assertEqual((tally.binary_out, tally.binary_out_bytes), (2, 8))


class MeteredDispatchTests(SynchronousTestCase):
    """Messages counted as they are delivered."""

    def dispatch(self) -> tuple[Any, Tally, list[tuple[Any, ...]]]:
        tally = Tally()
        got: list[tuple[Any, ...]] = []
        events = {
            "on_message": lambda conn, text: got.append(("text", text)),
            "on_binary": lambda conn, data: got.append(("binary", data)),
            "on_fragment": lambda conn, data, b, fin: got.append(("frame", data, fin)),
        }
        kind = type("D", (MeteredDispatch,), {"__slots__": (), "tally": tally})
        conn = SimpleNamespace(queues_messages=False)
        return kind(Host(), conn, events), tally, got

    def test_messages(self) -> None:
        """Text counted in UTF-8 bytes, whether it arrives as str (frame
        codec) or bytes (Autobahn); binary in bytes; each delivered."""
        dispatch, tally, got = self.dispatch()
        dispatch.message("é", False)
        dispatch.message("é".encode(), False)
        dispatch.message(b"\x00\x01\x02", True)
        self.assertEqual((tally.text_in, tally.text_in_bytes), (2, 4))
        self.assertEqual((tally.binary_in, tally.binary_in_bytes), (1, 3))
        self.assertEqual(
            got, [("text", "é"), ("text", "é"), ("binary", b"\x00\x01\x02")]
        )

    def test_fragments(self) -> None:
        """Each frame's bytes count; a message counts on its last frame."""
        dispatch, tally, got = self.dispatch()
        dispatch.fragment(b"ab", True, False)
        dispatch.fragment(b"c", True, True)
        dispatch.fragment("hé", False, True)
        self.assertEqual((tally.binary_in, tally.binary_in_bytes), (1, 3))
        self.assertEqual((tally.text_in, tally.text_in_bytes), (1, 3))
        self.assertEqual(len(got), 3)


class MeteredProtocolTests(SynchronousTestCase):
    """The lifecycle points counted, the base class always called."""

    def setUp(self) -> None:
        self.meter = Meter()
        self.cls = metered_protocol(Base, self.meter)
        self.protocol = self.cls()

    def test_class(self) -> None:
        """One subclass per server, counting into its meter, with a
        dispatch class counting into its tally."""
        self.assertEqual(self.cls.__name__, "MeteredBase")
        self.assertTrue(issubclass(self.cls, MeteredProtocol))
        self.assertTrue(issubclass(self.cls, Base))
        self.assertIs(self.cls.meter, self.meter)
        self.assertTrue(issubclass(self.cls.dispatch_type, MeteredDispatch))
        self.assertIs(self.cls.dispatch_type.tally, self.meter.tally)
        other = metered_protocol(Base, Meter())
        self.assertIsNot(other.dispatch_type.tally, self.meter.tally)

    def test_open(self) -> None:
        """An accepted handshake is counted, then the base opens."""
        self.protocol.onOpen()
        self.assertEqual(self.meter.events, [("accepted",)])
        self.assertEqual(self.protocol.calls, [("onOpen",)])

    def test_refused(self) -> None:
        """A refusal during the handshake is counted by status; one after
        the open or the end is not (the base still runs)."""
        p = self.protocol
        p.failHandshake("no", 403)
        p.lifecycle.phase = Phase.ENDED
        p.failHandshake("late", 400)
        p.state = WebSocketProtocol.STATE_OPEN
        p.lifecycle.phase = Phase.HANDSHAKE
        p.failHandshake("open", 400)
        self.assertEqual(self.meter.events, [("refused", 403)])
        self.assertEqual(len(p.calls), 3)

    def test_close_codes(self) -> None:
        """A connection that was open counts its close codes once; one
        that never opened counts nothing."""
        p = self.protocol
        p.lifecycle.opened = True
        p.localCloseCode, p.remoteCloseCode = 1000, 1001
        p.onClose(True, 1000, "")
        p.onClose(True, 1000, "")
        self.assertEqual(self.meter.events, [("ended", 1000, 1001)])
        never = self.cls()
        never.onClose(False, 1006, None)
        self.assertEqual(len(self.meter.events), 1)
        self.assertEqual(never.calls, [("onClose", 1006)])

    def test_heartbeat(self) -> None:
        """A heartbeat timeout counts on an open connection only."""
        p = self.protocol
        p.heartbeat_expired()
        p.state = WebSocketProtocol.STATE_OPEN
        p.heartbeat_expired()
        self.assertEqual(self.meter.tally.heartbeat_timeouts, 1)
        self.assertEqual(p.calls, [("heartbeat_expired",)] * 2)

    def test_send_buffer(self) -> None:
        """What the send-buffer policy did, by action."""
        p = self.protocol
        p.send_buffer_overflow("drop")
        p.send_buffer_overflow("drop")
        p.send_buffer_overflow("close")
        tally = self.meter.tally
        self.assertEqual((tally.send_buffer_drops, tally.send_buffer_closes), (2, 1))

    def test_sent(self) -> None:
        """Messages and frames sent count by kind, after they were sent; a
        send that raises counts nothing."""
        p = self.protocol
        p.send_message(b"abc", False)
        p.send_message(b"\x00" * 5, True, 2)
        p.send_data_frame(b"xy", True, False)
        p.send_data_frame(b"z", True, True)
        p.send_data_frame(b"t", False, True)
        tally = self.meter.tally
        self.assertEqual((tally.text_out, tally.text_out_bytes), (2, 4))
        self.assertEqual((tally.binary_out, tally.binary_out_bytes), (2, 8))
        self.assertEqual(p.calls[1], ("send_message", b"\x00" * 5, True, 2))
        p.fail_send = True
        self.assertRaises(RuntimeError, p.send_message, b"late", False)
        self.assertEqual(tally.text_out, 2)
