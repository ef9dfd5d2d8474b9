"""``wsplugin.client.ReconnectingClient`` over real loopback sockets,
through a server restart."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from tests.integration.client_support import ClientTestCase, Echo, bounded
from wsplugin import WebSocketServer
from wsplugin.client import ClientConnection, ReconnectingClient


class ReconnectTests(ClientTestCase):
    """ReconnectingClient over real sockets."""

    @inlineCallbacks
    def test_reconnect_after_server_restart(self) -> None:
        """The client reconnects once the server is back on its port, and
        on_connect runs for both connections."""
        first_server = yield self.start_server(Echo())
        port = first_server.ports[0].getHost().port
        connected: list[ClientConnection] = []
        closed: list[int | None] = []
        client = ReconnectingClient(
            self.url,
            on_connect=connected.append,
            on_disconnect=lambda conn: closed.append(conn.close_code),
            initial_delay=0.05,
            max_delay=0.2,
            jitter=lambda: 0.0,
        )
        client.start()
        self.addCleanup(client.stop)
        first = yield bounded(client.when_connected())
        yield first_server.stop()
        yield self.when(lambda: client.connection is None)
        self.assertEqual(closed, [1001])
        yield bounded(Deferred.fromCoroutine(self._sleep(0.5)))  # refused meanwhile
        second_server = WebSocketServer(
            Echo(), endpoints=[f"tcp:{port}:interface=127.0.0.1"]
        )
        yield second_server.start()
        self.addCleanup(second_server.stop)
        second = yield bounded(client.when_connected())
        self.assertIsNot(second, first)
        self.assertEqual(connected, [first, second])
        second.send_text("back")
        self.assertEqual((yield bounded(second.receive())), "back")
        yield bounded(client.stop())
        self.assertEqual(closed[-1], 1000)

    async def _sleep(self, seconds: float) -> None:
        d: Deferred[None] = Deferred()
        reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
        await d
