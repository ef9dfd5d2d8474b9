"""wsplugin.testing: the helpers users test their handlers with."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin._frames import decode_header, encode_frame, mask_payload
from wsplugin.testing import (
    FakeTransport,
    HttpResponse,
    client_frame,
    handshake_request,
    parse_frames,
)


class FrameTests(SynchronousTestCase):
    """client_frame and parse_frames are built on wsplugin._frames."""

    def test_client_frame_is_masked(self) -> None:
        """A client frame carries its mask; unmasked it is the payload."""
        mask = b"\x01\x02\x03\x04"
        for size in (0, 5, 200, 70000):
            frame = client_frame(2, b"z" * size, mask=mask)
            b0, masked, length, head = decode_header(frame)
            self.assertEqual((b0, masked, length), (0x82, True, size))
            self.assertEqual(frame[head - 4 : head], mask)
            self.assertEqual(mask_payload(mask, frame[head:]), b"z" * size)

    def test_parse_frames(self) -> None:
        """Server frames are split, the incomplete rest is returned, and a
        masked frame is an error."""
        data = encode_frame(1, b"a") + encode_frame(8, b"\x03\xe8bye")
        frames, rest = parse_frames(data + b"\x81")
        self.assertEqual(
            [(f.opcode, f.payload) for f in frames], [(1, b"a"), (8, b"\x03\xe8bye")]
        )
        self.assertEqual((frames[1].close_code, frames[1].close_reason), (1000, "bye"))
        self.assertEqual(rest, b"\x81")
        with self.assertRaises(ValueError):
            parse_frames(client_frame(1, b"x"))

    def test_handshake_request(self) -> None:
        """The options of a handshake request show in its bytes."""
        data = handshake_request(
            "/p", headers=[("X", "1")], upgrade=False, version=None
        )
        self.assertTrue(data.startswith(b"GET /p HTTP/1.1\r\nHost: localhost\r\n"))
        self.assertNotIn(b"Upgrade", data)
        self.assertNotIn(b"Sec-WebSocket-Version", data)
        self.assertTrue(data.endswith(b"X: 1\r\n\r\n"))


class HarnessTests(SynchronousTestCase):
    """ServerHarness and FakeClient drive a server in memory."""

    def test_round_trip(self) -> None:
        """A client opens, sends, and reads reassembled messages back."""

        class Split(Recorder):
            def on_message(self, conn: object, text: str) -> None:
                conn.send_frame("he", fin=False)  # type: ignore[attr-defined]
                conn.send_frame("llo", fin=True)  # type: ignore[attr-defined]

        _, harness = make(Split())
        client = harness.open("/")
        self.assertEqual(client.response.status, 101)
        self.assertIsNotNone(client.connection)
        client.send_text("go")
        self.assertEqual(client.messages(), ["hello"])
        client.drop()
        self.assertTrue(client.closed)

    def test_fake_transport_ends_later(self) -> None:
        """loseConnection ends the connection on the next clock turn."""
        clock = Clock()
        transport = FakeTransport(clock, IPv4Address("TCP", "127.0.0.1", 1))
        ended: list[object] = []
        transport.protocol = type("P", (), {"connectionLost": ended.append})()
        transport.loseConnection()
        self.assertEqual(ended, [])
        clock.advance(0)
        self.assertEqual(len(ended), 1)
        transport.abortConnection()
        clock.advance(0)
        self.assertEqual(len(ended), 1)

    def test_http_response_headers(self) -> None:
        """header() and header_all() ignore case."""
        response = HttpResponse(101, "Switching", [("A", "1"), ("a", "2")])
        self.assertEqual(response.header("A"), "1")
        self.assertEqual(response.header_all("A"), ["1", "2"])
        self.assertIsNone(response.header("b"))
