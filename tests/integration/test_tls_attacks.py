"""Attacks on TLS ports, over real loopback sockets with certificates made at
test time by trustme (the defects an adversarial run found against issues
11 and 12):

* connections over ``max_connections`` / ``max_connections_per_ip`` that
  never start TLS are closed when accepted, keeping no descriptor, logged
  with a rate limit and never with a traceback;
* a TLS connection is not read after a refusal (413, 431, an over-long
  header line): the server stops reading at once and closes once its
  answer is out, as it does on plain TCP.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import time
from typing import Any

import trustme
from twisted.internet.defer import inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.resource import Resource

from tests.integration.support import ServerTestCase, in_thread
from tests.integration.test_tls import Pems, context, echo
from wsplugin import TLSOptions
from wsplugin.testing import handshake_request

LOOPBACK = "tcp:0:interface=127.0.0.1"


class Echo:
    def on_message(self, conn: Any, text: str) -> None:
        conn.send_text(text)


class Page(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"page"

    def render_POST(self, request: Any) -> bytes:
        return b"got %d" % len(request.content.read())


def open_descriptors() -> int:
    """Descriptors this process holds now (server and clients alike)."""
    return len(os.listdir("/proc/self/fd"))


def hold(port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections that never send a byte (no ClientHello)."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def wait_all_closed(socks: list[socket.socket], timeout: float = 10.0) -> int:
    """Wait (bounded) until the server has closed each socket; how many it
    closed. A socket the server still holds open never becomes readable."""
    waiting = {s.fileno(): s for s in socks}
    closed = 0
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(list(waiting), [], [], 0.2)
        for fd in ready:
            s = waiting.pop(fd)
            try:
                data = s.recv(1024)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if data == b"":
                closed += 1
    return closed


class Observed:
    """Log lines written while it is installed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.lines.append(formatEvent(event) or "")

    def count(self, fragment: str) -> int:
        return sum(fragment in line for line in self.lines)


class TLSConnectionLimitTests(ServerTestCase):
    """Connection limits hold on TLS ports: over-limit connections are
    closed at the TCP level, before any TLS."""

    timeout = 90

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.pems = Pems(self, self.ca)
        self.observed = Observed()
        globalLogPublisher.addObserver(self.observed)
        self.addCleanup(globalLogPublisher.removeObserver, self.observed)

    def _close(self, socks: list[socket.socket]) -> None:
        for s in socks:
            s.close()

    @inlineCallbacks
    def _attack(self, server: Any, held: int, flood: int) -> Any:
        """``held`` silent connections fill the limit; ``flood`` more silent
        ones must each be closed by the server, keeping no descriptor."""
        port = server.ports[0].getHost().port
        kept = yield in_thread(hold, port, held)
        self.addCleanup(self._close, kept)
        yield self.when(lambda: server.listening_factory.total == held)
        before = open_descriptors()
        attackers = yield in_thread(hold, port, flood)
        self.addCleanup(self._close, attackers)
        closed = yield in_thread(wait_all_closed, attackers)
        self.assertEqual(closed, flood)
        # the attackers' own sockets are still open here; the server's side
        # of each one is gone (with the defect: one more descriptor each)
        self.assertLessEqual(open_descriptors(), before + flood + 4)
        self.assertEqual(server.listening_factory.total, held)
        refused = self.observed.count("refusing a connection from 127.0.0.1")
        self.assertGreaterEqual(refused, 1)
        self.assertLessEqual(refused, 20)  # rate-limited: 20 per 10 s
        self.assertEqual(self.observed.count("Unhandled Error"), 0)
        self.assertEqual(self.observed.count("Traceback"), 0)
        self.assertIn("reached: closed", "\n".join(self.observed.lines))
        # under the limit again, a real TLS client gets in
        self._close(kept)
        yield self.when(lambda: server.listening_factory.total == 0)
        wss = f"wss://localhost:{port}/"
        self.assertEqual((yield in_thread(echo, wss, context(self.ca))), "ping")

    @inlineCallbacks
    def test_max_connections(self) -> None:
        """max_connections=5 on a TLS port, 5 silent connections held: 80
        more that never send a ClientHello (past the 64 refusals the gate
        once let linger) are all closed when accepted."""
        server = yield self.start_server(
            Echo(),
            endpoints=[LOOPBACK],
            tls=TLSOptions(certificate=self.pems.cert, key=self.pems.key),
            max_connections=5,
            open_handshake_timeout=60,
        )
        yield self._attack(server, held=5, flood=80)

    @inlineCallbacks
    def test_per_ip(self) -> None:
        """max_connections_per_ip=3 (loopback not exempt) on a TLS port: the
        4th connection onwards from 127.0.0.1 is closed when accepted."""
        server = yield self.start_server(
            Echo(),
            endpoints=[LOOPBACK],
            tls=TLSOptions(certificate=self.pems.cert, key=self.pems.key),
            max_connections_per_ip=3,
            per_ip_exempt=(),
            open_handshake_timeout=60,
        )
        yield self._attack(server, held=3, flood=40)

    @inlineCallbacks
    def test_same_port_site(self) -> None:
        """The same with HTTP on the TLS port (the gate in front of a site)."""
        server = yield self.start_server(
            Echo(),
            endpoints=[LOOPBACK],
            tls=TLSOptions(certificate=self.pems.cert, key=self.pems.key),
            http=Page(),
            max_connections=4,
            open_handshake_timeout=60,
        )
        yield self._attack(server, held=4, flood=30)


def keep_sending(
    port: int, ctx: ssl.SSLContext, head: bytes, *, cap: int = 256 * 2**20
) -> tuple[bytes, int, str]:
    """Send ``head`` over TLS, read the answer's head, then keep sending 64
    KiB chunks as an attacker would, ignoring the server's TLS close_notify:
    until sending fails (the server closed TCP), blocks for 3 s (the server
    reads nothing), ``cap`` bytes are sent, or 10 s pass. Returns the
    answer, the bytes sent after it, and what ended the loop."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        s.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        eof = False
        progress = deadline = time.monotonic()
        deadline += 10
        while True:
            now = time.monotonic()
            if now > deadline:
                return answer, sent, "time limit"
            if sent >= cap:
                return answer, sent, "cap"
            if now - progress > 3:
                return answer, sent, "blocked"
            readable, writable, _ = select.select([] if eof else [s], [s], [], 0.5)
            try:
                if readable and s.recv(65536) == b"":
                    eof = True  # close_notify: ignored, as an attacker would
                if writable:
                    sent += s.send(chunk)
                    progress = time.monotonic()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                pass
            except (OSError, ssl.SSLError) as e:
                return answer, sent, type(e).__name__


class ReadingAfterRefusalTests(ServerTestCase):
    """A refused TLS connection is read no more, as a plain one."""

    timeout = 90

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.pems = Pems(self, self.ca)

    def _tls(self) -> TLSOptions:
        return TLSOptions(certificate=self.pems.cert, key=self.pems.key)

    def _count_reads(self, server: Any) -> list[int]:
        """Count the bytes the server reads from its sockets (what the
        listening factory's protocols are given)."""
        gate = server.listening_factory
        counted = [0]
        build = gate.buildProtocol

        def counting(addr: Any) -> Any:
            protocol = build(addr)
            if protocol is not None:
                read = protocol.dataReceived

                def dataReceived(data: bytes) -> Any:
                    counted[0] += len(data)
                    return read(data)

                protocol.dataReceived = dataReceived
            return protocol

        gate.buildProtocol = counting
        return counted

    @inlineCallbacks
    def _attack(self, head: bytes, status: bytes, **options: Any) -> Any:
        server = yield self.start_server(
            Echo(), endpoints=[LOOPBACK], tls=self._tls(), **options
        )
        port = server.ports[0].getHost().port
        read = self._count_reads(server)
        answer, sent, ended = yield in_thread(
            keep_sending, port, context(self.ca), head
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 " + status), answer[:80])
        # with the defect the server read and decrypted all it was sent for
        # 5 to 10 s (hundreds of megabytes); now nothing after the answer:
        # the head, the TLS handshake and what came in the same reads
        self.assertNotIn(ended, ("cap", "time limit"), (sent, ended))
        yield self.when(lambda: server.listening_factory.total == 0)
        self.assertLess(read[0], len(head) + 2**20, (sent, ended))

    def test_after_413(self) -> Any:
        """POST with Content-Length 10 GiB over TLS: 413, then the client
        keeps sending; the server reads no more and closes."""
        head = (
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10737418240\r\n\r\n"
        )
        return self._attack(head, b"413", http=Page())

    def test_after_chunked_413(self) -> Any:
        """A chunked body cut at the limit (413), the client still sending."""
        body = b"%x\r\n%s\r\n" % (100000, b"b" * 100000)
        head = (
            b"POST / HTTP/1.1\r\nHost: localhost\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + body
        )
        return self._attack(head, b"413", http=Page(), max_request_body=65536)

    def test_after_overlong_header_line(self) -> Any:
        """A 20 KB header line on the same-port site over TLS gets 431 (it
        used to be closed without an answer, then read for 10 s)."""
        head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 20000
        return self._attack(head, b"431", http=Page())

    def test_after_overlong_request_line(self) -> Any:
        """A 20 KB request line on the same-port site over TLS gets 414."""
        head = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n"
        return self._attack(head, b"414", http=Page())

    def test_after_431_websocket_only(self) -> Any:
        """The WebSocket-only server over TLS: a handshake head over
        max_request_head gets 431, then nothing more is read."""
        head = handshake_request("/", "localhost")[:-2] + b"X-Big: " + b"a" * 20000
        return self._attack(head, b"431")
