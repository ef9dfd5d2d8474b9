"""Keeping a connection up: :class:`ReconnectingClient`, on Twisted's
``ClientService``.

``ClientService`` retries with a backoff policy whenever its endpoint fails
or its connection is lost. Here its endpoint is :class:`OpenEndpoint`, whose
"connections" are *open WebSocket connections*: a refused handshake is a
failed attempt, retried like a refused TCP connection, and ``ClientService``
never hears of a connection that did not open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from random import random
from typing import TYPE_CHECKING, Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wsplugin._events import as_deferred
from wsplugin.client._channels import SUBPROTOCOL, ChannelSubscriptions
from wsplugin.client._config import ClientConfig, make_config
from wsplugin.client._connect import Connector
from wsplugin.client._connection import ClientConnection
from wsplugin.client._protocol import WebSocketClientProtocol
from wsplugin.client._url import parse_url
from wsplugin.errors import ConfigError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

__all__ = ["ConnectionTransport", "Handle", "OpenEndpoint", "ReconnectingClient"]


class ConnectionTransport:
    """What ClientService sees as the transport: closing it closes the
    WebSocket with a closing handshake (1000), not just the TCP connection."""

    def __init__(self, proto: WebSocketClientProtocol) -> None:
        assert proto.connection is not None and proto.transport is not None
        self.connection: ClientConnection = proto.connection
        self._tcp = proto.transport

    def loseConnection(self) -> None:
        """Close the WebSocket with 1000."""
        self.connection.close(1000, "")

    def abortConnection(self) -> None:
        """Drop the WebSocket's TCP connection."""
        self.connection.abort()

    def getPeer(self) -> IAddress | None:
        """The server's address."""
        return self.connection.request.peer

    def getHost(self) -> Any:
        """The client's address."""
        return self._tcp.getHost()


class Handle(Protocol):
    """The protocol ClientService manages: a handle on one open connection.

    ClientService hands its own wrapper of this protocol to the
    ``prepareConnection`` hook and to ``whenConnected`` callers; attribute
    reads and method calls pass through that wrapper to the handle.

    Attributes:
        connection: The open connection.
        prepared: ``on_connect`` has finished.
        pending_loss: The connection ended while ``on_connect`` ran: the
            loss to report to ClientService once it has.
    """

    connection: ClientConnection | None = None
    prepared = False
    pending_loss: Failure | None = None

    def connectionMade(self) -> None:
        """Take the connection from the :class:`ConnectionTransport`."""
        self.connection = self.transport.connection

    def mark_prepared(self) -> Failure | None:
        """``on_connect`` finished: returns the loss held back meanwhile."""
        self.prepared = True
        return self.pending_loss

    def hold_loss(self, reason: Failure) -> None:
        """The connection ended before ``on_connect`` finished: keep why."""
        self.pending_loss = reason


@implementer(IStreamClientEndpoint)
class OpenEndpoint:
    """An endpoint whose connections are *open WebSocket connections*.

    ClientService counts a connection as made when this endpoint's Deferred
    fires, so a refused handshake is a failed attempt (retried with backoff),
    and it never hears of a connection that did not open.

    Args:
        connector: Makes each attempt.
        lost: Called with ``(wrapper, connection, reason)`` when an open
            connection ends; ``wrapper`` is what the protocol factory built.
    """

    def __init__(self, connector: Connector, lost: Callable[..., None]) -> None:
        self._connector = connector
        self._lost = lost

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """Open a WebSocket connection; fire with the factory's protocol."""

        def opened(proto: WebSocketClientProtocol) -> Any:
            transport = ConnectionTransport(proto)
            wrapper = protocolFactory.buildProtocol(transport.getPeer())
            wrapper.makeConnection(transport)
            proto.add_lost_listener(
                lambda conn, reason: self._lost(wrapper, conn, reason)
            )
            return wrapper

        return self._connector.open().addCallback(opened)


class ReconnectingClient(Service):
    """A connection kept up across drops and server restarts.

    Built on Twisted's ``ClientService`` with ``backoffPolicy``: after a
    failed attempt or a lost connection it waits ``initial_delay * factor**n``
    seconds (at most ``max_delay``, plus up to ``jitter()`` seconds), then
    connects again; a connection that opened resets ``n``. A refused
    handshake counts as a failed attempt.

    It is a Twisted ``Service``: ``start()`` / ``stop()``, or
    ``client.setServiceParent(application)``.

    Args:
        url: The URL to connect to.
        on_connect: Called with each new :class:`ClientConnection` (the first
            and every reconnection); may return a Deferred or coroutine, which
            :meth:`when_connected` waits for. If it raises, the connection is
            closed with 1011 and made again later.
        on_disconnect: Called with each connection once it has ended
            (``conn.close_code`` says how).
        channels: A :class:`ChannelSubscriptions`: the client offers the
            ``wsplugin.channels.v1`` subprotocol, and on every connection,
            before ``on_connect``, subscribes its channels again from the
            last publication processed, so nothing sent while it was away
            (within the server's history) is missed.
        reactor: The reactor (the global one if None).
        endpoint: As for :func:`connect`.
        initial_delay, max_delay, factor, jitter: The backoff policy
            (Twisted's ``backoffPolicy``); ``jitter`` is a callable returning
            extra seconds (``random.random`` by default).
        retry_policy: A ``ClientService`` retry policy replacing the above.
        config: A :class:`ClientConfig`, instead of keyword options.
        **options: :class:`ClientConfig` fields, as for :func:`connect`.

    Attributes:
        connection: The open connection, or None between connections.
        connections_made: How many connections have opened so far.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        on_connect: Callable[[ClientConnection], Any] | None = None,
        *,
        on_disconnect: Callable[[ClientConnection], Any] | None = None,
        channels: ChannelSubscriptions | None = None,
        reactor: Any = None,
        endpoint: IStreamClientEndpoint | None = None,
        initial_delay: float = 1.0,
        max_delay: float = 60.0,
        factor: float = 1.5,
        jitter: Callable[[], float] | None = None,
        retry_policy: Callable[[int], float] | None = None,
        config: ClientConfig | None = None,
        **options: Any,
    ) -> None:
        if on_connect is not None and not callable(on_connect):
            raise TypeError("on_connect must be callable")
        if on_disconnect is not None and not callable(on_disconnect):
            raise TypeError("on_disconnect must be callable")
        if not 0 <= initial_delay <= max_delay or factor < 1:
            raise ConfigError(
                "backoff needs 0 <= initial_delay <= max_delay and factor >= 1"
            )
        self.url = parse_url(url)
        config = make_config(config, options)
        if channels is not None and SUBPROTOCOL not in config.subprotocols:
            config = dataclasses.replace(
                config, subprotocols=(*config.subprotocols, SUBPROTOCOL)
            )
        self.channels = channels
        self._connector = Connector(self.url, config, reactor, endpoint)
        self.reactor = self._connector.reactor
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.connection: ClientConnection | None = None
        self.connections_made = 0
        policy = retry_policy or backoffPolicy(
            initial_delay, max_delay, factor, jitter or random
        )
        self._service = ClientService(
            OpenEndpoint(self._connector, self._lost),
            Factory.forProtocol(Handle),
            retryPolicy=policy,
            clock=self.reactor,
            prepareConnection=self._prepare,
        )

    def start(self) -> None:
        """Start connecting (and reconnecting); same as ``startService``."""
        if not self.running:
            self.startService()

    def stop(self) -> Deferred[None]:
        """Stop reconnecting and close the connection (1000); fires when done."""
        if not self.running:
            return succeed(None)
        return self.stopService()

    def startService(self) -> None:
        """``Service`` start: begin the connect/retry loop."""
        super().startService()
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        """``Service`` stop: as :meth:`stop`."""
        super().stopService()
        return self._service.stopService()

    def when_connected(
        self, fail_after_failures: int | None = None
    ) -> Deferred[ClientConnection]:
        """The open connection, or the next one to open (after ``on_connect``).

        Args:
            fail_after_failures: Fail with the attempt's error after this many
                consecutive failed attempts (None: wait until stopped, then
                fail with ``CancelledError``).
        """
        d = self._service.whenConnected(failAfterFailures=fail_after_failures)
        return d.addCallback(lambda handle: handle.connection)

    # -- ClientService hooks -------------------------------------------------

    def _prepare(self, wrapper: Any) -> Deferred[None]:
        """Run ``on_connect``; never fails (ClientService would leak the
        connection), and holds back a loss until it has finished."""
        conn: ClientConnection = wrapper.connection
        self.connection = conn
        self.connections_made += 1
        on_connect = self.on_connect
        try:
            if self.channels is not None:
                d: Deferred[Any] = self.channels.attach(conn)
            else:
                d = succeed(None)
            if on_connect is not None:
                d.addCallback(lambda _: as_deferred(on_connect(conn)))
        except Exception:
            d = fail(Failure())
        d.addErrback(self._on_connect_failed, conn)
        d.addBoth(self._prepared, wrapper)
        return d

    def _on_connect_failed(self, failure: Failure, conn: ClientConnection) -> None:
        self._log.failure("on_connect failed for {url}", failure, url=self.url)
        if conn.is_open:
            conn.close(1011, "on_connect failed")

    def _prepared(self, _: Any, wrapper: Any) -> None:
        pending_loss = wrapper.mark_prepared()
        if pending_loss is not None:
            # tell ClientService after it has taken the connection
            self.reactor.callLater(0, wrapper.connectionLost, pending_loss)

    def _lost(self, wrapper: Any, conn: ClientConnection, reason: Failure) -> None:
        if self.connection is conn:
            self.connection = None
        if self.on_disconnect is not None:
            try:
                result = self.on_disconnect(conn)
                if result is not None:
                    as_deferred(result).addErrback(
                        lambda f: self._log.failure("on_disconnect failed", f)
                    )
            except Exception:
                self._log.failure("on_disconnect raised")
        if wrapper.prepared:
            wrapper.connectionLost(reason)
        else:
            wrapper.hold_loss(reason)
