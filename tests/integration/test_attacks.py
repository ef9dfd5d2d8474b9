"""Misbehaving clients over real loopback sockets: the server stays bounded.

Memory is judged by what the server itself holds (``buffered_bytes()``, the
connection registry, open file descriptors, tracemalloc peaks), never by time.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import tracemalloc
import zlib
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from websockets.sync.client import connect

from tests.helpers import Recorder
from tests.integration.support import ServerTestCase, in_thread
from wsplugin.testing import client_frame, parse_frames

ZERO_MASK = b"\x00\x00\x00\x00"  # masking with zeros leaves payloads as they are


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class RawClient:
    """A blocking, hand-driven WebSocket client for attacks."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))

    def handshake(self, extra: str = "") -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        self.rest = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
        return head

    def read_frames_until_close(self, timeout: float = 10) -> list[Any]:
        self.sock.settimeout(timeout)
        data = self.rest
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frames, _ = parse_frames(data)
            if any(f.opcode == 8 for f in frames):
                return frames
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return parse_frames(data)[0]

    def reset(self) -> None:
        """Close with a TCP RST (SO_LINGER 0)."""
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


class SlowReaderTests(ServerTestCase):
    """Broadcasts to clients that never read keep server memory bounded."""

    timeout = 120

    @inlineCallbacks
    def test_never_reading_clients(self) -> None:
        """100 clients that never read and one that does: the server's
        buffered bytes stay under 100 x (limit + 3 messages); the slow ones end
        with 1008; the healthy one gets every message; nothing stays queued."""
        limit, size, count, slow = 256 * 1024, 64 * 1024, 300, 100
        rec = Recorder()
        server = yield self.start_server(
            rec, max_send_buffer=limit, close_handshake_timeout=1
        )
        port = server.ports[0].getHost().port

        def open_slow() -> list[RawClient]:
            clients = []
            for _ in range(slow):
                c = RawClient(port, rcvbuf=4096)
                c.handshake()
                clients.append(c)
            return clients

        slow_clients = yield in_thread(open_slow)
        self.addCleanup(lambda: [c.close() for c in slow_clients])
        received: list[bytes] = []

        def healthy() -> None:
            with connect(self.url, open_timeout=10, max_size=None) as ws:
                ready.append(True)
                while len(received) < count:
                    received.append(ws.recv(timeout=30))

        ready: list[bool] = []
        reader = in_thread(healthy)
        yield self.when(lambda: bool(ready) and len(server.connections) == slow + 1)
        payload = b"z" * size
        sent, peak = [0], [0]

        def tick() -> None:
            server.broadcast(payload)
            sent[0] += 1
            peak[0] = max(peak[0], server.factory.buffered_bytes())
            if sent[0] == count:
                loop.stop()

        loop = task.LoopingCall(tick)
        yield loop.start(0.005)
        yield reader
        self.assertEqual(len(received), count)
        self.assertLessEqual(peak[0], slow * (limit + 3 * (size + 16)))
        yield self.when(lambda: len(server.connections) == 0, timeout=30)
        codes = [e[2] for e in rec.events if e[0] == "on_disconnect"]
        self.assertEqual(codes.count(1008), slow)
        self.assertLess(server.factory.buffered_bytes(), 2 * size)


class ConnectionChurnTests(ServerTestCase):
    """Connections opened and reset leave nothing behind."""

    timeout = 180

    @inlineCallbacks
    def test_5000_connections_reset(self) -> None:
        """5,000 connections (some mid-handshake, some open, some mid-frame)
        reset by the client: afterwards no Connection, no file descriptor and
        no timer is left."""
        rec = Recorder()
        server = yield self.start_server(rec)
        port = server.ports[0].getHost().port
        yield in_thread(lambda: RawClient(port).reset())  # warm up threads
        yield self.when(lambda: server.factory.countConnections == 0)
        fds_before = open_fds()
        calls_before = len(reactor.getDelayedCalls())

        def churn() -> int:
            opened = 0
            for batch in range(10):
                clients = []
                for i in range(500):
                    c = RawClient(port)
                    kind = (batch * 500 + i) % 3
                    if kind == 0:
                        c.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
                    else:
                        c.handshake()
                        opened += 1
                        if kind == 2:
                            c.sock.sendall(b"\x82\xfe\x03\xe8" + ZERO_MASK + b"partial")
                    clients.append(c)
                for c in clients:
                    c.reset()
            return opened

        opened = yield in_thread(churn)
        yield self.when(lambda: len(server.connections) == 0, timeout=60)
        yield self.when(lambda: server.factory.countConnections == 0, timeout=60)
        yield self.when(lambda: open_fds() <= fds_before, timeout=60)
        self.assertEqual(rec.names().count("on_open"), opened)
        self.assertEqual(rec.names().count("on_disconnect"), opened)
        self.assertLessEqual(len(reactor.getDelayedCalls()), calls_before)

    @inlineCallbacks
    def test_mid_frame_drop(self) -> None:
        """A client that vanishes in the middle of a frame is cleaned up:
        on_disconnect once, unclean, no Connection left."""
        rec = Recorder()
        server = yield self.start_server(rec)
        port = server.ports[0].getHost().port

        def half_frame() -> None:
            c = RawClient(port)
            c.handshake()
            c.sock.sendall(b"\x81\xfe\x10\x00" + ZERO_MASK + b"x" * 100)
            c.close()

        yield in_thread(half_frame)
        yield self.when(lambda: "on_disconnect" in rec.names())
        self.assertEqual(rec.events[-1][:2], ("on_disconnect", False))
        self.assertEqual(len(server.connections), 0)


class OversizeTests(ServerTestCase):
    """Oversized input is refused early, without buffering it."""

    timeout = 120

    @inlineCallbacks
    def test_huge_fragmented_message(self) -> None:
        """A 200 MiB message in 1 MiB fragments is closed with 1009 once it
        passes the 16 MiB default; the server, which goes on reading (and
        discarding) until its close is answered, never holds much more than
        the limit."""
        server = yield self.start_server(Recorder())
        port = server.ports[0].getHost().port
        chunk = b"a" * (1024 * 1024)

        def flood() -> tuple[int, list[int | None]]:
            c = RawClient(port)
            c.handshake()
            sent = 0
            try:
                for i in range(200):
                    opcode = 2 if i == 0 else 0
                    c.sock.sendall(
                        client_frame(opcode, chunk, fin=i == 199, mask=ZERO_MASK)
                    )
                    sent += len(chunk)
            except OSError:
                pass
            codes = [f.close_code for f in c.read_frames_until_close() if f.opcode == 8]
            c.close()
            return sent, codes

        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        sent, codes = yield in_thread(flood)
        _, peak = tracemalloc.get_traced_memory()
        self.assertEqual(codes, [1009])
        self.assertLess(peak, 48 * 1024 * 1024)

    @inlineCallbacks
    def test_deflate_bomb(self) -> None:
        """A compressed frame inflating to 200 MiB closes with 1009, and the
        server never allocates anything near 200 MiB doing it."""
        server = yield self.start_server(Recorder(), compression=True)
        port = server.ports[0].getHost().port
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        zeros = bytes(1024 * 1024)
        bomb = b"".join(compressor.compress(zeros) for _ in range(200))
        bomb += compressor.flush(zlib.Z_SYNC_FLUSH)
        bomb = bomb[:-4]  # permessage-deflate drops the 00 00 ff ff tail
        frame = client_frame(2, bomb, rsv=4, mask=ZERO_MASK)
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)

        def attack() -> list[int | None]:
            c = RawClient(port)
            head = c.handshake("Sec-WebSocket-Extensions: permessage-deflate\r\n")
            assert b"permessage-deflate" in head, head
            c.sock.sendall(frame)
            codes = [f.close_code for f in c.read_frames_until_close() if f.opcode == 8]
            c.close()
            return codes

        codes = yield in_thread(attack)
        _, peak = tracemalloc.get_traced_memory()
        self.assertEqual(codes, [1009])
        self.assertLess(peak, 64 * 1024 * 1024)

    @inlineCallbacks
    def test_megabyte_of_headers(self) -> None:
        """1 MiB of headers gets 431 after at most the 16 KiB limit is read."""
        server = yield self.start_server(Recorder())
        port = server.ports[0].getHost().port

        def attack() -> bytes:
            c = RawClient(port)
            try:
                c.sock.sendall(b"GET / HTTP/1.1\r\nX-Junk: " + b"j" * (1024 * 1024))
            except OSError:
                pass
            try:
                answer = c.sock.recv(4096)
            except OSError:
                answer = b""
            c.close()
            return answer

        answer = yield in_thread(attack)
        self.assertTrue(answer.startswith(b"HTTP/1.1 431 "), answer[:60])

    @inlineCallbacks
    def test_slowloris(self) -> None:
        """A client trickling its handshake is dropped at the handshake timeout."""
        server = yield self.start_server(Recorder(), open_handshake_timeout=1)
        port = server.ports[0].getHost().port

        def trickle() -> tuple[bool, float]:
            c = RawClient(port)
            start = time.monotonic()
            request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
            for byte in request:
                try:
                    c.sock.sendall(bytes([byte]))
                    time.sleep(0.05)
                    c.sock.settimeout(0.001)
                    if c.sock.recv(1) == b"":
                        return True, time.monotonic() - start
                except (BlockingIOError, TimeoutError):
                    continue
                except OSError:
                    return True, time.monotonic() - start
            return False, time.monotonic() - start

        dropped, _ = yield in_thread(trickle)
        self.assertTrue(dropped)


class HttpSlowlorisTests(ServerTestCase):
    """With HTTP on the same port, a trickled request head is still bounded."""

    @inlineCallbacks
    def test_slowloris_over_http(self) -> None:
        """twisted.web's idle timeout restarts on every byte; the bounded
        channel drops a head not complete within open_handshake_timeout."""
        from twisted.web.resource import Resource

        server = yield self.start_server(
            Recorder(), http=Resource(), open_handshake_timeout=1
        )
        port = server.ports[0].getHost().port

        def trickle() -> bool:
            c = RawClient(port)
            c.sock.settimeout(0.05)
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200:
                try:
                    c.sock.sendall(bytes([byte]))
                    if c.sock.recv(1) == b"":
                        return True
                except TimeoutError:
                    continue
                except OSError:
                    return True
            return False

        self.assertTrue((yield in_thread(trickle)))
