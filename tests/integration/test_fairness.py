"""Fairness over real loopback sockets: a client flooding tiny messages does
not make the server handle its whole backlog before another client's
message (wsplugin._fastpath.EVENTS_PER_TURN). Judged by counts, not time."""

from __future__ import annotations

import base64
import os
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks

from tests.integration.support import ServerTestCase, in_thread
from wsplugin._fastpath import EVENTS_PER_TURN
from wsplugin.testing import client_frame

FLOODERS = 4
FLOOD = 10_000  # one-byte messages per flooder: 70,000 bytes, one 64 KiB read


class Counter:
    """Counts the flooders' messages; notes the count when the healthy
    client's message arrives, and echoes that one."""

    def __init__(self) -> None:
        self.flood = 0
        self.seen_before_healthy: int | None = None
        self.order_ok = True
        self.last: dict[str, int] = {}

    def on_message(self, conn: Any, text: str) -> None:
        if conn.request.path == "/healthy":
            self.seen_before_healthy = self.flood
            conn.send_text(text)
            return
        self.flood += 1
        n = int(text)
        if n != (self.last.get(conn.id, -1) + 1) % 10:
            self.order_ok = False
        self.last[conn.id] = n


def open_raw(port: int, path: str) -> socket.socket:
    """A blocking socket that completed an opening handshake."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:40]
    return sock


def recv_frame(sock: socket.socket) -> bytes:
    """One small unmasked frame's payload."""
    data = b""
    while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data[2 : 2 + (data[1] & 0x7F)]


class FloodFairnessTests(ServerTestCase):
    """A flooding client yields to others after a budget per turn."""

    @inlineCallbacks
    def test_healthy_client_not_behind_the_flood(self) -> None:
        """Four clients each have 10,000 one-byte messages waiting in the
        server's socket buffers when a fifth client's message arrives: the
        server handles at most one budget of each flooder's messages per
        turn, so the fifth message is handled after at most
        4 x EVENTS_PER_TURN of them (without the budget, after one whole
        64 KiB read of each flooder, 9,362 messages each); then every
        flooded message arrives, in order."""
        # the bound below means something only if it is far below one read
        self.assertLess(FLOODERS * EVENTS_PER_TURN, FLOOD // 2)
        counter = Counter()
        yield self.start_server(counter, heartbeat_interval=0)
        port = self.server.ports[0].getHost().port
        flooders = yield in_thread(
            lambda: [open_raw(port, "/flood") for _ in range(FLOODERS)]
        )
        healthy = yield in_thread(open_raw, port, "/healthy")
        socks = [*flooders, healthy]
        self.addCleanup(lambda: [s.close() for s in socks])
        yield self.when(lambda: len(self.server.connections) == FLOODERS + 1)
        conns = sorted(self.server.connections, key=lambda c: c.request.path)
        flood_conns = [c for c in conns if c.request.path == "/flood"]
        healthy_conn = next(c for c in conns if c.request.path == "/healthy")
        # while the server does not read, every byte reaches its socket buffers
        for conn in conns:
            conn.engine.pause_reading("test")
        blob = b"".join(client_frame(1, b"%d" % (i % 10)) for i in range(FLOOD))

        def send_all() -> None:
            for sock in flooders:
                sock.sendall(blob)
            healthy.sendall(client_frame(1, b"ping"))

        yield in_thread(send_all)
        # the flooders become readable first, the healthy client last
        for conn in flood_conns:
            conn.engine.resume_reading("test")
        healthy_conn.engine.resume_reading("test")
        echo = yield in_thread(recv_frame, healthy)
        self.assertEqual(echo, b"ping")
        self.assertIsNotNone(counter.seen_before_healthy)
        self.assertLessEqual(counter.seen_before_healthy, FLOODERS * EVENTS_PER_TURN)
        yield self.when(lambda: counter.flood == FLOODERS * FLOOD, timeout=60)
        self.assertTrue(counter.order_ok)
