"""Support for loopback integration tests: a running server, an independent
client (the ``websockets`` package's sync client, run in a thread so the
reactor keeps serving), and twistd subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from wsplugin import WebSocketServer

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
    """Run blocking client code in the reactor's thread pool."""
    return deferToThread(func, *args, **kwargs)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Block until 127.0.0.1:port accepts connections (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class ServerTestCase(TestCase):
    """Starts servers on loopback ports and stops them after the test."""

    timeout = 60

    @inlineCallbacks
    def start_server(self, handler: Any = None, **options: Any) -> Any:
        """Start a WebSocketServer on a free loopback port; returns its URL."""
        endpoints = options.pop("endpoints", ["tcp:0:interface=127.0.0.1"])
        server = WebSocketServer(handler, endpoints=endpoints, **options)
        self.server = server
        yield server.start()
        self.addCleanup(server.stop)
        port = server.ports[0].getHost().port
        self.url = f"ws://127.0.0.1:{port}"
        return server

    def when(
        self, condition: Callable[[], bool], timeout: float = 10.0
    ) -> Deferred[None]:
        """Fire once ``condition()`` is true, polling the reactor (bounded)."""
        d: Deferred[None] = Deferred()
        deadline = time.monotonic() + timeout

        def check() -> None:
            if condition():
                d.callback(None)
            elif time.monotonic() > deadline:
                d.errback(TimeoutError("condition not met in time"))
            else:
                reactor.callLater(0.01, check)  # type: ignore[attr-defined]

        check()
        return d


class Twistd:
    """A ``twistd -n ws`` subprocess on a free port, stopped at cleanup."""

    def __init__(
        self,
        test: TestCase,
        *args: str,
        port: int | None = None,
        scheme: str = "tcp",
        cwd: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log = Path(test.mktemp() + ".log").resolve()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        port_args = (
            []
            if scheme is None
            else ["--port", f"{scheme}:{self.port}:interface=127.0.0.1"]
        )
        cmd = [
            str(VENV_BIN / "twistd"),
            "-n",
            "--pidfile=",
            f"--logfile={self.log}",
            "ws",
            *port_args,
            *args,
        ]
        env = dict(os.environ)
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd or ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        test.addCleanup(self.stop)

    def wait_listening(self) -> None:
        """Block until the server accepts connections (or fail with its log)."""
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            output = self.proc.stdout.read().decode() if self.proc.stdout else ""
            raise AssertionError(
                f"twistd did not listen; output:\n{output}\nlog:\n{self.read_log()}"
            ) from None

    def read_log(self) -> str:
        """The server's log so far."""
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> int:
        """SIGTERM the server and wait (bounded); returns its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode
