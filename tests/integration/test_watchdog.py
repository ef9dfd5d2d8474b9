"""The watchdog after an unexpected stop (sgc WatchDog), over real sockets:
the listening socket is shut down, destroyed or closed underneath the
server, and the server listens again while an open connection carries on;
without the watchdog, a destroyed listener is dropped with one log line
instead of a busy loop of tracebacks."""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
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


def destroy_underneath(port: Any) -> None:
    """Leave the listening socket as ``ss -K`` does (through a duplicate of
    its descriptor): not listening, yet reported readable for ever, and
    ``accept()`` fails with EINVAL. A plain shutdown leaves it unreadable
    (Twisted then closes the port itself); a second one, of the reading
    side, makes it readable."""
    duplicate = socket.socket(fileno=os.dup(port.fileno()))
    try:
        duplicate.shutdown(socket.SHUT_RDWR)
        try:
            duplicate.shutdown(socket.SHUT_RD)
        except OSError:
            pass  # ENOTCONN, with the flag set
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
        # no accept() traceback: the guard found the listener first
        self.assertEqual(self.flushLoggedErrors(), [])


class Lines:
    """Log lines written while it is installed."""

    def __init__(self, test: Any) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        test.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict[str, Any]) -> None:
        self.lines.append(formatEvent(event) or "")

    def count(self, fragment: str) -> int:
        return sum(fragment in line for line in self.lines)


def count_reads(port: Any) -> list[int]:
    """Count the reactor's calls of ``port.doRead`` (an accept loop that
    spins calls it thousands of times a second)."""
    calls = [0]
    read = port.doRead

    def doRead() -> Any:
        calls[0] += 1
        return read()

    port.doRead = doRead
    return calls


def echo_once(url: str) -> str:
    with connect(url, open_timeout=10) as ws:
        ws.send("new")
        return ws.recv(timeout=10)


def readers() -> list[Any]:
    """The reactor's readers; a reactor whose tables name a descriptor it
    no longer knows (the defect) raises KeyError here, as at shutdown."""
    return list(reactor.getReaders())  # type: ignore[attr-defined]


class DestroyedListenerTests(ServerTestCase):
    """A listener destroyed in place (``ss -K``, ``shutdown()``): accept()
    fails with EINVAL. No busy loop, one log line, watchdog on or off."""

    timeout = 60

    @inlineCallbacks
    def _destroy(self, **options: Any) -> Any:
        handler = Echo()
        number = free_port()
        server = WebSocketServer(
            handler, endpoints=[f"tcp:{number}:interface=127.0.0.1"], **options
        )
        yield server.start()
        self.addCleanup(server.stop)
        url = f"ws://127.0.0.1:{number}/"
        stack = ExitStack()
        self.addCleanup(in_thread, stack.close)

        def open_client() -> Any:
            ws = stack.enter_context(connect(url, open_timeout=10))
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            return ws

        ws = yield in_thread(open_client)
        lines = Lines(self)
        (port,) = server.ports
        reads = count_reads(port)
        destroy_underneath(port)
        if not options.get("watchdog_interval"):
            # with the watchdog the port may already be listened on again
            self.assertTrue((yield in_thread(refused, number)))
        # a bounded look at the loop: the socket stays readable for ever
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertLessEqual(reads[0], 2)
        self.assertEqual(lines.count("is lost (its socket no longer accepts"), 1)
        self.assertEqual(lines.count("Traceback"), 0)
        self.assertEqual(lines.count("Invalid argument"), 0)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertNotIn(port, readers())

        def still() -> str:
            ws.send("still here")
            return ws.recv(timeout=10)

        self.assertEqual((yield in_thread(still)), "still here")
        return server, handler, url

    @inlineCallbacks
    def test_watchdog_off(self) -> None:
        """Without the watchdog (the default) the port is dropped: one
        error line, no accept loop; open connections carry on."""
        server, handler, _ = yield self._destroy()
        self.assertEqual(server.ports, [])
        self.assertEqual(handler.events, ["on_startup"])

    @inlineCallbacks
    def test_watchdog_on(self) -> None:
        """With the watchdog the port is found at its first read (not one
        interval later), then listened on again."""
        server, handler, url = yield self._destroy(watchdog_interval=0.2)
        yield self.when(lambda: len(handler.events) == 3)
        self.assertEqual(handler.events, ["on_startup", "on_shutdown", "on_startup"])
        self.assertEqual((yield in_thread(echo_once, url)), "new")


class ClosedDescriptorTests(ServerTestCase):
    """The listening descriptor closed underneath (close() from outside,
    as with gdb): the new listener really accepts, the dead socket object
    never closes the number again, and the reactor's tables stay sound."""

    timeout = 60

    @inlineCallbacks
    def _close_underneath(self, reuse: bool) -> Any:
        handler = Echo()
        number = free_port()
        server = WebSocketServer(
            handler,
            endpoints=[f"tcp:{number}:interface=127.0.0.1"],
            watchdog_interval=0.1,
        )
        yield server.start()
        self.addCleanup(server.stop)
        url = f"ws://127.0.0.1:{number}/"
        stack = ExitStack()
        self.addCleanup(in_thread, stack.close)

        def open_client() -> Any:
            ws = stack.enter_context(connect(url, open_timeout=10))
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            return ws

        ws = yield in_thread(open_client)
        (first,) = server.ports
        fd = first.fileno()
        os.close(fd)
        intruder = None
        if reuse:
            # another file takes the number before the server notices
            null = os.open(os.devnull, os.O_RDONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            intruder = os.fstat(fd).st_ino
            self.addCleanup(os.close, fd)
        yield self.when(lambda: len(handler.events) == 3)
        self.assertEqual(handler.events, ["on_startup", "on_shutdown", "on_startup"])
        (second,) = server.ports
        self.assertIsNot(second, first)
        if intruder is not None:
            # the number still belongs to the file that took it
            self.assertEqual(os.fstat(fd).st_ino, intruder)
        self.assertNotIn(first, readers())
        self.assertIn(second, readers())

        def after() -> tuple[str, str]:
            ws.send("still here")
            return ws.recv(timeout=10), echo_once(url)

        self.assertEqual((yield in_thread(after)), ("still here", "new"))
        self.assertEqual(self.flushLoggedErrors(), [])
        yield server.stop()
        self.assertNotIn(second, readers())  # no KeyError either

    def test_new_listener_accepts(self) -> None:
        """The number is free when the watchdog looks (the new socket may
        get it): the new listener accepts, stop() is clean."""
        return self._close_underneath(reuse=False)

    def test_number_reused_meanwhile(self) -> None:
        """Another file took the number first: it is left alone, and the
        new listener (on another number) accepts."""
        return self._close_underneath(reuse=True)
