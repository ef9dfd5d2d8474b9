"""HTTP and WebSocket on one port, with ``twisted.web``.

Three ways in (seeds: sgc ``TsgcWebSocketHTTPServer``, TMS Sparkle):

* :class:`WebSocketResource` — a ``twisted.web`` resource that turns any
  request reaching it into a wsplugin connection, with the server's routes,
  events and options. Put it anywhere in your own resource tree.
* :func:`upgrade` — Sparkle's ``Upgrader.Upgrade``: inside your own
  ``render_GET``, ``conn = upgrade(request)`` returns a
  :class:`~wsplugin.Connection` to read with ``await conn.receive()`` /
  ``async for``, or None (after answering 400) for a non-WebSocket request.
* :func:`site_root` — what :class:`~wsplugin.WebSocketServer` listens with
  when it serves HTTP too: an upgrade request that a WebSocket route takes
  goes to it; everything else goes to the HTTP resource tree (static files,
  the built-in test page, user resources, resources calling ``upgrade``); a
  plain GET to a path that only a WebSocket route serves gets 426; a
  ``before_request`` hook screens every request first (sgc
  ``OnBeforeCommand``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from wsplugin.config import ServerConfig
from wsplugin.connection import Connection
from wsplugin.routing import Route

if TYPE_CHECKING:
    from wsplugin.factory import WebSocketServerFactory

__all__ = [
    "BoundedHTTPChannel",
    "EmptyPage",
    "File",
    "WebSocketResource",
    "is_websocket_request",
    "site_root",
    "upgrade",
]

_log = Logger()

with warnings.catch_warnings():
    # twisted.web.static builds its default 404/403 pages with classes Twisted
    # itself deprecated, at import time; nothing of ours uses them.
    warnings.filterwarnings(
        "ignore",
        message=r"twisted\.web\.resource\._Unsafe",
        category=DeprecationWarning,
    )
    from twisted.web.static import File

BeforeRequest = Callable[[Request], Any]


def is_websocket_request(request: Request) -> bool:
    """Whether ``request`` asks for a WebSocket upgrade (``Upgrade: websocket``)."""
    upgrade_header = request.getHeader(b"upgrade") or b""
    return b"websocket" in [t.strip().lower() for t in upgrade_header.split(b",")]


class EmptyPage(Resource):
    """An answer with a status code and an empty body (sgc "404 without body")."""

    isLeaf = True

    def __init__(self, code: int, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__()
        self.code = code
        self.headers = headers or {}

    def render(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        request.setHeader(b"content-length", b"0")
        return b""

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self


def _take_over(
    request: Request, factory: WebSocketServerFactory, route: Route | None
) -> Any:
    """Move the request's connection to a new wsplugin protocol and replay the
    request head into it; returns the protocol."""
    channel = request.channel
    transport = channel.transport
    protocol = factory.buildProtocol(transport.getPeer())
    protocol._via_http = True
    protocol._fixed_route = route
    channel.setTimeout(None)
    channel.transport = None
    if hasattr(transport, "unregisterProducer"):
        transport.unregisterProducer()  # the HTTP channel was the producer
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    head = [request.method + b" " + request.uri + b" HTTP/1.1"]
    for name, values in request.requestHeaders.getAllRawHeaders():
        head.extend(name + b": " + value for value in values)
    protocol.dataReceived(b"\r\n".join(head) + b"\r\n\r\n" + request.content.read())
    if hasattr(transport, "resumeProducing"):
        transport.resumeProducing()  # the HTTP channel paused reading
    return protocol


class WebSocketResource(Resource):
    """A ``twisted.web`` leaf resource serving wsplugin WebSocket routes.

    Args:
        factory: The factory whose routes, events and options apply (usually
            ``server.factory``).
        route: Serve this route whatever the request path; by default the
            factory routes by the request's host and full path.

    A request without ``Upgrade: websocket`` gets 426 Upgrade Required.
    """

    isLeaf = True

    def __init__(
        self, factory: WebSocketServerFactory, route: Route | None = None
    ) -> None:
        super().__init__()
        self.factory = factory
        self.route = route

    def render(self, request: Request) -> Any:
        if not is_websocket_request(request) or request.channel.transport is None:
            request.setResponseCode(426)
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"426 Upgrade Required: this is a WebSocket endpoint.\n"
        _take_over(request, self.factory, self.route)
        return NOT_DONE_YET


_default_factories: dict[int, WebSocketServerFactory] = {}


def upgrade(
    request: Request,
    *,
    server: Any = None,
    handler: Any = None,
    **options: Any,
) -> Connection | None:
    """Upgrade a ``twisted.web`` request to WebSocket (Sparkle ``Upgrade``).

    Call it from ``render_GET`` and return ``NOT_DONE_YET``::

        def render_GET(self, request):
            conn = upgrade(request)
            if conn is not None:  # None: the 400 answer is already sent
                Deferred.fromCoroutine(self.echo(conn))
            return NOT_DONE_YET

    Args:
        request: The request to upgrade.
        server: A :class:`~wsplugin.WebSocketServer` (or its factory) the
            connection joins: its options apply and its ``broadcast`` reaches
            it. By default a shared factory with default options is used.
        handler: Optional handler for events (``on_disconnect``, ...). Without
            ``on_message``/``on_binary`` the connection is read with
            ``receive()``.
        **options: :class:`~wsplugin.ServerConfig` options for this connection.

    Returns:
        The connection (open, unless the handshake was refused), or None
        after a 400 answer when the request is not a WebSocket upgrade.
    """
    if not is_websocket_request(request) or request.channel.transport is None:
        request.setResponseCode(400)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(b"400 Bad Request: a WebSocket upgrade was expected.\n")
        request.finish()
        return None
    if server is not None:
        factory = getattr(server, "factory", server)
    else:
        from twisted.internet import reactor

        factory = _default_factories.get(id(reactor))
        if factory is None:
            from wsplugin.factory import WebSocketServerFactory

            factory = WebSocketServerFactory(ServerConfig(), reactor=reactor)
            _default_factories[id(reactor)] = factory
    config = factory.config.for_route(**options) if options else factory.config
    path = request.path.decode("latin-1")
    route = Route("*", path, handler, config)
    protocol = _take_over(request, factory, route)
    return protocol.connection if protocol.connection is not None else None


class _Root(Resource):
    """Dispatches each request: the hook first, then WebSocket or HTTP."""

    def __init__(
        self,
        factory: WebSocketServerFactory,
        http: IResource | None,
        before_request: BeforeRequest | None,
        not_found: IResource,
    ) -> None:
        super().__init__()
        self._ws = WebSocketResource(factory)
        self._factory = factory
        self._http = http
        self._before_request = before_request
        self._not_found = not_found

    def getChildWithDefault(self, name: bytes, request: Request) -> Any:
        if self._before_request is not None:
            try:
                answer = self._before_request(request)
            except Exception:
                _log.failure("before_request raised")
                return EmptyPage(500)
            if answer is not None:
                return IResource(answer)
        path = request.path.decode("latin-1")
        route = self._factory.router.resolve(
            (request.getHeader(b"host") or b"").decode("latin-1"), path
        )
        if route is not None and is_websocket_request(request):
            return self._ws
        if self._http is not None:
            # an upgrade no route takes may still be for a resource that
            # calls upgrade(request) itself
            child = self._http_child(name, request)
            if child is not None:
                return child
        if route is not None and route.path == path:
            return self._ws  # a WebSocket path asked for without upgrade: 426
        return self._not_found

    def _http_child(self, name: bytes, request: Request) -> Any:
        """The HTTP tree's resource for ``name``, or None for "not found"."""
        http = self._http
        if getattr(http, "isLeaf", False):
            return http
        children = getattr(http, "children", {})
        if name in children:
            return children[name]
        if type(http).getChild is Resource.getChild:
            return None  # a plain Resource has nothing else to offer
        child = http.getChildWithDefault(name, request)
        code = getattr(child, "code", getattr(child, "_code", None))
        return None if code == 404 else child

    def render(self, request: Request) -> Any:
        return self.getChildWithDefault(b"", request).render(request)


def site_root(
    factory: WebSocketServerFactory,
    http: IResource | None = None,
    *,
    before_request: BeforeRequest | None = None,
    empty_404: bool = False,
) -> Resource:
    """The root resource of a same-port HTTP + WebSocket site.

    Args:
        factory: The WebSocket factory (its router decides WebSocket paths).
        http: The resource tree for plain HTTP (static files, pages, APIs).
        before_request: Called with every request before dispatch; return
            None to go on, or a resource to answer with (an error page, a
            redirect) instead.
        empty_404: Answer unknown paths with 404 and an empty body.
    """
    from twisted.web.pages import notFound

    not_found: IResource = EmptyPage(404) if empty_404 else notFound()
    return _Root(factory, http, before_request, not_found)


class BoundedHTTPChannel(HTTPChannel):
    """An HTTP channel whose request heads must arrive within a time limit.

    ``twisted.web``'s own timeout is an idle timeout that every byte resets,
    so a client trickling a header a byte at a time (slowloris) would hold the
    connection for ever. Here each request head, from the connection's start
    or the previous request's end, must be complete within ``head_timeout``
    seconds, as the WebSocket handshake must be within
    ``open_handshake_timeout``.
    """

    head_timeout: float = 10.0
    clock: Any = None
    _head_call: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def _arm(self) -> None:
        if self.head_timeout and self.clock is not None and self._head_call is None:
            self._head_call = self.clock.callLater(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_call is not None:
            if self._head_call.active():
                self._head_call.cancel()
            self._head_call = None

    def allHeadersReceived(self) -> None:
        self._disarm()
        super().allHeadersReceived()

    def requestDone(self, request: Request) -> None:
        super().requestDone(request)
        if self.transport is not None:
            self._arm()

    def _expired(self) -> None:
        self._head_call = None
        if self.transport is not None:
            _log.info(
                "dropping {peer}: request head too slow", peer=self.transport.getPeer()
            )
            self.transport.abortConnection()

    def connectionLost(self, reason: Any) -> None:
        self._disarm()
        super().connectionLost(reason)
