"""Edge cases found in review: late decisions, facade state, fan-out isolation,
header safety, timers left behind, async handler ordering."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import ConfigError, ConnectionState, Reject, WSPluginError
from wsplugin.testing import client_frame, handshake_request


def no_timers(harness: Any) -> list[Any]:
    """Delayed calls still pending on the harness clock."""
    return [c for c in harness.clock.getDelayedCalls() if c.active()]


class LateDecisionTests(SynchronousTestCase):
    """allow() deciding after the client has gone changes nothing."""

    def _pending_allow(self) -> tuple[Recorder, Deferred[bool], Any, Any]:
        pending: Deferred[bool] = Deferred()

        class Slow(Recorder):
            def allow(self, conn: Any) -> Any:
                return pending

        rec = Slow()
        server, harness = make(rec, heartbeat_interval=0, heartbeat_timeout=0)
        client = harness.connect()
        client.send_raw(handshake_request())
        return rec, pending, server, client

    def test_allow_after_drop(self) -> None:
        """The client drops while allow is pending; allowing later opens nothing."""
        rec, pending, server, client = self._pending_allow()
        client.drop()
        pending.callback(True)
        self.assertEqual(rec.names(), [])
        self.assertEqual(len(server.connections), 0)
        self.assertEqual(client.connection.state, ConnectionState.CLOSED)

    def test_allow_after_handshake_timeout(self) -> None:
        """The handshake times out while allow is pending; nothing opens."""
        rec, pending, server, client = self._pending_allow()
        client.harness.advance(10)
        client.harness.flush()
        pending.callback(True)
        self.assertEqual(rec.names(), [])
        self.assertEqual(len(server.connections), 0)

    def test_reading_paused_while_allow_pending(self) -> None:
        """Frames sent before allow decides wait in the socket, not in memory."""
        rec, pending, server, client = self._pending_allow()
        self.assertEqual(client.transport.producerState, "paused")
        pending.callback(True)
        self.assertEqual(client.transport.producerState, "producing")


class FacadeStateTests(SynchronousTestCase):
    """The Connection's state follows the protocol's, so fan-outs never trip."""

    def test_manual_close_peer_closed_is_closing(self) -> None:
        """After the peer's close (manual_close), the connection is closing and
        ping_all / broadcast skip it instead of raising."""
        server, harness = make(Recorder(), manual_close=True)
        a, b = harness.open(), harness.open()
        a.send_close(1000)
        self.assertEqual(a.connection.state, ConnectionState.CLOSING)
        self.assertEqual(server.ping_all(), 1)
        self.assertEqual(server.broadcast("x"), 1)
        self.assertEqual([f.opcode for f in b.frames()], [9, 1])

    def test_aborted_is_not_open(self) -> None:
        """Right after abort(), the connection is no longer open."""
        server, harness = make(Recorder())
        a, _ = harness.open(), harness.open()
        a.connection.abort()
        self.assertFalse(a.connection.is_open)
        self.assertEqual(server.ping_all(), 1)

    def test_second_close_frame_ignored(self) -> None:
        """manual_close: a second close frame fires nothing and leaves one timer."""
        rec = Recorder()
        _, harness = make(
            rec, manual_close=True, heartbeat_interval=0, heartbeat_timeout=0
        )
        client = harness.open()
        client.send_close(1000, "bye")
        client.send_ping(b"p")
        client.send_close(1001, "again")
        self.assertEqual(
            [e for e in rec.events if e[0] in ("on_close", "on_ping")],
            [("on_close", 1000, "bye")],
        )
        self.assertEqual(client.frames(), [])
        self.assertEqual(len(no_timers(harness)), 1)

    def test_user_data_visible_in_on_disconnect(self) -> None:
        """Owned user data is released after on_disconnect, which can use it."""
        seen = []

        class Data:
            closed = False

            def close(self) -> None:
                self.closed = True

        class Handler(Recorder):
            def on_open(self, conn: Any) -> None:
                conn.owns_user_data = True
                conn.user_data = Data()

            def on_disconnect(self, conn: Any, *args: Any) -> None:
                seen.append((conn.user_data, conn.user_data.closed))

        _, harness = make(Handler())
        client = harness.open()
        data = client.connection.user_data
        client.drop()
        self.assertEqual(seen, [(data, False)])
        self.assertTrue(data.closed)


class FanOutIsolationTests(SynchronousTestCase):
    """One failing transport does not stop a broadcast for the others."""

    def test_broken_transport_skipped(self) -> None:
        """broadcast, ping_all and disconnect_all reach the healthy clients."""
        server, harness = make(Recorder())
        a, bad, c = harness.open(), harness.open(), harness.open()

        def explode(data: bytes) -> None:
            raise OSError("broken pipe")

        bad.transport.write = explode  # type: ignore[method-assign]
        self.assertEqual(server.broadcast("x"), 2)
        self.assertEqual(server.ping_all(), 2)
        self.assertEqual(server.disconnect_all(), 2)
        for client in (a, c):
            self.assertEqual([f.opcode for f in client.frames()], [1, 9, 8])
        self.flushLoggedErrors(OSError)

    def test_duplicate_ids_sent_once(self) -> None:
        """broadcast(ids=[x, x]) sends once."""
        server, harness = make(Recorder())
        a = harness.open()
        self.assertEqual(server.broadcast("d", ids=[a.connection.id] * 2), 1)
        self.assertEqual(a.messages(), ["d"])

    def test_broadcast_waits_for_fragmented_message(self) -> None:
        """A broadcast to a connection in the middle of send_frame goes out
        after the message's final frame, not inside it."""
        server, harness = make(Recorder())
        a = harness.open()
        a.connection.send_frame(b"part1", fin=False)
        server.broadcast("news")
        a.connection.send_frame(b"part2", fin=True)
        frames = a.frames()
        self.assertEqual(
            [(f.opcode, f.fin, f.payload) for f in frames],
            [(1, False, b"part1"), (0, True, b"part2"), (1, True, b"news")],
        )


class HeaderSafetyTests(SynchronousTestCase):
    """Response headers cannot be injected or forged."""

    def test_reject_headers_validated(self) -> None:
        """A Reject header with CR/LF is refused when the Reject is made."""
        self.assertRaises(
            ConfigError,
            Reject,
            401,
            "Unauthorized",
            [("WWW-Authenticate", 'Basic realm="a"\r\nSet-Cookie: x=1')],
        )
        self.assertRaises(ConfigError, Reject, 400, "Bad\r\nRequest")

    def test_allow_headers_validated(self) -> None:
        """allow adding a bad or protected header answers 500, not a forgery."""
        for name, value in [
            ("X-Ok", "a\r\nSet-Cookie: x=1"),
            ("Bad Name", "v"),
            ("Sec-WebSocket-Accept", "forged"),
        ]:

            class Forge(Recorder):
                def allow(self, conn: Any) -> Any:
                    conn.response_headers.append((name, value))  # noqa: B023
                    return True

            rec = Forge()
            _, harness = make(rec)
            response = harness.connect().handshake()
            self.assertEqual(response.status, 500, name)
            self.assertIn(("on_error", "ValueError"), rec.events)
            self.flushLoggedErrors(ValueError)

    def test_subprotocol_not_offered(self) -> None:
        """allow choosing a subprotocol the client did not offer answers 500."""

        class Pick(Recorder):
            def allow(self, conn: Any) -> Any:
                conn.subprotocol = "nope"
                return True

        _, harness = make(Pick())
        self.assertEqual(harness.connect().handshake().status, 500)
        self.flushLoggedErrors(ValueError)

    def test_status_line_does_not_echo_request(self) -> None:
        """Error status lines use standard phrases, never request bytes; 405
        says Allow: GET; version 8 is refused without skip_version_check."""
        _, harness = make(Recorder())
        bad_key = harness.connect().handshake(key="<script>alert(1)</script>")
        self.assertEqual((bad_key.status, bad_key.reason), (400, "Bad Request"))
        post = harness.connect().handshake(method="POST")
        self.assertEqual((post.status, post.reason), (405, "Method Not Allowed"))
        self.assertEqual(post.header("Allow"), "GET")
        self.assertEqual(post.header("Content-Length"), "0")
        self.assertEqual(post.header("Connection"), "close")
        self.assertEqual(harness.connect().handshake(version="8").status, 400)


class TimerTests(SynchronousTestCase):
    """No delayed call outlives its connection."""

    def test_no_timers_after_any_ending(self) -> None:
        """Whatever way a connection ends, its timers are gone afterwards."""

        class Raiser(Recorder):
            def on_message(self, conn: Any, text: str) -> None:
                raise RuntimeError("x")

        endings = [
            lambda c: [c.connection.close(1000), c.drop()],
            lambda c: [c.harness.factory.disconnect_all(), c.drop()],
            lambda c: [c.send_text("boom"), c.drop()],
            lambda c: c.send_close(1000),
            lambda c: c.drop(),
        ]
        for end in endings:
            _, harness = make(Raiser())
            client = harness.open()
            end(client)
            harness.flush()
            self.assertEqual(no_timers(harness), [], end)
        self.flushLoggedErrors(RuntimeError)

    def test_manual_close_timer_cancelled(self) -> None:
        """Answering a close in manual mode cancels the answer timer."""

        class Answer(Recorder):
            def on_close(self, conn: Any, code: Any, reason: str) -> None:
                conn.close(1000)

        _, harness = make(Answer(), manual_close=True)
        client = harness.open()
        client.send_close(1000)
        harness.flush()
        self.assertEqual(no_timers(harness), [])


class DataKindTests(SynchronousTestCase):
    """Handlers get what they handle; the rest is an RFC 1003 close."""

    def test_unhandled_kind_closes_1003(self) -> None:
        """A handler with only on_message gets 1003 for a binary message."""

        class TextOnly:
            def on_message(self, conn: Any, text: str) -> None:
                pass

        _, harness = make(TextOnly())
        client = harness.open()
        client.send_binary(b"\x00")
        self.assertEqual([f.close_code for f in client.frames()], [1003])

    def test_receive_refused_with_handler(self) -> None:
        """receive() on a connection whose handler takes messages raises."""
        _, harness = make(Recorder())
        client = harness.open()
        self.assertRaises(WSPluginError, client.connection.receive)

    def test_send_before_open_is_clear(self) -> None:
        """Sending from allow raises an error saying the connection is not open."""
        errors = []

        class Early(Recorder):
            def allow(self, conn: Any) -> Any:
                try:
                    conn.send_text("too early")
                except WSPluginError as e:
                    errors.append(str(e))
                return True

        _, harness = make(Early())
        harness.open()
        self.assertEqual(len(errors), 1)
        self.assertIn("not open yet", errors[0])

    def test_frame_mode_limit_per_frame(self) -> None:
        """In frame-by-frame mode max_message_size bounds each frame, so a long
        fragmented stream is fine; one oversized frame is not."""
        _, harness = make(Recorder(), frame_by_frame=True, max_message_size=1000)
        client = harness.open()
        for _ in range(3):
            client.send_frame(2 if _ == 0 else 0, b"x" * 600, fin=False)
        client.send_frame(0, b"x" * 600, fin=True)
        self.assertEqual(client.frames(), [])
        client.send_frame(2, b"y" * 1001)
        self.assertEqual([f.close_code for f in client.frames()], [1009])


class AsyncOrderTests(SynchronousTestCase):
    """Async message handlers run one at a time, in order, with backpressure."""

    def test_in_order_and_paused(self) -> None:
        """While one async on_message is pending the next waits and reading
        pauses; when it finishes the next runs and reading resumes."""
        gates: list[Deferred[None]] = []
        seen: list[str] = []

        class Slow:
            def on_message(self, conn: Any, text: str) -> Deferred[None]:
                seen.append(text)
                d: Deferred[None] = Deferred()
                gates.append(d)
                return d

        _, harness = make(Slow())
        client = harness.open()
        client.send_raw(
            b"".join(
                __import__("wsplugin.testing").testing.client_frame(1, t.encode())
                for t in ("a", "b", "c")
            )
        )
        self.assertEqual(seen, ["a"])
        self.assertEqual(client.transport.producerState, "paused")
        gates[0].callback(None)
        self.assertEqual(seen, ["a", "b"])
        gates[1].callback(None)
        gates[2].callback(None)
        self.assertEqual(seen, ["a", "b", "c"])
        self.assertEqual(client.transport.producerState, "producing")


class DisconnectCodeTests(SynchronousTestCase):
    """on_disconnect reports why the server ended a connection."""

    def test_failed_connection_reports_our_code(self) -> None:
        """After a 1009 failure, on_disconnect says 1009, whatever the peer
        sends after it: the connection is closed after our close frame
        (RFC 6455 7.1.7), without reading the peer's answer."""
        rec = Recorder()
        _, harness = make(rec, max_message_size=4)
        client = harness.open()
        client.send_raw(client_frame(1, b"12345") + client_frame(8, b"\x03\xe8"))
        self.assertEqual([f.close_code for f in client.frames()], [1009])
        self.assertTrue(client.closed)
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 1009))
        self.assertNotIn("on_close", rec.names())

    def test_failed_connection_reports_our_code_with_deflate(self) -> None:
        """With permessage-deflate (Autobahn's parser), the peer's polite
        answer to a 1009 completes the closing handshake; on_disconnect
        still says 1009."""
        rec = Recorder()
        _, harness = make(rec, max_message_size=4, compression=True)
        client = harness.open(
            headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        self.assertIsNotNone(client.protocol._perMessageCompress)
        client.send_raw(client_frame(1, b"12345"))
        self.assertEqual([f.close_code for f in client.frames()], [1009])
        client.send_close(1000)
        self.assertEqual(rec.events[-1], ("on_disconnect", True, 1009))
