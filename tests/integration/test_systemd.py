"""systemd socket activation: ``twistd ws --port systemd:domain=INET:index=0``.

The test process plays systemd's manager: it binds the listening socket (as
for a ``.socket`` unit's ``ListenStream=``) and starts ``twistd`` through
tests/integration/systemd_launch.py, which does what systemd does in the
service's process before ``exec``: the socket becomes descriptor 3, and
``LISTEN_FDS``, ``LISTEN_PID`` (the launcher's pid, which ``exec`` keeps) and
``LISTEN_FDNAMES`` are set. A real WebSocket client then talks to the server
through the inherited socket.

The example units in examples/systemd/ (shown in docs/deploy.md) are run the
same way, and checked with ``systemd-analyze verify`` and ``systemd-analyze
security``; a missing ``systemd-analyze`` skips that check locally and fails
it under CI.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.integration.proxy_support import (
    INSTALLED_TWISTD,
    LAUNCHER,
    SYSTEMD_SERVICE,
    SYSTEMD_SOCKET,
    WAIT,
    ActivatedTwistd,
    Process,
    fenced_blocks,
    require_binary,
    unit_value,
)
from tests.integration.support import ROOT, VENV_BIN, in_thread

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A bound, listening TCP socket, as systemd makes for ``ListenStream=``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


def echo(
    url: str, text: str, data: bytes, sock: socket.socket | None = None
) -> tuple[str, bytes]:
    """Send one text and one binary message (over ``sock`` if given, a
    connected TCP socket); return the two answers."""
    with connect(url, open_timeout=WAIT, sock=sock) as ws:
        ws.send(text)
        first = ws.recv(timeout=WAIT)
        ws.send(data)
        second = ws.recv(timeout=WAIT)
    assert isinstance(first, str) and isinstance(second, bytes)
    return first, second


class SocketActivationTests(TestCase):
    """twistd serves on sockets handed over the way systemd hands them."""

    timeout = 60

    def launch(self, socks: list[socket.socket], names: str, *ws_args: str) -> Process:
        """Start ``twistd -n ws ARGS`` on ``socks`` through the launcher."""
        for sock in socks:
            self.addCleanup(sock.close)
        proc = Process(self)
        fds = [sock.fileno() for sock in socks]
        cmd = [str(VENV_BIN / "twistd"), "--nodaemon", "--pidfile=", "ws", *ws_args]
        proc.start(
            [sys.executable, str(LAUNCHER), ",".join(map(str, fds)), names, "--", *cmd],
            [],
            pass_fds=fds,
        )
        return proc

    @inlineCallbacks
    def test_inherited_socket_echo(self) -> None:
        """With ``--port systemd:domain=INET:index=0`` twistd adopts the
        inherited descriptor 3 and a real client's text and binary messages
        come back. The client connects before twistd runs: its connection
        waits in the socket's backlog, as under systemd, and is served."""
        sock = listening_socket()
        port = sock.getsockname()[1]
        early = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.addCleanup(early.close)
        url = f"ws://127.0.0.1:{port}/"
        answers = in_thread(echo, url, "héllo", b"\x00\xff", early)
        proc = self.launch(
            [sock], "wsplugin.socket", "--app", "echo", "--port",
            "systemd:domain=INET:index=0",
        )  # fmt: skip
        text, data = yield answers
        self.assertEqual((text, data), ("héllo", b"\x00\xff"), proc.describe())
        self.assertIn("listening on systemd:domain=INET:index=0", proc.describe())

    @inlineCallbacks
    def test_socket_by_name(self) -> None:
        """With two sockets, ``name=`` picks the one whose
        ``FileDescriptorName`` matches (here the second, on IPv6 loopback
        with ``domain=INET6`` when the host has ::1); the other one is not
        served."""
        try:
            second = listening_socket("::1")
            host, domain = "[::1]", "INET6"
        except OSError:  # no IPv6 here: the name lookup is what matters
            second = listening_socket()
            host, domain = "127.0.0.1", "INET"
        first = listening_socket()
        self.launch(
            [first, second], "other:ws", "--app", "echo", "--port",
            f"systemd:domain={domain}:name=ws",
        )  # fmt: skip
        url = f"ws://{host}:{second.getsockname()[1]}/"
        text, _ = yield in_thread(echo, url, "by name", b"")
        self.assertEqual(text, "by name")

        def unserved() -> None:
            with connect(f"ws://127.0.0.1:{first.getsockname()[1]}/", open_timeout=1):
                pass

        with self.assertRaises(TimeoutError):
            yield in_thread(unserved)

    def test_no_socket_passed(self) -> None:
        """Started outside systemd (no LISTEN_* variables), twistd exits
        non-zero with a message naming the cause, not a traceback."""
        result = subprocess.run(
            [
                str(VENV_BIN / "twistd"),
                "--nodaemon",
                "--pidfile=",
                "ws",
                "--port",
                "systemd:domain=INET:index=0",
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env={k: v for k, v in os.environ.items() if "LISTEN" not in k},
        )
        self.assertNotEqual(result.returncode, 0)
        output = result.stdout + result.stderr
        self.assertIn("systemd passed no such socket", output)
        self.assertNotIn("Traceback", output)


class ExampleUnitsTests(TestCase):
    """The example wsplugin.socket / wsplugin.service pair runs as shipped."""

    timeout = 60

    @inlineCallbacks
    def test_example_units_serve_chat(self) -> None:
        """wsplugin.service's ExecStart (the checkout's twistd in place of
        /opt/wsplugin's), on a socket bound like wsplugin.socket's
        ListenStream (its address, another port), serves the chat demo: a
        message from one client reaches both, and the test page is served
        on the same port."""
        twistd = ActivatedTwistd(self).run()
        url = f"ws://127.0.0.1:{twistd.port}/"

        def chat() -> tuple[Any, Any, bytes]:
            with connect(url, open_timeout=WAIT) as a, connect(url) as b:
                a.send("hello from a")
                got = (b.recv(timeout=WAIT), a.recv(timeout=WAIT))
            import urllib.request

            page = f"http://127.0.0.1:{twistd.port}/"
            with urllib.request.urlopen(page, timeout=WAIT) as response:
                return got[0], got[1], response.read()

        to_b, to_a, page = yield in_thread(chat)
        self.assertEqual((to_b, to_a), ("hello from a", "hello from a"))
        self.assertIn(b"new WebSocket", page)
        self.assertIn("listening on systemd:domain=INET:index=0", twistd.describe())

    @inlineCallbacks
    def test_example_service_stops_cleanly(self) -> None:
        """SIGTERM (the unit's KillSignal) closes open clients with 1001
        and twistd exits well inside TimeoutStopSec."""
        twistd = ActivatedTwistd(self).run()
        url = f"ws://127.0.0.1:{twistd.port}/"
        self.assertEqual(unit_value(SYSTEMD_SERVICE, "KillSignal"), "SIGTERM")
        stop_limit = float(unit_value(SYSTEMD_SERVICE, "TimeoutStopSec"))

        def session() -> int | None:
            with connect(url, open_timeout=WAIT) as ws:
                twistd.proc.terminate()  # type: ignore[union-attr]
                try:
                    ws.recv(timeout=stop_limit)
                except ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd else None
            return None

        code = yield in_thread(session)
        self.assertEqual(code, 1001)
        assert twistd.proc is not None
        twistd.proc.wait(timeout=stop_limit)


class UnitFilesTests(SynchronousTestCase):
    """The example units are valid systemd units, hardened, and docs/deploy.md
    shows them as they are."""

    HARDENING = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "SystemCallArchitectures": "native",
    }

    def copy_units(self) -> Path:
        """The units in a temporary directory, ExecStart pointing at the
        checkout's twistd (``verify`` checks that the binary exists)."""
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        shutil.copy(SYSTEMD_SOCKET, directory)
        service = SYSTEMD_SERVICE.read_text()
        self.assertEqual(service.count(INSTALLED_TWISTD), 1)
        (directory / SYSTEMD_SERVICE.name).write_text(
            service.replace(INSTALLED_TWISTD, str(VENV_BIN / "twistd"))
        )
        return directory

    def test_hardening_directives(self) -> None:
        """The service runs with no account of its own, no capabilities, a
        read-only system and only IP and Unix sockets."""
        for key, value in self.HARDENING.items():
            self.assertEqual(unit_value(SYSTEMD_SERVICE, key), value, key)
        self.assertIn(
            "systemd:domain=INET:index=0", unit_value(SYSTEMD_SERVICE, "ExecStart")
        )

    def test_systemd_analyze_verify(self) -> None:
        """``systemd-analyze verify`` accepts both units without a warning."""
        analyze = require_binary("systemd-analyze", "systemd")
        directory = self.copy_units()
        result = subprocess.run(
            [analyze, "verify", "--man=no", "wsplugin.socket", "wsplugin.service"],
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        # unknown keys and bad values are warnings with status 0: none allowed
        ours = [line for line in result.stderr.splitlines() if "wsplugin." in line]
        self.assertEqual(ours, [])

    def test_systemd_analyze_security(self) -> None:
        """``systemd-analyze security`` rates the service's exposure at most
        1.5 of 10 ("OK"; a unit without hardening scores 9.6)."""
        analyze = require_binary("systemd-analyze", "systemd")
        directory = self.copy_units()
        result = subprocess.run(
            [
                analyze, "security", "--offline=yes", "--threshold=15",
                "--no-pager", "./wsplugin.service",
            ],
            cwd=directory, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("Overall exposure level for wsplugin.service", result.stdout)

    def test_docs_show_the_units(self) -> None:
        """docs/deploy.md shows each example unit file whole and unchanged."""
        blocks = fenced_blocks(DEPLOY_DOC)
        for unit in (SYSTEMD_SOCKET, SYSTEMD_SERVICE):
            self.assertIn(unit.read_text(), blocks, f"{unit.name} not in deploy.md")
