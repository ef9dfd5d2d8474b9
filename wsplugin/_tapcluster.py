"""The scale-out options of ``twistd ws``: ``--backplane``,
``--history-size``, ``--history-ttl``, ``--node-name`` and ``--workers``.

Kept out of :mod:`wsplugin.tap` so that module stays about the server's own
options: :data:`CLUSTER_PARAMETERS` are appended to its ``optParameters``
(and so are keys of the ``--config`` file, which derives its keys from the
flags), :func:`check_cluster` runs in its ``postOptions`` and
:func:`cluster_service` in ``makeService``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from wsplugin._worker import ParentWatch, WorkerEnv
from wsplugin._workers import WorkerPool, check_shareable
from wsplugin.backplane import Backplane, make_backplane, make_node_id
from wsplugin.errors import ConfigError
from wsplugin.server import WebSocketServer

__all__ = ["CLUSTER_PARAMETERS", "MAX_WORKERS", "Cluster", "check_cluster"]

MAX_WORKERS = 256
"""Most ``--workers``: more processes than that is a typo, not a machine."""


def _number(flag: str, kind: type) -> Callable[[str], Any]:
    what = "a whole number" if kind is int else "a number"

    def coerce(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise usage.UsageError(f"--{flag} takes {what}, not {value!r}") from None

    return coerce


CLUSTER_PARAMETERS: list[list[Any]] = [
    [
        "backplane",
        None,
        None,
        "Act as one server with every server on this engine: "
        "redis://[:password@]host[:port][/db], rediss://..., "
        "unix:///path.sock (docs/scaling.md).",
    ],
    [
        "history-size",
        None,
        0,
        "Publications each channel keeps for subscribers that come back "
        "(0: none; a publisher may ask for more).",
        _number("history-size", int),
    ],
    [
        "history-ttl",
        None,
        300.0,
        "Seconds a channel's history lives after its last publication.",
        _number("history-ttl", float),
    ],
    [
        "node-name",
        None,
        None,
        "This server's name on the backplane, the start of its connection "
        "ids (default: the host name and 6 random hex digits).",
    ],
    [
        "workers",
        None,
        1,
        "Worker processes sharing the ports, one per core (> 1 needs --backplane).",
        _number("workers", int),
    ],
]
"""``twistd ws``'s scale-out options (``optParameters`` rows)."""


@dataclass
class Cluster:
    """What the scale-out options decided.

    Attributes:
        backplane: The engine the server uses (built, not connected).
        node_name: The node's name (shared by the workers of a supervisor).
        workers: ``--workers``.
        worker: This process's place when it is a worker, else None.
    """

    backplane: Backplane
    node_name: str
    workers: int
    worker: WorkerEnv | None

    @property
    def supervises(self) -> bool:
        """This process starts and watches workers (it serves nothing)."""
        return self.workers > 1 and self.worker is None


def check_cluster(options: Any) -> Cluster:
    """Check the scale-out options of parsed ``twistd ws`` options (a
    ``usage.Options``: ``options[flag]``), with one-line errors.

    Raises:
        usage.UsageError: a bad value, ``--workers N`` (N > 1) without
            ``--backplane``, or a port workers cannot share.
    """
    try:
        worker = WorkerEnv.from_environ()
    except ConfigError as e:
        raise usage.UsageError(str(e)) from None
    workers, url = options["workers"], options["backplane"]
    if not 1 <= workers <= MAX_WORKERS:
        raise usage.UsageError(f"--workers takes 1 to {MAX_WORKERS}, not {workers}")
    if workers > 1 and worker is None:
        if url is None or url == "local":
            raise usage.UsageError(
                f"--workers {workers} needs --backplane URL, e.g. --backplane "
                "redis://127.0.0.1:6379/0: workers share the ports, not "
                "connections, channels or counts"
            )
        for description in options["ports"]:
            try:
                check_shareable(description)
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
    try:
        if worker is None:
            node_id = make_node_id(options["node-name"], 0)
        else:
            node_id = make_node_id(worker.node_name, worker.index)
    except ConfigError as e:
        raise usage.UsageError(f"--node-name: {e}") from None
    try:
        backplane = make_backplane(
            url,
            node_id=node_id,
            history_size=options["history-size"],
            history_ttl=options["history-ttl"],
        )
    except ConfigError as e:
        message = str(e).replace("history_size", "--history-size")
        message = message.replace("history_ttl", "--history-ttl")
        if "--history" not in message:
            message = f"--backplane: {message}"
        raise usage.UsageError(message) from None
    return Cluster(backplane, node_id.rsplit(".", 1)[0], workers, worker)


def supervisor(cluster: Cluster, options: Any, shutdown_timeout: float) -> WorkerPool:
    """The :class:`WorkerPool` of ``--workers N``: N workers, each started
    with ``options.argv`` (the supervisor's own ``ws`` options)."""
    return WorkerPool(
        count=cluster.workers,
        argv=options.argv,
        descriptions=options["ports"],
        node_name=cluster.node_name,
        shutdown_timeout=shutdown_timeout,
    )


def become_worker(server: WebSocketServer, worker: WorkerEnv, ports: list[str]) -> None:
    """Make ``server`` a worker of ``--workers N``: it listens on the
    supervisor's sockets, stops when the supervisor is gone, and leaves
    SIGINT to it (a terminal's Ctrl-C reaches every process of the group;
    the supervisor then stops the workers with SIGTERM)."""
    reactor = server.reactor
    server.listening.make_endpoint = worker.endpoint_maker(ports)

    def gone() -> None:
        if reactor.running:
            reactor.stop()

    ParentWatch(reactor, gone).setServiceParent(server)
    reactor.callWhenRunning(signal.signal, signal.SIGINT, signal.SIG_IGN)
