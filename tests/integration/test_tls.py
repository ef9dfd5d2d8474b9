"""TLS the user controls, over real loopback sockets, with certificates made
at test time by trustme: minimum version, ciphers, ALPN, client
certificates, verify_peer, reload (library and SIGHUP under ``twistd -n
ws``), tcp6: and unix: ports with ``--tls-cert``."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import trustme
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import quoteStringArgument
from twisted.trial.unittest import SkipTest, TestCase
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect, unix_connect

from tests.integration.support import (
    VENV_BIN,
    ServerTestCase,
    Twistd,
    free_port,
    in_thread,
)
from wsplugin import ConfigError, TLSOptions, WebSocketServer

LOOPBACK = "tcp:0:interface=127.0.0.1"


class Pems:
    """A certificate for localhost/127.0.0.1/::1 issued by ``ca``, as files."""

    def __init__(self, test: TestCase, ca: trustme.CA, name: str = "server") -> None:
        base = Path(test.mktemp()).resolve()
        base.mkdir(parents=True)
        self.issued = ca.issue_cert("localhost", "127.0.0.1", "::1")
        self.cert = str(base / f"{name}-cert.pem")
        self.key = str(base / f"{name}-key.pem")
        self.ca = str(base / "ca.pem")
        self.issued.cert_chain_pems[0].write_to_path(self.cert)
        self.issued.private_key_pem.write_to_path(self.key)
        ca.cert_pem.write_to_path(self.ca)

    @property
    def fingerprint(self) -> str:
        der = ssl.PEM_cert_to_DER_cert(self.issued.cert_chain_pems[0].bytes().decode())
        return hashlib.sha256(der).hexdigest()


def context(
    ca: trustme.CA,
    *,
    client: Any = None,
    max_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """A client context trusting ``ca``, optionally with a client
    certificate, a highest TLS version, TLS 1.2 ciphers and ALPN."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client is not None:
        client.configure_cert(ctx)
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_handshake(
    port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """A bare TLS handshake; what was negotiated (raises if refused)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as raw:
        raw.settimeout(10)
        raw.connect((host, port))
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return {
                "version": tls.version(),
                "cipher": tls.cipher()[0],
                "alpn": tls.selected_alpn_protocol(),
                "fingerprint": hashlib.sha256(
                    tls.getpeercert(binary_form=True) or b""
                ).hexdigest(),
            }


def refused(port: int, ctx: ssl.SSLContext) -> bool:
    """Whether TLS ends the connection before any HTTP answer to an upgrade.

    A client sees the refusal during its TLS handshake (TLS 1.2), or when it
    reads after the server's alert (TLS 1.3 checks the client's certificate
    after the client has finished its part of the handshake). A raw socket,
    so that no WebSocket client is left half-open.
    """
    request = (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(request)
                return tls.recv(1024) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return True


def echo(url: str, ctx: ssl.SSLContext, text: str = "ping") -> str:
    with connect(url, ssl=ctx, open_timeout=10) as ws:
        ws.send(text)
        return ws.recv(timeout=10)


class Handler:
    """Echo; records what allow and verify_peer saw."""

    def __init__(self, refuse_cn: str | None = None) -> None:
        self.seen: list[Any] = []
        self.refuse_cn = refuse_cn

    def allow(self, conn: Any) -> bool:
        self.seen.append(("allow", conn.request.peer_certificate))
        return True

    def on_message(self, conn: Any, text: str) -> None:
        conn.send_text(text)


class Verifying(Handler):
    def verify_peer(self, conn: Any, certificate: Any) -> bool:
        self.seen.append(("verify_peer", certificate))
        return certificate is not None and certificate.common_name != self.refuse_cn


class LibraryTLSTests(ServerTestCase):
    """WebSocketServer(..., tls=TLSOptions(...)) over 127.0.0.1."""

    timeout = 60

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.pems = Pems(self, self.ca)

    @inlineCallbacks
    def serve(self, handler: Any = None, **tls: Any) -> Any:
        options = TLSOptions(certificate=self.pems.cert, key=self.pems.key, **tls)
        server = yield self.start_server(
            handler or Handler(), endpoints=[LOOPBACK], tls=options
        )
        self.port = server.ports[0].getHost().port
        self.wss = f"wss://localhost:{self.port}/"
        return server

    @inlineCallbacks
    def test_echo_and_defaults(self) -> None:
        """wss:// works; a TLS 1.2-only client is accepted by default; no
        client certificate is asked for (peer_certificate is None)."""
        handler = Handler()
        yield self.serve(handler)
        self.assertEqual((yield in_thread(echo, self.wss, context(self.ca))), "ping")
        info = yield in_thread(
            tls_handshake,
            self.port,
            context(self.ca, max_version=ssl.TLSVersion.TLSv1_2),
        )
        self.assertEqual(info["version"], "TLSv1.2")
        self.assertEqual(info["fingerprint"], self.pems.fingerprint)
        self.assertEqual(handler.seen, [("allow", None)])

    @inlineCallbacks
    def test_min_version_13(self) -> None:
        """With min_version 1.3 a client limited to TLS 1.2 is refused; a
        1.3 client gets TLS 1.3."""
        yield self.serve(min_version="1.3")
        limited = context(self.ca, max_version=ssl.TLSVersion.TLSv1_2)
        yield self.assertFailure(
            in_thread(tls_handshake, self.port, limited), ssl.SSLError
        )
        info = yield in_thread(tls_handshake, self.port, context(self.ca))
        self.assertEqual(info["version"], "TLSv1.3")

    @inlineCallbacks
    def test_ciphers(self) -> None:
        """The cipher string decides TLS 1.2 ciphers: a client offering only
        another one is refused; one offering it gets it."""
        yield self.serve(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
        tls12 = ssl.TLSVersion.TLSv1_2
        other = context(
            self.ca, max_version=tls12, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"
        )
        yield self.assertFailure(
            in_thread(tls_handshake, self.port, other), ssl.SSLError
        )
        both = context(
            self.ca,
            max_version=tls12,
            ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
        )
        info = yield in_thread(tls_handshake, self.port, both)
        self.assertEqual(info["cipher"], "ECDHE-ECDSA-AES256-GCM-SHA384")

    @inlineCallbacks
    def test_alpn(self) -> None:
        """ALPN negotiates http/1.1; a client offering only h2 is refused
        rather than sending HTTP/2 to an HTTP/1.1 server."""
        yield self.serve()
        info = yield in_thread(
            tls_handshake, self.port, context(self.ca, alpn=["h2", "http/1.1"])
        )
        self.assertEqual(info["alpn"], "http/1.1")
        yield self.assertFailure(
            in_thread(tls_handshake, self.port, context(self.ca, alpn=["h2"])),
            ssl.SSLError,
        )

    @inlineCallbacks
    def test_alpn_off(self) -> None:
        """alpn=() negotiates nothing, whatever the client offers."""
        yield self.serve(alpn=())
        info = yield in_thread(tls_handshake, self.port, context(self.ca, alpn=["h2"]))
        self.assertIsNone(info["alpn"])

    @inlineCallbacks
    def test_client_cert_required(self) -> None:
        """Required: without a certificate, or with one from another CA,
        the connection fails before any handshake reaches the handler; with
        one from the CA, conn.request.peer_certificate has its subject,
        SANs and fingerprint."""
        handler = Handler()
        yield self.serve(handler, client_ca=self.pems.ca)
        self.assertTrue((yield in_thread(refused, self.port, context(self.ca))))
        stranger = trustme.CA().issue_cert("mallory@example.org")
        stranger_ctx = context(self.ca, client=stranger)
        self.assertTrue((yield in_thread(refused, self.port, stranger_ctx)))
        self.assertEqual(handler.seen, [])
        alice = self.ca.issue_cert(
            "alice@example.org", "alice.example", common_name="alice"
        )
        echoed = yield in_thread(echo, self.wss, context(self.ca, client=alice))
        self.assertEqual(echoed, "ping")
        ((_, cert),) = handler.seen
        der = ssl.PEM_cert_to_DER_cert(alice.cert_chain_pems[0].bytes().decode())
        self.assertEqual(cert.fingerprint, hashlib.sha256(der).hexdigest())
        self.assertEqual(cert.common_name, "alice")
        self.assertTrue(cert.subject.startswith("CN=alice,"), cert.subject)
        self.assertEqual(cert.sans, ("email:alice@example.org", "DNS:alice.example"))

    @inlineCallbacks
    def test_client_cert_optional(self) -> None:
        """Optional: a client without a certificate gets in (None); one with
        a certificate from the CA is identified; a stranger's is refused."""
        handler = Handler()
        yield self.serve(handler, client_ca=self.pems.ca, client_cert="optional")
        self.assertEqual((yield in_thread(echo, self.wss, context(self.ca))), "ping")
        bob = self.ca.issue_cert("bob.example", common_name="bob")
        yield in_thread(echo, self.wss, context(self.ca, client=bob))
        stranger = trustme.CA().issue_cert("mallory.example")
        stranger_ctx = context(self.ca, client=stranger)
        self.assertTrue((yield in_thread(refused, self.port, stranger_ctx)))
        self.assertEqual(handler.seen[0], ("allow", None))
        self.assertEqual(handler.seen[1][1].common_name, "bob")
        self.assertEqual(len(handler.seen), 2)

    @inlineCallbacks
    def test_verify_peer(self) -> None:
        """verify_peer refuses with 403 before allow; a client it accepts
        gets through; with optional certificates, one without a certificate
        is refused by this verify_peer."""
        handler = Verifying(refuse_cn="mallory")
        yield self.serve(handler, client_ca=self.pems.ca, client_cert="optional")
        mallory = self.ca.issue_cert("mallory.example", common_name="mallory")
        failure = yield self.assertFailure(
            in_thread(echo, self.wss, context(self.ca, client=mallory)), InvalidStatus
        )
        self.assertEqual(failure.response.status_code, 403)
        failure = yield self.assertFailure(
            in_thread(echo, self.wss, context(self.ca)), InvalidStatus
        )
        self.assertEqual(failure.response.status_code, 403)
        alice = self.ca.issue_cert("alice.example", common_name="alice")
        self.assertEqual(
            (yield in_thread(echo, self.wss, context(self.ca, client=alice))), "ping"
        )
        names = [(e, c.common_name if c else None) for e, c in handler.seen]
        self.assertEqual(
            names,
            [
                ("verify_peer", "mallory"),
                ("verify_peer", None),
                ("verify_peer", "alice"),
                ("allow", "alice"),
            ],
        )

    @inlineCallbacks
    def test_reload(self) -> None:
        """reload_tls(): new handshakes get the new certificate, an open
        connection keeps working; a broken file keeps the current one."""
        server = yield self.serve()
        ctx = context(self.ca)

        def open_connection() -> Any:
            stack = ExitStack()
            self.addCleanup(in_thread, stack.close)  # the close needs the reactor
            ws = stack.enter_context(connect(self.wss, ssl=ctx, open_timeout=10))
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            return ws

        ws = yield in_thread(open_connection)
        renewed = Pems(self, self.ca, "renewed")
        os.replace(renewed.cert, self.pems.cert)
        os.replace(renewed.key, self.pems.key)
        info = server.reload_tls()
        self.assertEqual(info.fingerprint, renewed.fingerprint)
        seen = yield in_thread(tls_handshake, self.port, ctx)
        self.assertEqual(seen["fingerprint"], renewed.fingerprint)

        def still_open() -> str:
            ws.send("after")
            return ws.recv(timeout=10)

        self.assertEqual((yield in_thread(still_open)), "after")
        Path(self.pems.cert).write_text("-----BEGIN CERTIFICATE-----\ntruncated")
        self.assertRaises(ConfigError, server.reload_tls)
        seen = yield in_thread(tls_handshake, self.port, ctx)
        self.assertEqual(seen["fingerprint"], renewed.fingerprint)

    @inlineCallbacks
    def test_silent_client_dropped(self) -> None:
        """A client that connects and never starts TLS is dropped after
        open_handshake_timeout: the TLS handshake counts toward it."""
        options = TLSOptions(certificate=self.pems.cert, key=self.pems.key)
        server = yield self.start_server(
            Handler(), endpoints=[LOOPBACK], tls=options, open_handshake_timeout=0.5
        )
        port = server.ports[0].getHost().port

        def silent() -> bool:
            # a server that never drops it makes recv raise TimeoutError
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                try:
                    return raw.recv(1) == b""
                except ConnectionResetError:
                    return True

        self.assertTrue((yield in_thread(silent)))

    @inlineCallbacks
    def test_unix_socket(self) -> None:
        """A unix: endpoint gets TLS too."""
        # a short path: AF_UNIX paths are limited to 107 bytes
        directory = tempfile.mkdtemp(prefix="wsp-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "tls.sock")
        options = TLSOptions(certificate=self.pems.cert, key=self.pems.key)
        server = WebSocketServer(Handler(), endpoints=[f"unix:{path}"], tls=options)
        yield server.start()
        self.addCleanup(server.stop)

        def over_unix() -> str:
            with unix_connect(
                path,
                "wss://localhost/",
                ssl=context(self.ca),
                server_hostname="localhost",
                open_timeout=10,
            ) as ws:
                ws.send("unix")
                return ws.recv(timeout=10)

        self.assertEqual((yield in_thread(over_unix)), "unix")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class TwistdTLSTests(TestCase):
    """twistd -n ws --tls-*: every port TLS, SIGHUP reloads, refusals."""

    timeout = 120

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.pems = Pems(self, self.ca)

    def twistd(self, *args: str, **kw: Any) -> Twistd:
        return Twistd(
            self,
            "--app",
            "echo",
            "--tls-cert",
            self.pems.cert,
            "--tls-key",
            self.pems.key,
            *args,
            **kw,
        )

    @inlineCallbacks
    def test_sighup_reload(self) -> None:
        """SIGHUP reloads the files: a new handshake sees the new
        certificate, an open connection survives; a bad file keeps the
        current certificate and the log says why."""
        server = self.twistd()
        yield in_thread(server.wait_listening)
        ctx = context(self.ca)
        url = f"wss://localhost:{server.port}/"
        first = yield in_thread(tls_handshake, server.port, ctx)
        self.assertEqual(first["fingerprint"], self.pems.fingerprint)

        def open_connection() -> Any:
            stack = ExitStack()
            self.addCleanup(in_thread, stack.close)  # the close needs the reactor
            ws = stack.enter_context(connect(url, ssl=ctx, open_timeout=10))
            ws.send("before")
            assert ws.recv(timeout=10) == "before"
            return ws

        ws = yield in_thread(open_connection)
        renewed = Pems(self, self.ca, "renewed")
        os.replace(renewed.cert, self.pems.cert)
        os.replace(renewed.key, self.pems.key)
        os.kill(server.proc.pid, signal.SIGHUP)
        yield in_thread(wait_for_log, server, "TLS certificate reloaded")
        seen = yield in_thread(tls_handshake, server.port, ctx)
        self.assertEqual(seen["fingerprint"], renewed.fingerprint)

        def still_open() -> str:
            ws.send("after")
            return ws.recv(timeout=10)

        self.assertEqual((yield in_thread(still_open)), "after")

        Path(self.pems.key).write_text("not a key")
        os.kill(server.proc.pid, signal.SIGHUP)
        line = yield in_thread(wait_for_log, server, "TLS reload failed")
        self.assertIn("keeping the current certificate", line)
        self.assertIn("no PEM private key", line)
        seen = yield in_thread(tls_handshake, server.port, ctx)
        self.assertEqual(seen["fingerprint"], renewed.fingerprint)
        self.assertIsNone(server.proc.poll())

    @inlineCallbacks
    def test_tcp6_port_speaks_tls(self) -> None:
        """A tcp6: port with --tls-cert speaks TLS on ::1 (it once stayed
        plaintext)."""
        if not ipv6_loopback():
            raise SkipTest("::1 is not available on this machine")
        port = free_port()
        server = self.twistd(
            "--port", f"tcp6:{port}:interface=\\:\\:1", scheme=None, port=port
        )

        def over_ipv6() -> dict[str, Any]:
            deadline = time.monotonic() + 20
            while True:
                try:
                    return tls_handshake(port, context(self.ca), host="::1")
                except ConnectionRefusedError:
                    if time.monotonic() > deadline or server.proc.poll() is not None:
                        raise
                    time.sleep(0.05)

        info = yield in_thread(over_ipv6)
        self.assertEqual(info["fingerprint"], self.pems.fingerprint)
        echoed = yield in_thread(echo, f"wss://[::1]:{port}/", context(self.ca), "six")
        self.assertEqual(echoed, "six")

    @inlineCallbacks
    def test_ssl_endpoint_string_alpn(self) -> None:
        """An ssl: endpoint string (no --tls-cert) answers a browser-like
        ALPN offer with http/1.1 (Twisted alone sent a fatal alert). In a
        twistd process: Twisted's ssl: parser passes pyOpenSSL objects that
        pyOpenSSL 26 deprecates, which this test process turns into errors."""
        port = free_port()
        key = quoteStringArgument(self.pems.key)
        cert = quoteStringArgument(self.pems.cert)
        server = Twistd(
            self,
            "--app",
            "echo",
            "--port",
            f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            scheme=None,
            port=port,
        )
        yield in_thread(server.wait_listening)
        offer = context(self.ca, alpn=["h2", "http/1.1"])
        info = yield in_thread(tls_handshake, port, offer)
        self.assertEqual(info["alpn"], "http/1.1")
        echoed = yield in_thread(echo, f"wss://localhost:{port}/", offer)
        self.assertEqual(echoed, "ping")

    def test_unconvertible_port_refused(self) -> None:
        """A port --tls-cert cannot wrap ends twistd with status 1 and one
        line naming it, instead of serving it in clear."""
        result = subprocess.run(
            [
                str(VENV_BIN / "twistd"),
                "-n",
                "--pidfile=",
                "ws",
                "--tls-cert",
                self.pems.cert,
                "--tls-key",
                self.pems.key,
                "--port",
                f"ssl:{free_port()}:privateKey={self.pems.key}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        last = (result.stdout + result.stderr).strip().splitlines()[-1]
        self.assertIn("--tls-cert: endpoint 'ssl:", last)
        self.assertIn("speaks TLS itself", last)

    @inlineCallbacks
    def test_auth_file_without_tls_warns(self) -> None:
        """--auth-file on a plaintext port logs a warning at start."""
        htpasswd = Path(self.mktemp()).resolve()
        htpasswd.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
        server = Twistd(self, "--app", "echo", "--auth-file", str(htpasswd))
        yield in_thread(server.wait_listening)
        line = yield in_thread(wait_for_log, server, "served without TLS")
        self.assertIn("credentials cross the network in clear", line)


def wait_for_log(server: Twistd, text: str, timeout: float = 20) -> str:
    """Block until ``text`` is in the server's log; returns that line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.read_log().splitlines():
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged; log:\n{server.read_log()}")
