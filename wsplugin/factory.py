"""The Autobahn server factory subclass: routes, registry and sending.

The factory owns what is shared by all connections: the :class:`Router`, the
registry of open connections (by id), and the sending methods of the
component (``broadcast``, ``send_to``, ``write_data``, ``ping_all``,
``disconnect_all``). It applies the server config to Autobahn once, and runs
Autobahn's handshake and keep-alive timers on the injected reactor rather than
txaio's global one, so tests drive them with ``task.Clock``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketServerFactory as _AutobahnServerFactory,
)
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocolNegotiationFactory,
    IReactorTime,
)
from twisted.logger import Logger
from zope.interface import implementer

from wsplugin._events import bind_events
from wsplugin._frames import encode_message
from wsplugin._routing import Route, Router
from wsplugin.config import ServerConfig
from wsplugin.connection import Connection
from wsplugin.errors import UnknownConnection
from wsplugin.protocol import ROUTE_EVENTS, WebSocketServerProtocol

__all__ = ["Connections", "WebSocketServerFactory"]

Message = str | bytes
Selector = Callable[[Connection], bool]

_OPEN = WebSocketProtocol.STATE_OPEN
LOG_BURST = 20
LOG_WINDOW = 10.0


class _ReactorTimer:
    """Autobahn's timer interface (``call_later``) on a given reactor."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def call_later(
        self, delay: float, func: Callable[..., Any], *a: Any, **kw: Any
    ) -> Any:
        return _Cancellable(self._clock.callLater(delay, func, *a, **kw))


class _Cancellable:
    """A delayed call whose ``cancel()`` is harmless after it ran."""

    __slots__ = ("_call",)

    def __init__(self, call: IDelayedCall) -> None:
        self._call = call

    def active(self) -> bool:
        return bool(self._call.active())

    def cancel(self) -> None:
        if self._call.active():
            self._call.cancel()


class Connections:
    """The open connections: iterable, sized, and looked up by id.

    ``for conn in server.connections``, ``len(server.connections)``,
    ``server.connections[conn_id]`` (raises :class:`UnknownConnection`),
    ``server.connections.get(conn_id)``, ``conn_id in server.connections``.
    """

    def __init__(self, registry: dict[str, Connection]) -> None:
        self._registry = registry

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._registry.values()))

    def __len__(self) -> int:
        return len(self._registry)

    def __getitem__(self, conn_id: str) -> Connection:
        try:
            return self._registry[conn_id]
        except KeyError:
            raise UnknownConnection(conn_id) from None

    def __contains__(self, item: object) -> bool:
        if isinstance(item, Connection):
            return self._registry.get(item.id) is item
        return item in self._registry

    def get(self, conn_id: str, default: Connection | None = None) -> Connection | None:
        """The connection with ``conn_id``, or ``default``."""
        return self._registry.get(conn_id, default)

    def ids(self) -> list[str]:
        """The ids of all open connections."""
        return list(self._registry)


def _transport_buffered(transport: Any) -> int:
    """Bytes a Twisted transport holds unwritten (TCP, or TLS over TCP)."""
    size = 0
    while transport is not None:
        size += len(getattr(transport, "dataBuffer", b"")) + getattr(
            transport, "_tempDataLen", 0
        )
        transport = getattr(transport, "transport", None)
    return size


def _payload(message: Message) -> tuple[bytes, bool]:
    if isinstance(message, str):
        return message.encode("utf-8"), False
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message), True
    raise TypeError(
        f"a message is str (text) or bytes (binary), not {type(message).__name__}"
    )


@implementer(IProtocolNegotiationFactory)
class WebSocketServerFactory(_AutobahnServerFactory):
    """Autobahn server factory carrying wsplugin's routes and sending methods.

    Args:
        config: Server-wide options (routes may override them).
        router: Routes; a new empty one by default.
        reactor: Reactor for connections and timers (the global one if None).
        owner: The object exposed as ``conn.server`` (the WebSocketServer).
        server_handler: Object whose ``on_connect(peer)`` screens TCP
            connections before the handshake.
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
    ) -> None:
        self.config = config or ServerConfig()
        super().__init__(server=self.config.server_header or None, reactor=reactor)
        self.clock: IReactorTime = self.reactor
        self._batched_timer = _ReactorTimer(self.clock)
        self.router = router or Router()
        self.owner = owner if owner is not None else self
        self._on_connect = getattr(server_handler, "on_connect", None)
        self._registry: dict[str, Connection] = {}
        self._log_window_start = float("-inf")
        self._log_count = 0
        self._log_suppressed = 0
        self._route_event_cache: dict[int, dict[str, Any]] = {}
        self._batched: list[WebSocketServerProtocol] = []
        self._batch_call: IDelayedCall | None = None
        self.connections = Connections(self._registry)
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
        bind_events(handler, ROUTE_EVENTS)  # fail now on a non-callable event
        return self.router.register(
            host,
            path,
            handler,
            config,
            default_host=default_host,
            default_path=default_path,
            auth=auth,
        )

    def _route_events(self, route: Route) -> dict[str, Any]:
        key = id(route)
        events = self._route_event_cache.get(key)
        if events is None or events.get("__route__") is not route:
            events = bind_events(route.handler, ROUTE_EVENTS)
            events["__route__"] = route
            self._route_event_cache[key] = events
        return events

    # -- registry ----------------------------------------------------------

    def _register(self, conn: Connection) -> None:
        self._registry[conn.id] = conn

    def _unregister(self, conn: Connection) -> None:
        if self._registry.get(conn.id) is conn:
            del self._registry[conn.id]

    def _batch_ready(self, proto: WebSocketServerProtocol) -> None:
        """``proto`` collects writes this turn; send them all when it ends."""
        self._batched.append(proto)
        if self._batch_call is None:
            self._batch_call = self.clock.callLater(0, self._write_batches)

    def _write_batches(self) -> None:
        self._batch_call = None
        batched, self._batched = self._batched, []
        for proto in batched:
            try:
                proto._write_batch()
            except Exception:
                self._log.failure("writing to {peer} failed", peer=proto.peer)

    def buffered_bytes(self) -> int:
        """Outgoing bytes the server holds for all its connections: each
        connection's send queue plus what its transport has not yet written
        to the socket. A bounded number, whatever clients do."""
        total = 0
        for conn in list(self._registry.values()):
            proto = conn._protocol
            total += proto._queued + _transport_buffered(proto.transport)
        return total

    # -- sending -----------------------------------------------------------

    def broadcast(
        self,
        message: Message,
        *,
        channel: str | None = None,
        protocol: str | None = None,
        ids: str | Iterable[str] | None = None,
        exclude: str | Connection | Iterable[str | Connection] | None = None,
    ) -> int:
        """Send ``message`` to every open connection, optionally filtered.

        Args:
            message: ``str`` is sent as text, ``bytes`` as binary.
            channel: Only connections subscribed to this channel.
            protocol: Only connections that negotiated this subprotocol.
            ids: Only connections with these ids: an iterable of ids, or one
                id as a ``str`` (not taken apart into characters).
            exclude: Skip these connections: ids or Connection objects, or
                a single id or Connection.

        Returns:
            How many connections the message was sent to.

        Raises:
            TypeError: ``ids`` or ``exclude`` is ``bytes`` (ids are ``str``).
        """
        payload, is_binary = _payload(message)
        if isinstance(ids, str):
            ids = (ids,)
        if isinstance(exclude, (str, Connection)):
            exclude = (exclude,)
        for name, value in (("ids", ids), ("exclude", exclude)):
            if isinstance(value, (bytes, bytearray, memoryview)):
                raise TypeError(
                    f"broadcast({name}=...) takes connection ids as str, "
                    f"not {type(value).__name__}"
                )
        if ids is not None:
            wanted = [self._registry.get(i) for i in dict.fromkeys(ids)]
            targets: Iterable[Connection] = [c for c in wanted if c is not None]
        else:
            targets = list(self._registry.values())
        if channel is not None:
            targets = [c for c in targets if channel in c.channels]
        if protocol is not None:
            targets = [c for c in targets if c.protocol == protocol]
        if exclude is not None:
            skip = {x.id if isinstance(x, Connection) else x for x in exclude}
            targets = [c for c in targets if c.id not in skip]
        return self._send_many(payload, is_binary, targets)

    def send_to(self, message: Message, selector: Selector) -> int:
        """Send ``message`` to each open connection for which ``selector(conn)``
        is true (TMS ``SendMessageTo``/``SendDataTo``). Returns the count."""
        payload, is_binary = _payload(message)
        targets = [c for c in list(self._registry.values()) if selector(c)]
        return self._send_many(payload, is_binary, targets)

    def write_data(self, conn_id: str, message: Message) -> None:
        """Send ``message`` to the connection with ``conn_id`` (sgc ``WriteData``).

        Raises:
            UnknownConnection: no open connection has that id.
        """
        self.connections[conn_id].send(message)

    def ping_all(self, payload: bytes = b"") -> int:
        """Ping every open connection; returns the count."""
        count = 0
        for conn in list(self._registry.values()):
            if conn.is_open:
                try:
                    conn.ping(payload)
                except Exception:
                    self._log.failure("ping to {conn} failed", conn=conn)
                    continue
                count += 1
        return count

    def disconnect_all(self, code: int = 1001, reason: str = "") -> int:
        """Close every open connection with ``code``; the server keeps listening.

        Returns:
            How many connections were asked to close.
        """
        count = 0
        for conn in list(self._registry.values()):
            if conn.is_open:
                try:
                    conn.close(code, reason)
                except Exception:
                    self._log.failure("closing {conn} failed", conn=conn)
                    continue
                count += 1
        return count

    def _send_many(
        self, payload: bytes, is_binary: bool, targets: Iterable[Connection]
    ) -> int:
        """Send one message to many connections.

        The frame bytes are built once per distinct fragment size (and, for
        permessage-deflate without context takeover, window size) and
        written as they are to every connection that shares them; only a
        connection that keeps its compression context compresses for itself.
        A connection whose transport fails is logged and skipped: the others
        still get the message.
        """
        encoded: dict[tuple[int, tuple[int, int] | None], bytes] = {}
        count = 0
        for conn in targets:
            proto = conn._protocol
            if proto.state != _OPEN or proto._peer_closed:
                continue
            try:
                if proto._queued and not proto._admit():
                    continue
                deflate = proto._deflate_key
                if (
                    deflate is None
                    and proto._perMessageCompress is not None
                    and not proto._fragmenting
                ):
                    proto._send_encoded(payload, is_binary)
                else:
                    size = proto._settings.fragment_size
                    data = encoded.get((size, deflate))
                    if data is None:
                        if size or deflate is not None:
                            data = encode_message(payload, is_binary, size, deflate)
                        else:
                            data = self.prepareMessage(payload, is_binary).payloadHybi
                        encoded[size, deflate] = data
                    proto._send_prepared(data)
            except Exception:
                self._log.failure("sending to {conn} failed", conn=conn)
                continue
            count += 1
        return count

    # -- logging -----------------------------------------------------------

    def _log_limited(self, fmt: str, **fields: Any) -> None:
        """Log a per-connection problem, at most ``LOG_BURST`` per
        ``LOG_WINDOW`` seconds; the rest are counted and reported later."""
        now = self.clock.seconds()
        if now - self._log_window_start >= LOG_WINDOW:
            if self._log_suppressed:
                self._log.warn(
                    "{count} similar connection problems were not logged",
                    count=self._log_suppressed,
                )
            self._log_window_start = now
            self._log_count = 0
            self._log_suppressed = 0
        if self._log_count < LOG_BURST:
            self._log_count += 1
            self._log.info(fmt, **fields)
        else:
            self._log_suppressed += 1
