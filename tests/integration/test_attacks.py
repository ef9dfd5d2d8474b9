"""Misbehaving clients over real loopback sockets: the server stays bounded.

Memory is judged by what the server itself holds (``buffered_bytes()``, the
connection registry, open file descriptors, tracemalloc peaks), never by time.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from websockets.sync.client import connect

from tests.helpers import Recorder
from tests.integration.support import ServerTestCase, Twistd, in_thread
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


def proc_status_mib(pid: int, key: str) -> float:
    """A memory figure of a process from /proc (VmRSS, VmHWM...), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


FLOOD_FRAMES = 500_000
FLOOD_CONNECTIONS = 8


class FragmentFloodTests(ServerTestCase):
    """One message sent as 500,000 tiny continuation frames, on 8 connections
    at once, to a ``twistd ws --app echo`` subprocess: its memory grows by
    the payload (not by a Python object per fragment), a healthy client
    keeps getting answers, and the message is echoed (or refused with 1009).

    Measured on this machine (2 cores), peak RSS growth (VmHWM after minus
    VmRSS before): 227 MiB, 92 s, healthy round trips up to 3.8 s before
    (Autobahn's list of fragments, ~13 us a frame); 15 MiB, 4 s, 0.16 s
    after. Empty frames: 0 MiB."""

    timeout = 120

    def _flood(self, payload: bytes, *args: str) -> Any:
        server = Twistd(self, "--app", "echo", *args)
        server.wait_listening()
        pid = server.proc.pid
        frame = client_frame(0, payload, fin=False, mask=b"\x5a\xa5\x3c\xc3")
        body = (
            client_frame(1, payload, fin=False)
            + frame * (FLOOD_FRAMES - 2)
            + client_frame(0, payload, fin=True)
        )
        url = f"ws://127.0.0.1:{server.port}/"

        def attacker(results: list[Any]) -> None:
            c = RawClient(server.port)
            c.handshake()
            got: list[Any] = []

            def read_first_frame() -> None:
                data = c.rest
                c.sock.settimeout(90)
                while True:
                    frames, _ = parse_frames(data)
                    if frames:
                        got.append(frames[0])
                        return
                    try:
                        chunk = c.sock.recv(1 << 20)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        got.append(None)
                        return
                    data += chunk

            reader = threading.Thread(target=read_first_frame)
            reader.start()
            view = memoryview(body)
            try:
                for i in range(0, len(body), 65536):
                    c.sock.sendall(view[i : i + 65536])
            except OSError:
                pass
            reader.join(100)
            try:
                c.sock.sendall(client_frame(8, struct.pack("!H", 1000)))
            except OSError:
                pass
            c.close()
            results.append(got[0] if got else None)

        def run() -> tuple[list[Any], list[float], float, float]:
            with connect(url, open_timeout=10, max_size=None) as ws:
                ws.send("warm up")
                ws.recv(timeout=10)
                before = proc_status_mib(pid, "VmRSS")
                results: list[Any] = []
                threads = [
                    threading.Thread(target=attacker, args=(results,))
                    for _ in range(FLOOD_CONNECTIONS)
                ]
                for t in threads:
                    t.start()
                round_trips = []
                deadline = time.monotonic() + 100
                while any(t.is_alive() for t in threads):
                    if time.monotonic() > deadline:
                        break
                    start = time.monotonic()
                    ws.send("are you there?")
                    self.assertEqual(ws.recv(timeout=30), "are you there?")
                    round_trips.append(time.monotonic() - start)
                    time.sleep(0.02)
                for t in threads:
                    t.join(10)
                peak = proc_status_mib(pid, "VmHWM")
            return results, round_trips, before, peak

        return in_thread(run)

    def _check_bounds(
        self, round_trips: list[float], before: float, peak: float
    ) -> None:
        self.assertTrue(round_trips)
        self.assertLess(
            peak - before, 64, f"RSS grew from {before:.1f} MiB to a peak of {peak:.1f}"
        )
        # liveness, not speed: the reactor is never held for long by
        # the flooding connections (measured: under 0.4 s on 2 busy cores)
        self.assertLess(max(round_trips), 1.0, sorted(round_trips)[-5:])

    @inlineCallbacks
    def test_two_byte_fragments(self) -> None:
        """8 x 500,000 two-byte frames (1 MB of text each): every message
        is echoed whole, RSS grows under 64 MiB, round trips stay under 1 s."""
        results, round_trips, before, peak = yield self._flood(b"ab")
        self.assertEqual(
            [(f.opcode, len(f.payload)) for f in results],
            [(1, 2 * FLOOD_FRAMES)] * FLOOD_CONNECTIONS,
        )
        self.assertEqual(results[0].payload[:6], b"ababab")
        self._check_bounds(round_trips, before, peak)

    @inlineCallbacks
    def test_empty_fragments(self) -> None:
        """8 x 500,000 empty continuation frames cost no more: each empty
        message is echoed, within the same bounds."""
        results, round_trips, before, peak = yield self._flood(b"")
        self.assertEqual(
            [(f.opcode, f.payload) for f in results],
            [(1, b"")] * FLOOD_CONNECTIONS,
        )
        self._check_bounds(round_trips, before, peak)

    @inlineCallbacks
    def test_fragments_over_the_limit(self) -> None:
        """With --max-message-size 500000, each 1 MB message is refused with
        1009 halfway; the rest of its frames are skipped cheaply."""
        results, round_trips, before, peak = yield self._flood(
            b"ab", "--max-message-size", "500000"
        )
        self.assertEqual(
            [(f.opcode, f.close_code) for f in results],
            [(8, 1009)] * FLOOD_CONNECTIONS,
        )
        self._check_bounds(round_trips, before, peak)


INVALID_CLOSE_PAYLOADS = [
    (b"\x03", 1002),  # a 1-byte payload
    (b"\x03\xe8\xff\xfe", 1007),  # 1000 with a reason that is not UTF-8
] + [
    (struct.pack("!H", code), 1002)
    for code in (999, 1004, 1005, 1006, 1015, 1016, 2999, 5000)
]


class InvalidCloseTests(ServerTestCase):
    """An invalid close frame gets a close frame back (RFC 6455 7.1.7), not a
    bare TCP drop; then the server closes the TCP connection."""

    @inlineCallbacks
    def _send_invalid_close(self, payload: bytes, **options: Any) -> Any:
        rec = Recorder()
        server = yield self.start_server(rec, **options)
        port = server.ports[0].getHost().port

        def attack() -> tuple[list[Any], bytes]:
            c = RawClient(port)
            c.handshake()
            c.sock.sendall(client_frame(8, payload))
            frames = c.read_frames_until_close()
            try:
                after = c.sock.recv(4096)  # b"": the server closed TCP
            except OSError as e:
                after = repr(e).encode()
            c.close()
            return frames, after

        frames, after = yield in_thread(attack)
        yield self.when(lambda: "on_disconnect" in rec.names())
        return frames, after, rec

    @inlineCallbacks
    def test_each_invalid_close_frame(self) -> None:
        """A 1-byte payload, codes 999, 1004-1006, 1015, 1016, 2999, 5000 get
        1002; a reason that is not UTF-8 gets 1007; then TCP closes, and
        on_disconnect reports the code sent."""
        for payload, expected in INVALID_CLOSE_PAYLOADS:
            for options in ({}, {"manual_close": True}):
                frames, after, rec = yield self._send_invalid_close(payload, **options)
                self.assertEqual(
                    [f.close_code for f in frames if f.opcode == 8],
                    [expected],
                    (payload, options),
                )
                self.assertEqual(after, b"", (payload, options))
                self.assertEqual(
                    [e for e in rec.events if e[0] == "on_disconnect"],
                    [("on_disconnect", False, expected)],
                )
                self.assertNotIn("on_close", rec.names())
                yield self.server.stop()
