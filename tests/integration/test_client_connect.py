"""``wsplugin.client.connect`` over real loopback sockets: refusals (401,
nothing listening, no answer), TLS from a private CA, and the handshake with
an independent server (the ``websockets`` package's sync server in a thread):
headers, subprotocol, compression, an error body."""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint

from tests.client_support import scripted
from tests.integration.client_support import (
    ClientTestCase,
    bounded,
    certificates,
)
from tests.integration.support import Twistd, free_port, in_thread
from wsplugin import Reject
from wsplugin.client import (
    ConnectFailed,
    HandshakeFailed,
    OpenTimeout,
    TLSFailed,
    connect,
)


class RefusalTests(ClientTestCase):
    """Connections that do not open, and say why."""

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

    @inlineCallbacks
    def listen(self, factory: Any) -> Any:
        """Listen on a loopback port with ``factory``; returns the URL."""
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        return f"ws://127.0.0.1:{port.getHost().port}/"

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


class IndependentServerTests(ClientTestCase):
    """The handshake with an independent server implementation."""

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
        self.assertEqual(conn.subprotocol, "chat.v2")
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
