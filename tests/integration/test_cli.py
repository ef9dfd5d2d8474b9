"""The chat client (``python -m wsplugin.client``, ``wsplugin-client``) as
users run it: subprocesses against ``twistd ws`` and wsplugin servers over
real loopback sockets, exit statuses and their one-line errors, ``--help``."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration.client_support import ClientTestCase, Echo, certificates
from tests.integration.support import ROOT, Twistd, free_port, in_thread
from tests.test_cli import HELP_SKIP, documented_help
from wsplugin import Reject


class ChatProcess:
    """``python -m wsplugin.client URL`` with piped stdin/stdout/stderr."""

    def __init__(self, test: Any, url: str, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wsplugin.client", url, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        test.addCleanup(self.kill)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """Block until a line containing ``text`` is printed (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {text!r}; got {self.output!r}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"exited before {text!r}; got {self.output!r}")
            self.output.append(line)
            if text in line:
                return line

    def send(self, line: str) -> None:
        """Type a line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 20.0) -> tuple[int, str]:
        """Close stdin, wait for the exit (bounded); (status, stderr)."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        status = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        return status, self.proc.stderr.read().decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def run_cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run the chat client to completion with no input (bounded)."""
    result = subprocess.run(
        [sys.executable, "-m", "wsplugin.client", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


class CLITests(ClientTestCase):
    """The chat client (FPC chatClient) as users run it."""

    timeout = 120

    @inlineCallbacks
    def test_two_clients_chat_through_twistd(self) -> None:
        """Two chat clients see each other's lines through ``twistd -n ws``
        (the chat app broadcasts); ``exit`` and end of input both close with
        1000 and exit 0."""
        server = Twistd(self)
        yield in_thread(server.wait_listening)
        url = f"ws://127.0.0.1:{server.port}/"
        alice, bob = ChatProcess(self, url), ChatProcess(self, url)

        def session() -> tuple[tuple[int, str], tuple[int, str]]:
            alice.wait_for("connected to")
            bob.wait_for("connected to")
            alice.send("hello from alice")
            bob.wait_for("< hello from alice")
            bob.send("hi alice")
            alice.wait_for("< hi alice")
            bob.send("ping still there?")
            bob.wait_for("< [pong] still there?")
            alice.send("exit")
            alice.wait_for("closed (code 1000)")
            return alice.finish(), bob.finish()

        (a_status, a_err), (b_status, b_err) = yield in_thread(session)
        self.assertEqual((a_status, a_err), (0, ""))
        self.assertEqual((b_status, b_err), (0, ""))
        self.assertIn("closed (code 1000)", bob.output)

    @inlineCallbacks
    def test_exit_closes_with_1000(self) -> None:
        """``exit`` ends the connection with close code 1000, cleanly."""
        handler = Echo()
        yield self.start_server(handler)
        chat = ChatProcess(self, self.url + "/room")

        def session() -> tuple[int, str]:
            chat.wait_for("connected to")
            chat.send("hello")
            chat.wait_for("< hello")
            chat.send("exit")
            return chat.finish()

        status, stderr = yield in_thread(session)
        self.assertEqual((status, stderr), (0, ""))
        yield self.when(lambda: "on_disconnect" in handler.names())
        self.assertIn(("on_close", 1000, ""), handler.events)
        self.assertIn(("on_disconnect", True, 1000), handler.events)

    @inlineCallbacks
    def test_unreachable_exits_2(self) -> None:
        """Nothing listening: exit 2 and exactly one line on stderr."""
        port = free_port()
        status, stdout, stderr = yield in_thread(run_cli, f"ws://127.0.0.1:{port}/")
        self.assertEqual(status, 2)
        self.assertEqual(stdout, "")
        self.assertEqual(
            stderr,
            f"wsplugin-client: cannot connect to 127.0.0.1:{port}:"
            " Connection refused\n",
        )

    @inlineCallbacks
    def test_rejected_exits_4(self) -> None:
        """A refused handshake: exit 4, the status on one stderr line."""

        class Locked:
            def allow(self, conn: Any) -> Any:
                return Reject(403, "Forbidden")

        yield self.start_server(Locked())
        status, _, stderr = yield in_thread(run_cli, self.url + "/")
        self.assertEqual(status, 4)
        self.assertEqual(
            stderr,
            f"wsplugin-client: handshake with {self.url}/ failed: 403 Forbidden\n",
        )

    @inlineCallbacks
    def test_tls_exits_3_or_trusts_ca_file(self) -> None:
        """Untrusted certificate: exit 3; with --ca-file: connected."""
        ca, cert_path, key_path = certificates(self, "localhost")
        server = Twistd(
            self, "--app", "echo", "--tls-cert", cert_path, "--tls-key", key_path
        )
        yield in_thread(server.wait_listening)
        url = f"wss://localhost:{server.port}/"
        status, _, stderr = yield in_thread(run_cli, url)
        self.assertEqual(status, 3)
        self.assertEqual(
            stderr,
            f"wsplugin-client: TLS handshake with localhost:{server.port} failed:"
            " certificate verify failed\n",
        )
        ca_file = cert_path + ".ca.pem"
        ca.cert_pem.write_to_path(ca_file)
        status, stdout, stderr = yield in_thread(run_cli, url, "--ca-file", ca_file)
        self.assertEqual((status, stderr), (0, ""))
        self.assertIn(f"connected to {url}", stdout)


class EntryPointTests(TestCase):
    """Both ways of starting the chat client work, and ``--help`` is what
    docs/client.md shows."""

    def test_help_matches_the_docs(self) -> None:
        """``python -m wsplugin.client --help`` at 80 columns prints exactly
        the block in docs/client.md, and exits 0."""
        env = {**os.environ, "COLUMNS": "80"}
        result = subprocess.run(
            [sys.executable, "-m", "wsplugin.client", "--help"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertEqual(result.stdout.decode(), documented_help())

    test_help_matches_the_docs.skip = HELP_SKIP  # type: ignore[attr-defined]

    def test_console_script(self) -> None:
        """The installed ``wsplugin-client`` script runs the same client."""
        script = Path(sys.executable).with_name("wsplugin-client")
        if not script.exists():
            found = shutil.which("wsplugin-client")
            if found is None:
                raise self.failureException(
                    "wsplugin-client is not installed next to the interpreter "
                    "or on PATH (pip install -e . installs it)"
                )
            script = Path(found)
        result = subprocess.run(
            [str(script), "--version"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.decode().startswith("wsplugin-client "))
        usage = subprocess.run(
            [str(script), "http://x/"], capture_output=True, timeout=30, check=False
        )
        self.assertEqual(usage.returncode, 64)
        self.assertIn(b"must start with ws:// or wss://", usage.stderr)
