"""``wsplugin.client`` over real loopback sockets: against wsplugin's own server,
against an independent server (the ``websockets`` package's sync server in a
thread), with TLS from a private CA, through server restarts, and the chat
client as a subprocess (``python -m wsplugin.client``)."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import trustme
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from websockets.sync.server import serve

from tests.helpers import Recorder
from tests.integration.support import (
    ROOT,
    ServerTestCase,
    Twistd,
    free_port,
    in_thread,
)
from tests.test_client import scripted, upgrade
from wsplugin import Reject, WebSocketServer
from wsplugin.client import (
    ClientConnection,
    ConnectFailed,
    HandshakeFailed,
    Message,
    OpenTimeout,
    ReconnectingClient,
    TLSFailed,
    connect,
)
from wsplugin.errors import ConnectionClosed
from wsplugin.frames import OP_TEXT, encode_frame

WAIT = 10.0
"""Seconds any single wait in these tests may take."""


def bounded(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    """``d``, failing with a TimeoutError if it takes longer than ``seconds``."""
    return d.addTimeout(seconds, reactor)


class Echo(Recorder):
    """Records events, echoes messages, remembers the request headers."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[Any] = []

    def allow(self, conn: Any) -> Any:
        self.headers.append(conn.request.headers)
        conn.response_headers.append(("Set-Cookie", "session=abc; HttpOnly"))
        return super().allow(conn)

    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        if text.startswith("big:"):
            conn.send_text("x" * int(text[4:]))
        else:
            conn.send_text(text)

    def on_binary(self, conn: Any, data: bytes) -> None:
        super().on_binary(conn, data)
        conn.send_binary(data)


class ClientTestCase(ServerTestCase):
    """Connects clients and closes them after the test."""

    @inlineCallbacks
    def open(self, url: str, **options: Any) -> Any:
        """Connect (bounded) and close the connection at cleanup."""
        conn = yield bounded(connect(url, **options), options.get("open_timeout", WAIT))
        self.addCleanup(self.close, conn)
        return conn

    @inlineCallbacks
    def close(self, conn: ClientConnection) -> Any:
        """Close ``conn`` and wait (bounded) until it has ended."""
        if conn.state.value != "closed":
            conn.close()
            try:
                yield bounded(conn.wait_closed())
            except Exception:
                conn.abort()


def certificates(test: Any, *names: str) -> tuple[trustme.CA, str, str]:
    """A private CA and a server certificate for ``names``, as PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert(*names)
    base = Path(test.mktemp()).resolve()
    base.parent.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = f"{base}-cert.pem", f"{base}-key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    return ca, cert_path, key_path


class WsplugServerTests(ClientTestCase):
    """The client against wsplugin's own WebSocketServer."""

    @inlineCallbacks
    def test_round_trip_headers_and_cookie(self) -> None:
        """Custom headers reach the server; Set-Cookie comes back in the
        response; text and binary messages round-trip."""
        handler = Echo()
        yield self.start_server(handler)
        conn = yield self.open(
            self.url + "/chat?room=1",
            headers={"Authorization": "Bearer t0k", "X-Client": "tests"},
        )
        self.assertEqual(handler.headers[0]["authorization"], "Bearer t0k")
        self.assertEqual(handler.headers[0]["x-client"], "tests")
        self.assertEqual(
            conn.response.headers.get_all("Set-Cookie"), ["session=abc; HttpOnly"]
        )
        conn.send_text("héllo")
        conn.send_binary(b"\x00\xff")
        self.assertEqual((yield bounded(conn.receive())), "héllo")
        self.assertEqual((yield bounded(conn.receive())), b"\x00\xff")

    @inlineCallbacks
    def test_wait_for_message_kinds(self) -> None:
        """wait_for_message returns the kind asked for, pongs included, and
        leaves the others queued for receive()."""
        yield self.start_server(Echo())
        conn = yield self.open(self.url)
        conn.send_text("one")
        yield bounded(conn.wait_for_message(("text",)))  # the echo of "one"
        conn.send_text("two")
        conn.ping(b"are you there")
        pong = yield bounded(conn.wait_for_message(kinds=("pong",)))
        self.assertEqual(pong, Message("pong", b"are you there"))
        self.assertEqual((yield bounded(conn.receive())), "two")
        conn.send_binary(b"three")
        message = yield bounded(conn.wait_for_message(timeout=WAIT))
        self.assertEqual((message.kind, message.data), ("binary", b"three"))

    @inlineCallbacks
    def test_401(self) -> None:
        """A Reject(401) is HandshakeFailed with the status and WWW-Authenticate."""

        class Locked:
            def allow(self, conn: Any) -> Any:
                return Reject(401, "Unauthorized", [("WWW-Authenticate", "Bearer")])

        yield self.start_server(Locked())
        try:
            yield bounded(connect(self.url))
        except HandshakeFailed as e:
            error = e
        else:
            self.fail("the handshake did not fail")
        self.assertEqual(error.status, 401)
        self.assertEqual(error.headers["WWW-Authenticate"], "Bearer")
        self.assertEqual(error.body, b"")

    @inlineCallbacks
    def test_large_messages_and_limit(self) -> None:
        """A 4 MiB message arrives whole; one over max_message_size closes the
        connection with 1009."""
        yield self.start_server(Echo())
        conn = yield self.open(self.url, compression=True)
        conn.send_text("big:4194304")
        self.assertEqual(len((yield bounded(conn.receive()))), 4194304)
        small = yield self.open(self.url, max_message_size=1024)
        small.send_text("big:2048")
        try:
            yield bounded(small.receive())
        except ConnectionClosed as e:
            self.assertEqual(e.code, 1009)
        else:
            self.fail("a message over the limit was delivered")

    @inlineCallbacks
    def test_close_codes(self) -> None:
        """close(4000) reaches the server; a server close ends receive()."""
        handler = Echo()
        yield self.start_server(handler)
        conn = yield self.open(self.url)
        conn.close(4000, "done")
        yield bounded(conn.wait_closed())
        yield self.when(lambda: "on_disconnect" in handler.names())
        self.assertIn(("on_close", 4000, "done"), handler.events)
        self.assertIn(("on_disconnect", True, 4000), handler.events)
        other = yield self.open(self.url)
        pending = other.receive()
        yield self.server.stop()
        try:
            yield bounded(pending)
        except ConnectionClosed as e:
            self.assertEqual(e.code, 1001)
        else:
            self.fail("receive() did not fail after the server closed")

    @inlineCallbacks
    def test_unreachable(self) -> None:
        """Nothing listening: ConnectFailed, "Connection refused"."""
        port = free_port()
        try:
            yield bounded(connect(f"ws://127.0.0.1:{port}/"))
        except ConnectFailed as e:
            self.assertEqual(
                str(e), f"cannot connect to 127.0.0.1:{port}: Connection refused"
            )
        else:
            self.fail("connected to nothing")


class RawServerTests(ClientTestCase):
    """Servers that misbehave, on real sockets."""

    @inlineCallbacks
    def listen(self, factory: Any) -> Any:
        """Listen on a loopback port with ``factory``; returns the URL."""
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        return f"ws://127.0.0.1:{port.getHost().port}/"

    @inlineCallbacks
    def test_drop_mid_frame(self) -> None:
        """A server that drops the TCP connection in the middle of a frame
        ends the connection with 1006; receive() fails."""

        def half_frame(key: bytes) -> bytes:
            return upgrade(key) + encode_frame(OP_TEXT, b"x" * 100)[:30]

        url = yield self.listen(scripted(half_frame, close=True))
        conn = yield bounded(connect(url))
        try:
            yield bounded(conn.receive())
        except ConnectionClosed as e:
            self.assertEqual(e.code, 1006)
        else:
            self.fail("a partial frame was delivered")
        yield bounded(conn.wait_closed())

    @inlineCallbacks
    def test_open_timeout(self) -> None:
        """A server that accepts and never answers: OpenTimeout."""
        url = yield self.listen(scripted(b""))
        started = time.monotonic()
        try:
            yield bounded(connect(url, open_timeout=0.5))
        except OpenTimeout as e:
            self.assertIn("not open within 0.5 seconds", str(e))
        else:
            self.fail("opened without an answer")
        self.assertLess(time.monotonic() - started, 5)


class TLSTests(ClientTestCase):
    """wss:// against ``twistd ws --tls-cert/--tls-key`` with a certificate
    from a private CA. (The TLS server runs in its own process: Twisted's
    server-side TLS context still hands pyOpenSSL X509 objects to pyOpenSSL,
    a DeprecationWarning these tests turn into errors.)"""

    timeout = 120

    @inlineCallbacks
    def start_tls(self, *names: str) -> Any:
        """A TLS echo server for ``names``; returns (CA, port, CA file)."""
        ca, cert_path, key_path = certificates(self, *names)
        server = Twistd(
            self, "--app", "echo", "--tls-cert", cert_path, "--tls-key", key_path
        )
        yield in_thread(server.wait_listening)
        ca_file = cert_path + ".ca.pem"
        ca.cert_pem.write_to_path(ca_file)
        return ca, server.port, ca_file

    @inlineCallbacks
    def test_private_ca(self) -> None:
        """Trusting the private CA (trust= or ca_file=) connects over TLS."""
        ca, port, ca_file = yield self.start_tls("localhost", "127.0.0.1")
        for options in ({"trust": ca}, {"ca_file": ca_file}):
            conn = yield self.open(f"wss://localhost:{port}/", **options)
            conn.send_text("secure")
            self.assertEqual((yield bounded(conn.receive())), "secure")
        conn = yield self.open(f"wss://127.0.0.1:{port}/", trust=ca)
        self.assertTrue(conn.is_open)

    @inlineCallbacks
    def test_untrusted_and_wrong_name(self) -> None:
        """An untrusted CA, or a certificate for another name, is TLSFailed."""
        ca, port, _ = yield self.start_tls("localhost")
        cases = [
            ("localhost", {}, "certificate verify failed"),
            (
                "127.0.0.1",
                {"trust": ca},
                "the certificate is not valid for this host name",
            ),
        ]
        for host, options, words in cases:
            try:
                yield bounded(connect(f"wss://{host}:{port}/", **options))
            except TLSFailed as e:
                self.assertEqual(
                    str(e), f"TLS handshake with {host}:{port} failed: {words}"
                )
            else:
                self.fail(f"TLS accepted for {host} with {options}")


class ReconnectTests(ClientTestCase):
    """ReconnectingClient over real sockets."""

    @inlineCallbacks
    def test_reconnect_after_server_restart(self) -> None:
        """The client reconnects once the server is back on its port, and
        on_connect runs for both connections."""
        first_server = yield self.start_server(Echo())
        port = first_server.ports[0].getHost().port
        connected: list[ClientConnection] = []
        closed: list[int | None] = []
        client = ReconnectingClient(
            self.url,
            on_connect=connected.append,
            on_disconnect=lambda conn: closed.append(conn.close_code),
            initial_delay=0.05,
            max_delay=0.2,
            jitter=lambda: 0.0,
        )
        client.start()
        self.addCleanup(client.stop)
        first = yield bounded(client.when_connected())
        yield first_server.stop()
        yield self.when(lambda: client.connection is None)
        self.assertEqual(closed, [1001])
        yield bounded(Deferred.fromCoroutine(self._sleep(0.5)))  # refused meanwhile
        second_server = WebSocketServer(
            Echo(), endpoints=[f"tcp:{port}:interface=127.0.0.1"]
        )
        yield second_server.start()
        self.addCleanup(second_server.stop)
        second = yield bounded(client.when_connected())
        self.assertIsNot(second, first)
        self.assertEqual(connected, [first, second])
        second.send_text("back")
        self.assertEqual((yield bounded(second.receive())), "back")
        yield bounded(client.stop())
        self.assertEqual(closed[-1], 1000)

    async def _sleep(self, seconds: float) -> None:
        d: Deferred[None] = Deferred()
        reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
        await d


class WebsocketsServer:
    """The ``websockets`` package's sync server, in a thread."""

    def __init__(self, handler: Any, **kw: Any) -> None:
        self.server = serve(handler, "127.0.0.1", 0, **kw)
        self.port = self.server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(WAIT)


class IndependentServerTests(ClientTestCase):
    """The client against an independent server implementation."""

    def websockets_server(self, handler: Any, **kw: Any) -> WebsocketsServer:
        server = WebsocketsServer(handler, **kw)
        self.addCleanup(in_thread, server.stop)
        return server

    @inlineCallbacks
    def test_echo_headers_subprotocol_compression(self) -> None:
        """Headers reach the websockets server, which picks a subprotocol and
        negotiates permessage-deflate; messages round-trip."""

        def handler(ws: Any) -> None:
            ws.send(ws.request.headers.get("X-Token", "-"))
            for message in ws:
                ws.send(message)

        server = self.websockets_server(handler, subprotocols=["chat.v2"])
        conn = yield self.open(
            server.url + "/x",
            headers=[("X-Token", "abc")],
            subprotocols=["chat.v1", "chat.v2"],
            compression=True,
        )
        self.assertEqual(conn.protocol, "chat.v2")
        self.assertEqual(conn.extensions, ("permessage-deflate",))
        self.assertEqual((yield bounded(conn.receive())), "abc")
        text = "compressible " * 10000
        conn.send_text(text)
        conn.send_binary(b"\x00" * 70000)
        self.assertEqual((yield bounded(conn.receive())), text)
        self.assertEqual((yield bounded(conn.receive())), b"\x00" * 70000)
        conn.ping(b"hello?")
        pong = yield bounded(conn.wait_for_message("pong"))
        self.assertEqual(pong.data, b"hello?")

    @inlineCallbacks
    def test_401_with_body(self) -> None:
        """A 401 with a body and WWW-Authenticate: all three in HandshakeFailed."""

        def process_request(connection: Any, request: Any) -> Any:
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "log in first\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="chat"'
            return response

        server = self.websockets_server(
            lambda ws: None, process_request=process_request
        )
        try:
            yield bounded(connect(server.url))
        except HandshakeFailed as e:
            error = e
        else:
            self.fail("the handshake did not fail")
        self.assertEqual((error.status, error.reason), (401, "Unauthorized"))
        self.assertEqual(error.headers["www-authenticate"], 'Basic realm="chat"')
        self.assertEqual(error.body, b"log in first\n")

    @inlineCallbacks
    def test_server_closes(self) -> None:
        """A close from the server ends the message stream with its code."""

        def handler(ws: Any) -> None:
            ws.send("bye soon")
            ws.close(4001, "policy")

        server = self.websockets_server(handler)
        conn = yield self.open(server.url)
        messages = []
        while True:
            try:
                messages.append((yield bounded(conn.receive())))
            except ConnectionClosed as e:
                self.assertEqual((e.code, e.reason), (4001, "policy"))
                break
        self.assertEqual(messages, ["bye soon"])


# --------------------------------------------------------------------------
# python -m wsplugin.client
# --------------------------------------------------------------------------


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
