"""Opening one connection: :func:`connect` and the :class:`Connector` behind it.

A :class:`Connector` holds what every attempt to one URL shares (the
config, the endpoint, the Autobahn factory); each :meth:`Connector.open`
connects TCP (and TLS), runs the opening handshake, and enforces
``open_timeout`` over all three. :class:`~wsplugin.client.ReconnectingClient`
uses the same connector for each of its attempts.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet import error as _neterr
from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure

from wsplugin.client._config import ClientConfig, make_config
from wsplugin.client._connection import ClientConnection
from wsplugin.client._protocol import WebSocketClientFactory, WebSocketClientProtocol
from wsplugin.client._tls import tls_creator
from wsplugin.client._url import URL, parse_url
from wsplugin.errors import ConfigError, ConnectFailed, OpenTimeout

__all__ = ["Connector", "connect", "connect_reason", "default_endpoint"]


def default_endpoint(
    reactor: Any, url: URL, config: ClientConfig
) -> IStreamClientEndpoint:
    """TCP to the URL's host (IP literals need no resolver), TLS for wss.

    The TCP timeout is ``open_timeout`` plus a second, so the open timeout
    (which covers TLS and the handshake too) is what a user sees expire.
    """
    timeout = max(1, int(config.open_timeout + 1))
    endpoint: IStreamClientEndpoint
    try:
        address = ipaddress.ip_address(url.host)
    except ValueError:
        endpoint = HostnameEndpoint(reactor, url.host, url.port, timeout=timeout)
    else:
        kind = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
        endpoint = kind(reactor, url.host, url.port, timeout=timeout)
    if url.secure:
        endpoint = wrapClientTLS(tls_creator(url, config), endpoint)
    return endpoint


def connect_reason(exc: BaseException) -> str:
    """A few words for a connection error: "Connection refused"."""
    if isinstance(exc, _neterr.TimeoutError):
        return "connection timed out"
    if isinstance(exc, (_neterr.ConnectError, _neterr.DNSLookupError)):
        if exc.args and isinstance(exc.args[0], str) and exc.args[0]:
            return exc.args[0]
    text = str(exc).strip().rstrip(".")
    return text or type(exc).__name__


def _open_connection(proto: WebSocketClientProtocol) -> ClientConnection:
    assert proto.connection is not None  # open() fires once it is set
    return proto.connection


class Connector:
    """Makes WebSocket connections to one URL: TCP, TLS, handshake, timeout.

    Args:
        url: The parsed URL.
        config: The options.
        reactor: The reactor (the global one if None).
        endpoint: Connect through this endpoint instead of the URL's host.

    Raises:
        ConfigError: TLS options for a ``ws://`` URL.
    """

    def __init__(
        self,
        url: URL,
        config: ClientConfig,
        reactor: Any,
        endpoint: IStreamClientEndpoint | None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        if not url.secure and any(
            x is not None for x in (config.tls, config.ca_file, config.trust)
        ):
            raise ConfigError(
                f"{url} is not a wss:// URL: tls=, ca_file= and trust= need one"
            )
        self.url = url
        self.config = config
        self.reactor = reactor
        self.factory = WebSocketClientFactory(url, config, reactor=reactor)
        self.endpoint = endpoint or default_endpoint(reactor, url, config)

    def connect(self) -> Deferred[ClientConnection]:
        """One attempt; fires with an open connection or fails (see connect)."""
        return self.open().addCallback(_open_connection)

    def open(self) -> Deferred[WebSocketClientProtocol]:
        """One attempt; fires with the protocol of the open connection.

        Fails with :class:`ConnectFailed`, :class:`TLSFailed`,
        :class:`OpenTimeout` or :class:`HandshakeFailed`; cancelling it
        aborts the attempt.
        """
        url, timeout = self.url, self.config.open_timeout
        protocol: list[WebSocketClientProtocol] = []

        def cancel(_: Deferred[WebSocketClientProtocol]) -> None:
            if timer.active():
                timer.cancel()
            connecting.cancel()
            for proto in protocol:
                proto.abort()

        result: Deferred[WebSocketClientProtocol] = Deferred(cancel)

        def expired() -> None:
            if not result.called:
                result.errback(
                    OpenTimeout(
                        url.host, url.port, f"not open within {timeout:g} seconds"
                    )
                )
            connecting.cancel()
            for proto in protocol:
                proto.abort()

        def got_protocol(proto: WebSocketClientProtocol) -> None:
            protocol.append(proto)
            proto.opened.addCallbacks(lambda _: opened(proto), open_failed)

        def opened(proto: WebSocketClientProtocol) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                proto.abort()  # timed out or cancelled meanwhile
            else:
                result.callback(proto)

        def open_failed(failure: Failure) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                result.errback(failure)

        def connect_failed(failure: Failure) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                return
            if failure.check(CancelledError):
                result.errback(failure)
                return
            result.errback(
                ConnectFailed(url.host, url.port, connect_reason(failure.value))
            )

        timer = self.reactor.callLater(timeout, expired)
        connecting = maybeDeferred(self.endpoint.connect, self.factory)
        connecting.addCallbacks(got_protocol, connect_failed)
        return result


def connect(
    url: str,
    *,
    reactor: Any = None,
    endpoint: IStreamClientEndpoint | None = None,
    config: ClientConfig | None = None,
    **options: Any,
) -> Deferred[ClientConnection]:
    """Open a WebSocket connection (FPC ``TWebsocketClient.Connect``).

    Args:
        url: ``ws://host[:port]/path?query`` or ``wss://...``.
        reactor: The reactor (the global one if None).
        endpoint: Connect through this ``IStreamClientEndpoint`` instead of
            TCP (and TLS for ``wss://``) to the URL's host and port: a UNIX
            socket, a proxy, an in-memory endpoint in tests. The URL still
            gives the request's host and resource.
        config: A :class:`ClientConfig`, instead of keyword options.
        **options: :class:`ClientConfig` fields: ``headers``,
            ``subprotocols``, ``origin``, ``user_agent``, ``compression``,
            ``ca_file``, ``trust``, ``tls``, ``open_timeout``,
            ``close_timeout``, ``max_message_size``, ``max_frame_size``,
            ``max_queue``, ``max_pongs``, ``max_error_body``,
            ``utf8_validation``.

    Returns:
        A Deferred firing with the open :class:`ClientConnection`, or failing
        with :class:`ConnectFailed`, :class:`TLSFailed`, :class:`OpenTimeout`
        or :class:`HandshakeFailed`. Cancelling it aborts the attempt.

    Raises:
        ConfigError: at once, for an invalid URL or option.
    """
    target = parse_url(url)
    return Connector(target, make_config(config, options), reactor, endpoint).connect()
