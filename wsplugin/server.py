"""The component: a Twisted service that listens and serves WebSocket routes.

:class:`WebSocketServer` is a :class:`~twisted.application.service.MultiService`,
so it composes into any Twisted application (``server.setServiceParent(app)``)
and into ``twistd``. It can also be driven directly like the seed components:
``server.active = True`` (TMS/sgc ``Active``), or ``start()``, ``stop()`` and
``restart()``, which return Deferreds.
"""

from __future__ import annotations

import socket
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from autobahn import websocket as _autobahn_websocket
from twisted.application.service import MultiService
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import serverFromString, wrapServerTLS
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._events import as_deferred
from wsplugin._gate import ConnectionGate
from wsplugin._routing import Route
from wsplugin.config import ServerConfig
from wsplugin.connection import Connection, ConnectionState
from wsplugin.errors import ConfigError
from wsplugin.factory import Connections, WebSocketServerFactory
from wsplugin.handshake import accepts_other_sites
from wsplugin.tls import (
    PeerCertificate,
    ServerTLS,
    TLSOptions,
    endpoint_is_tls,
    on_hangup,
    tls_wrappable,
)

__all__ = ["WebSocketServer", "listener_lost"]

Message = str | bytes

_SO_ACCEPTCONN = getattr(socket, "SO_ACCEPTCONN", None)


def listener_lost(port: Any) -> str | None:
    """Why the listening ``port`` no longer accepts connections, or None.

    Twisted's TCP and UNIX ports (``tcp.Port``, its subclasses) expose the
    listening ``socket`` and a ``connected`` flag; other ports are only
    judged by the flag.
    """
    if getattr(port, "connected", True) is False:
        return "the port was closed after an error"
    sock = getattr(port, "socket", None)
    if sock is None or _SO_ACCEPTCONN is None:
        return None
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, _SO_ACCEPTCONN)
    except OSError as e:
        return f"its socket is unusable: {e.strerror or e}"
    return None if accepting else "its socket no longer accepts connections"


class WebSocketServer(MultiService):
    """A WebSocket server listening on one or more Twisted endpoint strings.

    Args:
        handler: The default handler: it serves every host and path not
            registered otherwise, and receives the server events
            (``on_connect``, ``on_startup``, ``on_shutdown``). May be None when
            routes are registered with :meth:`register_handler`.
        path: Serve ``handler`` only on this path, for any host; other paths
            get 404. By default it serves every path.
        auth: Authenticator for ``handler``'s route (:mod:`wsplugin.auth`).
        http: A ``twisted.web`` resource for plain HTTP on the same port (seed
            sgc ``TsgcWebSocketHTTPServer``); upgrades still reach the
            WebSocket routes.
        static: A directory served over HTTP on the same port
            (:class:`wsplugin.web.StaticFiles`: content types and Range
            requests; no directory listing, no dotfiles, nothing whose real
            path leaves the directory); with ``http`` too, ``http`` answers
            ``/``.
        static_listing: List directories that have no index file.
        static_dotfiles: Serve names starting with ``.``.
        static_follow_symlinks: Serve paths whose symbolic links lead out of
            the ``static`` directory.
        before_request: Called with every HTTP request (upgrades included)
            before dispatch (sgc ``OnBeforeCommand``): return None to go on,
            or a ``twisted.web`` resource to answer with instead.
        empty_404: Answer unknown HTTP paths with 404 and an empty body.
        http_auth: An authenticator (:mod:`wsplugin.auth`) for every plain
            HTTP request of the same-port site: static files, ``http``, and
            upgrades no route takes all need it (401/403 with an empty body
            before anything is looked up), except ``public_paths``. Checked
            before ``before_request``. Upgrades that a route takes are
            checked by that route's ``auth`` instead. Unused without a site
            (``http``, ``static``, ``before_request`` or ``empty_404``).
        public_paths: Paths ``http_auth`` lets through: ``"/login"`` is
            that path, ``"/assets/"`` everything under it.
        endpoints: Endpoint strings to listen on (``tcp:8888``,
            ``ssl:443:privateKey=key.pem``, ``unix:/run/ws.sock``,
            ``systemd:domain=INET:index=0``...).
        tls: TLS for every endpoint (:class:`~wsplugin.TLSOptions`:
            certificate, key, chain, minimum version, ciphers, ALPN, client
            certificates). The endpoints must then be ``tcp:``, ``tcp6:``,
            ``unix:`` or ``systemd:`` ones; :meth:`reload_tls` re-reads the
            files.
        config: Server options; keyword ``options`` are applied on top.
        reactor: The reactor (the global one if None).
        **options: Any :class:`~wsplugin.ServerConfig` option by name.

    Example::

        server = WebSocketServer(Echo(), endpoints=["tcp:8888"])
        server.setServiceParent(application)
    """

    log = Logger()

    exit_on_listen_failure = False
    """End the process (exit status 1) when a port cannot be bound at start
    and the watchdog is off: ``twistd ws`` sets it, so a server that cannot
    listen does not run on without listening. Library users get a failed
    :meth:`start` Deferred instead (or :meth:`run`'s exit status)."""

    _privileged_start = False

    def __init__(
        self,
        handler: Any = None,
        *,
        path: str | None = None,
        endpoints: Sequence[str] = ("tcp:8888",),
        config: ServerConfig | None = None,
        reactor: Any = None,
        auth: Any = None,
        http: Any = None,
        static: str | None = None,
        before_request: Callable[[Any], Any] | None = None,
        empty_404: bool = False,
        http_auth: Any = None,
        public_paths: Sequence[str] = (),
        static_listing: bool = False,
        static_dotfiles: bool = False,
        static_follow_symlinks: bool = False,
        tls: TLSOptions | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self.tls: ServerTLS | None = None
        if tls is not None:
            for description in endpoints:
                tls_wrappable(description)
            self.tls = ServerTLS(tls)
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.config = (config or ServerConfig()).replace(**options)
        self.handler = handler
        self.endpoints: list[str] = list(endpoints)
        self.factory = WebSocketServerFactory(
            self.config, reactor=reactor, owner=self, server_handler=handler
        )
        self.ports: list[IListeningPort] = []
        self._starting: Deferred[Any] | None = None
        self._start_result: Any = None
        self._start_waiters: list[Deferred[WebSocketServer]] = []
        self._stopping: Deferred[None] | None = None
        self._attempts = 0
        self._start_pending = False
        self._wanted = False
        self._watchdog_call: Any = None
        # the listener watchdog (see _check_listeners)
        self._bound: dict[int, IListeningPort] = {}
        self._lost: list[int] = []
        self._lost_attempts = 0
        self._listener_check: LoopingCall | None = None
        self._relisten_call: Any = None
        self._relistening = False
        self._closing: list[Deferred[Any]] = []
        self._generation = 0  # bumped when listeners are (un)watched anew
        if handler is not None:
            if path is None:
                self.register_handler(
                    "*", "*", handler, default_host=True, default_path=True, auth=auth
                )
            else:
                self.register_handler("*", path, handler, default_host=True, auth=auth)
        if http_auth is not None and (
            http is not None or static is not None or before_request or empty_404
        ):
            from wsplugin.auth import site_guard
            from wsplugin.web import websocket_route

            router = self.factory.router

            def route_takes(request: Any) -> bool:  # the route's own auth checks it
                return websocket_route(router, request) is not None

            before_request = site_guard(
                http_auth,
                public_paths=public_paths,
                skip=route_takes,
                then=before_request,
                trusted_proxies=self.config.trusted_proxies,
            )
        self.site: Any = None
        inner: Any = self.factory
        if http is not None or static is not None or before_request or empty_404:
            self.site = inner = self._make_site(
                http,
                static,
                before_request,
                empty_404,
                static_options={
                    "listing": static_listing,
                    "dotfiles": static_dotfiles,
                    "follow_symlinks": static_follow_symlinks,
                },
            )
        # every accepted connection counts, HTTP ones too (max_connections,
        # max_connections_per_ip); see wsplugin._gate
        self.listening_factory: Any = ConnectionGate(
            inner,
            max_connections=self.config.max_connections,
            max_per_ip=self.config.max_connections_per_ip,
            exempt=self.config.per_ip_exempt,
            clock=reactor,
            log_limited=self.factory.log_limited,
        )

    def _make_site(
        self,
        http: Any,
        static: str | None,
        before_request: Callable[[Any], Any] | None,
        empty_404: bool,
        static_options: dict[str, bool] | None = None,
    ) -> Any:
        from wsplugin.web import (
            BoundedHTTPChannel,
            BoundedSite,
            EmptyPage,
            StaticFiles,
            access_log_formatter,
            site_root,
        )

        if static is not None:
            files = StaticFiles(static, **(static_options or {}))
            if empty_404:
                files.childNotFound = EmptyPage(404)
            if http is not None:
                files.putChild(b"", http)  # the resource answers "/"
            http = files
        site = BoundedSite(
            site_root(
                self.factory, http, before_request=before_request, empty_404=empty_404
            ),
            logFormatter=access_log_formatter,
            reactor=self.reactor,
        )
        site.displayTracebacks = False
        cfg, clock, factory = self.config, self.reactor, self.factory

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

        Args:
            host: Host name matched against the ``Host`` header (port ignored).
            path: Exact request path, e.g. ``"/chat"``.
            handler: Object with event methods (all optional).
            default_host: This host serves requests for unknown hosts.
            default_path: This route serves unknown paths on its host.
            auth: An authenticator (:mod:`wsplugin.auth`) checked before
                ``allow``: 401/403 before any upgrade; ``conn.user`` carries
                the identity it returns.
            **overrides: :class:`~wsplugin.ServerConfig` options for this route.
        """
        route = self.factory.register_handler(
            host,
            path,
            handler,
            default_host=default_host,
            default_path=default_path,
            auth=auth,
            **overrides,
        )
        if auth is not None and accepts_other_sites(route.config.allowed_origins):
            self.log.warn(
                "route {host} {path} has an authenticator but accepts any Origin "
                "({patterns}): a page on any site can open it with a visitor's "
                "cached credentials or cookies; list your sites in allowed_origins",
                host=route.host,
                path=route.path,
                patterns=", ".join(route.config.allowed_origins or ()),
            )
        return route

    # -- life cycle --------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while the server runs; set it to start or stop (seed ``Active``)."""
        return bool(self.running)

    @active.setter
    def active(self, value: bool) -> None:
        if value and not self.running:
            self.start()
        elif not value and self.running:
            self.stop()

    def start(self) -> Deferred[WebSocketServer]:
        """Start listening; fires with the server once every endpoint listens.

        Fails with the listening error when an endpoint cannot listen. With
        ``watchdog_interval`` set (sgc ``WatchDog``), a failed listen is tried
        again every interval, up to ``watchdog_attempts`` times (0: forever),
        and the Deferred fires when one succeeds or the attempts run out.
        """
        if not self.running:
            self.startService()
        d: Deferred[WebSocketServer] = Deferred()
        if self._start_pending:
            self._start_waiters.append(d)
        else:
            self._deliver_start(d)
        return d

    def stop(self) -> Deferred[None]:
        """Stop listening, close every connection with 1001, and wait for them
        (at most ``shutdown_timeout``); fires when done."""
        if not self.running:
            return self._stopping if self._stopping is not None else succeed(None)
        return self.stopService()

    def restart(self) -> Deferred[WebSocketServer]:
        """Stop, then start again (rebinding every endpoint)."""
        d = self.stop()
        d.addCallback(lambda _: self.start())
        return d

    def reload_tls(self) -> PeerCertificate:
        """Read the TLS certificate, key, chain and client CA files again.

        New TLS handshakes use the new files at once; open connections, and
        handshakes already under way, keep the certificate they started
        with. ``twistd ws`` and :meth:`run` call this on SIGHUP, so a renewed
        certificate (e.g. from certbot's deploy hook) is picked up without a
        restart.

        Returns:
            The server certificate now in use (subject, SANs, fingerprint).

        Raises:
            ConfigError: the server has no ``tls=`` options, or the files
                cannot be used (missing, not PEM, key not matching...); the
                previous certificate stays in use and the reason is logged.
        """
        if self.tls is None:
            raise ConfigError(
                "this server has no tls= options to reload (an ssl: endpoint "
                "string reads its files only when it starts listening)"
            )
        return self.tls.reload()

    def run(self) -> int:
        """Start the server, run the reactor until it stops, return an exit status.

        The one call a script needs (``sys.exit(server.run())``):

        - the server starts when the reactor runs; if it cannot listen
          (port taken, permission denied; with the watchdog, once its
          attempts run out) the error goes to standard error and the log,
          the reactor stops, and ``run`` returns 1;
        - SIGINT/SIGTERM (Ctrl-C) stop it gracefully: each client gets a
          1001 close, at most ``shutdown_timeout`` seconds are waited, then
          ``run`` returns 0;
        - with ``tls=``, SIGHUP reloads the certificate (:meth:`reload_tls`).

        Logging is left as it is: start it first
        (``globalLogBeginner.beginLoggingTo``) to see the server's log.
        """
        reactor = self.reactor
        status = [0]

        def failed(failure: Failure) -> None:
            status[0] = 1
            print(
                f"{sys.argv[0] or 'wsplugin'}: cannot start: "
                f"{failure.getErrorMessage()}",
                file=sys.stderr,
                flush=True,
            )
            if reactor.running:
                reactor.stop()

        reactor.callWhenRunning(lambda: self.start().addErrback(failed))
        # a reactor runs once: the trigger fires (and goes) when it stops
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)
        restore = None
        if self.tls is not None:
            restore = on_hangup(self._reload_quietly, reactor)
        try:
            reactor.run()
        finally:
            if restore is not None:
                restore()
        return status[0]

    def _reload_quietly(self) -> None:
        try:
            self.reload_tls()
        except ConfigError:
            pass  # logged by reload_tls; the old certificate stays

    def privilegedStartService(self) -> None:
        """Listen while still privileged, as twistd runs it before ``--uid``
        drops root: ports below 1024 work.

        With :attr:`exit_on_listen_failure` (``twistd ws`` sets it), a port
        that cannot be bound ends the process here, with the reason on
        standard error and exit status 1, as ``twistd web`` does; with the
        watchdog on, the retries decide instead.
        """
        super().privilegedStartService()
        self._privileged_start = True
        self._begin_listening()
        failure = self._start_result
        if (
            self.exit_on_listen_failure
            and not self._start_pending
            and isinstance(failure, Failure)
        ):
            raise SystemExit(f"cannot listen: {failure.getErrorMessage()}")

    def startService(self) -> None:
        """Start child services and listen on every endpoint (unless
        :meth:`privilegedStartService` already tried: that attempt's outcome
        stands, and a server that could not listen stays inactive)."""
        super().startService()
        if self._privileged_start:
            self._privileged_start = False
            if not self._start_pending and isinstance(self._start_result, Failure):
                self.running = False  # as after start(); start() tries again
            return
        if not self._start_pending and not self.ports:
            self._begin_listening()

    def _begin_listening(self) -> None:
        self._wanted = True
        self._start_pending = True
        self._attempts = 0
        self._starting = Deferred.fromCoroutine(self._listen_all())
        self._starting.addBoth(self._started)

    def stopService(self) -> Deferred[None]:
        """Stop child services, stop listening and close connections."""
        self._wanted = False
        self._unwatch_listeners()
        children = super().stopService()
        self._stopping = Deferred.fromCoroutine(self._shutdown(children))
        return self._stopping

    async def _listen_all(self) -> list[IListeningPort]:
        ports = []
        try:
            for description in self.endpoints:
                ports.append(await self._listen_one(description))
        except BaseException:
            for port in ports:
                await port.stopListening()
            raise
        self._report_nvx()
        self._warn_plaintext_auth()
        return ports

    async def _listen_one(self, description: str) -> IListeningPort:
        """Listen on one endpoint string, with TLS around it if configured."""
        endpoint = serverFromString(self.reactor, description)
        if self.tls is not None:
            endpoint = wrapServerTLS(self.tls, endpoint, clock=self.reactor)
        try:
            port: IListeningPort = await endpoint.listen(self.listening_factory)
        except Exception as e:
            self.log.error(
                "cannot listen on {endpoint}: {error}", endpoint=description, error=e
            )
            raise
        self.log.info(
            "listening on {endpoint}{tls}",
            endpoint=description,
            tls=" (TLS)" if self.tls is not None else "",
        )
        return port

    def _warn_plaintext_auth(self) -> None:
        """Warn when an authenticator guards a route on an endpoint without
        TLS: Basic passwords, tokens and session cookies then cross the
        network in clear, readable by anyone on the path."""
        if self.tls is not None:
            return
        plain = [d for d in self.endpoints if not endpoint_is_tls(d)]
        guarded = [r.path for r in self.factory.router.routes() if r.auth is not None]
        if plain and guarded:
            self.log.warn(
                "authentication on {paths} is served without TLS on {endpoints}: "
                "credentials cross the network in clear; use tls= (twistd: "
                "--tls-cert) or an ssl: endpoint, unless a TLS proxy is in front",
                paths=", ".join(guarded),
                endpoints=", ".join(plain),
            )

    def _report_nvx(self) -> None:
        """Say whether Autobahn's native accelerators (NVX) are in use: without
        them UTF-8 validation and unmasking are pure Python, and bulk
        throughput drops by about 70 times."""
        if _autobahn_websocket.USES_NVX:
            self.log.info("Autobahn NVX accelerators: on")
        elif _autobahn_websocket.HAS_NVX:
            self.log.warn(
                "Autobahn NVX accelerators are built but switched off "
                "(AUTOBAHN_USE_NVX=0): bulk throughput is far lower"
            )
        else:
            self.log.warn(
                "Autobahn NVX accelerators are not built: bulk throughput is "
                "far lower; install an Autobahn wheel for this platform, or "
                "build it with AUTOBAHN_USE_NVX=1 (docs/performance.md)"
            )

    def _started(self, result: Any) -> None:
        self._starting = None
        if isinstance(result, Failure):
            if self._watch(result):
                return
            self._start_result = result
            self._start_pending = False
            # like the seeds' Active, a server that could not listen is not
            # active; start() (or active = True) tries again
            self.running = False
            self._wanted = False
        else:
            self._start_pending = False
            self.ports = list(result)
            self._start_result = None
            self._watch_listeners()
            self._fire_server_event("on_startup")
        waiters, self._start_waiters = self._start_waiters, []
        for d in waiters:
            self._deliver_start(d)

    def _watch(self, failure: Failure) -> bool:
        """The sgc WatchDog: schedule another attempt to listen, if allowed."""
        interval = self.config.watchdog_interval
        limit = self.config.watchdog_attempts
        if not interval or not self._wanted or (limit and self._attempts >= limit):
            if interval:
                self.log.error(
                    "watchdog: giving up after {attempts} attempt(s)",
                    attempts=self._attempts,
                )
            return False
        self._attempts += 1
        self.log.warn(
            "watchdog: listening failed ({error}); attempt {attempt} in {interval}s",
            error=failure.getErrorMessage(),
            attempt=self._attempts,
            interval=interval,
        )
        self._watchdog_call = self.reactor.callLater(interval, self._listen_again)
        return True

    def _listen_again(self) -> None:
        self._watchdog_call = None
        self._starting = Deferred.fromCoroutine(self._listen_all())
        self._starting.addBoth(self._started)

    # -- the watchdog after an unexpected stop -----------------------------

    def _watch_listeners(self) -> None:
        """Check the listeners every ``watchdog_interval`` (sgc ``WatchDog``).

        A Twisted listening port has no event for "this socket stopped
        accepting": when ``accept()`` fails in an unexpected way (the socket
        was shut down or closed underneath, its interface went away) the
        reactor logs the error and closes the port, and nothing else hears
        of it. So the server looks: every interval it checks each port's
        socket with ``getsockopt(SO_ACCEPTCONN)`` (one system call per port;
        it also fails on a closed descriptor) and Twisted's ``connected``
        flag. That needs no change to the ports and costs nothing between
        checks; the price is that a loss is seen up to one interval late.
        """
        self._generation += 1
        self._bound = dict(enumerate(self.ports))
        self._lost = []
        if not self.config.watchdog_interval or self._listener_check is not None:
            return
        check = LoopingCall(self._check_listeners)
        check.clock = self.reactor
        self._listener_check = check
        check.start(self.config.watchdog_interval, now=False).addErrback(
            lambda f: self.log.failure("watchdog check failed", f)
        )

    def _unwatch_listeners(self) -> None:
        self._generation += 1
        if self._listener_check is not None and self._listener_check.running:
            self._listener_check.stop()
        self._listener_check = None
        if self._relisten_call is not None and self._relisten_call.active():
            self._relisten_call.cancel()
        self._relisten_call = None
        self._lost = []
        self._bound = {}

    def _check_listeners(self) -> None:
        if not self._wanted or not self._bound:
            return
        lost = [i for i, port in sorted(self._bound.items()) if self._is_lost(i, port)]
        if not lost:
            return
        was_complete = not self._lost
        for index in lost:
            port = self._bound.pop(index)
            self._lost.append(index)
            if getattr(port, "connected", False):
                # release the descriptor, so the endpoint can be bound again
                self._closing.append(maybeDeferred(port.stopListening))
        self.ports = [self._bound[i] for i in sorted(self._bound)]
        if was_complete:
            # the seed's order: OnShutdown fires, then the watchdog restarts
            self._fire_server_event("on_shutdown")
        if self._relisten_call is None and not self._relistening:
            self._lost_attempts = 0
            self._relisten_call = self.reactor.callLater(0, self._relisten)

    def _is_lost(self, index: int, port: IListeningPort) -> bool:
        why = listener_lost(port)
        if why is not None:
            self.log.error(
                "watchdog: the listener on {endpoint} is lost ({why}); open "
                "connections are kept; listening again every {interval}s",
                endpoint=self.endpoints[index],
                why=why,
                interval=self.config.watchdog_interval,
            )
        return why is not None

    def _relisten(self) -> None:
        self._relisten_call = None
        self._relistening = True
        d = Deferred.fromCoroutine(self._relisten_lost())
        d.addErrback(lambda f: self.log.failure("watchdog: re-listening failed", f))
        d.addBoth(self._relistened)

    def _relistened(self, _: Any) -> None:
        self._relistening = False

    async def _relisten_lost(self) -> None:
        generation = self._generation
        closing, self._closing = self._closing, []
        await DeferredList(closing, consumeErrors=True)
        if generation != self._generation:
            return  # stopped (or restarted) meanwhile
        self._lost_attempts += 1
        error: Exception | None = None
        for index in sorted(self._lost):
            try:
                port = await self._listen_one(self.endpoints[index])
            except Exception as e:
                error = e
                continue
            if generation != self._generation:  # stopped while it ran
                await port.stopListening()
                return
            self._lost.remove(index)
            self._bound[index] = port
            self.ports = [self._bound[i] for i in sorted(self._bound)]
        if not self._lost:
            self.log.info(
                "watchdog: listening again after {attempts} attempt(s)",
                attempts=self._lost_attempts,
            )
            self._fire_server_event("on_startup")
            return
        limit = self.config.watchdog_attempts
        if limit and self._lost_attempts >= limit:
            self.log.error(
                "watchdog: giving up on {endpoints} after {attempts} attempt(s) "
                "({error}); the other listeners and open connections are kept",
                endpoints=", ".join(self.endpoints[i] for i in sorted(self._lost)),
                attempts=self._lost_attempts,
                error=error,
            )
            return
        self._relisten_call = self.reactor.callLater(
            self.config.watchdog_interval, self._relisten
        )

    def _deliver_start(self, d: Deferred[WebSocketServer]) -> None:
        if isinstance(self._start_result, Failure):
            d.errback(self._start_result)
        else:
            d.callback(self)

    async def _shutdown(self, children: Deferred[Any] | None) -> None:
        if self._watchdog_call is not None and self._watchdog_call.active():
            self._watchdog_call.cancel()
            self._watchdog_call = None
            self._start_pending = False
            self._start_result = Failure(
                RuntimeError("the server was stopped before it could listen")
            )
            waiters, self._start_waiters = self._start_waiters, []
            for d in waiters:
                self._deliver_start(d)
        if self._starting is not None:
            await DeferredList([self._starting])
        ports, self.ports = self.ports, []
        for port in ports:
            # IListeningPort.stopListening may return a Deferred, or None
            await maybeDeferred(port.stopListening)
        was_listening = bool(ports)
        open_conns = [c for c in self.factory.connections]
        self.factory.disconnect_all(1001, "server shutting down")
        await self._wait_closed(open_conns, self.config.shutdown_timeout)
        if children is not None:
            await children
        self._stopping = None
        if was_listening:
            self._fire_server_event("on_shutdown")

    async def _wait_closed(self, conns: list[Connection], timeout: float) -> None:
        """Wait for ``conns`` to end, at most ``timeout`` seconds; abort the
        rest and wait until they have ended too."""
        if not conns:
            return
        everything = DeferredList([c.wait_closed() for c in conns], consumeErrors=True)
        if timeout:
            everything.addTimeout(timeout, self.reactor)
        try:
            await everything
        except (TimeoutError, CancelledError):
            pass
        stragglers = [c for c in conns if c.state is not ConnectionState.CLOSED]
        if not stragglers:
            return
        self.log.info(
            "shutdown: aborting {count} connection(s) still open after {timeout}s",
            count=len(stragglers),
            timeout=timeout,
        )
        for conn in stragglers:
            conn.abort()
        # An abort ends a connection at the transport's next turn, not at
        # once: wait for that, so that stop() and on_shutdown fire only once
        # every connection has left server.connections.
        await DeferredList([c.wait_closed() for c in stragglers], consumeErrors=True)

    def _fire_server_event(self, name: str) -> None:
        hook: Callable[..., Any] | None = getattr(self.handler, name, None)
        if hook is None:
            return
        try:
            as_deferred(hook(self)).addErrback(
                lambda f: self.log.failure("{name} failed", f, name=name)
            )
        except Exception:
            self.log.failure("{name} raised", name=name)

    # -- connections and sending (delegated to the factory) ---------------

    @property
    def connections(self) -> Connections:
        """Open connections: iterate, ``len()``, look up by id."""
        return self.factory.connections

    def broadcast(
        self,
        message: Message,
        *,
        channel: str | None = None,
        subprotocol: str | None = None,
        ids: str | Iterable[str] | None = None,
        exclude: str | Connection | Iterable[str | Connection] | None = None,
        protocol: str | None = None,
    ) -> int:
        """Send to every open connection, optionally filtered; see
        :meth:`WebSocketServerFactory.broadcast` (``protocol=`` is the
        deprecated name of ``subprotocol=``)."""
        if protocol is not None:
            warnings.warn(
                "broadcast(protocol=...) is deprecated; use subprotocol=...",
                DeprecationWarning,
                stacklevel=2,
            )
            if subprotocol is not None:
                raise TypeError("give subprotocol= or protocol=, not both")
            subprotocol = protocol
        return self.factory.broadcast(
            message, channel=channel, subprotocol=subprotocol, ids=ids, exclude=exclude
        )

    def send_to(self, message: Message, selector: Callable[[Connection], bool]) -> int:
        """Send to each connection the selector picks (TMS ``SendMessageTo``)."""
        return self.factory.send_to(message, selector)

    def write_data(self, conn_id: str, message: Message) -> None:
        """Send to one connection by id (sgc ``WriteData``)."""
        self.factory.write_data(conn_id, message)

    def ping_all(self, payload: bytes = b"") -> int:
        """Ping every open connection (sgc ``Ping``)."""
        return self.factory.ping_all(payload)

    def disconnect_all(self, code: int = 1001, reason: str = "") -> int:
        """Close every connection; keep listening (sgc ``DisconnectAll``)."""
        return self.factory.disconnect_all(code, reason)
