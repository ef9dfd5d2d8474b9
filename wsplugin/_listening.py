"""Listening on a server's endpoint strings, and the watchdog (sgc WatchDog).

:class:`Listening` is the part of :class:`~wsplugin.WebSocketServer` that
owns its listening ports:

* it listens on every endpoint string with the server's listening factory
  (which, when the server has ``tls=`` options, speaks TLS inside its
  connection gate), logs where, says whether Autobahn's accelerators are in
  use, and warns when an authenticated route is served without TLS;
* at start, with ``watchdog_interval`` set, a failed listen is tried again
  every interval, up to ``watchdog_attempts`` times (0: forever);
* once listening, it checks every interval that each port still accepts
  connections (:func:`listener_lost`), and listens again on the endpoints
  whose listener was lost, keeping open connections and the other ports.

The server's events (``on_startup``, ``on_shutdown``) and the outcome of
``start()`` stay the server's: it is told through the callables it passes.
Runs on the injected reactor; tests drive it with a fake clock.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from autobahn import websocket as _autobahn_websocket
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._codec import describe as describe_codec
from wsplugin._portguard import ListenerGuard, guard_of
from wsplugin._routing import Router
from wsplugin.config import ServerConfig
from wsplugin.tls import ServerTLS, endpoint_is_tls

__all__ = ["Listening", "listener_lost"]

_SO_ACCEPTCONN = getattr(socket, "SO_ACCEPTCONN", None)

_LOST_WATCHED = (
    "watchdog: the listener on {endpoint} is lost ({why}); open connections "
    "are kept; listening again every {interval}s"
)
_LOST = (
    "the listener on {endpoint} is lost ({why}); open connections are kept; "
    "no longer listening there (set watchdog_interval to listen again)"
)


def listener_lost(port: Any) -> str | None:
    """Why the listening ``port`` no longer accepts connections, or None.

    Twisted's TCP and UNIX ports (``tcp.Port``, its subclasses) expose the
    listening ``socket`` and a ``connected`` flag; other ports are only
    judged by the flag. A port the server guards
    (:class:`~wsplugin._portguard.ListenerGuard`) is also lost when its
    descriptor was closed underneath, even if the number was reused since.
    """
    if getattr(port, "connected", True) is False:
        return "the port was closed after an error"
    guard = guard_of(port)
    if guard is not None:
        return guard.problem()
    sock = getattr(port, "socket", None)
    if sock is None or _SO_ACCEPTCONN is None:
        return None
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, _SO_ACCEPTCONN)
    except OSError as e:
        return f"its socket is unusable: {e.strerror or e}"
    return None if accepting else "its socket no longer accepts connections"


class Listening:
    """The listening ports of one server, and their watchdog.

    Args:
        reactor: The reactor (endpoints and timers).
        endpoints: The endpoint strings, in order.
        factory: The factory each port listens with (the connection gate;
            with TLS, the gate around Twisted's TLS factory).
        tls: The server's TLS, or None (for the log and the plain-text
            authentication warning: ``factory`` already speaks it).
        router: The server's routes (for the plain-text authentication
            warning).
        config: ``watchdog_interval`` and ``watchdog_attempts``.
        log: The server's logger (its namespace names the messages).
        on_up: Called when lost listeners all listen again (``on_startup``).
        on_down: Called when a listener is first lost (``on_shutdown``).

    Attributes:
        ports: The ports listening now, in the order of ``endpoints``.
        starting: The listening attempt under way, or None.
        pending: Listening was begun and has not succeeded or failed yet
            (attempts, or the wait between them, are under way).
        failure: Why the last start failed, or None.
        attempts: Retries made since listening was begun (the watchdog's).
    """

    def __init__(
        self,
        reactor: Any,
        endpoints: Sequence[str],
        factory: Any,
        *,
        tls: ServerTLS | None,
        router: Router,
        config: ServerConfig,
        log: Logger,
        on_up: Callable[[], None],
        on_down: Callable[[], None],
    ) -> None:
        self.reactor = reactor
        self.endpoints = list(endpoints)
        self.listening_factory = factory
        self.tls = tls
        self.router = router
        self.config = config
        self.log = log
        self._on_up = on_up
        self._on_down = on_down
        self.ports: list[IListeningPort] = []
        # how an endpoint string becomes an endpoint; a worker of
        # ``twistd ws --workers N`` adopts its supervisor's sockets instead
        # (wsplugin._worker.WorkerEnv.endpoint_maker)
        self.make_endpoint: Callable[[Any, str], Any] = serverFromString
        self.starting: Deferred[Any] | None = None
        self._done: Callable[[Any], None] | None = None
        self.pending = False
        self.failure: Failure | None = None
        self._waiters: list[Deferred[None]] = []
        self._wanted = False
        self.attempts = 0
        self._watchdog_call: Any = None
        # the listener watchdog (see watch)
        self._bound: dict[int, IListeningPort] = {}
        self._lost: list[int] = []
        self._lost_attempts = 0
        self._listener_check: LoopingCall | None = None
        self._relisten_call: Any = None
        self._relistening = False
        self._closing: list[Deferred[Any]] = []
        self._generation = 0  # bumped when listeners are (un)watched anew

    # -- starting ------------------------------------------------------------

    def begin(self, done: Callable[[Any], None]) -> None:
        """Listen on every endpoint (again every watchdog interval if that
        fails, as allowed); ``done`` gets the ports, or the last Failure."""
        self._wanted = True
        self.pending = True
        self.attempts = 0
        self._done = done
        self._listen_again()

    def outcome(self) -> Deferred[None]:
        """Fires once listening has begun (at once if it has), or fails with
        why it could not (after the watchdog's attempts, if any)."""
        d: Deferred[None] = Deferred()
        if self.pending:
            self._waiters.append(d)
        else:
            self._deliver(d)
        return d

    def _deliver(self, d: Deferred[None]) -> None:
        if self.failure is not None:
            d.errback(self.failure)
        else:
            d.callback(None)

    def _listen_again(self) -> None:
        self._watchdog_call = None
        self.starting = Deferred.fromCoroutine(self.listen_all())
        self.starting.addBoth(self._attempted)

    def _attempted(self, result: Any) -> None:
        self.starting = None
        if isinstance(result, Failure):
            if self._watch(result):
                return
            self._wanted = False
            self.pending = False
            self.failure = result
        else:
            self.pending = False
            self.failure = None
            self.ports = list(result)
            self.watch()
        if self._done is not None:
            self._done(result)
        self._release_waiters()

    def _release_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            self._deliver(d)

    def cancel_retry(self, why: Exception) -> None:
        """The server stops: stop waiting to try again; a start still
        pending fails with ``why``."""
        call, self._watchdog_call = self._watchdog_call, None
        if call is not None and call.active():
            call.cancel()
            self.pending = False
            self.failure = Failure(why)
            self._release_waiters()

    def stop(self) -> None:
        """The server stops: no more attempts, no more watching."""
        self._wanted = False
        self.unwatch()

    def take_ports(self) -> list[IListeningPort]:
        """The ports, now forgotten here (the server stops listening)."""
        ports, self.ports = self.ports, []
        return ports

    async def listen_all(self) -> list[IListeningPort]:
        """Listen on every endpoint; all of them or none (a failure stops
        the ports already listening)."""
        ports = []
        try:
            for description in self.endpoints:
                ports.append(await self.listen_one(description))
        except BaseException:
            for port in ports:
                await port.stopListening()
            raise
        self._report_nvx()
        self._warn_plaintext_auth()
        return ports

    async def listen_one(self, description: str) -> IListeningPort:
        """Listen on one endpoint string (with TLS if the factory speaks it)."""
        endpoint = self.make_endpoint(self.reactor, description)
        try:
            port: IListeningPort = await endpoint.listen(self.listening_factory)
        except Exception as e:
            self.log.error(
                "cannot listen on {endpoint}: {error}", endpoint=description, error=e
            )
            raise
        # a destroyed or closed listener leaves the reactor at once, is told
        # to _listener_failed, and can be listened on again
        ListenerGuard.install(port, self._listener_failed)
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
        guarded = [r.path for r in self.router.routes() if r.auth is not None]
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
        # the receive and send paths of open connections (docs/performance.md)
        self.log.info(
            "frame codec: {codec}; reactor: {reactor}",
            codec=describe_codec(),
            reactor=type(self.reactor).__name__,
        )

    def _watch(self, failure: Failure) -> bool:
        """The sgc WatchDog: schedule another attempt to listen, if allowed."""
        interval = self.config.watchdog_interval
        limit = self.config.watchdog_attempts
        if not interval or not self._wanted or (limit and self.attempts >= limit):
            if interval:
                self.log.error(
                    "watchdog: giving up after {attempts} attempt(s)",
                    attempts=self.attempts,
                )
            return False
        self.attempts += 1
        self.log.warn(
            "watchdog: listening failed ({error}); attempt {attempt} in {interval}s",
            error=failure.getErrorMessage(),
            attempt=self.attempts,
            interval=interval,
        )
        self._watchdog_call = self.reactor.callLater(interval, self._listen_again)
        return True

    # -- the watchdog after an unexpected stop -------------------------------

    def watch(self) -> None:
        """Check the listeners every ``watchdog_interval`` (sgc ``WatchDog``).

        A Twisted listening port has no event for "this socket stopped
        accepting": when ``accept()`` fails (the socket was shut down,
        destroyed with ``ss -K`` or closed underneath) Twisted logs a
        traceback and keeps the port. Each port's guard
        (:class:`~wsplugin._portguard.ListenerGuard`) finds such a listener
        at its next read, takes it out of the reactor and tells
        :meth:`_listener_failed`, with the watchdog on or off. A listener
        that is never read again (closed while no client connects) is found
        here: every interval each port is checked with :func:`listener_lost`
        (two system calls per port); the price is that such a loss is seen
        up to one interval late.
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

    def unwatch(self) -> None:
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
        lost = {}
        for index, port in sorted(self._bound.items()):
            why = listener_lost(port)
            if why is not None:
                lost[index] = why
        if lost:
            self._lose(lost)

    def _listener_failed(self, port: Any, why: str) -> None:
        """A port's guard found its listener gone (it no longer reads it)."""
        if not self._wanted:
            return  # stopping: the server closes its ports
        for index, bound in self._bound.items():
            if bound is port:
                self._lose({index: why})
                return

    def _lose(self, lost: dict[int, str]) -> None:
        """Close the listeners at these indices; with the watchdog, fire
        ``on_shutdown`` (once) and listen on their endpoints again."""
        interval = self.config.watchdog_interval
        was_complete = not self._lost
        for index, why in lost.items():
            port = self._bound.pop(index)
            self._lost.append(index)
            self.log.error(
                _LOST_WATCHED if interval else _LOST,
                endpoint=self.endpoints[index],
                why=why,
                interval=interval,
            )
            if getattr(port, "connected", False):
                # release the descriptor, so the endpoint can be bound again
                self._closing.append(maybeDeferred(port.stopListening))
        self.ports = [self._bound[i] for i in sorted(self._bound)]
        if not interval:
            return
        if was_complete:
            # the seed's order: OnShutdown fires, then the watchdog restarts
            self._on_down()
        if self._relisten_call is None and not self._relistening:
            self._lost_attempts = 0
            self._relisten_call = self.reactor.callLater(0, self._relisten)

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
                port = await self.listen_one(self.endpoints[index])
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
            self._on_up()
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
