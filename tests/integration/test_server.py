"""WebSocketServer life cycle over real endpoints: start, stop, restart,
active, several endpoints, startup/shutdown events, graceful close."""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import CannotListenError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect, unix_connect

from tests.helpers import Recorder
from tests.integration.support import ServerTestCase, in_thread
from wsplugin import WebSocketServer


class Echo(Recorder):
    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        conn.send_text(text)

    def on_startup(self, server: Any) -> None:
        self.events.append(("on_startup",))

    def on_shutdown(self, server: Any) -> None:
        self.events.append(("on_shutdown",))


def echo_once(url: str, text: str = "ping") -> str:
    with connect(url, open_timeout=5) as ws:
        ws.send(text)
        return ws.recv(timeout=5)


class LifeCycleTests(ServerTestCase):
    """start/stop/restart/active and the server events."""

    @inlineCallbacks
    def test_start_stop_events(self) -> None:
        """start() fires after listening with on_startup; stop() stops
        listening and fires on_shutdown."""
        handler = Echo()
        server = yield self.start_server(handler)
        self.assertTrue(server.active)
        self.assertEqual(handler.names(), ["on_startup"])
        echoed = yield in_thread(echo_once, self.url)
        self.assertEqual(echoed, "ping")
        port = server.ports[0].getHost().port
        yield server.stop()
        self.assertFalse(server.active)
        self.assertEqual(handler.names()[-1], "on_shutdown")
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0)

    @inlineCallbacks
    def test_active_property_and_restart(self) -> None:
        """active = False stops, active = True starts; restart rebinds."""
        handler = Echo()
        port = None
        server = yield self.start_server(
            handler, endpoints=["tcp:0:interface=127.0.0.1"]
        )
        server.active = False
        yield self.when(lambda: not server.ports and "on_shutdown" in handler.names())
        server.endpoints = [f"tcp:{self._free()}:interface=127.0.0.1"]
        server.active = True
        yield self.when(lambda: bool(server.ports))
        port = server.ports[0].getHost().port
        yield server.restart()
        self.assertEqual(server.ports[0].getHost().port, port)
        echoed = yield in_thread(echo_once, f"ws://127.0.0.1:{port}")
        self.assertEqual(echoed, "ping")
        self.assertEqual(handler.names().count("on_startup"), 3)
        self.assertEqual(handler.names().count("on_shutdown"), 2)

    def _free(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    @inlineCallbacks
    def test_several_endpoints(self) -> None:
        """One server listens on TCP and a UNIX socket at once."""
        path = self.mktemp() + ".sock"
        yield self.start_server(
            Echo(), endpoints=["tcp:0:interface=127.0.0.1", f"unix:{path}"]
        )

        def over_unix() -> str:
            with unix_connect(path, "ws://localhost/", open_timeout=5) as ws:
                ws.send("unix")
                return ws.recv(timeout=5)

        self.assertEqual((yield in_thread(over_unix)), "unix")
        self.assertEqual((yield in_thread(echo_once, self.url, "tcp")), "tcp")

    @inlineCallbacks
    def test_listen_failure(self) -> None:
        """start() fails with the listening error when a port is taken, and
        on_startup does not fire."""
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        self.addCleanup(blocker.close)
        handler = Echo()
        server = WebSocketServer(
            handler, endpoints=[f"tcp:{blocker.getsockname()[1]}:interface=127.0.0.1"]
        )
        yield self.assertFailure(server.start(), CannotListenError)
        self.assertEqual(handler.names(), [])
        self.flushLoggedErrors(CannotListenError)
        yield server.stop()

    @inlineCallbacks
    def test_composes_into_application(self) -> None:
        """As a child service, it starts and stops with its parent."""
        parent = MultiService()
        handler = Echo()
        server = WebSocketServer(handler, endpoints=["tcp:0:interface=127.0.0.1"])
        server.setServiceParent(parent)
        parent.startService()
        yield server.start()
        url = f"ws://127.0.0.1:{server.ports[0].getHost().port}"
        self.assertEqual((yield in_thread(echo_once, url)), "ping")
        yield parent.stopService()
        self.assertFalse(server.active)
        self.assertIn("on_shutdown", handler.names())

    @inlineCallbacks
    def test_graceful_stop(self) -> None:
        """stop() sends close 1001 to clients and waits for them; each gets
        on_disconnect once."""
        handler = Echo()
        server = yield self.start_server(handler, shutdown_timeout=5)
        opened: list[Any] = []

        def client() -> int | None:
            with connect(self.url, open_timeout=5) as ws:
                opened.append(True)
                try:
                    ws.recv(timeout=10)
                except ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd else None
            return None

        result = in_thread(client)
        yield self.when(lambda: len(server.connections) == 1)
        yield server.stop()
        code = yield result
        self.assertEqual(code, 1001)
        self.assertEqual(handler.names().count("on_disconnect"), 1)

    @inlineCallbacks
    def test_stop_waits_for_aborted_connections(self) -> None:
        """Clients that never answer the 1001 are aborted at shutdown_timeout;
        stop() and on_shutdown fire only once they have all left
        server.connections."""

        class Handler(Echo):
            def on_shutdown(self, server: Any) -> None:
                super().on_shutdown(server)
                left.append(len(server.connections))

        left: list[int] = []
        handler = Handler()
        server = yield self.start_server(handler, shutdown_timeout=0.5)
        port = server.ports[0].getHost().port

        def silent_clients() -> list[socket.socket]:
            socks = []
            for _ in range(20):
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(
                    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                )
                socks.append(sock)  # never reads, never answers
            return socks

        socks = yield in_thread(silent_clients)
        self.addCleanup(lambda: [s.close() for s in socks])
        yield self.when(lambda: len(server.connections) == 20)
        yield server.stop()
        self.assertEqual(len(server.connections), 0)
        self.assertEqual(left, [0])
        self.assertEqual(handler.names().count("on_disconnect"), 20)


class WatchdogTests(ServerTestCase):
    """watchdog_interval / watchdog_attempts retry a failed listen (sgc WatchDog)."""

    def _blocked_port(self) -> socket.socket:
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        self.addCleanup(blocker.close)
        return blocker

    @inlineCallbacks
    def test_retries_until_free(self) -> None:
        """While the port is taken the server retries; once freed it listens
        and fires on_startup once."""
        blocker = self._blocked_port()
        port = blocker.getsockname()[1]
        handler = Echo()
        server = WebSocketServer(
            handler,
            endpoints=[f"tcp:{port}:interface=127.0.0.1"],
            watchdog_interval=0.05,
        )
        self.addCleanup(server.stop)
        started = server.start()
        yield self.when(lambda: server.listening.attempts >= 2)
        self.assertNoResult(started)
        blocker.close()
        yield started
        self.assertEqual(handler.names(), ["on_startup"])
        echoed = yield in_thread(echo_once, f"ws://127.0.0.1:{port}")
        self.assertEqual(echoed, "ping")

    @inlineCallbacks
    def test_gives_up_after_attempts(self) -> None:
        """With watchdog_attempts=2, start() fails after two retries."""
        blocker = self._blocked_port()
        server = WebSocketServer(
            Echo(),
            endpoints=[f"tcp:{blocker.getsockname()[1]}:interface=127.0.0.1"],
            watchdog_interval=0.02,
            watchdog_attempts=2,
        )
        self.addCleanup(server.stop)
        yield self.assertFailure(server.start(), CannotListenError)
        self.assertEqual(server.listening.attempts, 2)


class PrivilegedStartTests(ServerTestCase):
    """twistd's two-phase start, and a start that fails."""

    @inlineCallbacks
    def test_listens_in_privileged_phase(self) -> None:
        """privilegedStartService binds (before --uid drops root); the later
        startService does not bind again."""
        server = WebSocketServer(Echo(), endpoints=["tcp:0:interface=127.0.0.1"])
        self.addCleanup(server.stop)
        server.privilegedStartService()
        yield self.when(lambda: bool(server.ports))
        port = server.ports[0]
        server.startService()
        yield server.start()
        self.assertEqual(server.ports, [port])
        url = f"ws://127.0.0.1:{port.getHost().port}"
        self.assertEqual((yield in_thread(echo_once, url)), "ping")

    @inlineCallbacks
    def test_failed_start_is_inactive_and_retryable(self) -> None:
        """A start that cannot listen leaves the server inactive; once the
        port is free, start() again succeeds."""
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = WebSocketServer(Echo(), endpoints=[f"tcp:{port}:interface=127.0.0.1"])
        self.addCleanup(server.stop)
        yield self.assertFailure(server.start(), CannotListenError)
        self.assertFalse(server.active)
        blocker.close()
        yield server.start()
        self.assertTrue(server.active)
        self.assertEqual((yield in_thread(echo_once, f"ws://127.0.0.1:{port}")), "ping")


class GracefulShutdownTests(ServerTestCase):
    """stop() delivers what was sent before it, then closes with 1001."""

    @inlineCallbacks
    def test_queued_data_flushed_before_close(self) -> None:
        """8 MiB sent just before stop() all reach a reading client, then the
        close 1001 arrives; on_disconnect fires once."""
        handler = Echo()
        server = yield self.start_server(
            handler, shutdown_timeout=20, max_send_buffer=16 * 1024 * 1024
        )
        chunk = b"q" * (256 * 1024)
        opened: list[bool] = []

        def client() -> tuple[int, int | None]:
            total = 0
            with connect(self.url, open_timeout=5, max_size=None) as ws:
                opened.append(True)
                try:
                    while True:
                        total += len(ws.recv(timeout=20))
                except ConnectionClosed as e:
                    return total, e.rcvd.code if e.rcvd else None
            return total, None

        result = in_thread(client)
        yield self.when(lambda: bool(opened) and len(server.connections) == 1)
        (conn,) = list(server.connections)
        # a small kernel send buffer, so most of the 8 MiB stays with the
        # server when stop() is called (on loopback the kernel can take it
        # all in one sendmsg(), and there would be nothing left to flush)
        sock = conn.engine.transport.getHandle()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        for _ in range(32):
            conn.send_binary(chunk)
        self.assertGreater(conn.buffered_amount, 0)
        yield server.stop()
        total, code = yield result
        self.assertEqual((total, code), (32 * len(chunk), 1001))
        self.assertEqual(handler.names().count("on_disconnect"), 1)


class NvxReportTests(ServerTestCase):
    """Starting says whether Autobahn's NVX accelerators are in use."""

    @inlineCallbacks
    def _start_with(self, uses: bool, has: bool) -> Any:
        import autobahn.websocket as autobahn_websocket
        from twisted.logger import capturedLogs, formatEvent

        self.patch(autobahn_websocket, "USES_NVX", uses)
        self.patch(autobahn_websocket, "HAS_NVX", has)
        with capturedLogs() as events:
            yield self.start_server(Echo())
        return [
            (e["log_level"].name, formatEvent(e))
            for e in events
            if "NVX" in formatEvent(e)
        ]

    @inlineCallbacks
    def test_on(self) -> None:
        lines = yield self._start_with(True, True)
        self.assertEqual(lines, [("info", "Autobahn NVX accelerators: on")])

    @inlineCallbacks
    def test_not_built_warns(self) -> None:
        lines = yield self._start_with(False, False)
        self.assertEqual([level for level, _ in lines], ["warn"])
        self.assertIn("not built", lines[0][1])

    @inlineCallbacks
    def test_switched_off_warns(self) -> None:
        lines = yield self._start_with(False, True)
        self.assertEqual([level for level, _ in lines], ["warn"])
        self.assertIn("AUTOBAHN_USE_NVX=0", lines[0][1])


class CodecReportTests(ServerTestCase):
    """Starting says which frame codec is active, and which reactor runs."""

    @inlineCallbacks
    def test_logged(self) -> None:
        from twisted.internet import reactor
        from twisted.logger import capturedLogs, formatEvent

        from wsplugin import _codec

        with capturedLogs() as events:
            yield self.start_server(Echo())
        lines = [formatEvent(e) for e in events if "frame codec" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        want = "compiled" if _codec.IMPLEMENTATION == "c" else "pure Python"
        self.assertIn(f"frame codec: {want}", lines[0])
        self.assertIn(f"reactor: {type(reactor).__name__}", lines[0])
