"""The Autobahn server factory subclass: routes, collaborators and sending.

The factory owns what all connections of a server share, each as an object
of its own that the protocols are given through it:

* the :class:`~wsplugin._routing.Router`;
* the :class:`~wsplugin._registry.Registry` of open connections (by id),
  behind the public :class:`Connections` view;
* the :class:`~wsplugin._fanout.Fanout` that ``broadcast``, ``send_to`` and
  publications from the backplane go through;
* the :class:`~wsplugin._hub.Hub` between them and the
  :class:`~wsplugin.backplane.Backplane` (the in-process one by default),
  which makes channels, ``write_data`` and disconnects cluster-wide;
* the :class:`~wsplugin._batching.TurnBatcher` of the reactor's turn;
* the :class:`~wsplugin._ratelog.RateLimitedLog` for per-connection problems.

It applies the server config to Autobahn once, and runs Autobahn's handshake
and keep-alive timers on the injected reactor rather than txaio's global one,
so tests drive them with ``task.Clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketServerFactory as _AutobahnServerFactory,
)
from twisted.internet.interfaces import IProtocolNegotiationFactory, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from wsplugin._autobahn import ReactorTimer
from wsplugin._batching import TurnBatcher
from wsplugin._events import bind_events
from wsplugin._fanout import Fanout
from wsplugin._hub import Hub
from wsplugin._keepalive import Heartbeats
from wsplugin._ratelog import LOG_BURST, LOG_WINDOW, RateLimitedLog
from wsplugin._registry import Connections, Registry
from wsplugin._routing import Route, Router
from wsplugin._sendapi import SendingMethods
from wsplugin.backplane import Backplane, make_backplane
from wsplugin.config import ServerConfig
from wsplugin.connection import Connection
from wsplugin.protocol import WebSocketServerProtocol

__all__ = ["LOG_BURST", "LOG_WINDOW", "Connections", "WebSocketServerFactory"]

Message = str | bytes
Selector = Callable[[Connection], bool]


@implementer(IProtocolNegotiationFactory)
class WebSocketServerFactory(SendingMethods, _AutobahnServerFactory):
    """Autobahn server factory carrying wsplugin's routes and sending methods
    (``broadcast``, ``send_to``, ``write_data``, ``ping_all``,
    ``disconnect_all``: :class:`~wsplugin._sendapi.SendingMethods`).

    Args:
        config: Server-wide options (routes may override them).
        router: Routes; a new empty one by default.
        reactor: Reactor for connections and timers (the global one if None).
        owner: The object exposed as ``conn.server`` (the WebSocketServer).
        server_handler: Object whose ``on_connect(peer)`` screens TCP
            connections before the handshake.
        log_limited: The rate-limited log for per-connection problems; a
            new one (on this factory's logger) by default.
        registry: The registry of open connections; a new one by default.
        batcher: The write batcher of this reactor's turns; a new one (on
            ``reactor``) by default.
        backplane: The :class:`~wsplugin.backplane.Backplane` its owner
            starts and stops (the server does). By default the factory
            makes an in-process one and starts it at once (it does no I/O),
            so a factory used alone has channels and history too.

    Attributes:
        clock: The reactor its timers run on.
        router: Its routes.
        registry: The open connections (``connections`` is the public view).
        fanout: Sends one message to many connections, encoded once.
        hub: Between the connections and the backplane (``hub.backplane``).
        batcher: Collects each reactor turn's writes (one per factory).
        heartbeats: Its connections' shared heartbeat timers.
        log_limited: Logs per-connection problems, rate limited.
        on_connect: The server handler's ``on_connect``, or None.
    """

    protocol = WebSocketServerProtocol
    _log = Logger()

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN for any TLS listener of this factory (``ssl:`` strings too):
        a WebSocket upgrade is HTTP/1.1. Without it, Twisted answers a
        client's ALPN offer (every browser sends one) with a fatal alert."""
        return [b"http/1.1"]

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        router: Router | None = None,
        reactor: Any = None,
        owner: Any = None,
        server_handler: Any = None,
        log_limited: RateLimitedLog | None = None,
        registry: Registry | None = None,
        batcher: TurnBatcher | None = None,
        backplane: Backplane | None = None,
    ) -> None:
        self.config = config or ServerConfig()
        super().__init__(server=self.config.server_header or None, reactor=reactor)
        self.clock: IReactorTime = self.reactor
        # Autobahn private: where Autobahn's protocols schedule their
        # close-handshake timers; ours run on the injected reactor
        self._batched_timer = ReactorTimer(self.clock)
        self.router = router or Router()
        self.owner = owner if owner is not None else self
        self.on_connect: Callable[[Any], Any] | None = getattr(
            server_handler, "on_connect", None
        )
        self.log_limited = log_limited or RateLimitedLog(self.clock, self._log)
        self.registry = registry if registry is not None else Registry()
        self.fanout = Fanout(self.registry, self._log)
        own = backplane is None
        if backplane is None:
            backplane = make_backplane(None, reactor=self.clock)
        self.hub = Hub(backplane, self.fanout, self.registry, self._log)
        if own:
            self.hub.start()
        self.batcher = batcher or TurnBatcher(self.clock, self._log)
        self.heartbeats = Heartbeats(self.clock)
        self.connections = Connections(self.registry)
        self._apply_config()

    def _apply_config(self) -> None:
        cfg = self.config
        self.setProtocolOptions(
            webStatus=False,
            failByDrop=False,
            openHandshakeTimeout=cfg.open_handshake_timeout,
            closeHandshakeTimeout=cfg.close_handshake_timeout,
            maxConnections=cfg.max_connections,
            maxMessagePayloadSize=cfg.max_message_size,
            maxFramePayloadSize=cfg.max_frame_size,
            utf8validateIncoming=cfg.utf8_validation,
            # keep-alive is wsplugin's own (before_heartbeat, 1011 on timeout)
            autoPingInterval=0,
            autoPingTimeout=0,
            allowedOrigins=["*"],  # checked per route, with 403, by the protocol
            versions=[13],  # RFC 6455 only; skip_version_check relaxes it
        )

    # -- routes ------------------------------------------------------------

    def register_handler(
        self,
        host: str,
        path: str,
        handler: Any,
        *,
        default_host: bool = False,
        default_path: bool = False,
        auth: Any = None,
        **overrides: Any,
    ) -> Route:
        """Serve ``handler`` on ``host`` and ``path`` (FPC ``RegisterHandler``).

        ``auth`` is an authenticator (:mod:`wsplugin.auth`) checked before
        ``allow``; keyword ``overrides`` are option names of
        :class:`ServerConfig` applied to this route only.
        """
        config = self.config.for_route(**overrides) if overrides else self.config
        bind_events(handler)  # fail now on a non-callable event
        return self.router.register(
            host,
            path,
            handler,
            config,
            default_host=default_host,
            default_path=default_path,
            auth=auth,
        )

    def buffered_bytes(self) -> int:
        """Outgoing bytes the server holds for all its connections: each
        connection's send queue plus what its transport has not yet written
        to the socket. A bounded number, whatever clients do."""
        return sum(conn.engine.held_bytes() for conn in self.registry.snapshot())
