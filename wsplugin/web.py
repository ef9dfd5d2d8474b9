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

from collections.abc import Callable, Sequence
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import combinedLogFormatter
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from wsplugin._events import as_deferred
from wsplugin._httpchannel import BoundedHTTPChannel, BoundedSite, SiteRequest
from wsplugin._pending import PendingResource
from wsplugin._routing import Route
from wsplugin._static import EmptyPage, File, StaticFiles
from wsplugin._upgrade import (
    WebSocketResource,
    is_websocket_request,
    old_http,
    request_route,
    take_over,
    wants_upgrade,
    websocket_route,
)
from wsplugin.config import ServerConfig
from wsplugin.connection import Connection
from wsplugin.errors import WSPluginError
from wsplugin.handshake import version_problem

if TYPE_CHECKING:
    from wsplugin.factory import WebSocketServerFactory

__all__ = [
    "BoundedHTTPChannel",
    "BoundedSite",
    "EmptyPage",
    "File",
    "PendingResource",
    "SiteRequest",
    "StaticFiles",
    "WebSocketResource",
    "access_log_formatter",
    "is_websocket_request",
    "make_site",
    "redact_query",
    "request_route",
    "site_factory",
    "site_root",
    "upgrade",
    "websocket_route",
]

_log = Logger()

BeforeRequest = Callable[[Request], Any]


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
            it. By default the request's site has a factory of its own, with
            default options, made on first use (:func:`site_factory`).
        handler: Optional handler for events (``on_disconnect``, ...). Without
            ``on_message``/``on_binary`` the connection is read with
            ``receive()``.
        **options: :class:`~wsplugin.ServerConfig` options for this connection.

    Returns:
        The connection (open, unless the handshake was refused), or None
        after a 400 answer when the request is not a WebSocket upgrade (or
        is one sent with HTTP/1.0).
    """
    if not is_websocket_request(request) or request.channel.transport is None:
        request.setResponseCode(400)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.write(b"400 Bad Request: a WebSocket upgrade was expected.\n")
        request.finish()
        return None
    if version_problem(request.clientproto.decode("latin-1")) is not None:
        request.write(old_http(request))  # HTTP/1.0: 400 (RFC 6455, 4.1)
        request.finish()
        return None
    if server is not None:
        factory = getattr(server, "factory", server)
    else:
        factory = site_factory(request)
    config = factory.config.for_route(**options) if options else factory.config
    path = request.path.decode("latin-1")
    route = Route("*", path, handler, config)
    protocol = take_over(request, factory, route)
    return protocol.connection if protocol.connection is not None else None


SITE_FACTORY_ATTRIBUTE = "wsplugin_factory"
"""The attribute of a ``twisted.web`` site that holds its :func:`site_factory`."""


def site_factory(request: Request) -> WebSocketServerFactory:
    """The factory ``upgrade(request)`` uses when no ``server=`` is given.

    Each ``twisted.web`` site gets one, with default options, on its
    reactor, made on first use and kept on the site itself (as its
    ``wsplugin_factory`` attribute): it lives and goes with the site, and no
    module-level state holds it (or the site) for ever. Pass ``server=`` to
    choose the options and to reach the connections with ``broadcast``.

    Raises:
        WSPluginError: the request belongs to no site (a hand-made request):
            pass ``server=``.
    """
    site = getattr(request, "site", None) or getattr(request.channel, "site", None)
    if site is None:
        raise WSPluginError(
            "upgrade(request) without server= needs the request's twisted.web "
            "site; pass server=WebSocketServer(...) (or its factory)"
        )
    factory = getattr(site, SITE_FACTORY_ATTRIBUTE, None)
    if factory is None:
        from wsplugin.factory import WebSocketServerFactory

        factory = WebSocketServerFactory(ServerConfig(), reactor=site.reactor)
        setattr(site, SITE_FACTORY_ATTRIBUTE, factory)
    return factory


class _Root(Resource):
    """Dispatches each request: the hook first, then WebSocket or HTTP.

    On a :class:`BoundedSite` this runs as soon as the request head is
    complete, before any body byte is read (see :class:`SiteRequest`).
    """

    def __init__(
        self,
        factory: WebSocketServerFactory,
        http: IResource | None,
        before_request: BeforeRequest | None,
        not_found: IResource,
    ) -> None:
        super().__init__()
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
            if isinstance(answer, Deferred) or isawaitable(answer):
                # decided later: the request waits (its body and the
                # connection's next requests too), then goes on from here
                d = as_deferred(answer)
                d.addCallback(self._after_hook, name, request)
                d.addErrback(_hook_failed)
                return PendingResource(d)
            if answer is not None:
                return IResource(answer)
        return self._dispatch(name, request)

    def _after_hook(self, answer: Any, name: bytes, request: Request) -> Any:
        if answer is not None:
            return IResource(answer)
        return self._dispatch(name, request)

    def _dispatch(self, name: bytes, request: Request) -> Any:
        # resolved once, from the path before_request saw; the connection
        # keeps this route (the protocol never resolves it again)
        path = request.path.decode("latin-1")
        route = request_route(self._factory.router, request)
        if route is not None and wants_upgrade(request, route):
            return WebSocketResource(self._factory, route)
        if self._http is not None:
            # an upgrade no route takes may still be for a resource that
            # calls upgrade(request) itself
            child = self._http_child(name, request)
            if child is not None:
                return child
        if route is not None and route.path == path:
            # a WebSocket path asked for without upgrade: 426
            return WebSocketResource(self._factory, route)
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


def _hook_failed(failure: Failure) -> Resource:
    _log.failure("before_request failed", failure)
    return EmptyPage(500)


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


def make_site(
    factory: WebSocketServerFactory,
    http: Any = None,
    *,
    static: str | None = None,
    before_request: BeforeRequest | None = None,
    empty_404: bool = False,
    http_auth: Any = None,
    public_paths: Sequence[str] = (),
    static_options: dict[str, bool] | None = None,
) -> BoundedSite:
    """The same-port site of a :class:`~wsplugin.WebSocketServer`: HTTP and
    WebSocket on one port (the server's ``http``, ``static``,
    ``before_request``, ``empty_404`` and ``http_auth`` arguments).

    Static files (:class:`StaticFiles`, with ``static_options``) answer
    under ``http`` (which then answers ``/``); ``http_auth`` guards every
    request except ``public_paths`` and the upgrades a WebSocket route takes
    (those are checked by the route's own ``auth``); each connection is a
    :class:`BoundedHTTPChannel` with the factory's limits, ``on_connect``
    and rate-limited log.
    """
    cfg, clock = factory.config, factory.clock
    if http_auth is not None:
        from wsplugin.auth import site_guard

        router = factory.router

        def route_takes(request: Any) -> bool:  # the route's own auth checks it
            return websocket_route(router, request) is not None

        before_request = site_guard(
            http_auth,
            public_paths=public_paths,
            skip=route_takes,
            then=before_request,
            trusted_proxies=cfg.trusted_proxies,
        )
    if static is not None:
        files = StaticFiles(static, **(static_options or {}))
        if empty_404:
            files.childNotFound = EmptyPage(404)
        if http is not None:
            files.putChild(b"", http)  # the resource answers "/"
        http = files
    site = BoundedSite(
        site_root(factory, http, before_request=before_request, empty_404=empty_404),
        logFormatter=access_log_formatter,
        reactor=clock,
    )
    site.displayTracebacks = False

    def channel() -> BoundedHTTPChannel:
        made = BoundedHTTPChannel()
        made.head_timeout = cfg.open_handshake_timeout
        made.body_timeout = cfg.request_body_timeout
        made.max_request_body = cfg.max_request_body
        made.clock = clock
        made.on_connect = factory.on_connect
        made.log_limited = factory.log_limited
        return made

    site.protocol = channel
    return site


def access_log_formatter(timestamp: str, request: Any) -> str:
    """The access log's line for ``request``, without query strings.

    Twisted's combined log format, except that the query of the request
    target and of the ``Referer`` header is replaced by ``?[redacted]``: a
    query can hold a token (``?token=...``, :class:`~wsplugin.auth.QueryTokenAuth`),
    a password sent in the wrong place, or a session id, and log files are
    read by more people than the server's secrets should be.
    """
    return combinedLogFormatter(timestamp, _RedactedRequest(request))


def redact_query(uri: bytes) -> bytes:
    """``uri`` with any query string replaced by ``?[redacted]``."""
    path, sep, _query = uri.partition(b"?")
    return path + b"?[redacted]" if sep else path


class _RedactedRequest:
    """What ``combinedLogFormatter`` reads from a request, queries redacted."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.method = request.method
        self.uri = redact_query(request.uri)
        self.clientproto = request.clientproto
        self.code = request.code
        self.sentLength = request.sentLength

    def getClientAddress(self) -> Any:
        return self._request.getClientAddress()

    def getHeader(self, name: bytes) -> bytes | None:
        value = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return redact_query(value)
        return value
