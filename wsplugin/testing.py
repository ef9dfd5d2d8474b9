"""Helpers to test wsplugin handlers in memory: no sockets, no real time.

Users can test their own handlers with these, as wsplugin's own suite does::

    from twisted.internet.testing import MemoryReactorClock
    from wsplugin import WebSocketServer
    from wsplugin.testing import ServerHarness

    clock = MemoryReactorClock()
    harness = ServerHarness(WebSocketServer(MyHandler(), reactor=clock))
    client = harness.connect()
    assert client.handshake("/chat").status == 101
    client.send_text("hi")
    assert client.messages() == ["hi back"]

The server runs on the given reactor (a ``MemoryReactorClock``): Autobahn's
handshake and keep-alive timers and wsplugin's own run on it, so
``clock.advance(seconds)`` moves time.
"""

from __future__ import annotations

import base64
import os
import struct
from dataclasses import dataclass
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from wsplugin._frames import decode_header, encode_client_frame

__all__ = [
    "ClientFrame",
    "FakeClient",
    "FakeTransport",
    "HttpResponse",
    "ServerHarness",
    "client_frame",
    "handshake_request",
    "parse_frames",
]


def handshake_request(
    path: str = "/",
    host: str = "localhost",
    headers: list[tuple[str, str]] | None = None,
    *,
    key: str | None = None,
    upgrade: bool = True,
    version: str | None = "13",
    method: str = "GET",
) -> bytes:
    """Bytes of a client's opening handshake request."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines += [f"{k}: {v}" for k, v in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def client_frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask: bytes = b"\x37\xfa\x21\x3d",
) -> bytes:
    """Encode one masked frame, as a client sends it."""
    return encode_client_frame(opcode, payload, fin, rsv, mask)


@dataclass(frozen=True)
class ClientFrame:
    """A frame the server sent, as parsed by :func:`parse_frames`.

    Attributes:
        opcode: The frame opcode (1 text, 2 binary, 0 continuation, 8-10 control).
        fin: The FIN bit.
        rsv: The three RSV bits as a number (4: compressed).
        payload: The payload.
        size: Bytes the frame took on the wire, header included.
    """

    opcode: int
    fin: bool
    rsv: int
    payload: bytes
    size: int

    @property
    def close_code(self) -> int | None:
        """The code of a close frame (None without one)."""
        if self.opcode != 8 or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    @property
    def close_reason(self) -> str:
        """The reason of a close frame."""
        return self.payload[2:].decode("utf-8") if self.opcode == 8 else ""


def parse_frames(data: bytes) -> tuple[list[ClientFrame], bytes]:
    """Split server-sent bytes into frames; returns (frames, unparsed rest).

    Raises:
        ValueError: a frame is masked (a server never masks its frames).
    """
    frames = []
    pos = 0
    while True:
        header = decode_header(data, pos)
        if header is None:
            break
        b0, masked, length, head = header
        if masked:
            raise ValueError("a server frame must not be masked")
        if len(data) - pos < head + length:
            break
        payload = data[pos + head : pos + head + length]
        frames.append(
            ClientFrame(
                b0 & 0xF, bool(b0 & 0x80), (b0 >> 4) & 7, payload, head + length
            )
        )
        pos += head + length
    return frames, data[pos:]


@dataclass(frozen=True)
class HttpResponse:
    """The server's answer to a handshake request."""

    status: int
    reason: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitive."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        """Every value of a header, case-insensitive."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


class FakeTransport(StringTransport):
    """A StringTransport that ends like a real one: asynchronously.

    ``loseConnection`` and ``abortConnection`` deliver ``connectionLost`` on
    the next clock turn (``clock.advance(0)``), never re-entrantly.
    """

    def __init__(self, clock: IReactorTime, peer: IPv4Address) -> None:
        super().__init__(
            peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8888)
        )
        self._clock = clock
        self.protocol: Any = None
        self.lost = False
        self.aborted = False

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self._clock.callLater(0, self._lose, ConnectionDone("closed"))

    def abortConnection(self) -> None:
        if not self.lost:
            self.aborted = True
            self.disconnecting = True
            self._clock.callLater(0, self._lose, ConnectionAborted("aborted"))

    def pauseProducing(self) -> None:
        self.producerState = "paused"

    def resumeProducing(self) -> None:
        self.producerState = "producing"

    def _lose(self, reason: Exception) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(Failure(reason))


class FakeClient:
    """One in-memory client connection to a :class:`ServerHarness`."""

    def __init__(
        self, harness: ServerHarness, protocol: Any, transport: FakeTransport
    ) -> None:
        self.harness = harness
        self.protocol = protocol
        self.transport = transport
        self.response: HttpResponse | None = None
        self._buffer = b""
        self._frames: list[ClientFrame] = []

    @property
    def connection(self) -> Any:
        """The server-side :class:`~wsplugin.Connection` (None before allow)."""
        return self.protocol.connection

    def send_raw(self, data: bytes) -> None:
        """Feed raw bytes to the server, then run due timers."""
        if not self.transport.lost:
            self.protocol.dataReceived(data)
        self.harness.flush()

    def handshake(
        self, path: str = "/", host: str = "localhost", **kw: Any
    ) -> HttpResponse:
        """Send an opening handshake and return the parsed response."""
        self.send_raw(handshake_request(path, host, **kw))
        response = self.read_response()
        assert response is not None, "no handshake response"
        return response

    def read_response(self) -> HttpResponse | None:
        """Parse the HTTP response the server wrote, if complete."""
        data = self.transport.value()
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = data[:end].decode("latin-1").split("\r\n")
        _, status, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        self.response = HttpResponse(int(status), reason[0] if reason else "", headers)
        self._buffer = data[end + 4 :]
        self.transport.clear()
        return self.response

    def send_frame(
        self, opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0
    ) -> None:
        """Send one masked frame."""
        self.send_raw(client_frame(opcode, payload, fin, rsv))

    def send_text(self, text: str) -> None:
        """Send a text message in one frame."""
        self.send_frame(1, text.encode("utf-8"))

    def send_binary(self, data: bytes) -> None:
        """Send a binary message in one frame."""
        self.send_frame(2, data)

    def send_ping(self, payload: bytes = b"") -> None:
        """Send a ping."""
        self.send_frame(9, payload)

    def send_pong(self, payload: bytes = b"") -> None:
        """Send a pong."""
        self.send_frame(10, payload)

    def send_close(self, code: int | None = 1000, reason: str = "") -> None:
        """Send a close frame."""
        payload = b"" if code is None else struct.pack("!H", code) + reason.encode()
        self.send_frame(8, payload)

    def drop(self) -> None:
        """The client's TCP connection vanishes (no close frame)."""
        if not self.transport.lost:
            self.transport.lost = True
            self.protocol.connectionLost(Failure(ConnectionLost("dropped")))
        self.harness.flush()

    def frames(self) -> list[ClientFrame]:
        """Frames the server sent since the last call."""
        self._buffer += self.transport.value()
        self.transport.clear()
        frames, self._buffer = parse_frames(self._buffer)
        return frames

    def messages(self) -> list[str | bytes]:
        """Data messages the server sent since the last call (reassembled);
        control frames are dropped."""
        out: list[str | bytes] = []
        parts: list[bytes] = []
        kind = 0
        for frame in self.frames():
            if frame.opcode >= 8:
                continue
            if frame.opcode:
                kind, parts = frame.opcode, []
            parts.append(frame.payload)
            if frame.fin:
                data = b"".join(parts)
                out.append(data.decode("utf-8") if kind == 1 else data)
        return out

    @property
    def closed(self) -> bool:
        """True once the server closed the TCP connection."""
        return self.transport.lost or self.transport.disconnecting


class ServerHarness:
    """Connects in-memory clients to a server's factory.

    Args:
        server: A :class:`~wsplugin.WebSocketServer` or its factory, built with
            ``reactor=`` a ``MemoryReactorClock``.
    """

    def __init__(self, server: Any) -> None:
        self.factory = getattr(server, "factory", server)
        self.clock: Any = self.factory.reactor
        self._port = 40000

    def connect(self, host: str = "127.0.0.1") -> FakeClient:
        """Open a TCP connection from a new client port."""
        self._port += 1
        peer = IPv4Address("TCP", host, self._port)
        protocol = self.factory.buildProtocol(peer)
        transport = FakeTransport(self.clock, peer)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return FakeClient(self, protocol, transport)

    def open(self, path: str = "/", **kw: Any) -> FakeClient:
        """Connect and complete a handshake; asserts it got 101."""
        client = self.connect()
        response = client.handshake(path, **kw)
        if response.status != 101:
            raise AssertionError(f"handshake got {response.status} {response.reason}")
        return client

    def flush(self) -> None:
        """Run whatever is due now on the clock (connection losses, calls)."""
        self.clock.advance(0)

    def advance(self, seconds: float) -> None:
        """Move the fake clock."""
        self.clock.advance(seconds)
