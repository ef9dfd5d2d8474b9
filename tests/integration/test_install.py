"""A plain ``pip install .`` into a fresh venv gives a working ``twistd ws``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase
from websockets.sync.client import connect

from tests.integration.support import ROOT, free_port, in_thread, wait_for_port


class InstallTests(TestCase):
    """The dropin ships with the package and twistd finds it."""

    timeout = 600

    @inlineCallbacks
    def test_fresh_venv(self) -> None:
        """Install into a new venv, then (from a directory outside the
        checkout) twistd --help lists ws, twistd ws --help works, and
        twistd -n ws --app echo echoes a message."""
        if os.environ.get("WSPLUGIN_SKIP_INSTALL_TEST"):
            raise SkipTest("WSPLUGIN_SKIP_INSTALL_TEST is set")
        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        venv = work / "venv"
        base_python = getattr(sys, "_base_executable", sys.executable)

        def run(*cmd: str, timeout: float = 300) -> str:
            result = subprocess.run(
                cmd, cwd=work, capture_output=True, text=True, timeout=timeout
            )
            if result.returncode:
                raise AssertionError(f"{cmd} failed:\n{result.stdout}\n{result.stderr}")
            return result.stdout

        def install() -> None:
            run(base_python, "-m", "venv", str(venv))
            run(
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                str(ROOT),
                timeout=540,
            )

        yield in_thread(install)
        twistd = str(venv / "bin" / "twistd")
        listing = run(twistd, "--help")
        self.assertIn(" ws ", listing)
        self.assertIn("--frame-by-frame", run(twistd, "ws", "--help"))

        port = free_port()
        proc = subprocess.Popen(
            [
                twistd,
                "-n",
                "--pidfile=",
                "ws",
                "--app",
                "echo",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()

        self.addCleanup(stop)

        def echo() -> str:
            wait_for_port(port, timeout=30)
            with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
                ws.send("installed")
                return ws.recv(timeout=10)

        self.assertEqual((yield in_thread(echo)), "installed")
