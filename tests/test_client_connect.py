"""Tests for ``wsplugin.client._connect``: ``connect()`` and the
``Connector``, in memory (``iosim``, ``MemoryReactorClock``): options checked
at once, the default endpoint, open timeout, refusal, cancelling."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.client_support import SERVER, URL, Echo, Harness, open_conn, scripted
from wsplugin.client import (
    ClientConfig,
    ClientConnection,
    ConnectFailed,
    OpenTimeout,
    WebSocketClientProtocol,
    connect,
    parse_url,
)
from wsplugin.client._connect import Connector, connect_reason, default_endpoint
from wsplugin.connection import ConnectionState
from wsplugin.errors import ConfigError


class OptionTests(SynchronousTestCase):
    """``connect`` checks its URL and options before connecting."""

    def test_connect_rejects_bad_url_at_once(self) -> None:
        """``connect`` raises for a bad URL before returning a Deferred."""
        self.assertRaises(ConfigError, connect, "tcp://x", reactor=MemoryReactorClock())

    def test_connect_option_errors(self) -> None:
        """Unknown options, options besides ``config=`` and TLS options for a
        ws:// URL raise at once."""
        clock = MemoryReactorClock()
        self.assertRaises(ConfigError, connect, URL, reactor=clock, colour="red")
        self.assertRaises(
            ConfigError, connect, URL, reactor=clock, config=ClientConfig(), headers={}
        )
        with self.assertRaises(ConfigError) as caught:
            connect(URL, reactor=clock, ca_file="ca.pem")
        self.assertIn("wss://", str(caught.exception))

    def test_default_endpoint(self) -> None:
        """IP literals connect without a resolver; names use HostnameEndpoint."""
        clock = MemoryReactorClock()
        config = ClientConfig()
        self.assertIsInstance(
            default_endpoint(clock, parse_url("ws://127.0.0.1/"), config),
            TCP4ClientEndpoint,
        )
        self.assertIsInstance(
            default_endpoint(clock, parse_url("ws://[::1]/"), config),
            TCP6ClientEndpoint,
        )
        self.assertIsInstance(
            default_endpoint(clock, parse_url("ws://localhost/"), config),
            HostnameEndpoint,
        )

    def test_connect_reason(self) -> None:
        """Connection errors become a few words for ConnectFailed."""
        self.assertEqual(
            connect_reason(ConnectionRefusedError(string="Connection refused")),
            "Connection refused",
        )
        self.assertEqual(connect_reason(DNSLookupError("no.such")), "no.such")
        self.assertEqual(connect_reason(OSError()), "OSError")


class ConnectTests(SynchronousTestCase):
    """Attempts in memory: open, time out, refused, cancelled."""

    def test_open_response_and_custom_headers(self) -> None:
        """Custom headers reach the server; the 101's headers (two Set-Cookie)
        reach the client (FPC OnHandshakeSuccess)."""
        seen = {}

        class Cookies(Echo):
            def allow(self, conn: Any) -> Any:
                seen["token"] = conn.request.headers.get("x-token")
                seen["cookie"] = conn.request.headers.get("cookie")
                conn.response_headers += [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
                return True

        conn, _ = open_conn(
            self, Cookies(), headers={"X-Token": "t0k", "Cookie": "sid=9"}
        )
        self.assertEqual(seen, {"token": "t0k", "cookie": "sid=9"})
        self.assertEqual(conn.state, ConnectionState.OPEN)
        self.assertTrue(conn.is_open)
        self.assertEqual(conn.response.status, 101)
        self.assertEqual(conn.response.headers.get_all("set-cookie"), ["a=1", "b=2"])
        self.assertIn(("Set-Cookie", "b=2"), conn.response_headers)
        self.assertEqual(conn.request.headers["X-Token"], "t0k")
        self.assertEqual(conn.request.path, "/chat")
        self.assertEqual(conn.request.peer, SERVER)
        self.assertIn("ws://127.0.0.1:8888/chat", repr(conn))

    def test_open_timeout(self) -> None:
        """A server that never answers: OpenTimeout after ``open_timeout``,
        and the connection is dropped."""
        harness = Harness(server_factory=scripted(b""))
        d = harness.connect(open_timeout=3)
        self.assertNoResult(d)
        harness.clock.advance(3)
        error = self.failureResultOf(d, OpenTimeout).value
        self.assertIsInstance(error, ConnectFailed)
        self.assertIn("not open within 3 seconds", str(error))
        self.assertTrue(harness.endpoint.clients[0].disconnecting)
        harness.flush()  # the late failure of the attempt is swallowed

    def test_refused(self) -> None:
        """A refused TCP connection is ConnectFailed with a one-line message."""
        harness = Harness(Echo())
        harness.endpoint.refuse = True
        error = self.failureResultOf(harness.connect(), ConnectFailed).value
        self.assertEqual(
            str(error), "cannot connect to 127.0.0.1:8888: Connection refused"
        )

    def test_default_endpoint_connects_tcp(self) -> None:
        """Without ``endpoint=``, connect() dials TCP to the URL's address."""
        clock = MemoryReactorClock()
        d = connect("ws://127.0.0.1:9/x", reactor=clock)
        host, port, *_ = clock.tcpClients[0]
        self.assertEqual((host, port), ("127.0.0.1", 9))
        iosim.ConnectionCompleter(clock).failOnce(
            Failure(ConnectionRefusedError(string="Connection refused"))
        )
        self.failureResultOf(d, ConnectFailed)

    def test_cancel(self) -> None:
        """Cancelling the Deferred aborts the attempt."""
        harness = Harness(server_factory=scripted(b""))
        d = harness.connect()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertTrue(harness.endpoint.clients[0].disconnecting)
        harness.flush()

    def test_connector_open_fires_with_the_protocol(self) -> None:
        """``Connector.open`` fires with the protocol of the open connection;
        ``connect`` with its connection."""
        harness = Harness(Echo())
        connector = Connector(
            parse_url(URL), ClientConfig(), harness.clock, harness.endpoint
        )
        d = connector.open()
        harness.flush()
        proto = self.successResultOf(d)
        self.assertIsInstance(proto, WebSocketClientProtocol)
        self.assertIsInstance(proto.connection, ClientConnection)
        self.assertEqual(proto.connection.state, ConnectionState.OPEN)
        second = connector.connect()
        harness.flush()
        conn = self.successResultOf(second)
        self.assertIsInstance(conn, ClientConnection)
        self.assertIsNot(conn, proto.connection)
        self.assertEqual(harness.endpoint.attempts, 2)

    def test_open_after_timeout_is_aborted(self) -> None:
        """A connection that opens after the timeout fired is dropped."""
        harness = Harness(Echo())
        d = connect(
            URL, reactor=harness.clock, endpoint=harness.endpoint, open_timeout=1
        )
        harness.clock.advance(1)
        self.failureResultOf(d, OpenTimeout)
        harness.flush()
        self.assertTrue(harness.endpoint.clients[0].disconnecting)
