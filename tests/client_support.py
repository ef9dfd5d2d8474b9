"""In-memory plumbing for the client's unit tests: an endpoint that connects
the client to a server factory through ``twisted.test.iosim``, scripted raw
servers, and a harness on a ``MemoryReactorClock``. No sockets, no real time.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.helpers import Recorder, make
from wsplugin.client import ClientConnection, WebSocketClientProtocol, connect

URL = "ws://127.0.0.1:8888/chat"

SERVER = IPv4Address("TCP", "127.0.0.1", 8888)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RecordingTransport(iosim.FakeTransport):
    """An iosim transport that remembers whether reading was paused."""

    producer_state = "producing"

    def pauseProducing(self) -> None:
        self.producer_state = "paused"

    def resumeProducing(self) -> None:
        self.producer_state = "producing"


@implementer(IStreamClientEndpoint)
class MemoryEndpoint:
    """Connects each client to a new protocol of ``server_factory`` via iosim."""

    def __init__(self, server_factory: Any, clock: MemoryReactorClock) -> None:
        self.server_factory = server_factory
        self.clock = clock
        self.refuse = False
        self.attempts = 0
        self.pumps: list[iosim.IOPump] = []
        self.clients: list[RecordingTransport] = []
        self.protocols: list[WebSocketClientProtocol] = []
        self.servers: list[Any] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError(string="Connection refused"))
        local = IPv4Address("TCP", "127.0.0.1", 50000 + self.attempts)
        client = factory.buildProtocol(SERVER)
        server = self.server_factory.buildProtocol(local)
        ctransport = RecordingTransport(client, False, local, SERVER)
        stransport = iosim.FakeTransport(server, True, SERVER, local)
        pump = iosim.connect(
            server, stransport, client, ctransport, greet=False, clock=self.clock
        )
        self.pumps.append(pump)
        self.clients.append(ctransport)
        self.protocols.append(client)
        self.servers.append(server)
        return succeed(client)

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


def accept_key(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept for a Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def upgrade(key: bytes, accept: bytes | None = None) -> bytes:
    """A valid 101 response to a request with ``key``."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
        + (accept if accept is not None else accept_key(key))
        + b"\r\n\r\n"
    )


class ScriptedServer(Protocol):
    """A raw server: answers the request head with ``script(key)``'s bytes,
    then closes if ``close`` says so. ``requests`` collects what it read."""

    def __init__(self, script: Any, close: bool = False) -> None:
        self.script = script
        self.close = close
        self.buffer = b""
        self.answered = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.answered or b"\r\n\r\n" not in self.buffer:
            return
        self.answered = True
        key = b""
        for line in self.buffer.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        answer = self.script(key) if callable(self.script) else self.script
        if answer:
            self.transport.write(answer)
        if self.close:
            self.transport.loseConnection()


class scripted(Factory):
    """A factory of :class:`ScriptedServer` protocols."""

    def __init__(self, script: Any, close: bool = False) -> None:
        self.script = script
        self.close = close

    def buildProtocol(self, addr: Any) -> ScriptedServer:
        protocol = ScriptedServer(self.script, self.close)
        protocol.factory = self
        return protocol


class Echo(Recorder):
    """Records events and echoes every message."""

    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        conn.send_text(text)

    def on_binary(self, conn: Any, data: bytes) -> None:
        super().on_binary(conn, data)
        conn.send_binary(data)


class Harness:
    """A wsplugin server (or a raw factory) and a client endpoint, in memory."""

    def __init__(self, handler: Any = None, server_factory: Any = None, **opts: Any):
        self.clock = MemoryReactorClock()
        if server_factory is None:
            server, harness = make(handler, **opts)
            self.server = server
            self.clock = harness.clock
            server_factory = server.factory
        self.endpoint = MemoryEndpoint(server_factory, self.clock)

    def connect(self, url: str = URL, **options: Any) -> Deferred[ClientConnection]:
        d = connect(url, reactor=self.clock, endpoint=self.endpoint, **options)
        self.flush()
        return d

    def flush(self) -> None:
        self.endpoint.flush()

    def server_conn(self, index: int = -1) -> Any:
        return self.endpoint.servers[index].connection

    def client_protocol(self, index: int = -1) -> WebSocketClientProtocol:
        """The client's Autobahn protocol (as the endpoint built it)."""
        return self.endpoint.protocols[index]


def open_conn(
    test: SynchronousTestCase, handler: Any = None, **options: Any
) -> tuple[ClientConnection, Harness]:
    """An open client connection to an in-memory wsplugin server."""
    harness = Harness(handler if handler is not None else Echo())
    conn = test.successResultOf(harness.connect(**options))
    return conn, harness


def server_frames(harness: Harness, *frames: bytes) -> None:
    """Write raw frames from the server side, then pump."""
    harness.endpoint.servers[-1].transport.write(b"".join(frames))
    harness.flush()
