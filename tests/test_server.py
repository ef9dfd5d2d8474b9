"""WebSocketServer.stop() in memory: it fires once every connection has ended."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make


class ShutdownRecorder(Recorder):
    """Records on_shutdown with the connections still registered then."""

    def __init__(self) -> None:
        super().__init__()
        self.left_at_shutdown: list[int] = []

    def on_shutdown(self, server: Any) -> None:
        self.left_at_shutdown.append(len(server.connections))


class StopTests(SynchronousTestCase):
    """stop() closes every connection with 1001, aborts those still there
    after shutdown_timeout, and fires (with on_shutdown) only when all of
    them have ended and left server.connections."""

    def _server(self) -> tuple[Any, Any, ShutdownRecorder]:
        handler = ShutdownRecorder()
        server, harness = make(handler, shutdown_timeout=3)
        self.successResultOf(server.start())
        return server, harness, handler

    def test_unanswered_close_aborted_before_stop_fires(self) -> None:
        """A client that never answers the 1001 is aborted at the timeout;
        stop() fires only after its connection has ended."""
        server, harness, handler = self._server()
        polite = harness.open()
        silent = harness.open()
        stopping = server.stop()
        self.assertEqual(
            [f.close_code for f in silent.frames() if f.opcode == 8], [1001]
        )
        polite.send_close(1001)
        harness.flush()
        self.assertEqual(len(server.connections), 1)
        left_when_stopped: list[int] = []
        stopping.addCallback(
            lambda _: left_when_stopped.append(len(server.connections))
        )
        harness.advance(3)  # the timeout: silent is aborted
        self.assertTrue(silent.transport.aborted)
        self.successResultOf(stopping)
        self.assertEqual(left_when_stopped, [0])
        self.assertEqual(handler.left_at_shutdown, [0])
        self.assertEqual(handler.names().count("on_disconnect"), 2)

    def test_closing_connection_aborted(self) -> None:
        """A connection whose graceful TCP close is stuck (the client does not
        read) is aborted at the timeout too, not left to the linger timer."""
        server, harness, handler = self._server()
        stuck = harness.open()
        stuck.transport.loseConnection = lambda: None  # never completes
        stopping = server.stop()
        stuck.send_close(1001)  # handshake done; the TCP close hangs
        self.assertEqual(len(server.connections), 1)
        left_when_stopped: list[int] = []
        stopping.addCallback(
            lambda _: left_when_stopped.append(len(server.connections))
        )
        harness.advance(3)
        self.assertTrue(stuck.transport.aborted)
        self.successResultOf(stopping)
        self.assertEqual(left_when_stopped, [0])
        self.assertEqual(handler.left_at_shutdown, [0])

    def test_abort_of_closing_connection(self) -> None:
        """conn.abort() cuts a graceful close short: the connection ends at
        the transport's next turn."""
        _, harness, handler = self._server()
        client = harness.open()
        client.transport.loseConnection = lambda: None
        conn = client.connection
        conn.close(1000)
        client.send_close(1000)
        self.assertEqual(conn.state.value, "closing")
        conn.abort()
        harness.flush()
        self.assertEqual(conn.state.value, "closed")
        self.assertEqual(handler.names().count("on_disconnect"), 1)
