"""wsplugin.apps.echo: whatever arrives goes back, in every server mode."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin import WebSocketServer
from wsplugin.apps.echo import Echo
from wsplugin.config import ServerConfig
from wsplugin.testing import ServerHarness


class Conn:
    """The parts of a Connection the echo app calls, recorded."""

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config
        self.calls: list[tuple[Any, ...]] = []

    def send_text(self, text: str) -> None:
        self.calls.append(("text", text))

    def send_binary(self, data: bytes) -> None:
        self.calls.append(("binary", data))

    def send_frame(self, data: bytes, is_binary: bool, fin: bool) -> None:
        self.calls.append(("frame", data, is_binary, fin))

    def pong(self, payload: bytes) -> None:
        self.calls.append(("pong", payload))

    def close(self, code: int | None = 1000, reason: str = "") -> None:
        self.calls.append(("close", code, reason))


class EchoTests(SynchronousTestCase):
    """Each event's answer, on a recorded connection."""

    def test_messages(self) -> None:
        """Text comes back as text, binary as binary."""
        conn = Conn()
        Echo().on_message(conn, "héllo")
        Echo().on_binary(conn, b"\x00\x01")
        self.assertEqual(conn.calls, [("text", "héllo"), ("binary", b"\x00\x01")])

    def test_frames(self) -> None:
        """Frame by frame, each frame comes back as a frame, fin kept."""
        conn = Conn()
        Echo().on_fragment(conn, b"ab", True, False)
        Echo().on_fragment(conn, b"c", True, True)
        self.assertEqual(
            conn.calls, [("frame", b"ab", True, False), ("frame", b"c", True, True)]
        )

    def test_ping(self) -> None:
        """A ping is answered only with manual_pong (else the server did)."""
        for config, expected in [
            (None, []),
            (ServerConfig(), []),
            (ServerConfig(manual_pong=True), [("pong", b"p")]),
        ]:
            conn = Conn(config)
            Echo().on_ping(conn, b"p")
            self.assertEqual(conn.calls, expected, config)

    def test_close(self) -> None:
        """With manual_close, the peer's close is answered with its code and
        reason; codes that cannot be sent (none, 1005, 1006, 1015) get a
        close without a code; without manual_close nothing is done."""
        manual = ServerConfig(manual_close=True)
        for code, reason, expected in [
            (1000, "bye", ("close", 1000, "bye")),
            (4001, "app", ("close", 4001, "app")),
            (None, "", ("close", None, "")),
            (1005, "", ("close", None, "")),
            (1006, "", ("close", None, "")),
            (1015, "", ("close", None, "")),
        ]:
            conn = Conn(manual)
            Echo().on_close(conn, code, reason)
            self.assertEqual(conn.calls, [expected], code)
        for config in (None, ServerConfig()):
            conn = Conn(config)
            Echo().on_close(conn, 1000, "bye")
            self.assertEqual(conn.calls, [])


class ServedEchoTests(SynchronousTestCase):
    """The app behind a server, over in-memory clients."""

    def harness(self, **options: Any) -> ServerHarness:
        server = WebSocketServer(Echo(), reactor=MemoryReactorClock(), **options)
        server.startService()
        self.addCleanup(server.stopService)
        return ServerHarness(server)

    def test_echoed(self) -> None:
        """Text and binary messages come back to their sender only."""
        harness = self.harness()
        a, b = harness.open(), harness.open()
        a.send_text("one")
        a.send_binary(b"two")
        self.assertEqual(a.messages(), ["one", b"two"])
        self.assertEqual(b.messages(), [])

    def test_manual_close_echoes_the_code(self) -> None:
        """With manual_close the peer's close code comes back from the app."""
        client = self.harness(manual_close=True).open()
        client.send_close(4002, "done")
        close = client.frames()[-1]
        self.assertEqual((close.close_code, close.close_reason), (4002, "done"))
