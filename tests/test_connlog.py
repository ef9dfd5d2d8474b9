"""The connection log (wsplugin._connlog): one event at open, one at close,
with the fields an operator needs and none that can carry a secret."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from wsplugin import WebSocketServer
from wsplugin._connlog import route_label
from wsplugin.apps.echo import Echo
from wsplugin.testing import ServerHarness


class Events:
    """Collects the connection events published while a test runs."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.all: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.all.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.all.append)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.all if e.get("event") == name]


def server(**options: Any) -> tuple[WebSocketServer, ServerHarness]:
    options.setdefault("connection_log", True)
    made = WebSocketServer(
        Echo(), reactor=MemoryReactorClock(), heartbeat_interval=0, **options
    )
    return made, ServerHarness(made)


class ConnectionLogTests(SynchronousTestCase):
    """Open and close events."""

    def test_open_and_close(self) -> None:
        """The open event names the connection, peer, route, path (no
        query) and subprotocol; the close event adds the duration, bytes
        both ways, the codes and whether it was clean."""
        events = Events(self)
        made, harness = server(subprotocols=("chat.v1",))
        made.register_handler("*", "/chat", Echo())
        client = harness.open(
            "/chat?token=SECRET",
            headers=[("Sec-WebSocket-Protocol", "chat.v1")],
        )
        conn = client.connection
        (opened,) = events.named("connection.open")
        self.assertEqual(opened["log_namespace"], "wsplugin.connections")
        self.assertEqual(opened["conn_id"], conn.id)
        self.assertEqual(opened["peer"], "127.0.0.1")
        self.assertEqual(opened["peer_port"], conn.request.peer.port)
        self.assertIsNone(opened["proxy"])
        self.assertEqual(opened["route"], "/chat")
        self.assertEqual(opened["path"], "/chat")
        self.assertEqual(opened["subprotocol"], "chat.v1")
        client.send_text("x" * 100)
        harness.advance(2.5)
        client.send_close(4000, "done")
        (closed,) = events.named("connection.close")
        self.assertEqual(closed["conn_id"], conn.id)
        self.assertEqual(closed["code"], 4000)
        self.assertEqual(closed["reason"], "done")
        self.assertEqual(closed["code_received"], 4000)
        self.assertEqual(closed["code_sent"], 1000)
        self.assertTrue(closed["clean"])
        self.assertEqual(closed["duration"], 2.5)
        self.assertGreater(closed["bytes_in"], 100)  # head + message + close
        self.assertGreater(closed["bytes_out"], 100)  # 101 answer + echo
        text = " ".join(formatEvent(e) for e in events.all)
        self.assertNotIn("SECRET", text)
        self.assertIn(f"connection {conn.id} closed", text)

    def test_bytes_in_counts_every_frame(self) -> None:
        """Bytes read once the connection is open (the frame codec's path)
        are counted: a client that sends a 100-byte message (6-byte header)
        before the same close shows exactly 106 bytes more."""
        events = Events(self)
        _, harness = server()
        for size in (0, 100):
            client = harness.open("/")
            if size:
                client.send_text("x" * size)
            client.send_close(4000, "done")
        quiet, talking = (e["bytes_in"] for e in events.named("connection.close"))
        self.assertEqual(talking - quiet, 106)

    def test_dropped(self) -> None:
        """A connection gone without a closing handshake: code 1006, not
        clean, no close frames."""
        events = Events(self)
        _, harness = server()
        harness.open("/").drop()
        (closed,) = events.named("connection.close")
        self.assertEqual(closed["code"], 1006)
        self.assertFalse(closed["clean"])
        self.assertIsNone(closed["code_sent"])
        self.assertIsNone(closed["code_received"])

    def test_refused_logs_no_connection(self) -> None:
        """A refused handshake opened nothing: no connection events."""
        events = Events(self)
        _, harness = server()
        harness.connect().handshake("/", upgrade=False)
        self.assertEqual(events.named("connection.open"), [])
        self.assertEqual(events.named("connection.close"), [])

    def test_behind_a_proxy(self) -> None:
        """Behind a trusted proxy the peer is the client X-Forwarded-For
        names, and ``proxy`` the proxy's address."""
        events = Events(self)
        _, harness = server(trusted_proxies=1)
        harness.open("/", headers=[("X-Forwarded-For", "203.0.113.9")])
        (opened,) = events.named("connection.open")
        self.assertEqual(opened["peer"], "203.0.113.9")
        self.assertEqual(opened["proxy"], "127.0.0.1")

    def test_off(self) -> None:
        """``connection_log=False`` (the default): no connection events."""
        events = Events(self)
        _, harness = server(connection_log=False)
        harness.open("/").send_close(1000)
        self.assertFalse(WebSocketServer(Echo()).config.connection_log)
        self.assertEqual(events.named("connection.open"), [])
        self.assertEqual(events.named("connection.close"), [])

    def test_per_route(self) -> None:
        """A route may turn the log on (or off) for itself."""
        events = Events(self)
        made, harness = server(connection_log=False)
        made.register_handler("*", "/logged", Echo(), connection_log=True)
        harness.open("/quiet").send_close(1000)
        harness.open("/logged").send_close(1000)
        self.assertEqual(
            [e["route"] for e in events.named("connection.open")], ["/logged"]
        )
        self.assertEqual(len(events.named("connection.close")), 1)

    def test_twistd_flag(self) -> None:
        """--connection-log reaches the server; by default there is none."""
        from wsplugin.tap import Options, makeService

        for argv, expected in ([], False), (["--connection-log"], True):
            options = Options()
            options.parseOptions(["--app", "echo", *argv])
            made = makeService(options)
            self.assertIs(made.config.connection_log, expected)

    def test_route_label(self) -> None:
        """A route is its path, after its host when it has one."""
        made, _ = server()
        self.assertEqual(route_label(made.register_handler("*", "/a", Echo())), "/a")
        route = made.register_handler("example.com", "/b", Echo())
        self.assertEqual(route_label(route), "example.com/b")
        self.assertEqual(route_label(None), "")
