"""``twistd --reactor=uvloop ws`` over a real loopback socket: it serves,
and its start-up log names the reactor and the frame codec."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.sync.client import connect

from tests.integration.support import (
    ROOT,
    VENV_BIN,
    free_port,
    in_thread,
    wait_for_port,
)
from tests.test_reactors import need_uvloop


class UvloopTwistdTests(TestCase):
    """The production setting measured in docs/performance.md."""

    timeout = 60

    @inlineCallbacks
    def test_echo_on_uvloop(self) -> None:
        """A text and a 100 KiB binary message are echoed; the log says
        which reactor and which codec serve them."""
        need_uvloop(self)
        port = free_port()
        log = Path(self.mktemp() + ".log").resolve()
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "twistd"),
                "--reactor=uvloop",
                "-n",
                "--pidfile=",
                f"--logfile={log}",
                "ws",
                "--app",
                "echo",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            proc.terminate()
            proc.wait(15)

        self.addCleanup(stop)
        yield in_thread(wait_for_port, port)

        def talk() -> list[object]:
            with connect(f"ws://127.0.0.1:{port}/") as ws:
                ws.send("hello")
                first = ws.recv(timeout=10)
                ws.send(b"\x01" * 102400)
                second = ws.recv(timeout=10)
            return [first, second]

        got = yield in_thread(talk)
        self.assertEqual(got, ["hello", b"\x01" * 102400])
        deadline = time.monotonic() + 10
        text = ""
        while "frame codec" not in text and time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            time.sleep(0.05)
        self.assertIn("reactor: AsyncioSelectorReactor", text)
