"""``twistd -n ws --config FILE`` as users run it: a real subprocess on a free
port, real clients, the shipped example file."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import trustme
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.integration.support import ROOT, VENV_BIN, Twistd, free_port, in_thread

EXAMPLE = ROOT / "examples" / "config" / "ws.toml"


def status_of(url: str, **kw: Any) -> int:
    """The HTTP status an upgrade to ``url`` gets (101 if it opens)."""
    try:
        with connect(url, open_timeout=10, **kw):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


def close_code_after(url: str, message: str, **kw: Any) -> int | None:
    """Send ``message`` and return the close code the server answers with."""
    with connect(url, open_timeout=10, max_size=None, **kw) as ws:
        try:
            # the server may refuse a large message from its frame header,
            # while the client is still sending the payload
            ws.send(message)
            ws.recv(timeout=10)
        except ConnectionClosed as e:
            return e.rcvd.code if e.rcvd else None
    return None


class ExampleFileTests(TestCase):
    """The annotated example runs as it is, under twistd."""

    timeout = 120

    @inlineCallbacks
    def test_example_file(self) -> None:
        """examples/config/ws.toml serves the chat (page and socket) on /,
        echo on /echo with its own 64 KiB limit and subprotocol, echo on
        /private for the demo user only, and 404 elsewhere; the file's
        1 MiB server-wide limit holds on /; --port and --server-header on
        the command line win over the file's ports and server_header."""
        server = Twistd(
            self, "--config", str(EXAMPLE), "--server-header", "from-the-flag"
        )
        yield in_thread(server.wait_listening)
        base = f"ws://127.0.0.1:{server.port}"
        demo = {"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode()}

        def run() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with connect(base + "/", open_timeout=10) as ws:
                seen["server header"] = ws.response.headers["Server"]
                ws.send("hello, room")
                seen["chat"] = ws.recv(timeout=10)
            with connect(base + "/echo", subprotocols=["echo.v1"]) as ws:
                seen["subprotocol"] = ws.subprotocol
                ws.send("ping")
                seen["echo"] = ws.recv(timeout=10)
            seen["echo 70000 bytes"] = close_code_after(base + "/echo", "x" * 70000)
            seen["chat 70000 bytes"] = close_code_after(base + "/", "x" * 70000)
            seen["chat 2 MiB"] = close_code_after(base + "/", "x" * (2 << 20))
            seen["private, no credentials"] = status_of(base + "/private")
            wrong = {"Authorization": "Basic " + base64.b64encode(b"demo:x").decode()}
            seen["private, wrong password"] = status_of(
                base + "/private", additional_headers=wrong
            )
            with connect(base + "/private", additional_headers=demo) as ws:
                ws.send("secret")
                seen["private"] = ws.recv(timeout=10)
            seen["elsewhere"] = status_of(base + "/elsewhere")
            with urllib.request.urlopen(
                f"http://127.0.0.1:{server.port}/", timeout=10
            ) as page:
                seen["page"] = b"wsplugin chat" in page.read()
            return seen

        seen = yield in_thread(run)
        self.assertEqual(
            seen,
            {
                "server header": "from-the-flag",
                "chat": "hello, room",
                "subprotocol": "echo.v1",
                "echo": "ping",
                "echo 70000 bytes": 1009,
                "chat 70000 bytes": None,  # echoed back: under 1 MiB
                "chat 2 MiB": 1009,
                "private, no credentials": 401,
                "private, wrong password": 401,
                "private": "secret",
                "elsewhere": 404,
                "page": True,
            },
        )
        log = server.read_log()
        self.assertIn(f"route * /echo: Echo ({EXAMPLE}:", log)
        self.assertIn(f"route * /private: Echo, auth BasicAuth ({EXAMPLE}:", log)
        self.assertNotIn("tcp:8888", log)  # the file's port was not used


class ConfigFileTwistdTests(TestCase):
    """Files written by the tests: TLS, relative names, bad files."""

    timeout = 120

    @inlineCallbacks
    def test_tls_and_relative_names(self) -> None:
        """A [tls] table with names relative to the file makes the file's
        port speak wss://, though twistd runs in another directory."""
        ca = trustme.CA()
        issued = ca.issue_cert("localhost")
        directory = Path(self.mktemp()).resolve()
        (directory / "certs").mkdir(parents=True)
        issued.cert_chain_pems[0].write_to_path(str(directory / "certs" / "c.pem"))
        issued.private_key_pem.write_to_path(str(directory / "certs" / "k.pem"))
        port = free_port()
        config = directory / "ws.toml"
        config.write_text(
            f'ports = ["tcp:{port}:interface=127.0.0.1"]\n'
            "[tls]\n"
            'certificate = "certs/c.pem"\n'
            'key = "certs/k.pem"\n'
            'min_version = "1.3"\n'
            "[[route]]\n"
            'path = "/secure"\n'
            'handler = "echo"\n'
        )
        server = Twistd(self, "--config", str(config), port=port, scheme=None)
        yield in_thread(server.wait_listening)
        context = ssl.create_default_context()
        ca.configure_trust(context)

        def run() -> tuple[str, str]:
            with connect(f"wss://localhost:{port}/secure", ssl=context) as ws:
                ws.send("over tls")
                version = ws.socket.version()  # type: ignore[union-attr]
                return ws.recv(timeout=10), version

        self.assertEqual((yield in_thread(run)), ("over tls", "TLSv1.3"))

    def test_bad_files_exit(self) -> None:
        """A bad file ends twistd with status 1 and a last line naming the
        file, the line and the key, and no traceback."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        config = directory / "ws.toml"
        cases = [
            ("max_queue = 0\n", f"{config}:1: max_queue: must be an integer >= 1"),
            ("max_queue = \n", f"{config}:1:13: max_queue: invalid value"),
            ("[server]\n", f"{config}:1: server: unknown table"),
            (
                '\n[[route]]\npath = "/a"\nhandler = "echo"\nmax_connections = 5\n',
                f'{config}:5: route "/a": max_connections: applies to the whole',
            ),
            (
                '[[route]]\npath = "/a"\nhandler = "echo"\n'
                'auth = { htpasswd = "missing" }\n',
                f'{config}:4: route "/a": auth.htpasswd: cannot read the password '
                f"file {directory}/missing",
            ),
        ]
        for text, fragment in cases:
            config.write_text(text)
            result = subprocess.run(
                [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "ws"]
                + ["--config", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=ROOT,
                env=dict(os.environ),
            )
            output = result.stdout + result.stderr
            self.assertEqual(result.returncode, 1, output)
            self.assertIn(fragment, output.strip().splitlines()[-1], output)
            self.assertNotIn("Traceback", output)
