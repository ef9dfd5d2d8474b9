"""Write batching over real TCP: the writes of one reactor turn leave in one
send(), in order, and never bypass flow control or the closing handshake."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import Recorder
from tests.integration.support import ServerTestCase, in_thread
from wsplugin._batching import TurnBatcher


class Burst(Recorder):
    """On "go": 200 numbered texts, then (on "go-close") a close, all in the
    same turn; on "big": 100 binary messages of 1 KiB, 2 KiB, ... 100 KiB."""

    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        if text.startswith("go"):
            for i in range(200):
                conn.send_text(str(i))
            if text == "go-close":
                conn.close(4000, "done")
        elif text == "big":
            for i in range(1, 101):
                conn.send_binary(bytes([i % 256]) * (1024 * i))


def collect(
    url: str, trigger: str, count: int, until_close: bool = False
) -> tuple[list[Any], int | None]:
    """Send ``trigger``, read ``count`` messages (then the close, if asked)."""
    got: list[Any] = []
    with connect(url, open_timeout=5, max_size=None) as ws:
        ws.send(trigger)
        try:
            while len(got) < count:
                got.append(ws.recv(timeout=10))
            if until_close:
                got.append(ws.recv(timeout=10))
        except ConnectionClosed as e:
            return got, e.rcvd.code if e.rcvd else None
    return got, None


class BatchingTests(ServerTestCase):
    @inlineCallbacks
    def test_one_turn_one_batch_in_order(self) -> None:
        """200 messages sent in one turn wait in the connection's batch (not
        in Twisted's buffer), then all arrive, in order."""
        handler = Burst()
        server = yield self.start_server(handler)
        seen: list[tuple[int, int]] = []

        class Spy(TurnBatcher):
            def add(self, sink: Any) -> None:
                super().add(sink)
                # Twisted private: writes not yet joined into its dataBuffer
                seen.append((sink.pending_writes, sink.transport._tempDataLen))

        server.factory.batcher = Spy(server.factory.clock, Logger())
        got, _ = yield in_thread(collect, self.url, "go", 200)
        self.assertEqual(got, [str(i) for i in range(200)])
        # the 101 response started one batch, the burst another: each begun
        # with the transport's own buffer empty
        self.assertEqual([t for _, t in seen], [0] * len(seen))
        self.assertGreaterEqual(len(seen), 2)

    @inlineCallbacks
    def test_close_after_burst(self) -> None:
        """A close in the same turn as the burst goes out after all of it."""
        server = yield self.start_server(Burst())
        got, code = yield in_thread(collect, self.url, "go-close", 200, True)
        self.assertEqual(got, [str(i) for i in range(200)])
        self.assertEqual(code, 4000)
        self.assertEqual(len(server.connections), 0)

    @inlineCallbacks
    def test_large_writes_leave_the_batch(self) -> None:
        """5 MiB in one turn: past 64 KiB the batch goes to the transport, whose
        flow control (our send queue) takes over; every byte arrives in order."""
        server = yield self.start_server(Burst(), max_send_buffer=16 * 1024 * 1024)
        queued: list[int] = []

        class Spy(TurnBatcher):
            def add(self, sink: Any) -> None:
                super().add(sink)
                queued.append(sink.pending_writes)

        server.factory.batcher = Spy(server.factory.clock, Logger())
        got, _ = yield in_thread(collect, self.url, "big", 100)
        self.assertEqual(
            [(len(m), m[:1]) for m in got],
            [(1024 * i, bytes([i % 256])) for i in range(1, 101)],
        )
        self.assertTrue(all(size <= 65536 for size in queued), queued)
