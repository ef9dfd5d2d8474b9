"""The component: a Twisted service that listens and serves WebSocket routes.

:class:`WebSocketServer` is a :class:`~twisted.application.service.MultiService`,
so it composes into any Twisted application (``server.setServiceParent(app)``)
and into ``twistd``. It can also be driven directly like the seed components:
``server.active = True`` (TMS/sgc ``Active``), or ``start()``, ``stop()`` and
``restart()``, which return Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import (
    Deferred,
    succeed,
)
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._events import as_deferred
from wsplugin._gate import listening_gate
from wsplugin._listening import Listening, listener_lost
from wsplugin._routing import Route
from wsplugin._running import run_until_stopped, shut_down
from wsplugin._sendapi import SendingMethods
from wsplugin.backplane import Backplane, make_backplane
from wsplugin.config import ServerConfig
from wsplugin.errors import ConfigError
from wsplugin.factory import Connections, WebSocketServerFactory
from wsplugin.handshake import accepts_other_sites
from wsplugin.metrics import attach_metrics
from wsplugin.tls import (
    PeerCertificate,
    ServerTLS,
    TLSOptions,
    tls_wrappable,
)

__all__ = ["WebSocketServer", "listener_lost"]

Message = str | bytes


class WebSocketServer(SendingMethods, MultiService):
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
        backplane: What makes servers one (docs/scaling.md): a Redis URL, a
            :class:`~wsplugin.backplane.Backplane`, or None (in-process);
            started and stopped with the server (``self.backplane``).
        reactor: The reactor (the global one if None).
        metrics: ``/metrics`` endpoint, True or a ``Metrics`` (docs/metrics.md).
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
        metrics: Any = None,
        backplane: str | Backplane | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self.tls: ServerTLS | None = None
        pages = (http, static) != (None, None) or bool(before_request or empty_404)
        if tls is not None:
            for description in endpoints:
                tls_wrappable(description)
            self.tls = ServerTLS(tls, serves_http=pages)
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.config = (config or ServerConfig()).replace(**options)
        self.handler = handler
        self.backplane = make_backplane(backplane, reactor=reactor)
        self.factory = WebSocketServerFactory(
            self.config,
            reactor=reactor,
            owner=self,
            server_handler=handler,
            backplane=self.backplane,
        )
        # the sending methods (broadcast, send_to, ...) work on these
        self.hub = self.factory.hub
        self.fanout = self.factory.fanout
        self.registry = self.factory.registry
        self._stopping: Deferred[None] | None = None
        if handler is not None:
            if path is None:
                self.register_handler(
                    "*", "*", handler, default_host=True, default_path=True, auth=auth
                )
            else:
                self.register_handler("*", path, handler, default_host=True, auth=auth)
        self.site: Any = None
        inner: Any = self.factory
        if pages:  # HTTP is served too
            from wsplugin.web import make_site

            self.site = inner = make_site(
                self.factory,
                http,
                static=static,
                before_request=before_request,
                empty_404=empty_404,
                http_auth=http_auth,
                public_paths=public_paths,
                static_options={
                    "listing": static_listing,
                    "dotfiles": static_dotfiles,
                    "follow_symlinks": static_follow_symlinks,
                },
            )
            if self.tls is not None:
                self.site.alpn = ()  # the TLSOptions decide the ALPN offer
        # every accepted connection counts, HTTP ones too (max_connections,
        # max_connections_per_ip), TLS inside the gate; see wsplugin._gate
        self.listening_factory: Any = listening_gate(
            inner, self.config, self.tls, reactor, self.factory.log_limited
        )
        self.listening = Listening(
            reactor,
            endpoints,
            self.listening_factory,
            tls=self.tls,
            router=self.factory.router,
            config=self.config,
            log=self.log,
            on_up=lambda: self._fire_server_event("on_startup"),
            on_down=lambda: self._fire_server_event("on_shutdown"),
        )
        self.metrics = attach_metrics(self, metrics)  # a Metrics, or None

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
        d: Deferred[WebSocketServer] = self.listening.outcome()
        return d.addCallback(lambda _: self)

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
        return run_until_stopped(
            self.reactor,
            self.start,
            self.stop,
            self._reload_quietly if self.tls else None,
        )

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
        failure = self.listening.failure
        if self.exit_on_listen_failure and not self.listening.pending and failure:
            raise SystemExit(f"cannot listen: {failure.getErrorMessage()}")

    def startService(self) -> None:
        """Start child services and listen on every endpoint (unless
        :meth:`privilegedStartService` already tried: that attempt's outcome
        stands, and a server that could not listen stays inactive)."""
        super().startService()
        self.hub.start()
        if self._privileged_start:
            self._privileged_start = False
            if not self.listening.pending and self.listening.failure:
                self.running = False  # as after start(); start() tries again
            return
        if not self.listening.pending and not self.ports:
            self._begin_listening()

    @property
    def endpoints(self) -> list[str]:
        """The endpoint strings it listens on (set it to listen elsewhere at
        the next start)."""
        return self.listening.endpoints

    @endpoints.setter
    def endpoints(self, value: Sequence[str]) -> None:
        self.listening.endpoints = [value] if isinstance(value, str) else list(value)

    @property
    def ports(self) -> list[IListeningPort]:
        """The listening ports, in the order of ``endpoints`` (a lost one,
        while the watchdog listens again, is left out)."""
        return self.listening.ports

    def _begin_listening(self) -> None:
        self.listening.begin(self._started)

    def stopService(self) -> Deferred[None]:
        """Stop child services, stop listening and close connections."""
        self.listening.stop()
        children = super().stopService()
        self._stopping = Deferred.fromCoroutine(self._shutdown(children))
        return self._stopping

    def _started(self, result: Any) -> None:
        if isinstance(result, Failure):
            # like the seeds' Active, a server that could not listen is not
            # active; start() (or active = True) tries again
            self.running = False
        else:
            self._fire_server_event("on_startup")

    async def _shutdown(self, children: Deferred[Any] | None) -> None:
        was_listening = await shut_down(
            self.listening, self.hub, self.config, self.reactor, self.log, children
        )
        self._stopping = None
        if was_listening:
            self._fire_server_event("on_shutdown")

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

    # -- connections (sending: SendingMethods, on the factory's fan-out) ---

    @property
    def connections(self) -> Connections:
        """Open connections: iterate, ``len()``, look up by id."""
        return self.factory.connections
