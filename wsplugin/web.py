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

import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from http import HTTPStatus
from io import BytesIO
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote_to_bytes

from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, combinedLogFormatter
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from wsplugin._events import as_deferred
from wsplugin._gate import hand_over
from wsplugin._routing import Route, Router
from wsplugin.config import MiB, ServerConfig
from wsplugin.connection import Connection
from wsplugin.handshake import target_problem

if TYPE_CHECKING:
    from wsplugin.factory import WebSocketServerFactory

__all__ = [
    "BoundedHTTPChannel",
    "BoundedSite",
    "EmptyPage",
    "File",
    "SiteRequest",
    "StaticFiles",
    "WebSocketResource",
    "access_log_formatter",
    "is_websocket_request",
    "make_site",
    "redact_query",
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


class StaticFiles(File):
    """``twisted.web.static.File`` with safe defaults for a public directory.

    ``File`` as it is follows symbolic links wherever they point (a link to
    ``..`` serves the parent directory, password files included), lists any
    directory without an ``index.html``, and serves dotfiles (``.env``,
    ``.git/``, ``.htpasswd``). Here each is off unless turned on:

    Args:
        path: The directory (or file) to serve.
        listing: List the content of directories that have no index file.
            Off: such a directory gets 403.
        dotfiles: Serve names starting with ``.``, at any depth. Off: 404.
        follow_symlinks: Serve paths whose real location (symbolic links
            resolved, :func:`os.path.realpath`) is outside the served
            directory. Off: 404. Links that stay inside are always followed.

    Everything else (content types, ``Range`` requests, index files) is
    ``File``'s own behaviour.
    """

    def __init__(
        self,
        path: str,
        defaultType: str = "text/html",
        ignoredExts: Any = (),
        registry: Any = None,
        *,
        listing: bool = False,
        dotfiles: bool = False,
        follow_symlinks: bool = False,
    ) -> None:
        super().__init__(path, defaultType, ignoredExts, registry)
        self.listing = listing
        self.dotfiles = dotfiles
        self.follow_symlinks = follow_symlinks
        self.root = os.path.realpath(path)

    def getChild(self, path: bytes, request: Request) -> Any:
        """A file or directory under this one, unless a default forbids it."""
        if not self.dotfiles and path.startswith(b"."):
            return self.childNotFound
        child = super().getChild(path, request)
        if (
            isinstance(child, File)
            and not self.follow_symlinks
            and not _inside(child.path, self.root)
        ):
            _log.info(
                "static: {path!r} resolves outside {root!r}: 404",
                path=child.path,
                root=self.root,
            )
            return self.childNotFound
        return child

    def directoryListing(self) -> Any:
        """The listing when ``listing`` is on; 403 otherwise."""
        if self.listing:
            return super().directoryListing()
        if isinstance(self.childNotFound, EmptyPage):
            return EmptyPage(403)
        from twisted.web.pages import forbidden

        return forbidden("Forbidden", "Directory listing is off.")

    def createSimilarFile(self, path: str) -> Any:
        """A file under this one, with the same options and root."""
        similar = super().createSimilarFile(path)
        similar.listing = self.listing
        similar.dotfiles = self.dotfiles
        similar.follow_symlinks = self.follow_symlinks
        similar.root = self.root
        return similar


def _inside(path: str, root: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _take_over(request: Request, factory: WebSocketServerFactory, route: Route) -> Any:
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
    if isinstance(channel, BoundedHTTPChannel):
        rest = channel.take_rest()
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


def _wants_upgrade(request: Request, route: Route | None) -> bool:
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
    return route if route is not None and _wants_upgrade(request, route) else None


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
    ``Sec-WebSocket-Key``); one no route serves gets 404. A WebSocket
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
        if not _wants_upgrade(request, route) or request.channel.transport is None:
            request.setResponseCode(426, b"Upgrade Required")
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"426 Upgrade Required: this is a WebSocket endpoint.\n"
        if route is None:
            request.setResponseCode(404)
            request.setHeader(b"content-length", b"0")
            return b""
        _take_over(request, self.factory, route)
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
            if answer is not None:
                return IResource(answer)
        # resolved once, from the path before_request saw; the connection
        # keeps this route (the protocol never resolves it again)
        path = request.path.decode("latin-1")
        route = request_route(self._factory.router, request)
        if route is not None and _wants_upgrade(request, route):
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


def _limit(resource: Any, name: str, default: float) -> float:
    """A resource's own ``max_request_body`` / ``request_body_timeout``, or
    the server's. Only the resource that answers the request is consulted."""
    value = getattr(resource, name, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        _log.error(
            "{resource!r}.{name} must be a number >= 0, not {value!r}; "
            "using the server's {default}",
            resource=resource,
            name=name,
            value=value,
            default=default,
        )
        return default
    return value


class SiteRequest(Request):
    """A ``twisted.web`` request whose resource is known before its body.

    ``twisted.web`` finds a request's resource only once the whole body has
    arrived, so it cannot know that an upload resource may take 100 MiB and
    every other one 1 MiB; meanwhile it spools any body, of any declared
    length, into a temporary file. :class:`BoundedHTTPChannel` instead calls
    :meth:`head_received` as soon as the head is complete: the target is
    checked (:func:`~wsplugin.handshake.target_problem`, 400), the resource
    tree is walked once (``before_request`` runs here), and the body limits
    are taken from the resource found:

    * ``max_request_body`` (bytes, 0 for no limit) and
      ``request_body_timeout`` (seconds, 0 for none): attributes of the
      resource that answers (class or instance attributes); without them the
      server's options apply. Only that resource's requests get its limits,
      so an upload resource raises them for itself only::

          class Upload(Resource):
              isLeaf = True
              max_request_body = 200 * MiB
              request_body_timeout = 600

    * a declared ``Content-Length`` over the limit gets 413 before any body
      byte is read or stored; a chunked body is cut with 413 where it crosses
      the limit; a body still incomplete after the timeout gets 408.

    The walk is not repeated: :meth:`BoundedSite.getResourceFor` hands the
    same resource to ``render``. A ``before_request`` hook and ``getChild``
    methods therefore see the head only (``request.content`` is not there
    yet; ``request.args`` holds the query); ``render`` sees the body.
    """

    body_timeout: float = 0.0
    _found: tuple[Any, ...] | None = None
    _body_limit = 0
    _received = 0
    _over = False

    def head_received(self, line: bytes, length: int | None) -> tuple[int, str] | None:
        """Check the head, find the resource, apply its body limits.

        Args:
            line: The request line, as received.
            length: The declared body length; None for a chunked body.

        Returns:
            None to go on, or ``(status, reason)`` to refuse the request.
        """
        channel = self.channel
        try:
            method, target, version = line.split(b" ")
        except ValueError:
            return 400, "malformed request line"
        self.method, self.uri, self.clientproto = method, target, version
        path, _, query = target.partition(b"?")
        self.path = path
        self.args = parse_qs(query, keep_blank_values=True)
        problem = target_problem(
            target.decode("latin-1"), allow_asterisk=method == b"OPTIONS"
        )
        if problem is not None:
            return 400, problem
        self.parseCookies()
        resource: Any = None
        if path != b"*":
            self.site = channel.site
            self.prepath = []
            self.postpath = [unquote_to_bytes(p) for p in path[1:].split(b"/")]
            try:
                resource = self.site.getResourceFor(self)
            except Exception:
                self._found = (None, None, None, None, Failure())
            else:
                self._found = (
                    resource,
                    self.prepath,
                    self.postpath,
                    self.sitepath,
                    None,
                )
        if (
            isinstance(resource, WebSocketResource)
            and length != 0
            and _wants_upgrade(self, resource.route)
        ):
            return 400, "a WebSocket handshake has no body"
        limit = int(_limit(resource, "max_request_body", channel.max_request_body))
        self.body_timeout = _limit(
            resource, "request_body_timeout", channel.body_timeout
        )
        if limit and length is not None and length > limit:
            return 413, f"declared body of {length} bytes, over {limit}"
        self._body_limit = limit
        return None

    def take_found(self) -> Any:
        """The resource found by :meth:`head_received` (once), or None."""
        found, self._found = self._found, None
        if found is None:
            return None
        resource, self.prepath, self.postpath, self.sitepath, failure = found
        if failure is not None:
            failure.raiseException()
        return resource

    def gotLength(self, length: int | None) -> None:
        """Where the body goes: memory up to 100 kB declared, else a temporary
        file (as ``twisted.web`` does), now only for bodies within the limit."""
        if length is not None and length < 100_000:
            self.content = BytesIO()
        else:
            self.content = tempfile.TemporaryFile()

    def handleContentChunk(self, data: bytes) -> None:
        """Store a piece of the body, or cut the request at the limit (413)."""
        if self._over:
            return
        self._received += len(data)
        limit = self._body_limit
        if limit and self._received > limit:
            self._over = True
            if self.content is not None:
                self.content.close()
            channel = self.channel
            if isinstance(channel, BoundedHTTPChannel):
                channel.refuse(413, f"body over {limit} bytes")
            else:  # pragma: no cover - SiteRequest always runs on our channel
                channel.loseConnection()
            return
        self.content.write(data)


class BoundedSite(Site):
    """A ``twisted.web`` site for :class:`SiteRequest` and
    :class:`BoundedHTTPChannel`: the resource found from the request head is
    the one that renders the request."""

    requestFactory = SiteRequest

    def getResourceFor(self, request: Any) -> Any:
        """The resource found when the head arrived, else a fresh walk."""
        if isinstance(request, SiteRequest):
            resource = request.take_found()
            if resource is not None:
                request.site = self
                return resource
        return super().getResourceFor(request)


class BoundedHTTPChannel(HTTPChannel):
    """An HTTP channel that bounds each request in time and size, and asks
    the server's ``on_connect`` before it reads a byte.

    * **Head time**: ``twisted.web``'s own timeout is an idle timeout that
      every byte resets, so a client trickling a header a byte at a time
      (slowloris) would hold the connection for ever. Here each request
      head, from the connection's start or the previous request's end, must
      be complete within ``head_timeout`` seconds (``open_handshake_timeout``,
      10 s), or the connection is aborted.
    * **Body size and time**: with :class:`SiteRequest`, the body limits of
      the resource that answers (``max_request_body``, 1 MiB, and
      ``request_body_timeout``, 30 s, by default) apply from the end of the
      head: 413 for a body over the limit (declared or chunked), 408 for one
      too slow. The answer is written, and the connection closed, without
      reading the rest of the body.
    * **on_connect**: the server handler's ``on_connect(peer)`` runs for every
      accepted connection, before any byte is processed, exactly as on a
      WebSocket-only server: False (or a Deferred firing False) closes the
      connection; while a Deferred is pending nothing is read.
    * **Pipelined data**: bytes received behind a request head that is then
      taken over by a WebSocket protocol (frames sent with the upgrade) are
      kept for it (:meth:`take_rest`).
    """

    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_request_body: int = MiB
    clock: Any = None
    on_connect: Callable[[Any], Any] | None = None
    log_limited: Callable[..., None] | None = None
    _head_call: Any = None
    _body_call: Any = None
    _abort_call: Any = None
    _refused = False
    _awaiting_line = True
    _request_line = b""
    _handling = False
    _held: list[bytes] | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()
        if self.on_connect is not None:
            self._ask_on_connect(self.on_connect)

    # -- on_connect ----------------------------------------------------------

    def _ask_on_connect(self, hook: Callable[[Any], Any]) -> None:
        peer = self.transport.getPeer()
        try:
            result = hook(peer)
        except Exception:
            _log.failure("on_connect raised; dropping {peer}", peer=peer)
            self._drop(abort=True)
            return
        if isinstance(result, bool) or result is None:
            if result is False:
                self._refused_by_hook(peer)
            return
        d = as_deferred(result)
        paused = not d.called
        if paused:
            self.transport.pauseProducing()

        def decided(allowed: Any) -> None:
            if allowed is False:
                self._refused_by_hook(peer)
            elif paused and self.transport is not None and not self._refused:
                self.transport.resumeProducing()

        def failed(failure: Failure) -> None:
            _log.failure("on_connect failed; dropping {peer}", failure, peer=peer)
            self._drop(abort=True)

        d.addCallbacks(decided, failed)

    def _refused_by_hook(self, peer: Any) -> None:
        _log.info("on_connect refused {peer}", peer=peer)
        self._drop(abort=False)

    def _drop(self, abort: bool) -> None:
        self._refused = True
        self._disarm()
        if self.transport is None:
            return
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    # -- request heads and bodies -----------------------------------------

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_line and line:
            self._awaiting_line = False
            self._request_line = line
        super().lineReceived(line)

    def _arm(self) -> None:
        if self.head_timeout and self.clock is not None and self._head_call is None:
            self._head_call = self.clock.callLater(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_call is not None:
            if self._head_call.active():
                self._head_call.cancel()
            self._head_call = None

    def _cancel_body_timer(self) -> None:
        if self._body_call is not None:
            if self._body_call.active():
                self._body_call.cancel()
            self._body_call = None

    def allHeadersReceived(self) -> None:
        self._disarm()
        request = self.requests[-1]
        timeout = self.body_timeout
        if isinstance(request, SiteRequest):
            refusal = request.head_received(self._request_line, self.length)
            if refusal is not None:
                self.refuse(*refusal)
                return  # no gotLength: nothing of the body is stored
            timeout = request.body_timeout
        super().allHeadersReceived()
        if self.length != 0 and timeout and self.clock is not None:
            self._body_call = self.clock.callLater(timeout, self._body_expired)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._cancel_body_timer()
        self._awaiting_line = True
        self._handling = True
        super().allContentReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._handling:
            # twisted.web holds bytes received while a request is handled,
            # for the next request; a copy is kept in case a WebSocket
            # protocol takes the connection over instead (take_rest)
            if self._held is None:
                self._held = []
            self._held.append(data)
        super().rawDataReceived(data)

    def take_rest(self) -> bytes:
        """Everything received after the current request, for the protocol
        that takes the connection over; the channel forgets it."""
        held, self._held = self._held or [], None
        return bytes(self.clearLineBuffer()) + b"".join(held)

    def requestDone(self, request: Request) -> None:
        self._handling = False
        self._held = None
        if self.persistent and self.transport is not None:
            # armed before the next pipelined head is parsed (in the call
            # below), so a complete one disarms it again at once
            self._arm()
        super().requestDone(request)

    def refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` with an empty body and close, reading no more of
        this connection (the rest of a refused body is never read)."""
        if self._refused or self.transport is None:
            return
        self._refused = True
        self._disarm()
        self._cancel_body_timer()
        peer = self.transport.getPeer()
        log = self.log_limited
        if log is not None:
            log(
                "refusing an HTTP request from {peer} with {status}: {reason}",
                peer=getattr(peer, "host", peer),
                status=status,
                reason=reason,
            )
        # RFC 9110's name for 413 (Python before 3.13 has the old one)
        phrase = (
            b"Content Too Large"
            if status == 413
            else HTTPStatus(status).phrase.encode("ascii")
        )
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            % (status, phrase)
        )
        self.loseConnection()
        if self.clock is not None:
            # a peer that never reads would keep the closing connection
            self._abort_call = self.clock.callLater(5.0, self.transport.abortConnection)

    def _expired(self) -> None:
        self._head_call = None
        if self.transport is not None:
            _log.info(
                "dropping {peer}: request head too slow", peer=self.transport.getPeer()
            )
            self.transport.abortConnection()

    def _body_expired(self) -> None:
        self._body_call = None
        self.refuse(408, "request body too slow")

    def connectionLost(self, reason: Any) -> None:
        self._disarm()
        self._cancel_body_timer()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        super().connectionLost(reason)
