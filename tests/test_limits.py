"""Safe defaults and limits: timeouts on the fake clock, sizes, counts, origins."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin.testing import handshake_request


class HandshakeLimitTests(SynchronousTestCase):
    """The opening handshake is bounded in time, size and count."""

    def test_slow_handshake_dropped(self) -> None:
        """A head that does not complete within open_handshake_timeout is
        dropped (slowloris); a complete one in time is not."""
        _, harness = make(Recorder(), open_handshake_timeout=4)
        slow = harness.connect()
        slow.send_raw(handshake_request()[:20])
        harness.advance(3.9)
        self.assertFalse(slow.transport.lost)
        harness.advance(0.2)
        harness.flush()
        self.assertTrue(slow.transport.lost)
        fast = harness.connect()
        self.assertEqual(fast.handshake().status, 101)
        harness.advance(10)
        self.assertFalse(fast.closed)

    def test_head_too_large(self) -> None:
        """A head over max_request_head gets 431 without waiting for its end."""
        _, harness = make(Recorder(), max_request_head=1024)
        client = harness.connect()
        client.send_raw(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000)
        self.assertEqual(client.read_response().status, 431)
        self.assertTrue(client.closed)

    def test_too_many_headers(self) -> None:
        """More than max_headers header lines get 431."""
        _, harness = make(Recorder(), max_headers=10)
        headers = [(f"X-H{i}", "v") for i in range(12)]
        self.assertEqual(harness.connect().handshake(headers=headers).status, 431)

    def test_bare_lf_in_header_rejected(self) -> None:
        """A header line hiding another header behind a bare LF gets 400, so
        the origin check cannot be bypassed."""
        _, harness = make(Recorder(), allowed_origins=["https://good.example"])
        headers = [("X", "a\nOrigin: https://evil.example")]
        self.assertEqual(harness.connect().handshake(headers=headers).status, 400)

    def test_max_connections(self) -> None:
        """Over max_connections the upgrade gets 503; a freed slot is reusable."""
        _, harness = make(Recorder(), max_connections=1)
        first = harness.open()
        self.assertEqual(harness.connect().handshake().status, 503)
        harness.flush()
        first.drop()
        self.assertEqual(harness.connect().handshake().status, 101)

    def test_origins(self) -> None:
        """Origins outside allowed_origins get 403; matching ones, and clients
        sending no Origin, are accepted."""
        _, harness = make(Recorder(), allowed_origins=["https://*.example.com"])
        for origin, status in [
            ("https://app.example.com", 101),
            ("https://evil.com", 403),
            ("http://app.example.com", 403),
        ]:
            response = harness.connect().handshake(headers=[("Origin", origin)])
            self.assertEqual(response.status, status, origin)
        self.assertEqual(harness.connect().handshake().status, 101)

    def test_plain_http_and_methods(self) -> None:
        """A plain GET gets 426 with Upgrade: websocket (not Autobahn's status
        page, and no ?redirect= open redirect); a POST upgrade gets 405."""
        _, harness = make(Recorder())
        plain = harness.connect().handshake(
            "/?redirect=https://evil.example", upgrade=False
        )
        self.assertEqual(plain.status, 426)
        self.assertEqual(plain.header("Upgrade"), "websocket")
        self.assertIsNone(plain.header("Location"))
        self.assertEqual(harness.connect().handshake(method="POST").status, 405)


class MessageLimitTests(SynchronousTestCase):
    """max_frame_size and max_message_size close with 1009."""

    def test_frame_too_big(self) -> None:
        """A frame over max_frame_size closes 1009 before its payload arrives."""
        rec = Recorder()
        _, harness = make(rec, max_frame_size=100)
        client = harness.open()
        client.send_raw(
            b"\x82\xfe\x00\xc8\x00\x00\x00\x00"
        )  # header of a 200-byte frame
        self.assertEqual([f.close_code for f in client.frames()], [1009])
        self.assertNotIn("on_binary", rec.names())

    def test_message_too_big_across_fragments(self) -> None:
        """Fragments adding up past max_message_size close 1009."""
        _, harness = make(Recorder(), max_message_size=10)
        client = harness.open()
        client.send_frame(1, b"123456", fin=False)
        self.assertEqual(client.frames(), [])
        client.send_frame(0, b"789012", fin=True)
        self.assertEqual([f.close_code for f in client.frames()], [1009])

    def test_huge_length_header(self) -> None:
        """A frame announcing 2^63 - 1 bytes closes 1009 at once, by default."""
        _, harness = make(Recorder())
        client = harness.open()
        client.send_raw(b"\x82\xff\x7f" + b"\xff" * 7 + b"\x00\x00\x00\x00")
        self.assertEqual([f.close_code for f in client.frames()], [1009])


class KeepAliveTests(SynchronousTestCase):
    """Heartbeat pings and timeouts run on the injected clock."""

    def test_heartbeat_pings(self) -> None:
        """A client silent for heartbeat_interval is pinged; its pong is
        traffic, so the next ping comes after another silent interval."""
        _, harness = make(Recorder(), heartbeat_interval=5)
        client = harness.open()
        harness.advance(5)
        (ping,) = client.frames()
        self.assertEqual(ping.opcode, 9)
        client.send_pong(ping.payload)
        harness.advance(5)
        self.assertEqual(client.frames(), [])
        harness.advance(5)
        self.assertEqual([f.opcode for f in client.frames()], [9])

    def test_busy_client_not_pinged(self) -> None:
        """A client sending data every interval is never pinged (a ping in the
        middle of a long exchange is noise; the traffic proves it alive)."""
        _, harness = make(Recorder(), heartbeat_interval=5, heartbeat_timeout=2)
        client = harness.open()
        for _ in range(10):
            harness.advance(4)
            client.send_text("busy")
        self.assertEqual([f.opcode for f in client.frames()], [])
        self.assertFalse(client.closed)

    def test_heartbeat_timeout_closes(self) -> None:
        """A peer not answering within heartbeat_timeout gets close 1011
        "heartbeat timeout"; if it stays silent it is dropped after the close
        timeout, and on_disconnect says why."""
        rec = Recorder()
        _, harness = make(
            rec, heartbeat_interval=5, heartbeat_timeout=2, close_handshake_timeout=1
        )
        client = harness.open()
        harness.advance(5)
        self.assertEqual([f.opcode for f in client.frames()], [9])
        harness.advance(2)
        self.assertEqual(
            [(f.close_code, f.close_reason) for f in client.frames()],
            [(1011, "heartbeat timeout")],
        )
        harness.advance(1)
        harness.flush()
        self.assertTrue(client.transport.lost)
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 1011))

    def test_any_traffic_answers_heartbeat(self) -> None:
        """Data from the peer counts as an answer, like a pong."""
        _, harness = make(Recorder(), heartbeat_interval=5, heartbeat_timeout=2)
        client = harness.open()
        harness.advance(5)
        client.frames()
        client.send_text("alive")
        harness.advance(2)
        self.assertEqual([f.opcode for f in client.frames()], [])
        self.assertFalse(client.closed)

    def test_before_heartbeat_replaces_ping(self) -> None:
        """before_heartbeat returning True sends the app's keep-alive instead."""

        class Custom(Recorder):
            def before_heartbeat(self, conn: object) -> bool:
                conn.send_text("keep-alive")  # type: ignore[attr-defined]
                return True

        _, harness = make(Custom(), heartbeat_interval=5, heartbeat_timeout=0)
        client = harness.open()
        harness.advance(5)
        self.assertEqual(
            [(f.opcode, f.payload) for f in client.frames()], [(1, b"keep-alive")]
        )

    def test_async_before_heartbeat_runs(self) -> None:
        """An async before_heartbeat runs (its keep-alive is sent) and counts
        as True: no ping; if it fails, the connection closes with 1011."""

        class Async(Recorder):
            fail = False

            async def before_heartbeat(self, conn: object) -> None:
                if self.fail:
                    raise RuntimeError("keep-alive failed")
                conn.send_text("async keep-alive")  # type: ignore[attr-defined]

        handler = Async()
        _, harness = make(handler, heartbeat_interval=5, heartbeat_timeout=0)
        client = harness.open()
        harness.advance(5)
        self.assertEqual(
            [(f.opcode, f.payload) for f in client.frames()],
            [(1, b"async keep-alive")],
        )
        handler.fail = True
        harness.advance(10)
        self.assertEqual([f.close_code for f in client.frames()], [1011])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_idle_timeout(self) -> None:
        """A connection that sends nothing for idle_timeout is closed 1001."""
        _, harness = make(
            Recorder(), heartbeat_interval=0, heartbeat_timeout=0, idle_timeout=10
        )
        quiet, chatty = harness.open(), harness.open()
        for _ in range(4):  # the check runs every 10 s: closed within 10-20 s
            harness.advance(6)
            chatty.send_text("x")
        self.assertEqual(
            [(f.close_code, f.close_reason) for f in quiet.frames()],
            [(1001, "idle timeout")],
        )
        self.assertEqual(chatty.frames(), [])

    def test_close_handshake_timeout(self) -> None:
        """A peer that never answers our close is dropped after the timeout."""
        rec = Recorder()
        _, harness = make(rec, close_handshake_timeout=2)
        client = harness.open()
        client.connection.close(1000)
        harness.advance(1.9)
        self.assertFalse(client.transport.lost)
        harness.advance(0.2)
        harness.flush()
        self.assertTrue(client.transport.lost)
        self.assertEqual(rec.events[-1][0], "on_disconnect")
