"""A plain ``pip install .`` into a fresh venv gives a working ``twistd ws``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase
from websockets.sync.client import connect

from tests.integration.support import ROOT, free_port, in_thread, wait_for_port

CODEC_CHECK = (
    "import wsplugin._codec as c, wsplugin; print(c.IMPLEMENTATION, wsplugin.__file__)"
)


class InstallTests(TestCase):
    """The dropin ships with the package and twistd finds it."""

    timeout = 600

    @inlineCallbacks
    def test_fresh_venv(self) -> None:
        """Install into a new venv, then (from a directory outside the
        checkout) the compiled frame codec is active when a C compiler is
        here, twistd --help lists ws, twistd ws --help works, and twistd -n
        ws --app echo echoes a message."""
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
        # the compiled frame codec was built by that plain pip install
        # (issue 16), since this machine has the C compiler Python was
        # built with; WSPLUGIN_NO_EXTENSIONS is left out so that it counts
        env = {k: v for k, v in os.environ.items() if k != "WSPLUGIN_NO_EXTENSIONS"}
        compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
        codec = subprocess.run(
            [str(venv / "bin" / "python"), "-c", CODEC_CHECK],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if shutil.which(compiler):
            self.assertEqual(codec[0], "c", codec)
            self.assertTrue(codec[1].startswith(str(venv)), codec)
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
