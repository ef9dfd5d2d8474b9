"""The WebSocket side of ``twisted.web``: which requests are upgrades, which
route takes them, and moving a request's connection to a wsplugin protocol
(:func:`take_over`, for :class:`WebSocketResource` and ``upgrade()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.protocols.policies import ProtocolWrapper
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from wsplugin._gate import hand_over
from wsplugin._routing import Route, Router
from wsplugin.handshake import version_problem

if TYPE_CHECKING:
    from wsplugin.factory import WebSocketServerFactory

__all__ = [
    "WebSocketResource",
    "is_websocket_request",
    "old_http",
    "request_route",
    "take_over",
    "wants_upgrade",
    "websocket_route",
]


def is_websocket_request(request: Request) -> bool:
    """Whether ``request`` asks for a WebSocket upgrade (``Upgrade: websocket``)."""
    upgrade_header = request.getHeader(b"upgrade") or b""
    return b"websocket" in [t.strip().lower() for t in upgrade_header.split(b",")]


def old_http(request: Request) -> bytes:
    """Answer an upgrade sent with HTTP/1.0 (or lower) with 400: RFC 6455
    (4.1) requires HTTP/1.1 or higher (:func:`wsplugin.handshake.version_problem`)."""
    request.setResponseCode(400)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"400 Bad Request: a WebSocket handshake needs HTTP/1.1 or higher.\n"


def take_over(request: Request, factory: WebSocketServerFactory, route: Route) -> Any:
    """Move the request's connection to a new wsplugin protocol and replay the
    request head into it, followed by any bytes the client sent behind the
    head (frames pipelined in the same packet); returns the protocol.

    ``route`` is the route resolved from the very path ``before_request``
    saw; the protocol uses it as it is and never resolves the path again.
    """
    channel = request.channel
    transport = channel.transport
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.take_over_from_http(route)
    take_rest = getattr(channel, "take_rest", None)  # a BoundedHTTPChannel
    if take_rest is not None:
        rest = take_rest()
    else:
        # any HTTPChannel is a LineReceiver: what follows the head is there
        rest = channel.clearLineBuffer()
    channel.setTimeout(None)
    channel.transport = None
    hand_over(channel, protocol)  # the connection's counted slot (max_connections)
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
    protocol.dataReceived(b"\r\n".join(head) + b"\r\n\r\n" + rest)
    if hasattr(transport, "resumeProducing"):
        transport.resumeProducing()  # the HTTP channel paused reading
    return protocol


def wants_upgrade(request: Request, route: Route | None) -> bool:
    """Whether ``request`` goes to a WebSocket route: it asks for an upgrade,
    or the route has ``skip_upgrade_check`` and the request carries a
    ``Sec-WebSocket-Key`` (which only a WebSocket client sends: plain GETs
    for pages and files still reach the HTTP resources)."""
    if is_websocket_request(request):
        return True
    return (
        route is not None
        and route.config.skip_upgrade_check
        and request.getHeader(b"sec-websocket-key") is not None
    )


def request_route(router: Router, request: Request) -> Route | None:
    """The route ``router`` gives ``request``, by its ``Host`` and path (the
    path exactly as ``before_request`` sees it)."""
    return router.resolve(
        (request.getHeader(b"host") or b"").decode("latin-1"),
        request.path.decode("latin-1"),
    )


def websocket_route(router: Router, request: Request) -> Route | None:
    """The WebSocket route that takes ``request`` on the same-port site, or
    None when the request goes to the HTTP resources instead."""
    route = request_route(router, request)
    return route if route is not None and wants_upgrade(request, route) else None


class WebSocketResource(Resource):
    """A ``twisted.web`` leaf resource serving wsplugin WebSocket routes.

    Args:
        factory: The factory whose routes, events and options apply (usually
            ``server.factory``).
        route: Serve this route whatever the request path; by default the
            route is resolved once, here, from the request's host and path
            (``request.path``, as a ``before_request`` hook sees it), and
            the connection keeps that route.

    A request without ``Upgrade: websocket`` gets 426 Upgrade Required
    (unless its route has ``skip_upgrade_check`` and the request carries a
    ``Sec-WebSocket-Key``); an upgrade sent with HTTP/1.0 gets 400; one no
    route serves gets 404. A WebSocket
    handshake with a body gets 400 before the body is read (see
    :func:`wsplugin.handshake.body_problem`).
    """

    isLeaf = True

    def __init__(
        self, factory: WebSocketServerFactory, route: Route | None = None
    ) -> None:
        super().__init__()
        self.factory = factory
        self.route = route

    def resolve(self, request: Request) -> Route | None:
        """The route this request goes to (the fixed one, or by host and path)."""
        if self.route is not None:
            return self.route
        return request_route(self.factory.router, request)

    def render(self, request: Request) -> Any:
        route = self.resolve(request)
        if not wants_upgrade(request, route) or request.channel.transport is None:
            request.setResponseCode(426, b"Upgrade Required")
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"426 Upgrade Required: this is a WebSocket endpoint.\n"
        if version_problem(request.clientproto.decode("latin-1")) is not None:
            return old_http(request)
        if route is None:
            request.setResponseCode(404)
            request.setHeader(b"content-length", b"0")
            return b""
        take_over(request, self.factory, route)
        return NOT_DONE_YET
