"""The watchdog after an unexpected stop, ``listener_lost``, the warning for
authentication without TLS, and ``WebSocketServer.run``, on a fake reactor
(the real-socket test is tests/integration/test_watchdog.py)."""

from __future__ import annotations

import io
import socket
import sys
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from wsplugin import WebSocketServer
from wsplugin.server import listener_lost


@implementer(IListeningPort)
class Port:
    """A listening port that can be 'lost' (as Twisted's tcp.Port after an
    accept error: ``connected`` False)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.connected = True
        self.stopped = 0

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Any:
        self.stopped += 1
        self.connected = False
        return succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", self.number)


class Reactor(MemoryReactorClock):
    """listenTCP gives Ports, or fails while ``refuse`` > 0."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse = 0
        self.listened: list[Port] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface=""):
        if self.refuse:
            self.refuse -= 1
            raise CannotListenError(interface, port, OSError(98, "in use"))
        made = Port(port)
        self.listened.append(made)
        return made


class Events:
    """A handler recording the server events."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_startup(self, server: Any) -> None:
        self.events.append("on_startup")

    def on_shutdown(self, server: Any) -> None:
        self.events.append("on_shutdown")


def text(events: list[dict[str, Any]]) -> str:
    return "\n".join(formatEvent(e) for e in events)


class WatchdogTests(SynchronousTestCase):
    """A listener lost while the server runs is listened again."""

    def make(self, *endpoints: str, **options: Any) -> tuple[WebSocketServer, Events]:
        self.reactor = Reactor()
        handler = Events()
        server = WebSocketServer(
            handler,
            endpoints=list(endpoints or ["tcp:9001"]),
            reactor=self.reactor,
            heartbeat_interval=0,
            **options,
        )
        self.successResultOf(server.start())
        return server, handler

    def test_lost_and_listened_again(self) -> None:
        """The check runs every interval; a lost port fires on_shutdown, is
        listened again at once, and on_startup fires when it listens."""
        server, handler = self.make(watchdog_interval=5)
        (first,) = server.ports
        self.reactor.advance(5)
        self.assertEqual(handler.events, ["on_startup"])
        first.connected = False
        self.reactor.refuse = 1  # the first attempt, right away, fails
        with capturedLogs() as events:
            self.reactor.advance(5)
            self.assertEqual(handler.events, ["on_startup", "on_shutdown"])
            self.assertEqual(server.ports, [])
            self.reactor.advance(5)
        self.assertEqual(handler.events, ["on_startup", "on_shutdown", "on_startup"])
        (second,) = server.ports
        self.assertIsNot(second, first)
        self.assertEqual(server.active, True)
        log = text(events)
        self.assertIn("watchdog: the listener on tcp:9001 is lost", log)
        self.assertIn("open connections are kept", log)
        self.assertIn("listening again after 2 attempt(s)", log)

    def test_retries_every_interval(self) -> None:
        """While the endpoint cannot be bound, the watchdog tries again every
        interval; the attempts are counted."""
        server, handler = self.make(watchdog_interval=2)
        server.ports[0].connected = False
        self.reactor.refuse = 3
        self.reactor.advance(2)  # noticed
        self.reactor.advance(0)  # attempt 1 fails
        self.assertEqual(self.reactor.refuse, 2)
        self.reactor.advance(1.9)
        self.assertEqual(self.reactor.refuse, 2)
        self.reactor.advance(0.1)  # attempt 2
        self.reactor.advance(2)  # attempt 3
        self.assertEqual(server.ports, [])
        self.reactor.advance(2)  # attempt 4 succeeds
        self.assertEqual(len(server.ports), 1)
        self.assertEqual(handler.events, ["on_startup", "on_shutdown", "on_startup"])

    def test_gives_up(self) -> None:
        """After watchdog_attempts failed attempts it stops trying and says
        so; the server stays active, without that listener."""
        server, handler = self.make(watchdog_interval=1, watchdog_attempts=2)
        server.ports[0].connected = False
        self.reactor.refuse = 10
        with capturedLogs() as events:
            self.reactor.advance(1)
            self.reactor.advance(0)
            self.reactor.advance(1)
            self.reactor.advance(5)
        self.assertEqual(self.reactor.refuse, 8)
        self.assertIn(
            "watchdog: giving up on tcp:9001 after 2 attempt(s)", text(events)
        )
        self.assertEqual(handler.events, ["on_startup", "on_shutdown"])
        self.assertTrue(server.active)
        self.successResultOf(server.stop())

    def test_only_the_lost_endpoint(self) -> None:
        """With two endpoints, only the lost one is listened again; the
        other keeps its port, and the order of server.ports is kept."""
        server, handler = self.make("tcp:9001", "tcp:9002", watchdog_interval=1)
        first, second = server.ports
        second.connected = False
        self.reactor.refuse = 1
        self.reactor.advance(1)
        self.assertEqual(server.ports, [first])
        self.reactor.advance(1)
        self.assertEqual(server.ports[0], first)
        self.assertEqual(server.ports[1].getHost().port, 9002)
        self.assertEqual(handler.events, ["on_startup", "on_shutdown", "on_startup"])

    def test_port_still_open_is_closed(self) -> None:
        """A port whose socket stopped accepting but that Twisted still holds
        is closed before the endpoint is bound again."""
        server, _ = self.make(watchdog_interval=1)
        (port,) = server.ports
        dead = socket.socket()  # never listened: SO_ACCEPTCONN is 0
        self.addCleanup(dead.close)
        port.socket = dead  # type: ignore[attr-defined]
        self.reactor.advance(1)
        self.assertEqual(port.stopped, 1)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.listened), 2)

    def test_stop_while_closing_the_lost_port(self) -> None:
        """A stop while the lost port is still closing: no new listen
        happens afterwards, and no on_startup."""
        server, handler = self.make(watchdog_interval=1)
        (port,) = server.ports
        dead = socket.socket()
        self.addCleanup(dead.close)
        port.socket = dead  # type: ignore[attr-defined]
        closing: Deferred[None] = Deferred()
        port.stopListening = lambda: closing  # type: ignore[method-assign]
        self.reactor.advance(1)
        self.assertEqual(handler.events, ["on_startup", "on_shutdown"])
        self.successResultOf(server.stop())
        closing.callback(None)
        self.reactor.advance(10)
        self.assertEqual(len(self.reactor.listened), 1)
        self.assertEqual(handler.events, ["on_startup", "on_shutdown"])

    def test_off_by_default(self) -> None:
        """Without watchdog_interval nothing is checked or re-listened."""
        server, handler = self.make()
        server.ports[0].connected = False
        self.reactor.advance(3600)
        self.assertEqual(len(self.reactor.listened), 1)
        self.assertEqual(handler.events, ["on_startup"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_cancels(self) -> None:
        """stop() ends the checks and any pending attempt; on_shutdown has
        already fired for the lost listener and does not fire twice."""
        server, handler = self.make(watchdog_interval=1)
        server.ports[0].connected = False
        self.reactor.refuse = 5
        self.reactor.advance(1)
        self.reactor.advance(0)
        self.successResultOf(server.stop())
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(10)
        self.assertEqual(self.reactor.refuse, 4)
        self.assertEqual(handler.events, ["on_startup", "on_shutdown"])

    def test_restart_watches_again(self) -> None:
        """After a restart the new ports are watched."""
        server, handler = self.make(watchdog_interval=1)
        self.successResultOf(server.restart())
        server.ports[0].connected = False
        self.reactor.advance(1)
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.listened), 3)


class ListenerLostTests(SynchronousTestCase):
    """listener_lost judges a port by Twisted's flag and its socket."""

    def test_reasons(self) -> None:
        """A listening socket is fine; a closed port, a socket that does not
        accept and a closed socket are lost, each with its reason."""
        port = Port(1)
        self.assertIsNone(listener_lost(port))
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port.socket = listening  # type: ignore[attr-defined]
        self.assertIsNone(listener_lost(port))
        listening.shutdown(socket.SHUT_RDWR)
        self.assertEqual(
            listener_lost(port), "its socket no longer accepts connections"
        )
        listening.close()
        self.assertIn("its socket is unusable", listener_lost(port) or "")
        port.connected = False
        self.assertEqual(listener_lost(port), "the port was closed after an error")


class PlaintextAuthTests(SynchronousTestCase):
    """An authenticator on an endpoint without TLS is warned about."""

    class Auth:
        def authenticate(self, conn: Any) -> str:
            return "x"

    def start(self, **kw: Any) -> str:
        server = WebSocketServer(None, reactor=Reactor(), heartbeat_interval=0, **kw)
        server.register_handler("*", "/admin", object(), auth=self.Auth())
        with capturedLogs() as events:
            self.successResultOf(server.start())
        return text(events)

    def test_warned(self) -> None:
        """Plain tcp: with an authenticator: one warning naming both."""
        log = self.start(endpoints=["tcp:9001"])
        self.assertIn("authentication on /admin is served without TLS on tcp:9001", log)

    def test_not_warned_with_tls(self) -> None:
        """With tls= there is nothing to warn about."""
        import trustme

        ca = trustme.CA()
        path = self.mktemp()
        ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(path)
        from wsplugin import TLSOptions

        log = self.start(endpoints=["tcp:9001"], tls=TLSOptions(certificate=path))
        self.assertNotIn("without TLS", log)
        self.assertIn("listening on tcp:9001 (TLS)", log)


class RunTests(SynchronousTestCase):
    """server.run() starts, runs the reactor and returns an exit status."""

    def test_failed_start(self) -> None:
        """A start that cannot listen prints the error, stops the reactor and
        returns 1 (the example script then exits non-zero)."""
        reactor = Reactor()
        reactor.refuse = 1
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        server = WebSocketServer(None, endpoints=["tcp:9001"], reactor=reactor)
        with capturedLogs():
            self.assertEqual(server.run(), 1)
        self.assertIn(
            "cannot start: Couldn't listen on any:9001: [Errno 98] in use.",
            err.getvalue(),
        )
        self.assertTrue(reactor.hasStopped)
        self.assertFalse(server.active)

    def test_clean_run(self) -> None:
        """A server that listens returns 0 when the reactor stops, and stops
        gracefully on the reactor's shutdown."""
        reactor = Reactor()
        server = WebSocketServer(
            None, endpoints=["tcp:9001"], reactor=reactor, heartbeat_interval=0
        )
        with capturedLogs():
            self.assertEqual(server.run(), 0)
        self.assertEqual(len(reactor.listened), 1)
        self.assertIn(
            server.stop, [t[0] for t in reactor.triggers["before"]["shutdown"]]
        )
