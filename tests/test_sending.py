"""wsplugin._sending: the send path of the server protocol, on memory
transports: batching per turn, the send queue, frame-by-frame messages,
and the fan-out's offers."""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import ConnectionClosed, FragmentedSendError
from wsplugin.testing import FakeTransport, parse_frames


class FakeSocket:
    """A socket that takes ``room`` bytes per send (all by default)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.room: int | None = None

    def send(self, data: bytes) -> int:
        taken = data if self.room is None else data[: self.room]
        self.sent.append(bytes(taken))
        return len(taken)

    def sendmsg(self, buffers: Any) -> int:
        """writev: the buffers as given (the test checks none was joined)."""
        self.vectors = list(buffers)
        return self.send(b"".join(self.vectors))


class TCPTransport(FakeTransport, tcp.Connection):
    """A memory transport the protocol takes for plain TCP (it batches)."""

    TLS = False

    def __init__(self, clock: Any, peer: IPv4Address) -> None:
        FakeTransport.__init__(self, clock, peer)
        self.connected = True
        self.dataBuffer = b""
        self._tempDataLen = 0
        self.socket = FakeSocket()


def tcp_client(**options: Any) -> tuple[Any, Any, TCPTransport]:
    server, harness = make(Recorder(), heartbeat_interval=0, **options)
    peer = IPv4Address("TCP", "127.0.0.1", 50000)
    protocol = server.factory.buildProtocol(peer)
    transport = TCPTransport(server.reactor, peer)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    from wsplugin.testing import handshake_request

    protocol.dataReceived(handshake_request("/"))
    server.reactor.advance(0)
    return server, protocol, transport


class BatchingTests(SynchronousTestCase):
    """On plain TCP, one turn's writes leave in one send()."""

    def test_one_send_per_turn(self) -> None:
        """Three messages in one turn: nothing sent until the turn ends,
        then one send() with all three frames, in order."""
        server, protocol, transport = tcp_client()
        sock = transport.socket
        sock.sent.clear()
        conn = protocol.connection
        for text in ("a", "b", "c"):
            conn.send_text(text)
        self.assertEqual(sock.sent, [])
        self.assertEqual(protocol.pending_writes, 9)
        server.reactor.advance(0)
        self.assertEqual(len(sock.sent), 1)
        frames, _ = parse_frames(sock.sent[0])
        self.assertEqual([f.payload for f in frames], [b"a", b"b", b"c"])
        self.assertEqual(protocol.pending_writes, 0)

    def test_rest_through_transport(self) -> None:
        """What the socket does not take goes to the transport, in order."""
        server, protocol, transport = tcp_client()
        transport.socket.room = 2
        transport.clear()
        protocol.connection.send_text("hello")
        server.reactor.advance(0)
        self.assertEqual(transport.socket.sent[-1], b"\x81\x05")
        self.assertEqual(transport.value(), b"hello")


class QueueTests(SynchronousTestCase):
    """While the transport is full, the connection's send queue holds data."""

    def setUp(self) -> None:
        self.server, harness = make(Recorder(), heartbeat_interval=0)
        self.client = harness.open()
        self.protocol = self.client.protocol
        self.conn = self.client.connection

    def test_outbox_made_on_first_need(self) -> None:
        """No queue until the transport first says it is full."""
        self.assertIsNone(self.protocol.outbox)
        self.protocol.pauseProducing()
        self.assertIsNotNone(self.protocol.outbox)

    def test_drain_and_buffered_amount(self) -> None:
        """Queued bytes count in buffered_amount; drain fires when out."""
        self.successResultOf(self.conn.drain())
        self.protocol.pauseProducing()
        self.conn.send_text("x" * 10)
        self.assertEqual(self.conn.buffered_amount, 12)
        d = self.conn.drain()
        self.assertNoResult(d)
        self.protocol.resumeProducing()
        self.successResultOf(d)
        self.assertEqual(self.conn.buffered_amount, 0)

    def test_drain_fails_when_the_connection_ends(self) -> None:
        """A connection that ends with data queued fails its drain."""
        self.protocol.pauseProducing()
        self.conn.send_text("x")
        d = self.conn.drain()
        self.client.drop()
        self.failureResultOf(d, ConnectionClosed)


class FrameByFrameTests(SynchronousTestCase):
    """A message sent frame by frame holds broadcasts back until it ends."""

    def test_broadcast_after_fin(self) -> None:
        """A broadcast during a send_frame message goes out after its last
        frame; a whole message meanwhile is an error."""
        server, harness = make(Recorder(), heartbeat_interval=0)
        client = harness.open()
        conn = client.connection
        conn.send_frame("a", fin=False)
        self.assertEqual(server.broadcast("b"), 1)
        with self.assertRaises(FragmentedSendError):
            conn.send_text("no")
        conn.send_frame("c", fin=True)
        self.assertEqual(
            [(f.opcode, f.payload) for f in client.frames()],
            [(1, b"a"), (0, b"c"), (1, b"b")],
        )


class OfferTests(SynchronousTestCase):
    """What the fan-out is told."""

    def test_not_open_refuses(self) -> None:
        """A closing connection takes no broadcast (and is not counted)."""
        server, harness = make(Recorder(), heartbeat_interval=0)
        client = harness.open()
        client.connection.close()
        self.assertFalse(client.protocol.offer_prepared(b"\x81\x00"))
        self.assertFalse(client.protocol.offer_message(b"", False))
        self.assertEqual(server.broadcast("x"), 0)

    def test_held_bytes(self) -> None:
        """held_bytes: the queue plus what the transport holds."""
        _, harness = make(Recorder(), heartbeat_interval=0)
        client = harness.open()
        client.protocol.pauseProducing()
        client.connection.send_text("abc")
        self.assertEqual(client.protocol.held_bytes(), 5)


class FrameSizeTests(SynchronousTestCase):
    """send_text / send_binary with frame_size= (FPC WriteMessage's
    MaxFrameLength): this message in frames of at most that many bytes,
    header included."""

    def sent(self, **options: Any) -> tuple[Any, Any]:
        rec = Recorder()
        _, harness = make(rec, **options)
        return harness, harness.open()

    def test_split(self) -> None:
        """frame_size=10 (8 payload bytes per frame): 20 bytes in 3 frames."""
        _, client = self.sent()
        client.connection.send_text("a" * 20, frame_size=10)
        frames = client.frames()
        self.assertEqual([len(f.payload) for f in frames], [8, 8, 4])
        self.assertEqual([f.opcode for f in frames], [1, 0, 0])
        self.assertEqual([f.fin for f in frames], [False, False, True])
        self.assertTrue(all(2 + len(f.payload) <= 10 for f in frames))

    def test_binary_and_send(self) -> None:
        """send_binary and send take it too."""
        _, client = self.sent()
        client.connection.send_binary(b"b" * 5, frame_size=4)
        client.connection.send(b"c" * 3, frame_size=3)
        frames = client.frames()
        self.assertEqual(
            [(f.opcode, f.payload) for f in frames],
            [(2, b"bb"), (0, b"bb"), (0, b"b"), (2, b"c"), (0, b"c"), (0, b"c")],
        )

    def test_overrides_split_message(self) -> None:
        """Per message it overrides the route's split_message; 0 sends one
        frame; None keeps the route's setting."""
        _, client = self.sent(split_message=True, frame_size=4)
        conn = client.connection
        conn.send_text("abcd", frame_size=0)
        self.assertEqual([f.payload for f in client.frames()], [b"abcd"])
        conn.send_text("abcd")
        self.assertEqual(len(client.frames()), 2)
        conn.send_text("abcd", frame_size=100)
        self.assertEqual([f.payload for f in client.frames()], [b"abcd"])

    def test_with_deflate(self) -> None:
        """With permessage-deflate the compressed message is split; the
        client inflates the frames back to the message."""
        import zlib

        harness, client = None, None
        rec = Recorder()
        _, harness = make(rec, compression=True)
        client = harness.open(
            headers=[("Sec-WebSocket-Extensions", "permessage-deflate")]
        )
        text = "".join(chr(65 + i % 26) for i in range(600))
        client.connection.send_text(text, frame_size=20)
        frames = client.frames()
        self.assertGreater(len(frames), 1)
        self.assertTrue(all(len(f.payload) <= 18 for f in frames))
        data = b"".join(f.payload for f in frames) + b"\x00\x00\xff\xff"
        self.assertEqual(zlib.decompressobj(-15).decompress(data).decode(), text)

    def test_invalid(self) -> None:
        """1, 2 and negative sizes are refused before anything is sent."""
        _, client = self.sent()
        for bad in (1, 2, -5):
            with self.assertRaises(ValueError):
                client.connection.send_text("x", frame_size=bad)
        with self.assertRaises(TypeError):
            client.connection.send_text("x", frame_size="10")  # type: ignore[arg-type]
        self.assertEqual(client.frames(), [])


class LargeFrameTests(SynchronousTestCase):
    """A large single-frame message leaves without joining its header and
    payload."""

    def test_writev(self) -> None:
        """On plain TCP: one sendmsg() of the header and the very payload
        object, after the turn's earlier writes."""
        server, protocol, transport = tcp_client()
        sock = transport.socket
        sock.sent.clear()
        payload = b"z" * 70000
        protocol.connection.send_text("first")
        protocol.connection.send_binary(payload)
        self.assertEqual(len(sock.sent), 2)
        self.assertIs(sock.vectors[1], payload)
        frames, rest = parse_frames(b"".join(sock.sent))
        self.assertEqual([f.payload for f in frames], [b"first", payload])
        self.assertEqual(rest, b"")

    def test_partial_send(self) -> None:
        """What the socket does not take goes to the transport, in order."""
        for room in (1, 3000):
            server, protocol, transport = tcp_client()
            sock = transport.socket
            sock.sent.clear()
            transport.clear()
            sock.room = room
            payload = bytes(range(256)) * 100
            protocol.connection.send_binary(payload)
            frames, rest = parse_frames(b"".join(sock.sent) + transport.value())
            self.assertEqual([f.payload for f in frames], [payload])
            self.assertEqual(rest, b"")

    def test_queued_while_full(self) -> None:
        """While the transport is full, a large frame waits in the queue
        like any other."""
        server, protocol, transport = tcp_client()
        protocol.pauseProducing()
        transport.clear()
        protocol.connection.send_binary(b"q" * 20000)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(protocol.buffered_amount(), 20004)
        protocol.resumeProducing()
        frames, _ = parse_frames(transport.value())
        self.assertEqual([len(f.payload) for f in frames], [20000])
