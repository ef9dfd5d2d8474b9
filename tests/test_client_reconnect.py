"""Tests for ``wsplugin.client._reconnect``: ``ReconnectingClient`` on
ClientService, in memory with a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.client_support import URL, Echo, Harness
from wsplugin.client import (
    ClientConnection,
    ConnectFailed,
    HandshakeFailed,
    ReconnectingClient,
)
from wsplugin.errors import ConfigError, Reject


class ReconnectTests(SynchronousTestCase):
    """``ReconnectingClient`` on ClientService, with a fake clock."""

    def make(
        self, handler: Any = None, **kw: Any
    ) -> tuple[ReconnectingClient, Harness, list[Any]]:
        harness = Harness(handler if handler is not None else Echo())
        events: list[Any] = []
        kw.setdefault("on_connect", lambda conn: events.append(("connect", conn)))
        client = ReconnectingClient(
            URL,
            reactor=harness.clock,
            endpoint=harness.endpoint,
            on_disconnect=lambda conn: events.append(("disconnect", conn.close_code)),
            initial_delay=1.0,
            factor=2.0,
            jitter=lambda: 0.0,
            **kw,
        )
        return client, harness, events

    def stop(self, client: ReconnectingClient, harness: Harness) -> None:
        """Stop the client, completing its closing handshake."""
        stopping = client.stop()
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.successResultOf(stopping)

    def test_reconnects_after_drop(self) -> None:
        """After the connection drops, the client connects again after the
        backoff delay, and ``on_connect`` runs for each connection."""
        client, harness, events = self.make()
        client.start()
        harness.flush()
        first = self.successResultOf(client.when_connected())
        self.assertIs(client.connection, first)
        self.assertEqual(events, [("connect", first)])
        harness.server_conn().abort()
        harness.flush()
        self.assertEqual(events[-1], ("disconnect", 1006))
        self.assertIsNone(client.connection)
        pending = client.when_connected()
        self.assertNoResult(pending)
        harness.clock.advance(2.0)  # backoff: 1.0 * 2.0 ** 1
        harness.flush()
        second = self.successResultOf(pending)
        self.assertIsNot(second, first)
        self.assertEqual(client.connections_made, 2)
        self.assertTrue(second.is_open)
        second.send_text("again")
        harness.flush()
        self.assertEqual(self.successResultOf(second.receive()), "again")

    def test_receive_loop_gets_the_next_connection(self) -> None:
        """A loop that asks for the next connection as soon as receiving
        fails gets a new connection, not the one that just ended."""
        client, harness, events = self.make()
        client.start()
        harness.flush()
        first = self.successResultOf(client.when_connected())
        following: list[Deferred[ClientConnection]] = []
        first.receive().addErrback(lambda f: following.append(client.when_connected()))
        harness.server_conn().abort()
        harness.flush()
        self.assertNoResult(following[0])
        harness.clock.advance(2.0)
        harness.flush()
        self.assertIsNot(self.successResultOf(following[0]), first)
        self.stop(client, harness)

    def test_failed_attempts_back_off(self) -> None:
        """Refused connections are retried with growing delays
        (``initial_delay * factor ** n``) until one opens."""
        client, harness, events = self.make()
        harness.endpoint.refuse = True
        failed = client.when_connected(fail_after_failures=1)
        client.start()
        self.failureResultOf(failed, ConnectFailed)
        self.assertEqual(harness.endpoint.attempts, 1)
        harness.clock.advance(1.9)
        self.assertEqual(harness.endpoint.attempts, 1)
        harness.clock.advance(0.1)
        self.assertEqual(harness.endpoint.attempts, 2)
        harness.endpoint.refuse = False
        harness.clock.advance(8.0)
        harness.flush()
        self.assertEqual(harness.endpoint.attempts, 3)
        self.assertTrue(self.successResultOf(client.when_connected()).is_open)
        self.stop(client, harness)

    def test_rejected_handshake_is_a_failure(self) -> None:
        """A handshake the server refuses is reported and retried."""

        class Locked:
            def allow(self, conn: Any) -> Any:
                return Reject(403, "Forbidden")

        client, harness, events = self.make(Locked())
        client.start()
        d = client.when_connected(fail_after_failures=1)
        harness.flush()
        self.assertEqual(self.failureResultOf(d, HandshakeFailed).value.status, 403)
        self.assertEqual(events, [])
        harness.clock.advance(2.0)
        harness.flush()
        self.assertEqual(harness.endpoint.attempts, 2)
        self.successResultOf(client.stop())

    def test_stop_closes_gracefully(self) -> None:
        """``stop`` closes the open connection with 1000 and stops retrying."""
        recorder = Echo()
        client, harness, events = self.make(recorder)
        client.start()
        harness.flush()
        stopping = client.stop()
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.successResultOf(stopping)
        self.assertIn(("on_close", 1000, ""), recorder.events)
        self.assertEqual(events[-1], ("disconnect", 1000))
        harness.clock.advance(100)
        self.assertEqual(harness.endpoint.attempts, 1)
        self.failureResultOf(client.when_connected(), CancelledError)
        self.successResultOf(client.stop())

    def test_on_connect_failure_closes_1011(self) -> None:
        """An ``on_connect`` that raises is logged; the connection is closed
        with 1011 and made again later."""
        recorder = Echo()

        def broken(conn: Any) -> None:
            raise RuntimeError("boom")

        client, harness, events = self.make(recorder, on_connect=broken)
        client.start()
        harness.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIn(("on_close", 1011, "on_connect failed"), recorder.events)
        # the code the connection ended with is the server's reply
        self.assertEqual(events[-1], ("disconnect", 1000))
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(harness.endpoint.attempts, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.stop(client, harness)

    def test_loss_during_async_on_connect(self) -> None:
        """A connection lost while an async ``on_connect`` runs is reported to
        ClientService only after it finished (no state-machine error)."""
        gate: Deferred[None] = Deferred()
        client, harness, events = self.make(on_connect=lambda conn: gate)
        client.start()
        harness.flush()
        ready = client.when_connected()
        self.assertNoResult(ready)
        harness.server_conn().abort()
        harness.flush()
        gate.callback(None)
        self.successResultOf(ready)
        harness.clock.advance(0)
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(harness.endpoint.attempts, 2)
        self.assertEqual(client.connections_made, 2)
        self.stop(client, harness)

    def test_arguments(self) -> None:
        """Bad backoff settings and non-callable hooks are refused."""
        clock = MemoryReactorClock()
        self.assertRaises(
            ConfigError,
            ReconnectingClient,
            URL,
            reactor=clock,
            initial_delay=9,
            max_delay=1,
        )
        self.assertRaises(TypeError, ReconnectingClient, URL, 42, reactor=clock)
        self.assertRaises(ConfigError, ReconnectingClient, "http://x/", reactor=clock)
