"""Running a server: as the process's main loop, and to a graceful end.

* :func:`run_until_stopped` is what :meth:`WebSocketServer.run
  <wsplugin.WebSocketServer.run>` does: start when the reactor runs, stop
  on SIGINT/SIGTERM, reload TLS on SIGHUP, and give an exit status;
* :func:`shut_down` is ``stop()``: stop listening, ask every connection
  of this node to close with 1001, give them at most ``shutdown_timeout``
  seconds (:func:`wait_closed_all`: then the rest are aborted), then stop
  the backplane, once nothing more can be sent through it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError,
    maybeDeferred,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._hub import Hub
from wsplugin._listening import Listening
from wsplugin.config import ServerConfig
from wsplugin.connection import Connection, ConnectionState
from wsplugin.tls import on_hangup

__all__ = ["run_until_stopped", "shut_down", "wait_closed_all"]


def run_until_stopped(
    reactor: Any,
    start: Callable[[], Deferred[Any]],
    stop: Callable[[], Deferred[None]],
    reload_tls: Callable[[], None] | None,
) -> int:
    """Run ``reactor`` with a server started in it; returns the exit status
    (1 when it could not start: the reason goes to standard error).

    Args:
        reactor: The reactor to run (once).
        start: Starts the server (fires when it listens, fails if it cannot).
        stop: Stops it gracefully (called before the reactor shuts down).
        reload_tls: Called on SIGHUP, if given.
    """
    status = [0]

    def failed(failure: Failure) -> None:
        status[0] = 1
        print(
            f"{sys.argv[0] or 'wsplugin'}: cannot start: {failure.getErrorMessage()}",
            file=sys.stderr,
            flush=True,
        )
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(lambda: start().addErrback(failed))
    # a reactor runs once: the trigger fires (and goes) when it stops
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    restore = None
    if reload_tls is not None:
        restore = on_hangup(reload_tls, reactor)
    try:
        reactor.run()
    finally:
        if restore is not None:
            restore()
    return status[0]


async def wait_closed_all(
    conns: Sequence[Connection], timeout: float, reactor: Any, log: Logger
) -> None:
    """Wait for ``conns`` (asked to close) to end, at most ``timeout``
    seconds (0: no limit); abort the rest and wait until they have ended
    too."""
    if not conns:
        return
    everything = DeferredList([c.wait_closed() for c in conns], consumeErrors=True)
    if timeout:
        everything.addTimeout(timeout, reactor)
    try:
        await everything
    except (TimeoutError, CancelledError):
        pass
    stragglers = [c for c in conns if c.state is not ConnectionState.CLOSED]
    if not stragglers:
        return
    log.info(
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


async def shut_down(
    listening: Listening,
    hub: Hub,
    config: ServerConfig,
    reactor: Any,
    log: Logger,
    children: Deferred[Any] | None,
) -> bool:
    """A server's graceful stop; returns whether it was listening.

    Listening stops first (a start still retrying gives up), then this
    node's connections are asked to close with 1001 (each after the data
    queued for it) and waited for, at most ``shutdown_timeout`` seconds;
    then the backplane stops (its links close, this node's counts are
    withdrawn), and the server's child services are waited for.
    """
    why = RuntimeError("the server was stopped before it could listen")
    listening.cancel_retry(why)
    if listening.starting is not None:
        await DeferredList([listening.starting])
    ports = listening.take_ports()
    for port in ports:
        # IListeningPort.stopListening may return a Deferred, or None
        await maybeDeferred(port.stopListening)
    open_conns = hub.registry.snapshot()
    hub.close_local(1001, "server shutting down")
    await wait_closed_all(open_conns, config.shutdown_timeout, reactor, log)
    await hub.stop()
    if children is not None:
        await children
    return bool(ports)
