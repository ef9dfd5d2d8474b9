"""Every event and every sending method over real loopback sockets, driven by
an independent client implementation (``websockets``)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.helpers import Recorder
from tests.integration.support import ServerTestCase, in_thread
from wsplugin import CloseMessage, Reject


class EventsTests(ServerTestCase):
    """Each handler event fires over a real connection."""

    @inlineCallbacks
    def test_all_events(self) -> None:
        """A client that connects, messages, pings, pongs and closes produces
        every event in order, ending with one clean on_disconnect."""
        rec = Recorder()
        peers = []

        class Server(Recorder):
            def on_connect(self, peer: Any) -> bool:
                peers.append(peer.host)
                return True

        rec = Server()
        yield self.start_server(rec, subprotocols=["chat"])

        def client() -> Any:
            with connect(
                self.url + "/room?x=1", subprotocols=["chat"], open_timeout=5
            ) as ws:
                ws.send("hello")
                ws.send(b"\x01\x02")
                ws.ping(b"ping!").wait(5)
                ws.pong(b"unsolicited")
                ws.send("last")
                ws.close(1000, "bye")
                return ws.subprotocol

        protocol = yield in_thread(client)
        self.assertEqual(protocol, "chat")
        yield self.when(lambda: "on_disconnect" in rec.names())
        self.assertEqual(peers, ["127.0.0.1"])
        self.assertEqual(
            rec.events,
            [
                ("allow", "/room"),
                ("on_handshake_response_sent",),
                ("on_open",),
                ("on_message", "hello"),
                ("on_binary", b"\x01\x02"),
                ("on_ping", b"ping!"),
                ("on_pong", b"unsolicited"),
                ("on_message", "last"),
                ("on_close", 1000, "bye"),
                ("on_disconnect", True, 1000),
            ],
        )

    @inlineCallbacks
    def test_fragment_event(self) -> None:
        """In frame-by-frame mode a fragmented message arrives frame by frame,
        exactly as sent (websockets ends an iterable with an empty fin frame)."""
        rec = Recorder()
        yield self.start_server(rec, frame_by_frame=True)

        def client() -> None:
            with connect(self.url, open_timeout=5, compression=None) as ws:
                ws.send(["ab", "cd", "e"])
                ws.close()

        yield in_thread(client)
        yield self.when(lambda: "on_disconnect" in rec.names())
        fragments = [e[1:] for e in rec.events if e[0] == "on_fragment"]
        self.assertEqual(
            fragments,
            [
                (b"ab", False, False),
                (b"cd", False, False),
                (b"e", False, False),
                (b"", False, True),
            ],
        )

    @inlineCallbacks
    def test_disconnect_on_tcp_drop(self) -> None:
        """A client whose socket vanishes gives on_disconnect(was_clean=False)."""
        rec = Recorder()
        yield self.start_server(rec)

        def client() -> None:
            # A with block and no keep-alive thread: websockets >= 17.1 warns
            # (DeprecationWarning) about a bare connect(), and a keep-alive ping
            # 20 s later would land in whatever test runs then. The socket
            # vanishes first, so the close on exit is a no-op.
            with connect(self.url, open_timeout=5, ping_interval=None) as ws:
                ws.socket.close()

        yield in_thread(client)
        yield self.when(lambda: "on_disconnect" in rec.names())
        self.assertEqual(rec.events[-1], ("on_disconnect", False, 1006))

    @inlineCallbacks
    def test_error_closes_1011_others_continue(self) -> None:
        """A raising handler closes its connection with 1011 only."""

        class Fragile(Recorder):
            def on_message(self, conn: Any, text: str) -> None:
                if text == "boom":
                    raise RuntimeError("handler bug")
                conn.send_text(text)

        rec = Fragile()
        yield self.start_server(rec)

        def client() -> tuple[int | None, str]:
            with connect(self.url, open_timeout=5) as good:
                with connect(self.url, open_timeout=5) as bad:
                    bad.send("boom")
                    try:
                        bad.recv(timeout=5)
                    except ConnectionClosed as e:
                        code = e.rcvd.code if e.rcvd else None
                good.send("fine")
                return code, good.recv(timeout=5)

        code, echoed = yield in_thread(client)
        self.assertEqual((code, echoed), (1011, "fine"))
        self.assertIn(("on_error", "RuntimeError"), rec.events)
        self.flushLoggedErrors(RuntimeError)

    @inlineCallbacks
    def test_refusals(self) -> None:
        """on_connect False drops the socket; allow's Reject answers its status."""

        class Gate(Recorder):
            def on_connect(self, peer: Any) -> bool:
                return self.open_gate

            def allow(self, conn: Any) -> Any:
                if conn.request.param("token") != "secret":
                    return Reject(401, "Unauthorized")
                return True

        gate = Gate()
        gate.open_gate = False
        yield self.start_server(gate)

        def attempt(url: str) -> Any:
            try:
                with connect(url, open_timeout=5):
                    return "open"
            except InvalidStatus as e:
                return e.response.status_code
            except Exception as e:
                return type(e).__name__

        dropped = yield in_thread(attempt, self.url)
        self.assertNotEqual(dropped, "open")
        gate.open_gate = True
        status = yield in_thread(attempt, self.url + "/?token=wrong")
        self.assertEqual(status, 401)
        ok = yield in_thread(attempt, self.url + "/?token=secret")
        self.assertEqual(ok, "open")


class SendingTests(ServerTestCase):
    """broadcast, send_to, write_data, ping_all and disconnect_all."""

    @inlineCallbacks
    def test_sending_methods(self) -> None:
        """Two clients see exactly what each sending method addresses to them."""

        class Director(Recorder):
            """When client a says "go", exercise every sending method."""

            def on_message(self, conn: Any, text: str) -> None:
                super().on_message(conn, text)
                server, a = conn.server, conn
                server.broadcast("to all")
                server.broadcast(b"bin to all")
                server.send_to("not a", lambda c: c is not a)
                server.write_data(a.id, "only a")
                server.ping_all(b"hb")
                server.disconnect_all()

        rec = Director()
        yield self.start_server(rec)

        def drain(ws: Any) -> list[Any]:
            got: list[Any] = []
            while True:
                try:
                    got.append(ws.recv(timeout=5))
                except ConnectionClosed as e:
                    got.append(("closed", e.rcvd.code if e.rcvd else None))
                    return got

        def clients() -> tuple[list[Any], list[Any]]:
            with connect(self.url, open_timeout=5) as a:
                with connect(self.url, open_timeout=5) as b:
                    a.send("go")
                    return drain(a), drain(b)

        got_a, got_b = yield in_thread(clients)
        self.assertEqual(got_a, ["to all", b"bin to all", "only a", ("closed", 1001)])
        self.assertEqual(got_b, ["to all", b"bin to all", "not a", ("closed", 1001)])
        yield self.when(lambda: rec.names().count("on_disconnect") == 2)
        pongs = [e for e in rec.events if e[0] == "on_pong"]
        self.assertEqual(pongs, [("on_pong", b"hb"), ("on_pong", b"hb")])

    @inlineCallbacks
    def test_split_message_over_the_wire(self) -> None:
        """A split message crosses a real socket intact."""

        class Echo(Recorder):
            def on_message(self, conn: Any, text: str) -> None:
                conn.send_text(text)

        yield self.start_server(Echo(), split_message=True, frame_size=50)

        def client() -> str:
            with connect(self.url, open_timeout=5) as ws:
                ws.send("é" * 3000)
                return ws.recv(timeout=5)

        echoed = yield in_thread(client)
        self.assertEqual(echoed, "é" * 3000)

    @inlineCallbacks
    def test_compression(self) -> None:
        """With compression on, permessage-deflate is negotiated and works."""

        class Echo(Recorder):
            def on_message(self, conn: Any, text: str) -> None:
                conn.send_text(text)

        yield self.start_server(Echo(), compression=True)

        def client() -> tuple[str, list[str]]:
            with connect(self.url, open_timeout=5) as ws:
                ws.send("z" * 10000)
                extensions = [e.name for e in ws.protocol.extensions]
                return ws.recv(timeout=5), extensions

        echoed, extensions = yield in_thread(client)
        self.assertEqual(echoed, "z" * 10000)
        self.assertEqual(extensions, ["permessage-deflate"])


class PullApiTests(ServerTestCase):
    """await conn.receive() and wait_for_message over a real connection."""

    @inlineCallbacks
    def test_receive_loop_answers_close(self) -> None:
        """With manual_close, a receive loop gets the client's close as a
        CloseMessage and answers it; the client sees its own code back and
        the connection ends cleanly (it used to hang until 1006)."""
        seen: list[Any] = []
        rec = Recorder()

        class Loop:
            def on_open(self, conn: Any) -> Deferred[None]:
                async def run() -> None:
                    async for message in conn:
                        seen.append(message)
                        if isinstance(message, CloseMessage):
                            conn.close(message.code, "answered")
                        else:
                            conn.send_text("echo " + message)

                return Deferred.fromCoroutine(run())

            def on_disconnect(
                self, conn: Any, was_clean: bool, code: Any, reason: str
            ) -> None:
                rec.events.append(("on_disconnect", was_clean, code))

        yield self.start_server(Loop(), manual_close=True)

        def client() -> tuple[str, Any]:
            with connect(self.url, open_timeout=5) as ws:
                ws.send("hi")
                echo = ws.recv(timeout=5)
                ws.close(4001, "done")
                rcvd = ws.protocol.close_rcvd
                assert rcvd is not None
                return echo, (rcvd.code, rcvd.reason)

        echo, answer = yield in_thread(client)
        self.assertEqual(echo, "echo hi")
        self.assertEqual(answer, (4001, "answered"))
        yield self.when(lambda: "on_disconnect" in rec.names())
        self.assertEqual(seen, ["hi", CloseMessage(4001, "done")])
        self.assertEqual(rec.events, [("on_disconnect", True, 4001)])

    @inlineCallbacks
    def test_wait_for_pong(self) -> None:
        """The server pings and waits for the pong (FPC WaitForPongMessage)
        while messages stay queued for receive()."""

        class Pinger:
            def on_open(self, conn: Any) -> Deferred[None]:
                async def run() -> None:
                    conn.ping(b"are you there")
                    pong = await conn.wait_for_message("pong", timeout=5)
                    first = await conn.receive()
                    conn.send_text(f"{pong.kind}: {pong.text}; then {first}")

                return Deferred.fromCoroutine(run())

        yield self.start_server(Pinger())

        def client() -> str:
            with connect(self.url, open_timeout=5) as ws:
                ws.send("queued")
                return str(ws.recv(timeout=5))

        answer = yield in_thread(client)
        self.assertEqual(answer, "pong: are you there; then queued")


class FragmentModeTests(ServerTestCase):
    """sgc's frgAll delivery and FPC's per-message frame size, over a real
    socket against an independent client (issue 15 item 6)."""

    @inlineCallbacks
    def test_assemble_messages_and_frame_size(self) -> None:
        """With frame_by_frame and assemble_messages, each fragment reaches
        on_fragment and then the whole message reaches on_message; the
        answer sent with frame_size=20 arrives in frames of at most 18
        payload bytes (20 with the 2-byte header)."""

        class Both(Recorder):
            def on_message(self, conn: Any, text: str) -> None:
                super().on_message(conn, text)
                conn.send_text(text * 5, frame_size=20)

        rec = Both()
        yield self.start_server(rec, frame_by_frame=True, assemble_messages=True)

        def client() -> list[str]:
            with connect(self.url, open_timeout=5) as ws:
                ws.send(iter(["ab", "cd", "efghij"]))  # three frames, an empty last
                return list(ws.recv_streaming())  # close_timeout bounds it

        frames = yield in_thread(client)
        self.assertEqual("".join(frames), "abcdefghij" * 5)
        self.assertEqual([len(f) for f in frames], [18, 18, 14])
        yield self.when(lambda: "on_message" in rec.names())
        self.assertEqual(
            [e for e in rec.events if e[0] in ("on_fragment", "on_message")],
            [
                ("on_fragment", b"ab", False, False),
                ("on_fragment", b"cd", False, False),
                ("on_fragment", b"efghij", False, False),
                ("on_fragment", b"", False, True),  # websockets ends so
                ("on_message", "abcdefghij"),
            ],
        )
