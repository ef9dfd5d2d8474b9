"""wsplugin._transport: what a transport holds unwritten; closing one
without reading from it again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trustme
from OpenSSL import SSL
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides, implementer

from tests.test_tls import Files
from wsplugin import TLSOptions
from wsplugin._transport import close_without_reading, transport_buffered, writes_now
from wsplugin.tls import ServerTLS


def transport(**kw: object) -> SimpleNamespace:
    base = {
        "connected": True,
        "disconnecting": False,
        "dataBuffer": b"",
        "_tempDataLen": 0,
    }
    base.update(kw)
    return SimpleNamespace(**base)


class WritesNowTests(SynchronousTestCase):
    """A write may go straight to the socket only on an idle open transport."""

    def test_idle_open(self) -> None:
        """Connected, not closing, nothing held: yes."""
        self.assertTrue(writes_now(transport()))

    def test_every_reason_not_to(self) -> None:
        """Not connected, closing, or holding bytes (either buffer): no."""
        for kw in (
            {"connected": False},
            {"disconnecting": True},
            {"dataBuffer": b"x"},
            {"_tempDataLen": 1},
        ):
            self.assertFalse(writes_now(transport(**kw)), kw)


class BufferedTests(SynchronousTestCase):
    """transport_buffered adds up the layers (TLS over TCP)."""

    def test_layers(self) -> None:
        """Both buffers of every layer count; a layer without them is 0."""
        tcp = transport(dataBuffer=b"abc", _tempDataLen=2)
        tls = SimpleNamespace(transport=tcp)
        self.assertEqual(transport_buffered(tls), 5)
        self.assertEqual(transport_buffered(None), 0)


@implementer(IPushProducer)
class Producer:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class InMemoryTLS:
    """A server TLS layer (Twisted's, as ``tls=`` uses it) over a
    StringTransport, and a pyOpenSSL client, handshaken in memory."""

    def __init__(self, test: SynchronousTestCase) -> None:
        ca = trustme.CA()
        files = Files(test, ca, "localhost")
        creator = ServerTLS(TLSOptions(certificate=files.cert, key=files.key))
        factory = TLSMemoryBIOFactory(
            creator, False, Factory.forProtocol(Protocol), clock=Clock()
        )
        self.raw = StringTransport()
        self.tls: Any = factory.buildProtocol(None)
        self.tls.makeConnection(self.raw)
        context = SSL.Context(SSL.TLS_METHOD)
        self.client = SSL.Connection(context, None)
        self.client.set_connect_state()
        for _ in range(10):
            try:
                self.client.do_handshake()
                break
            except SSL.WantReadError:
                self.pump()
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways once."""
        try:
            self.tls.dataReceived(self.client.bio_read(65536))
        except SSL.WantReadError:
            pass
        data = self.raw.value()
        self.raw.clear()
        if data:
            self.client.bio_write(data)

    def client_reads(self) -> tuple[bytes, bool]:
        """What the client decrypts, and whether close_notify came."""
        self.pump()
        got = b""
        while True:
            try:
                got += self.client.recv(65536)
            except SSL.WantReadError:
                return got, False
            except SSL.ZeroReturnError:
                return got, True


class CloseWithoutReadingTests(SynchronousTestCase):
    """After a refusal, a transport closes once its answer is out and is
    read no more: plain TCP as Twisted does it, TLS as plain TCP."""

    def test_plain(self) -> None:
        """A plain transport is simply closed (Twisted's TCP transport stops
        reading when it closes)."""
        transport = StringTransport()
        close_without_reading(transport)
        self.assertTrue(transport.disconnecting)

    def test_tls(self) -> None:
        """Over TLS, the answer and close_notify are sent and the TCP
        connection under TLS is closed, without waiting for the peer's
        close_notify (which Twisted's TLS waits for, reading meanwhile)."""
        pair = InMemoryTLS(self)
        self.assertTrue(ISSLTransport.providedBy(pair.tls))
        pair.tls.write(b"HTTP/1.1 413 Content Too Large\r\n\r\n")
        close_without_reading(pair.tls)
        self.assertTrue(pair.raw.disconnecting)
        got, closed = pair.client_reads()
        self.assertEqual(got, b"HTTP/1.1 413 Content Too Large\r\n\r\n")
        self.assertTrue(closed)

    def test_tls_with_a_producer(self) -> None:
        """A producer still registered with the TLS layer (the WebSocket
        protocol registers itself) would hold close_notify back: it is
        unregistered first."""
        pair = InMemoryTLS(self)
        pair.tls.registerProducer(Producer(), True)
        pair.tls.write(b"431")
        close_without_reading(pair.tls)
        self.assertTrue(pair.raw.disconnecting)
        self.assertIsNone(pair.raw.producer)
        self.assertEqual(pair.client_reads(), (b"431", True))

    def test_tls_started_by_the_transport(self) -> None:
        """An ssl: endpoint's TCP transport runs the TLS layer as its
        protocol: the connection under that layer is closed too."""
        pair = InMemoryTLS(self)
        outer = StringTransport()
        directlyProvides(outer, ISSLTransport)
        outer.protocol = pair.tls  # type: ignore[attr-defined]
        close_without_reading(outer)
        self.assertTrue(outer.disconnecting)
        self.assertTrue(pair.raw.disconnecting)
        other = StringTransport()
        directlyProvides(other, ISSLTransport)
        close_without_reading(other)  # some other TLS transport: paused
        self.assertEqual(other.producerState, "paused")
