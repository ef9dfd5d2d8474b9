"""``twistd ws --workers N``: N reactor processes behind the same ports.

One Python process runs one reactor on one core. To use every core of a
machine, the ``twistd`` process becomes a *supervisor*
(:class:`WorkerPool`):

* it binds every ``--port`` itself (before ``twistd`` drops privileges, so
  ports below 1024 work), and starts N worker processes, each
  ``python -m twisted ws <the same options>``, giving them the listening
  sockets as inherited descriptors, which they adopt
  (``reactor.adoptStreamPort``, through :class:`InheritedEndpoint`);
* a TCP port gets one socket per worker, all bound to the same address
  with ``SO_REUSEPORT``: the kernel spreads new connections evenly over the
  workers (one shared socket would let whichever worker wakes first take
  most of a burst). A Unix socket or a socket from systemd is shared by all
  workers;
* it keeps its copies of the sockets, so a worker that dies is started
  again on the same ones (connections arriving meanwhile wait in the
  socket's queue), and logs why it died;
* on SIGTERM it stops every worker with SIGTERM: each one closes its
  connections gracefully (1001 after the data queued for them) within
  ``--shutdown-timeout``; then it exits;
* each worker's log lines go to the supervisor's log, prefixed with
  ``worker N:``.

Workers share the listening sockets, never state: connections, channels and
counts go through the backplane (``--backplane``, required with N > 1). A
connection id names the node and the worker that holds it
(``web-3.1.9f0c...``: node ``web-3``, worker 1).

A worker learns its place from its environment
(:class:`wsplugin._worker.WorkerEnv`): its index, the node's name and the
descriptors of the ports. It stops by itself when the supervisor goes away
(its standard input, a pipe from the supervisor, reaches end of file), so
no worker outlives a killed supervisor.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import sys
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.systemd import ListenFDs

from wsplugin._worker import ENV_FDS, ENV_NODE, ENV_WORKER, FAMILIES, FIRST_FD
from wsplugin.errors import ConfigError

__all__ = [
    "SHAREABLE",
    "WorkerPool",
    "WorkerProcess",
    "bind_port",
    "check_shareable",
    "split_description",
]

MAX_RESTART_DELAY = 30.0
"""Longest wait before a crashing worker is started again, in seconds."""

STABLE_AFTER = 10.0
"""A worker that ran this long before dying is restarted after 1 s again."""

_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* ")


# -- the supervisor's side ------------------------------------------------------


def split_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    """An endpoint string as its kind, positional and keyword arguments
    (``\\`` escapes a ``:``, as in Twisted's endpoint strings)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(description)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key] = value
        else:
            args.append(part)
    return parts[0].lower(), args, kwargs


SHAREABLE = ("tcp", "tcp6", "unix", "systemd")
"""The endpoint kinds workers can share (``ssl:``/``tls:`` strings cannot:
use ``--tls-cert``, which each worker puts around its socket)."""


def check_shareable(description: str) -> None:
    """Raise ConfigError unless workers can share ``description``."""
    kind = split_description(description)[0]
    if kind not in SHAREABLE:
        raise ConfigError(
            f"--port {description!r} cannot be shared by workers: only tcp:, "
            "tcp6:, unix: and systemd: ports can (for TLS use --tls-cert)"
        )


def _tcp(family: int, host: str, port: int, backlog: int, count: int) -> list[Any]:
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    sockets: list[socket.socket] = []
    try:
        for _ in range(count if reuse_port is not None else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port is not None:
                sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]  # tcp:0: the others share the first's
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _unix(path: str, mode: int, backlog: int) -> socket.socket:
    if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens there
        else:
            raise OSError(f"{path} is in use by another process")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, mode)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bind_port(description: str, count: int) -> tuple[list[socket.socket], str]:
    """Listening sockets for ``count`` workers on ``description``: one per
    worker for TCP (``SO_REUSEPORT``), one shared otherwise; and the address
    family's name (``INET``, ``INET6``, ``UNIX``).

    Raises:
        ConfigError: a kind workers cannot share, or a malformed string.
        OSError: the address cannot be bound.
    """
    check_shareable(description)
    kind, args, kwargs = split_description(description)
    try:
        backlog = int(kwargs.get("backlog", "50"))
        if kind in ("tcp", "tcp6"):
            port = int(kwargs.get("port") or args[0])
            default = "::" if kind == "tcp6" else "0.0.0.0"
            host = kwargs.get("interface", default)
            name = "INET6" if kind == "tcp6" or ":" in host else "INET"
            return _tcp(FAMILIES[name], host, port, backlog, count), name
        if kind == "unix":
            path = kwargs.get("address") or args[0]
            mode = int(kwargs.get("mode", "666"), 8)
            return [_unix(path, mode, backlog)], "UNIX"
        listen_fds = ListenFDs.fromEnvironment()
        if "name" in kwargs:
            fd = listen_fds.inheritedNamedDescriptors()[kwargs["name"]]
        else:
            fd = listen_fds.inheritedDescriptors()[int(kwargs["index"])]
        domain = kwargs.get("domain", "INET")
        return [socket.socket(FAMILIES[domain], socket.SOCK_STREAM, 0, fd)], domain
    except (IndexError, KeyError, ValueError) as e:
        raise ConfigError(f"--port {description!r}: {e!r}") from None


class WorkerProcess(ProcessProtocol):
    """One worker process, as its supervisor sees it."""

    def __init__(self, pool: WorkerPool, index: int, started: float) -> None:
        self.pool = pool
        self.index = index
        self.started = started
        self.pid: int | None = None
        self.ended: Deferred[None] = Deferred()
        self._partial = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        self.pool.log.info(
            "worker {index} started (pid {pid})", index=self.index, pid=self.pid
        )

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """A worker's output: its log lines, forwarded one by one."""
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        for line in lines:
            self.pool.forward(self.index, line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        for rest in self._partial.values():
            if rest:
                self.pool.forward(self.index, rest.decode("utf-8", "replace"))
        self.pool.ended(self, reason)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        """Send a signal (nothing if it has exited)."""
        try:
            self.transport.signalProcess(name)
        except Exception:
            pass  # ProcessExitedAlready, or a transport already gone


_LEVEL = re.compile(r"\[[^\]#]*#(debug|info|warn|error|critical)\]")


class WorkerPool(Service):
    """The supervisor of ``twistd ws --workers N`` (see the module
    docstring).

    Args:
        count: How many workers.
        argv: The ``ws`` options to start each worker with (the
            supervisor's own).
        descriptions: The ``--port`` strings.
        node_name: The node's name, shared by the workers.
        shutdown_timeout: The workers' ``--shutdown-timeout``: a worker
            still running 10 s after it is over is killed.
        reactor: The reactor (the global one if None).
        python: The interpreter to run workers with.
        restart_delay: First wait before a dead worker is started again.
    """

    log = Logger()

    def __init__(
        self,
        *,
        count: int,
        argv: Sequence[str],
        descriptions: Sequence[str],
        node_name: str,
        shutdown_timeout: float,
        reactor: Any = None,
        python: str = sys.executable,
        restart_delay: float = 1.0,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.count = count
        self.argv = list(argv)
        self.descriptions = list(descriptions)
        self.node_name = node_name
        self.shutdown_timeout = shutdown_timeout
        self.python = python
        self.restart_delay = restart_delay
        self.sockets: list[tuple[list[socket.socket], str]] = []
        self.workers: dict[int, WorkerProcess] = {}
        self.restarts = 0
        self._delays: dict[int, float] = {}
        self._pending: dict[int, Any] = {}
        self.stopping = False

    # -- sockets ---------------------------------------------------------------

    def bind(self) -> None:
        """Bind every port (all or none)."""
        if self.sockets:
            return
        try:
            for description in self.descriptions:
                self.sockets.append(bind_port(description, self.count))
                self.log.info(
                    "listening on {endpoint} for {count} workers",
                    endpoint=description,
                    count=self.count,
                )
        except BaseException:
            self.close_sockets()
            raise

    def close_sockets(self) -> None:
        """Close the supervisor's copies of the listening sockets."""
        sockets, self.sockets = self.sockets, []
        for group, _family in sockets:
            for sock in group:
                sock.close()

    def child_fds(self, index: int) -> tuple[dict[int, int | str], str]:
        """Worker ``index``'s descriptor map and its ``ENV_FDS`` value."""
        fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        listed = []
        for n, (group, family) in enumerate(self.sockets):
            sock = group[index] if len(group) > 1 else group[0]
            fds[FIRST_FD + n] = sock.fileno()
            listed.append(f"{FIRST_FD + n}:{family}")
        return fds, ",".join(listed)

    # -- workers ---------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind while still privileged (before twistd's ``--uid``)."""
        super().privilegedStartService()
        try:
            self.bind()
        except (OSError, ConfigError) as e:
            raise SystemExit(f"cannot listen: {e}") from None

    def startService(self) -> None:
        """Bind (if not yet) and start every worker."""
        super().startService()
        if not self.sockets:
            self.bind()
        self.log.info(
            "starting {count} workers of node {node}",
            count=self.count,
            node=self.node_name,
        )
        for index in range(self.count):
            self.spawn(index)

    def spawn(self, index: int) -> WorkerProcess:
        """Start worker ``index``."""
        self._pending.pop(index, None)
        fds, listed = self.child_fds(index)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
        }
        env.update(
            {
                ENV_WORKER: str(index),
                ENV_NODE: self.node_name,
                ENV_FDS: listed,
                "PYTHONUNBUFFERED": "1",
            }
        )
        args = [self.python, "-m", "twisted", "--log-format", "text"]
        args += ["--log-file", "-", "ws", *self.argv]
        worker = WorkerProcess(self, index, self.reactor.seconds())
        self.workers[index] = worker
        self.reactor.spawnProcess(
            worker, self.python, args, env=env, path=os.getcwd(), childFDs=fds
        )
        return worker

    def forward(self, index: int, line: str) -> None:
        """Log a worker's line in the supervisor's log, at its level."""
        line = _STAMP.sub("", line.rstrip())
        if not line:
            return
        m = _LEVEL.search(line)
        level = m.group(1) if m else "info"
        emit = getattr(self.log, level, self.log.info)
        emit("worker {index}: {line}", index=index, line=line)

    def ended(self, worker: WorkerProcess, reason: Failure) -> None:
        """A worker exited: start it again unless the pool is stopping."""
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        how = _describe_exit(reason)
        if self.stopping:
            self.log.info(
                "worker {index} (pid {pid}) stopped: {how}",
                index=worker.index,
                pid=worker.pid,
                how=how,
            )
            return
        lived = self.reactor.seconds() - worker.started
        last = self._delays.get(worker.index)
        if lived >= STABLE_AFTER or last is None:
            delay = self.restart_delay
        else:
            delay = min(last * 2, MAX_RESTART_DELAY)
        self._delays[worker.index] = delay
        self.restarts += 1
        self.log.error(
            "worker {index} (pid {pid}) died ({how}) after {lived:.1f}s; "
            "starting it again in {delay}s",
            index=worker.index,
            pid=worker.pid,
            how=how,
            lived=lived,
            delay=delay,
        )
        self._pending[worker.index] = self.reactor.callLater(
            delay, self.spawn, worker.index
        )

    def stopService(self) -> Deferred[None]:
        """Stop every worker with SIGTERM (each closes its connections
        gracefully), kill those still running ``shutdown_timeout`` + 10 s
        later, and close the sockets."""
        super().stopService()
        self.stopping = True
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        workers = list(self.workers.values())
        self.log.info("stopping {count} workers", count=len(workers))
        for worker in workers:
            worker.signal("TERM")
        killer = self.reactor.callLater(self.shutdown_timeout + 10, self._kill, workers)

        def done(_: Any) -> None:
            if killer.active():
                killer.cancel()
            self.close_sockets()

        d = DeferredList([w.ended for w in workers], consumeErrors=True)
        return d.addCallback(done)

    def _kill(self, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            if not worker.ended.called:
                self.log.warn(
                    "worker {index} (pid {pid}) did not stop in time: killed",
                    index=worker.index,
                    pid=worker.pid,
                )
                worker.signal("KILL")


def _describe_exit(reason: Failure) -> str:
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exit status 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            try:
                return f"signal {signal.Signals(value.signal).name}"
            except ValueError:
                return f"signal {value.signal}"
        return f"exit status {value.exitCode}"
    return str(value)
