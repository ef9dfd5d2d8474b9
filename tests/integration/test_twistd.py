"""``twistd ws`` as users run it: a real subprocess, real sockets, real TLS."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import bcrypt
import trustme
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import quoteStringArgument
from twisted.trial.unittest import TestCase
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.integration.support import VENV_BIN, Twistd, free_port, in_thread


def make_certificates(test: TestCase) -> tuple[trustme.CA, Any, str, str]:
    """A private CA and a certificate for 127.0.0.1/localhost, written as PEM."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    base = os.path.abspath(test.mktemp())
    os.makedirs(os.path.dirname(base), exist_ok=True)
    cert_path, key_path = base + "-cert.pem", base + "-key.pem"
    cert.cert_chain_pems[0].write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    return ca, cert, cert_path, key_path


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def echo(url: str, text: str, **kw: Any) -> str:
    with connect(url, open_timeout=10, **kw) as ws:
        ws.send(text)
        return ws.recv(timeout=10)


class TwistdTests(TestCase):
    """twistd -n ws serves what its options say."""

    timeout = 120

    @inlineCallbacks
    def test_echo(self) -> None:
        """--app echo echoes over ws://."""
        server = Twistd(self, "--app", "echo")
        yield in_thread(server.wait_listening)
        echoed = yield in_thread(echo, f"ws://127.0.0.1:{server.port}/", "hi")
        self.assertEqual(echoed, "hi")

    @inlineCallbacks
    def test_chat_default_app(self) -> None:
        """The default app is the broadcast chat: two clients see each other."""
        server = Twistd(self)
        yield in_thread(server.wait_listening)
        url = f"ws://127.0.0.1:{server.port}/"

        def chat() -> tuple[str, str]:
            with connect(url, open_timeout=10) as a, connect(url, open_timeout=10) as b:
                a.send("hello from a")
                return a.recv(timeout=10), b.recv(timeout=10)

        self.assertEqual((yield in_thread(chat)), ("hello from a", "hello from a"))

    @inlineCallbacks
    def test_wss_ssl_endpoint(self) -> None:
        """An ssl: endpoint string serves wss:// to a client trusting the CA."""
        ca, _, cert_path, key_path = make_certificates(self)
        port = free_port()
        server = Twistd(
            self,
            "--app",
            "echo",
            "--port",
            f"ssl:{port}:interface=127.0.0.1:privateKey={quoteStringArgument(key_path)}"
            f":certKey={quoteStringArgument(cert_path)}",
            port=port,
            scheme=None,
        )
        yield in_thread(server.wait_listening)
        context = client_context(ca)
        echoed = yield in_thread(
            echo, f"wss://127.0.0.1:{port}/", "secure", ssl=context
        )
        self.assertEqual(echoed, "secure")

    @inlineCallbacks
    def test_wss_tls_options(self) -> None:
        """--tls-cert/--tls-key turn a tcp: port into wss://."""
        ca, _, cert_path, key_path = make_certificates(self)
        server = Twistd(
            self, "--app", "echo", "--tls-cert", cert_path, "--tls-key", key_path
        )
        yield in_thread(server.wait_listening)
        echoed = yield in_thread(
            echo,
            f"wss://localhost:{server.port}/",
            "via options",
            ssl=client_context(ca),
        )
        self.assertEqual(echoed, "via options")

    def test_bad_options_exit_nonzero(self) -> None:
        """A bad endpoint, a missing certificate, an unknown app, a missing
        --static directory or --auth-file exits 1 with a last line naming the
        problem and no traceback."""
        cases = [
            (["--port", "tcp:notaport"], "bad --port"),
            (["--tls-cert", "/nonexistent/c.pem"], "no such file"),
            (["--port", "ssl:0:privateKey=/nonexistent/k.pem"], "bad --port"),
            (["--app", "no_such_app"], "unknown app"),
            (["--static", "/nonexistent/dir"], "--static"),
            (["--auth-file", "/nonexistent/users"], "--auth-file"),
            (["--tls-min-version", "1.1"], "--tls-min-version needs --tls-cert"),
        ]
        for args, fragment in cases:
            result = subprocess.run(
                [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "ws", *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
            output = result.stdout + result.stderr
            self.assertEqual(result.returncode, 1, output)
            self.assertIn(fragment, output.strip().splitlines()[-1], output)
            self.assertNotIn("Traceback", output)

    def test_port_taken_exits(self) -> None:
        """A port that cannot be bound ends twistd with status 1 and one line
        naming the error, after a single attempt (not running on without
        listening); with the watchdog on, twistd stays up to retry."""
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            endpoint = f"tcp:{port}:interface=127.0.0.1"
            result = subprocess.run(
                [
                    str(VENV_BIN / "twistd"),
                    "-n",
                    "--pidfile=",
                    "ws",
                    "--port",
                    endpoint,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            output = result.stdout + result.stderr
            self.assertEqual(result.returncode, 1, output)
            last = output.strip().splitlines()[-1]
            self.assertIn("cannot listen: ", last)  # SystemExit, through the log
            self.assertIn("Address already in use", last)
            self.assertNotIn("Traceback", output)
            self.assertEqual(output.count("cannot listen on"), 1, output)
            watched = subprocess.Popen(
                [
                    str(VENV_BIN / "twistd"), "-n", "--pidfile=", "ws",
                    "--port", endpoint, "--watchdog-interval", "0.2",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            try:
                self.assertRaises(subprocess.TimeoutExpired, watched.wait, 2)
            finally:
                watched.terminate()
                watched.communicate(timeout=30)


class TwistdWebTests(TestCase):
    """twistd ws with --static and --auth-file."""

    timeout = 120

    @inlineCallbacks
    def test_static_and_auth_file(self) -> None:
        """--auth-file guards the whole site: GET / and /.env get 401 with
        WWW-Authenticate, so does an upgrade without credentials; with them
        the files are served (the chat page is replaced by --static) and the
        upgrade opens; --public-path opens one path."""
        site = Path(self.mktemp()).resolve()
        site.mkdir(parents=True)
        (site / "index.html").write_text("<p>my site</p>")
        (site / ".env").write_text("SECRET=1\n")
        (site / "login.html").write_text("<form></form>")
        users = site.parent / "users.htpasswd"
        users.write_text(
            "ann:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode() + "\n"
        )
        server = Twistd(
            self,
            "--static",
            str(site),
            "--auth-file",
            str(users),
            "--realm",
            "site",
            "--public-path",
            "/login.html",
            "--app",
            "echo",
        )
        yield in_thread(server.wait_listening)
        base = f"127.0.0.1:{server.port}"
        ann = "Basic " + base64.b64encode(b"ann:pw").decode()

        def get(path: str, **headers: str) -> tuple[int, str | None, bytes]:
            request = urllib.request.Request(f"http://{base}{path}", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=10) as page:
                    return page.status, None, page.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("WWW-Authenticate"), e.read()

        def check() -> list[Any]:
            seen: list[Any] = [get("/"), get("/.env"), get("/login.html")]
            seen.append(get("/", Authorization=ann))
            try:
                with connect(f"ws://{base}/", open_timeout=10):
                    seen.append(101)
            except InvalidStatus as e:
                seen.append(e.response.status_code)
            with connect(f"ws://ann:pw@{base}/", open_timeout=10) as ws:
                ws.send("in")
                seen.append(ws.recv(timeout=10))
            return seen

        self.assertEqual(
            (yield in_thread(check)),
            [
                (401, 'Basic realm="site"', b""),
                (401, 'Basic realm="site"', b""),
                (200, None, b"<form></form>"),
                (200, None, b"<p>my site</p>"),
                401,
                "in",
            ],
        )

    @inlineCallbacks
    def test_mixed_hashes(self) -> None:
        """An --auth-file mixing {SHA} and bcrypt stops twistd with the
        reason; with --allow-mixed-hashes it starts and logs a warning."""
        users = Path(self.mktemp()).resolve()
        users.parent.mkdir(parents=True, exist_ok=True)
        sha = base64.b64encode(hashlib.sha1(b"builder").digest()).decode()
        users.write_text(
            "ann:"
            + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
            + f"\nbob:{{SHA}}{sha}\n"
        )
        result = yield in_thread(
            subprocess.run,
            [
                str(VENV_BIN / "twistd"),
                "-n",
                "--pidfile=",
                "ws",
                "--auth-file",
                str(users),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("mixes password hashes", output.strip().splitlines()[-1])
        server = Twistd(self, "--auth-file", str(users), "--allow-mixed-hashes")
        yield in_thread(server.wait_listening)
        self.assertIn("mixes password hashes", server.read_log())

    @inlineCallbacks
    def test_default_chat_page(self) -> None:
        """Plain twistd ws serves the chat test page at / on the same port."""
        server = Twistd(self)
        yield in_thread(server.wait_listening)

        def page() -> bytes:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{server.port}/", timeout=10
            ) as response:
                return response.read()

        self.assertIn(b"wsplugin chat", (yield in_thread(page)))
