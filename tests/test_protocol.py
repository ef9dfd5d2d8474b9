"""The protocol adapter: event order and the component options, in memory."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import Reject
from wsplugin.testing import handshake_request


class EventOrderTests(SynchronousTestCase):
    """Events fire in the order the seed manuals give."""

    def test_full_life_cycle(self) -> None:
        """allow, response sent, open, message, binary, ping, pong, close,
        disconnect: in that order, each once."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open("/chat")
        client.send_text("hi")
        client.send_binary(b"\x00\xff")
        client.send_ping(b"p1")
        client.send_pong(b"p2")
        client.send_close(1000, "bye")
        self.assertEqual(
            rec.events,
            [
                ("allow", "/chat"),
                ("on_handshake_response_sent",),
                ("on_open",),
                ("on_message", "hi"),
                ("on_binary", b"\x00\xff"),
                ("on_ping", b"p1"),
                ("on_pong", b"p2"),
                ("on_close", 1000, "bye"),
                ("on_disconnect", True, 1000),
            ],
        )

    def test_disconnect_once_after_tcp_drop(self) -> None:
        """A TCP drop without a close frame fires on_disconnect once, unclean,
        with 1006, and no on_close."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.drop()
        client.drop()
        self.assertEqual(rec.names().count("on_disconnect"), 1)
        self.assertNotIn("on_close", rec.names())
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 1006))

    def test_no_disconnect_without_open(self) -> None:
        """A handshake refused by allow never opens, so neither on_open nor
        on_disconnect fires."""

        class Deny(Recorder):
            def allow(self, conn: Any) -> Any:
                return False

        rec = Deny()
        _, harness = make(rec)
        client = harness.connect()
        self.assertEqual(client.handshake().status, 403)
        harness.flush()
        self.assertEqual(rec.names(), [])

    def test_automatic_pong(self) -> None:
        """By default a ping is answered with a pong carrying its payload."""
        _, harness = make(Recorder())
        client = harness.open()
        client.send_ping(b"abc")
        frames = client.frames()
        self.assertEqual([(f.opcode, f.payload) for f in frames], [(10, b"abc")])

    def test_automatic_close_reply(self) -> None:
        """By default a close frame is answered and the TCP connection closed."""
        _, harness = make(Recorder())
        client = harness.open()
        client.send_close(1001, "away")
        frames = client.frames()
        self.assertEqual([f.opcode for f in frames], [8])
        self.assertTrue(client.closed)


class OnConnectTests(SynchronousTestCase):
    """on_connect screens TCP connections before any handshake byte."""

    def test_refuse(self) -> None:
        """on_connect returning False closes the TCP connection unanswered."""
        seen = []

        class Gate(Recorder):
            def on_connect(self, peer: Any) -> bool:
                seen.append(peer.host)
                return False

        _, harness = make(Gate())
        client = harness.connect()
        harness.flush()
        self.assertEqual(seen, ["127.0.0.1"])
        self.assertTrue(client.transport.lost)
        self.assertEqual(client.transport.value(), b"")

    def test_deferred_decision_holds_reading(self) -> None:
        """While a Deferred on_connect is pending, reading is paused; True
        resumes it and the handshake proceeds."""
        pending: Deferred[bool] = Deferred()

        class Gate(Recorder):
            def on_connect(self, peer: Any) -> Deferred[bool]:
                return pending

        _, harness = make(Gate())
        client = harness.connect()
        self.assertEqual(client.transport.producerState, "paused")
        pending.callback(True)
        self.assertEqual(client.transport.producerState, "producing")
        self.assertEqual(client.handshake().status, 101)


class AllowTests(SynchronousTestCase):
    """allow() inspects the request and decides the upgrade."""

    def test_reject_with_status_and_headers(self) -> None:
        """A Reject answers with its status, reason and headers; no 101."""

        class Auth(Recorder):
            def allow(self, conn: Any) -> Any:
                return Reject(
                    401, "Unauthorized", [("WWW-Authenticate", 'Basic realm="x"')]
                )

        _, harness = make(Auth())
        response = harness.connect().handshake()
        self.assertEqual(response.status, 401)
        self.assertEqual(response.header("WWW-Authenticate"), 'Basic realm="x"')

    def test_raise_reject(self) -> None:
        """Raising a Reject works like returning it."""

        class Auth(Recorder):
            def allow(self, conn: Any) -> Any:
                raise Reject(429, "Too Many Requests")

        _, harness = make(Auth())
        self.assertEqual(harness.connect().handshake().status, 429)

    def test_request_details_and_response_headers(self) -> None:
        """allow sees path, query, headers (case-insensitive), cookies, origin
        and offered subprotocols; it can add headers and pick a subprotocol."""
        seen: dict[str, Any] = {}

        class Inspect(Recorder):
            def allow(self, conn: Any) -> Any:
                r = conn.request
                seen.update(
                    path=r.path,
                    token=r.param("token"),
                    agent=r.headers["user-agent"],
                    cookie=r.cookies.get("sid"),
                    origin=r.origin,
                    protocols=r.protocols,
                    peer=r.peer_address,
                )
                conn.response_headers.append(("Set-Cookie", "seen=1"))
                conn.subprotocol = "b"
                return True

        _, harness = make(Inspect())
        response = harness.connect().handshake(
            "/room?token=abc",
            headers=[
                ("User-Agent", "tester"),
                ("Cookie", "sid=42; other=x"),
                ("Origin", "https://example.com"),
                ("Sec-WebSocket-Protocol", "a, b"),
            ],
        )
        self.assertEqual(response.status, 101)
        self.assertEqual(response.header("Set-Cookie"), "seen=1")
        self.assertEqual(response.header("Sec-WebSocket-Protocol"), "b")
        self.assertEqual(
            seen,
            {
                "path": "/room",
                "token": "abc",
                "agent": "tester",
                "cookie": "42",
                "origin": "https://example.com",
                "protocols": ("a", "b"),
                "peer": "127.0.0.1",
            },
        )

    def test_deferred_and_coroutine_allow(self) -> None:
        """allow may return a Deferred or be a coroutine; the handshake waits."""
        pending: Deferred[bool] = Deferred()

        class Later(Recorder):
            def allow(self, conn: Any) -> Any:
                return pending

        _, harness = make(Later())
        client = harness.connect()
        client.send_raw(__import__("wsplugin.testing").testing.handshake_request())
        self.assertIsNone(client.read_response())
        pending.callback(True)
        self.assertEqual(client.read_response().status, 101)

        class Async(Recorder):
            async def allow(self, conn: Any) -> Any:
                return False

        _, harness = make(Async())
        self.assertEqual(harness.connect().handshake().status, 403)

    def test_allow_raises(self) -> None:
        """An allow that raises answers 500 and reports to on_error."""

        class Broken(Recorder):
            def allow(self, conn: Any) -> Any:
                raise RuntimeError("bug")

        rec = Broken()
        _, harness = make(rec)
        self.assertEqual(harness.connect().handshake().status, 500)
        self.assertEqual(rec.events, [("on_error", "RuntimeError")])
        self.flushLoggedErrors(RuntimeError)

    def test_subprotocol_negotiation(self) -> None:
        """The first client-offered subprotocol the server speaks is chosen."""
        _, harness = make(Recorder(), subprotocols=["v2", "v1"])
        response = harness.connect().handshake(
            headers=[("Sec-WebSocket-Protocol", "v1, v2")]
        )
        self.assertEqual(response.header("Sec-WebSocket-Protocol"), "v1")


class ErrorIsolationTests(SynchronousTestCase):
    """A handler that raises closes its own connection with 1011, only."""

    def test_raise_closes_1011_and_reports(self) -> None:
        """on_message raising: on_error fires, close 1011 goes out, the other
        connection keeps working."""

        class Fragile(Recorder):
            def on_message(self, conn: Any, text: str) -> None:
                if text == "boom":
                    raise ValueError("boom")
                conn.send_text(text)

        rec = Fragile()
        _, harness = make(rec)
        bad, good = harness.open(), harness.open()
        bad.send_text("boom")
        self.assertEqual([f.close_code for f in bad.frames()], [1011])
        self.assertIn(("on_error", "ValueError"), rec.events)
        good.send_text("still here")
        self.assertEqual(good.messages(), ["still here"])
        self.flushLoggedErrors(ValueError)

    def test_async_raise(self) -> None:
        """A coroutine handler that fails is handled the same way."""

        class Fragile(Recorder):
            async def on_message(self, conn: Any, text: str) -> None:
                raise KeyError(text)

        rec = Fragile()
        _, harness = make(rec)
        client = harness.open()
        client.send_text("x")
        self.assertEqual([f.close_code for f in client.frames()], [1011])
        self.assertIn(("on_error", "KeyError"), rec.events)
        self.flushLoggedErrors(KeyError)

    def test_protocol_violation_reported(self) -> None:
        """Invalid UTF-8 closes with 1007 and reaches on_error as ProtocolError."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_frame(1, b"\xff\xfe")
        self.assertEqual([f.close_code for f in client.frames()], [1007])
        self.assertIn(("on_error", "ProtocolError"), rec.events)


class FrameByFrameTests(SynchronousTestCase):
    """frame_by_frame delivers frames unassembled, UTF-8 still validated."""

    def test_frames_delivered(self) -> None:
        """Each frame reaches on_fragment with its fin flag; no on_message."""
        rec = Recorder()
        _, harness = make(rec, frame_by_frame=True)
        client = harness.open()
        client.send_frame(1, b"ab", fin=False)
        client.send_frame(0, b"cd", fin=False)
        client.send_frame(0, b"e", fin=True)
        client.send_frame(2, b"\x01", fin=True)
        self.assertEqual(
            [e for e in rec.events if e[0].startswith("on_fragment")],
            [
                ("on_fragment", b"ab", False, False),
                ("on_fragment", b"cd", False, False),
                ("on_fragment", b"e", False, True),
                ("on_fragment", b"\x01", True, True),
            ],
        )
        self.assertNotIn("on_message", rec.names())

    def test_utf8_split_across_frames(self) -> None:
        """A code point split across frames is valid and delivered as bytes."""
        rec = Recorder()
        _, harness = make(rec, frame_by_frame=True)
        client = harness.open()
        euro = "€".encode()
        client.send_frame(1, euro[:1], fin=False)
        client.send_frame(0, euro[1:], fin=True)
        self.assertEqual(client.frames(), [])
        got = b"".join(e[1] for e in rec.events if e[0] == "on_fragment")
        self.assertEqual(got, euro)

    def test_utf8_invalid_across_frames(self) -> None:
        """Invalid UTF-8 in a later frame closes 1007; a message ending inside
        a code point closes 1007 before its final frame is delivered."""
        for frames in ([b"ok", b"\xff"], [b"ok", "€".encode()[:2]]):
            rec = Recorder()
            _, harness = make(rec, frame_by_frame=True)
            client = harness.open()
            client.send_frame(1, frames[0], fin=False)
            client.send_frame(0, frames[1], fin=True)
            self.assertEqual([f.close_code for f in client.frames()], [1007])
            fragments = [e for e in rec.events if e[0] == "on_fragment"]
            self.assertEqual(fragments, [("on_fragment", b"ok", False, False)])

    def test_assembled_without_option(self) -> None:
        """Without the option the same frames arrive as one message."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_frame(1, b"ab", fin=False)
        client.send_frame(0, b"c", fin=True)
        self.assertIn(("on_message", "abc"), rec.events)
        self.assertNotIn("on_fragment", rec.names())


class SkipChecksTests(SynchronousTestCase):
    """skip_upgrade_check and skip_version_check relax the handshake."""

    def test_upgrade_check(self) -> None:
        """Without Upgrade/Connection headers: 426 by default, 101 with the option."""
        _, harness = make(Recorder())
        self.assertEqual(harness.connect().handshake(upgrade=False).status, 426)
        _, harness = make(Recorder(), skip_upgrade_check=True)
        self.assertEqual(harness.connect().handshake(upgrade=False).status, 101)

    def test_version_check(self) -> None:
        """Version 99 or none: 400 by default, 101 with the option."""
        for version in ("99", None):
            _, harness = make(Recorder())
            self.assertEqual(harness.connect().handshake(version=version).status, 400)
            _, harness = make(Recorder(), skip_version_check=True)
            self.assertEqual(harness.connect().handshake(version=version).status, 101)


class ManualPongTests(SynchronousTestCase):
    """manual_pong leaves answering pings to the application."""

    def test_no_automatic_pong(self) -> None:
        """With manual_pong a ping gets no pong unless on_ping sends one."""
        rec = Recorder()
        _, harness = make(rec, manual_pong=True)
        client = harness.open()
        client.send_ping(b"x")
        self.assertEqual(client.frames(), [])
        self.assertIn(("on_ping", b"x"), rec.events)

    def test_invalid_ping_not_delivered(self) -> None:
        """A ping with a 126-byte payload fails the connection (1002) and is
        never handed to on_ping (Autobahn case 2.5)."""
        rec = Recorder()
        _, harness = make(rec, manual_pong=True)
        client = harness.open()
        client.send_raw(b"\x89\xfe\x00\x7e\x00\x00\x00\x00" + b"x" * 126)
        self.assertEqual([f.close_code for f in client.frames()], [1002])
        self.assertNotIn("on_ping", rec.names())

    def test_on_ping_answers(self) -> None:
        """on_ping can answer with conn.pong (with any payload)."""

        class Ponger(Recorder):
            def on_ping(self, conn: Any, payload: bytes) -> None:
                conn.pong(payload + b"!")

        _, harness = make(Ponger(), manual_pong=True)
        client = harness.open()
        client.send_ping(b"x")
        self.assertEqual(
            [(f.opcode, f.payload) for f in client.frames()], [(10, b"x!")]
        )


class ManualCloseTests(SynchronousTestCase):
    """manual_close leaves answering close frames to the application."""

    def test_no_automatic_reply(self) -> None:
        """A close frame gets no reply; after close_handshake_timeout the
        connection is dropped uncleanly."""
        rec = Recorder()
        _, harness = make(rec, manual_close=True, close_handshake_timeout=3)
        client = harness.open()
        client.send_close(1000)
        self.assertEqual(client.frames(), [])
        self.assertFalse(client.closed)
        harness.advance(3)
        self.assertTrue(client.transport.lost)
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 1006))

    def test_app_answers(self) -> None:
        """conn.close from on_close answers; the connection ends cleanly."""

        class Closer(Recorder):
            def on_close(self, conn: Any, code: int | None, reason: str) -> None:
                super().on_close(conn, code, reason)
                conn.close(4000, "my answer")

        rec = Closer()
        _, harness = make(rec, manual_close=True)
        client = harness.open()
        client.send_close(1000, "bye")
        frames = client.frames()
        self.assertEqual(
            [(f.close_code, f.close_reason) for f in frames], [(4000, "my answer")]
        )
        self.assertTrue(client.transport.lost)
        self.assertEqual(
            rec.events[-2:], [("on_close", 1000, "bye"), ("on_disconnect", True, 1000)]
        )

    def test_invalid_close_still_failed(self) -> None:
        """An invalid close code is a protocol error (1002) even in manual mode."""
        _, harness = make(Recorder(), manual_close=True)
        client = harness.open()
        client.send_close(999)
        self.assertEqual([f.close_code for f in client.frames()], [1002])


class SplitMessageTests(SynchronousTestCase):
    """split_message sends frames of at most frame_size bytes, header included."""

    def test_every_frame_within_size(self) -> None:
        """Each frame on the wire is <= frame_size and the payload is intact."""
        for frame_size, length in [
            (3, 10),
            (64, 1000),
            (127, 500),
            (128, 500),
            (200, 70000),
        ]:
            _, harness = make(None, split_message=True, frame_size=frame_size)
            harness.factory.register_handler("*", "/", Recorder(), default_host=True)
            client = harness.open("/")
            client.connection.send_binary(bytes(range(256)) * (length // 256 + 1))
            frames = client.frames()
            self.assertTrue(all(f.size <= frame_size for f in frames), frame_size)
            self.assertGreater(len(frames), 1)
            self.assertEqual(frames[0].opcode, 2)
            self.assertEqual({f.opcode for f in frames[1:]}, {0})
            self.assertEqual(
                [f.fin for f in frames], [False] * (len(frames) - 1) + [True]
            )
            payload = b"".join(f.payload for f in frames)
            self.assertEqual(payload, (bytes(range(256)) * (length // 256 + 1)))

    def test_single_frame_by_default(self) -> None:
        """Without split_message a message is one frame, whatever its size."""
        _, harness = make(Recorder())
        client = harness.open()
        client.connection.send_text("x" * 10000)
        self.assertEqual(len(client.frames()), 1)


class RoutingTests(SynchronousTestCase):
    """Handlers by host and path; unknown paths get 404 before the upgrade."""

    def test_404_without_default(self) -> None:
        """A path nobody registered gets 404 and no upgrade."""
        server, harness = make(None)
        server.register_handler("*", "/chat", Recorder(), default_host=True)
        self.assertEqual(harness.connect().handshake("/other").status, 404)
        self.assertEqual(harness.connect().handshake("/chat").status, 101)

    def test_host_routing(self) -> None:
        """Each host gets its handler; unknown hosts go to the default host."""
        a, b = Recorder(), Recorder()
        server, harness = make(None)
        server.register_handler("a.example", "/", a, default_host=True)
        server.register_handler("b.example", "/", b)
        harness.open("/", host="b.example:8080")
        harness.open("/", host="unknown.example")
        self.assertEqual(a.names().count("on_open"), 1)
        self.assertEqual(b.names().count("on_open"), 1)

    def test_route_overrides(self) -> None:
        """Options given to register_handler apply to that route only."""
        server, harness = make(None)
        server.register_handler(
            "*", "/small", Recorder(), default_host=True, max_message_size=4
        )
        server.register_handler("*", "/big", Recorder())
        small = harness.open("/small")
        small.send_text("12345")
        self.assertEqual([f.close_code for f in small.frames()], [1009])
        big = harness.open("/big")
        big.send_text("12345")
        self.assertEqual(big.frames(), [])


class RouteOptionTests(SynchronousTestCase):
    """Per-route overrides reach the connection, not just the config object."""

    def test_route_frame_limit_and_utf8(self) -> None:
        """max_frame_size and utf8_validation set on a route apply there only."""
        server, harness = make(None)
        server.register_handler(
            "*", "/strict", Recorder(), default_host=True, max_frame_size=10
        )
        server.register_handler("*", "/lax", Recorder(), utf8_validation=False)
        strict = harness.open("/strict")
        strict.send_binary(b"x" * 11)
        self.assertEqual([f.close_code for f in strict.frames()], [1009])
        lax = harness.open("/lax")
        lax.send_frame(1, b"\xff")
        self.assertEqual(lax.frames(), [])

    def test_route_heartbeat(self) -> None:
        """A route's heartbeat_interval decides when its clients are pinged."""
        server, harness = make(None, heartbeat_interval=0, heartbeat_timeout=0)
        server.register_handler(
            "*", "/hb", Recorder(), default_host=True, heartbeat_interval=3
        )
        server.register_handler("*", "/quiet", Recorder())
        hb, quiet = harness.open("/hb"), harness.open("/quiet")
        harness.advance(3)
        self.assertEqual([f.opcode for f in hb.frames()], [9])
        self.assertEqual(quiet.frames(), [])

    def test_on_connect_raising_drops(self) -> None:
        """on_connect raising drops the TCP connection without an answer."""

        class Broken(Recorder):
            def on_connect(self, peer: Any) -> bool:
                raise RuntimeError("bug")

        _, harness = make(Broken())
        client = harness.connect()
        harness.flush()
        self.assertTrue(client.transport.lost)
        self.assertEqual(client.transport.value(), b"")
        self.flushLoggedErrors(RuntimeError)

    def test_compressed_split(self) -> None:
        """With permessage-deflate negotiated, split messages still keep every
        frame within frame_size."""
        _, harness = make(
            Recorder(), compression=True, split_message=True, frame_size=40
        )
        client = harness.open(
            headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        self.assertIn(
            "permessage-deflate",
            client.response.header("Sec-WebSocket-Extensions") or "",
        )
        client.connection.send_binary(bytes(range(256)) * 8)
        frames = client.frames()
        self.assertGreater(len(frames), 1)
        self.assertTrue(all(f.size <= 40 for f in frames))
        self.assertEqual(frames[0].rsv, 4)


class AutobahnOptionsTests(SynchronousTestCase):
    """wsplugin copies Autobahn's per-connection options itself (Autobahn's
    own copy pretty-prints them all for a debug line nobody sees)."""

    def test_every_option_copied_from_factory(self) -> None:
        """Every name in Autobahn's server CONFIG_ATTRS is on the protocol, with
        the factory's value unless a route option replaced it (checked while
        the handshake runs: some are dropped once it is done)."""
        _, harness = make(Recorder())
        client = harness.connect()
        client.send_raw(handshake_request("/")[:20])  # the head is incomplete
        proto = client.protocol
        factory = harness.factory
        route_set = {
            "trustXForwardedFor",
            "maxMessagePayloadSize",
            "maxFramePayloadSize",
            "utf8validateIncoming",
            "closeHandshakeTimeout",
            "perMessageCompressionAccept",
            "applyMask",  # wsplugin unmasks itself (onFrameBegin)
        }
        self.assertFalse(proto.applyMask)
        names = set(proto._OPTION_NAMES)
        self.assertIn("openHandshakeTimeout", names)
        for name in names - route_set:
            self.assertIs(getattr(proto, name), getattr(factory, name), name)

    def test_handshake_only_options_dropped_at_open(self) -> None:
        """Options Autobahn reads only during the handshake are dropped when
        the connection opens (memory), the others stay."""
        _, harness = make(Recorder())
        proto = harness.open().protocol
        for name in ("versions", "allowedOrigins", "maxConnections", "webStatus"):
            self.assertNotIn(name, vars(proto))
        for name in (
            "maxMessagePayloadSize",
            "utf8validateIncoming",
            "closeHandshakeTimeout",
        ):
            self.assertIn(name, vars(proto))

    def test_value_on_protocol_wins(self) -> None:
        """An option already set on the protocol (class attribute of a
        subclass) is kept, as Autobahn does."""
        from wsplugin.protocol import WebSocketServerProtocol

        class Custom(WebSocketServerProtocol):
            echoCloseCodeReason = True

        _, harness = make(Recorder())
        harness.factory.protocol = Custom
        self.assertFalse(harness.factory.echoCloseCodeReason)
        proto = harness.open().protocol
        self.assertIsInstance(proto, Custom)
        self.assertTrue(proto.echoCloseCodeReason)


class UnmaskingTests(SynchronousTestCase):
    """Client frames of every size class, fed byte by byte or whole, arrive
    unmasked (small ones by wsplugin, larger ones by Autobahn's NVX)."""

    def test_sizes_and_pieces(self) -> None:
        from wsplugin._frames import SMALL_FRAME
        from wsplugin.testing import client_frame

        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        sizes = [0, 1, 3, 4, 5, 125, 126, SMALL_FRAME, SMALL_FRAME + 1, 70000]
        for n in sizes:
            payload = bytes((i * 7 + n) % 256 for i in range(n))
            frame = client_frame(2, payload, mask=bytes([n % 256, 0x5A, 0xA5, 0xFF]))
            if n <= 200:
                for i in range(len(frame)):
                    client.send_raw(frame[i : i + 1])
            else:
                for i in range(0, len(frame), 997):
                    client.send_raw(frame[i : i + 997])
        got = [e[1] for e in rec.events if e[0] == "on_binary"]
        self.assertEqual(
            got, [bytes((i * 7 + n) % 256 for i in range(n)) for n in sizes]
        )

    def test_masked_text_fragments_validated(self) -> None:
        """UTF-8 split across small masked fragments is still validated and
        joined: a bad byte in the last fragment closes with 1007."""
        from wsplugin.testing import client_frame

        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        text = "héllo wörld €".encode()
        client.send_raw(client_frame(1, text[:2], fin=False))
        client.send_raw(client_frame(0, text[2:], fin=True))
        client.send_raw(client_frame(1, b"ok\xff", fin=True))
        self.assertIn(("on_message", "héllo wörld €"), rec.events)
        closes = [f for f in client.frames() if f.opcode == 8]
        self.assertEqual([f.close_code for f in closes], [1007])


def _fragmented(
    opcode: int, payload: bytes, size: int, mask_seed: int = 0
) -> list[bytes]:
    """Client frames of one message: ``size`` payload bytes per frame."""
    from wsplugin.testing import client_frame

    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    return [
        client_frame(
            opcode if i == 0 else 0,
            piece,
            fin=i == len(pieces) - 1,
            mask=bytes([(i + mask_seed) % 256, 0x3C, (i * 7) % 256, 0x81]),
        )
        for i, piece in enumerate(pieces)
    ]


def _feed(client: Any, data: bytes, piece: int) -> None:
    for i in range(0, len(data), piece):
        client.send_raw(data[i : i + piece])


class TinyFragmentTests(SynchronousTestCase):
    """A message in many tiny frames costs its payload, is delivered whole,
    and keeps every check (limits, UTF-8, deflate, frame-by-frame)."""

    def test_text_in_two_byte_frames(self) -> None:
        """Multi-byte UTF-8 split over 2-byte frames, fed in reads that cut
        frames anywhere, arrives as the one text message."""
        text = "wsplugin héllo € 𝄞 " * 300
        for piece in (1, 7, 4097, 65536):
            rec = Recorder()
            _, harness = make(rec)
            client = harness.open()
            _feed(client, b"".join(_fragmented(1, text.encode(), 2)), piece)
            self.assertEqual(
                [e for e in rec.events if e[0] == "on_message"],
                [("on_message", text)],
            )

    def test_binary_mixed_sizes_and_pings(self) -> None:
        """Frames of 0 to 130 bytes with pings in between: the pings are
        answered and the binary message is whole."""
        from wsplugin.testing import client_frame

        payload = bytes(range(256)) * 40
        frames = []
        pos = 0
        i = 0
        while pos < len(payload):
            size = (i * 37) % 131
            frames.append(
                client_frame(0 if frames else 2, payload[pos : pos + size], fin=False)
            )
            if i % 50 == 7:
                frames.append(client_frame(9, b"p%d" % i))
            pos += size
            i += 1
        frames.append(client_frame(0, b"", fin=True))
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        _feed(client, b"".join(frames), 65536)
        self.assertEqual(
            [e for e in rec.events if e[0] == "on_binary"], [("on_binary", payload)]
        )
        pongs = [f.payload for f in client.frames() if f.opcode == 10]
        self.assertEqual(len(pongs), sum(1 for k in range(i) if k % 50 == 7))

    def _peak_while_feeding(self, frame: bytes, count: int) -> tuple[int, Recorder]:
        import tracemalloc

        from wsplugin.testing import client_frame

        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        per_read = 65536 // len(frame)
        reads = [frame * per_read] * (count // per_read) + [frame * (count % per_read)]
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            client.protocol.dataReceived(client_frame(2, b"", fin=False))
            for data in reads:
                client.protocol.dataReceived(data)
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        client.send_raw(client_frame(0, b"", fin=True))
        return peak, rec

    def test_memory_is_the_payload(self) -> None:
        """40,000 two-byte frames (80 KB of payload) hold under twice the
        payload plus the read buffers; Autobahn's list of pieces held about
        1.7 MB here."""
        from wsplugin.testing import client_frame

        peak, rec = self._peak_while_feeding(client_frame(0, b"xy", fin=False), 40_000)
        self.assertLess(peak, 2 * 80_000 + 192 * 1024)
        self.assertEqual(
            [e for e in rec.events if e[0] == "on_binary"],
            [("on_binary", b"xy" * 40_000)],
        )

    def test_empty_frames_cost_nothing(self) -> None:
        """40,000 empty continuation frames hold no more than the read
        buffers (Autobahn's list held about 400 KB here)."""
        from wsplugin.testing import client_frame

        peak, rec = self._peak_while_feeding(client_frame(0, b"", fin=False), 40_000)
        self.assertLess(peak, 128 * 1024)
        self.assertEqual(
            [e for e in rec.events if e[0] == "on_binary"], [("on_binary", b"")]
        )

    def test_message_limit_1009(self) -> None:
        """Tiny frames past max_message_size close with 1009 and report it."""
        rec = Recorder()
        _, harness = make(rec, max_message_size=1000)
        client = harness.open()
        _feed(client, b"".join(_fragmented(2, b"z" * 1200, 2)), 65536)
        self.assertEqual([f.close_code for f in client.frames()], [1009])
        self.assertNotIn("on_binary", rec.names())
        self.assertIn(("on_error", "ProtocolError"), rec.events)
        # RFC 6455 7.1.7: a failed connection's input is not read any more,
        # the peer's answer to our close frame included: TCP closes at once
        harness.flush()
        self.assertTrue(client.closed)
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 1009))

    def test_message_limit_exact(self) -> None:
        """A message of exactly max_message_size bytes in tiny frames passes."""
        rec = Recorder()
        _, harness = make(rec, max_message_size=1000)
        client = harness.open()
        _feed(client, b"".join(_fragmented(2, b"z" * 1000, 2)), 65536)
        self.assertIn(("on_binary", b"z" * 1000), rec.events)

    def test_small_frame_limit(self) -> None:
        """max_frame_size under 125 bytes still refuses a larger tiny frame."""
        rec = Recorder()
        _, harness = make(rec, max_frame_size=3)
        client = harness.open()
        _feed(client, b"".join(_fragmented(2, b"z" * 40, 2)), 65536)
        self.assertIn(("on_binary", b"z" * 40), rec.events)
        _feed(client, b"".join(_fragmented(2, b"z" * 40, 4)), 65536)
        self.assertEqual([f.close_code for f in client.frames()], [1009])

    def test_invalid_utf8_in_a_run(self) -> None:
        """Invalid UTF-8 inside a run of tiny frames closes with 1007, before
        the message ends."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        frames = _fragmented(1, b"abcd" * 50 + b"\xc3\x28" + b"abcd" * 50, 2)
        _feed(client, b"".join(frames[:-1]), 65536)
        self.assertEqual([f.close_code for f in client.frames()], [1007])
        self.assertNotIn("on_message", rec.names())

    def test_utf8_incomplete_at_end(self) -> None:
        """Text that stops inside a code point at the last frame: 1007."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        _feed(client, b"".join(_fragmented(1, "ab€".encode()[:-1], 1)), 65536)
        self.assertEqual([f.close_code for f in client.frames()], [1007])

    def test_deflate_in_tiny_frames(self) -> None:
        """A compressed message split into 2-byte frames inflates to the text;
        inflated past max_message_size it closes with 1009."""
        import zlib

        from tests.test_deflate import DEFLATE

        text = ("compressed in tiny pieces " * 200).encode()
        comp = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        deflated = (comp.compress(text) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
        frames = _fragmented(1, deflated, 2)
        frames[0] = bytes([frames[0][0] | 0x40]) + frames[0][1:]  # RSV1
        rec = Recorder()
        _, harness = make(rec, compression=True)
        client = harness.open(headers=DEFLATE)
        _feed(client, b"".join(frames), 65536)
        self.assertIn(("on_message", text.decode()), rec.events)

        rec = Recorder()
        _, harness = make(rec, compression=True, max_message_size=1000)
        client = harness.open(headers=DEFLATE)
        _feed(client, b"".join(frames), 65536)
        self.assertEqual([f.close_code for f in client.frames()], [1009])
        self.assertNotIn("on_message", rec.names())

    def test_frame_by_frame_keeps_each_frame(self) -> None:
        """frame_by_frame mode still hands out every tiny frame."""
        rec = Recorder()
        _, harness = make(rec, frame_by_frame=True)
        client = harness.open()
        _feed(client, b"".join(_fragmented(2, b"abcdefgh", 2)), 65536)
        self.assertEqual(
            [e for e in rec.events if e[0] == "on_fragment"],
            [
                ("on_fragment", b"ab", True, False),
                ("on_fragment", b"cd", True, False),
                ("on_fragment", b"ef", True, False),
                ("on_fragment", b"gh", True, True),
            ],
        )

    def test_large_frames_in_slices(self) -> None:
        """A read holding small and large frames (cut into slices for the
        parser) delivers each message whole."""
        from wsplugin.testing import client_frame

        messages = [bytes([i]) * n for i, n in enumerate([5, 70_000, 3, 20_000, 0])]
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_raw(b"".join(client_frame(2, m) for m in messages))
        self.assertEqual([e[1] for e in rec.events if e[0] == "on_binary"], messages)


_INVALID_CLOSES = [
    (b"\x03", 1002),  # a 1-byte payload
    (b"\x03\xe8\xff\xfe", 1007),  # 1000 with a reason that is not UTF-8
    (b"\x03\xe8ok\xc3", 1007),  # a reason cut inside a code point
] + [
    (code.to_bytes(2, "big"), 1002)
    for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
]


class InvalidCloseFrameTests(SynchronousTestCase):
    """An invalid close frame gets a close frame back (1002 or 1007), then a
    graceful TCP close; on_disconnect reports the code sent."""

    def _check(self, payload: bytes, expected: int, **options: Any) -> None:
        rec = Recorder()
        _, harness = make(rec, **options)
        client = harness.open()
        client.send_frame(8, payload)
        closes = [f for f in client.frames() if f.opcode == 8]
        self.assertEqual([f.close_code for f in closes], [expected], payload)
        self.assertTrue(client.transport.disconnecting)
        harness.flush()
        self.assertTrue(client.transport.lost)
        self.assertFalse(client.transport.aborted, payload)
        self.assertNotIn("on_close", rec.names())
        self.assertIn(("on_error", "ProtocolError"), rec.events)
        self.assertEqual(rec.events[-1], ("on_disconnect", False, expected))
        self.assertEqual(rec.names().count("on_disconnect"), 1)

    def test_invalid_close_frames(self) -> None:
        """Each invalid close frame gets its code back."""
        for payload, expected in _INVALID_CLOSES:
            self._check(payload, expected)

    def test_invalid_close_frames_manual_close(self) -> None:
        """The same with manual_close: nothing is left for the application."""
        for payload, expected in _INVALID_CLOSES:
            self._check(payload, expected, manual_close=True)

    def test_valid_codes_accepted(self) -> None:
        """Codes a peer may send are answered with 1000 and reach on_close."""
        for code in (1000, 1001, 1002, 1003, 1007, 1011, 1013, 3000, 4999):
            rec = Recorder()
            _, harness = make(rec)
            client = harness.open()
            client.send_close(code, "why")
            self.assertEqual([f.close_code for f in client.frames()], [1000])
            self.assertIn(("on_close", code, "why"), rec.events)
            self.assertEqual(rec.events[-1], ("on_disconnect", True, code))

    def test_invalid_answer_to_our_close(self) -> None:
        """An invalid close frame answering ours ends the connection (no
        second close frame); on_disconnect reports our code, unclean."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.connection.close(4001, "bye")
        self.assertEqual([f.close_code for f in client.frames()], [4001])
        client.send_frame(8, (999).to_bytes(2, "big"))
        self.assertEqual(client.frames(), [])
        self.assertTrue(client.transport.lost)
        self.assertFalse(client.transport.aborted)
        self.assertNotIn("on_close", rec.names())
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 4001))

    def test_answer_closes_tcp_gracefully(self) -> None:
        """A valid answer to our close ends with a graceful TCP close, so
        anything still queued (a close crossing the peer's) goes out."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.connection.close(1000)
        client.send_close(1000)
        self.assertTrue(client.transport.lost)
        self.assertFalse(client.transport.aborted)
        self.assertEqual(
            rec.events[-2:], [("on_close", 1000, ""), ("on_disconnect", True, 1000)]
        )

    def test_silent_peer_after_invalid_close(self) -> None:
        """A peer that does not read our close frame is aborted after
        close_handshake_timeout."""
        rec = Recorder()
        _, harness = make(rec, close_handshake_timeout=2)
        client = harness.open()
        client.transport.loseConnection = lambda: None  # bytes never leave
        client.send_frame(8, b"\x03")
        self.assertFalse(client.transport.lost)
        harness.advance(2)
        self.assertTrue(client.transport.aborted)
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 1002))
