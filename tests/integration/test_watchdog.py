"""The watchdog after an unexpected stop (sgc WatchDog), over real sockets:
the listening socket is shut down underneath the server, and the server
listens again while an open connection carries on."""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from typing import Any

from twisted.internet.defer import inlineCallbacks
from websockets.sync.client import connect

from tests.integration.support import ServerTestCase, free_port, in_thread
from wsplugin import WebSocketServer


class Echo:
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_message(self, conn: Any, text: str) -> None:
        conn.send_text(text)

    def on_startup(self, server: Any) -> None:
        self.events.append("on_startup")

    def on_shutdown(self, server: Any) -> None:
        self.events.append("on_shutdown")


def shut_down_underneath(port: Any) -> None:
    """Stop the listening socket from accepting, through a duplicate of its
    descriptor, as a failure outside the server would: the server's own
    objects are not touched."""
    duplicate = socket.socket(fileno=os.dup(port.fileno()))
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
    finally:
        duplicate.close()


def refused(number: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", number), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


class LostListenerTests(ServerTestCase):
    """A listener lost while the server runs comes back."""

    timeout = 60

    @inlineCallbacks
    def test_listens_again_connection_untouched(self) -> None:
        """After the listening socket is shut down underneath: on_shutdown,
        then the watchdog listens again on the same port, on_startup fires,
        new clients get in, and the connection opened before still echoes."""
        number = free_port()
        handler = Echo()
        server = WebSocketServer(
            handler,
            endpoints=[f"tcp:{number}:interface=127.0.0.1"],
            watchdog_interval=0.1,
        )
        yield server.start()
        self.addCleanup(server.stop)
        url = f"ws://127.0.0.1:{number}/"
        stack = ExitStack()
        self.addCleanup(in_thread, stack.close)  # the close needs the reactor

        def open_client() -> Any:
            ws = stack.enter_context(connect(url, open_timeout=10))
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            return ws

        ws = yield in_thread(open_client)
        (first,) = server.ports
        shut_down_underneath(first)
        self.assertTrue((yield in_thread(refused, number)))
        yield self.when(
            lambda: handler.events[-1:] == ["on_startup"] and len(handler.events) == 3
        )
        self.assertEqual(handler.events, ["on_startup", "on_shutdown", "on_startup"])
        (second,) = server.ports
        self.assertIsNot(second, first)
        self.assertEqual(second.getHost().port, number)

        def after() -> tuple[str, str]:
            ws.send("still here")
            old = ws.recv(timeout=10)
            with connect(url, open_timeout=10) as fresh:
                fresh.send("new")
                return old, fresh.recv(timeout=10)

        self.assertEqual((yield in_thread(after)), ("still here", "new"))
        self.assertEqual(len(server.connections), 1)
        self.flushLoggedErrors()
