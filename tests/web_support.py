"""Shared helpers of the same-port site's tests: an in-memory TCP peer and
a site with a form resource."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource

from tests.helpers import Recorder
from wsplugin import WebSocketServer
from wsplugin.testing import FakeTransport


class Echo(Recorder):
    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        conn.send_text(text)


class Body(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request: Any) -> bytes:
        self.bodies.append(request.content.read())
        return b"ok"


class Peer:
    """One in-memory TCP connection to a server's listening factory."""

    def __init__(self, server: WebSocketServer, host: str = "203.0.113.5") -> None:
        self.clock = server.reactor
        addr = IPv4Address("TCP", host, 40000)
        self.transport = FakeTransport(self.clock, addr)
        protocol = server.listening_factory.buildProtocol(addr)
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        if not self.transport.lost:
            self.transport.protocol.dataReceived(data)

    def status(self) -> int:
        data = self.transport.value()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0

    def close(self) -> None:
        self.transport.loseConnection()
        self.clock.advance(0)


def site(handler: Any = None, **options: Any) -> tuple[WebSocketServer, Body]:
    body = Body()
    root = Resource()
    root.putChild(b"form", body)
    server = WebSocketServer(
        handler, reactor=MemoryReactorClock(), http=root, **options
    )
    return server, body
