"""A worker of ``twistd ws --workers N``: what it learns from its supervisor.

The supervisor (:class:`wsplugin._workers.WorkerPool`) starts each worker
as ``python -m twisted ws <its options>`` with three environment variables
(:class:`WorkerEnv`) and the listening sockets as inherited descriptors
(3, 4, ...). The worker:

* listens on those sockets instead of binding the ``--port`` strings
  (:meth:`WorkerEnv.endpoint_maker`, :class:`InheritedEndpoint`: Twisted's
  ``adoptStreamPort``);
* names itself ``<node>.<index>`` on the backplane, so its connection ids
  say which node and worker hold them;
* stops when the supervisor goes away (:class:`ParentWatch`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReadDescriptor, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from wsplugin.errors import ConfigError

__all__ = [
    "ENV_FDS",
    "ENV_NODE",
    "ENV_WORKER",
    "FAMILIES",
    "FIRST_FD",
    "InheritedEndpoint",
    "ParentWatch",
    "WorkerEnv",
]

ENV_WORKER = "WSPLUGIN_WORKER"
"""The worker's index (0, 1, ...): set only in a worker's environment."""
ENV_NODE = "WSPLUGIN_NODE"
"""The node's name, the same for all workers of a supervisor."""
ENV_FDS = "WSPLUGIN_LISTEN_FDS"
"""``fd:FAMILY`` per ``--port``, in order: ``3:INET,4:UNIX``."""

FIRST_FD = 3
"""The first descriptor a worker gets its sockets on (after stdio)."""

FAMILIES = {"INET": socket.AF_INET, "INET6": socket.AF_INET6, "UNIX": socket.AF_UNIX}
"""Address families by the names ``ENV_FDS`` uses."""


@implementer(IStreamServerEndpoint)
class InheritedEndpoint:
    """Listens on an inherited listening socket (the supervisor's).

    Unlike Twisted's ``AdoptedStreamServerEndpoint`` it does not close the
    descriptor after adopting it (``adoptStreamPort`` works on a copy), so
    the server can listen again after ``stop()``/``start()``.
    """

    def __init__(self, reactor: Any, fd: int, family: int, label: str) -> None:
        self.reactor = reactor
        self.fd = fd
        self.family = family
        self.label = label

    def __str__(self) -> str:
        return self.label

    def listen(self, factory: Any) -> Deferred[Any]:
        """Adopt the socket for ``factory``."""
        try:
            port = self.reactor.adoptStreamPort(self.fd, self.family, factory)
        except Exception:
            return fail()
        return succeed(port)


@dataclass(frozen=True)
class WorkerEnv:
    """What a worker process learns from its environment.

    Attributes:
        index: Its index among the supervisor's workers.
        node_name: The node's name (its connection ids start with
            ``<node_name>.<index>.``).
        fds: ``(descriptor, address family)`` per ``--port``, in order.
    """

    index: int
    node_name: str
    fds: tuple[tuple[int, int], ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerEnv | None:
        """The worker's settings, or None outside a worker.

        Raises:
            ConfigError: the variables are there but malformed.
        """
        env = os.environ if environ is None else environ
        if ENV_WORKER not in env:
            return None
        try:
            index = int(env[ENV_WORKER])
            fds = []
            for item in filter(None, env.get(ENV_FDS, "").split(",")):
                fd, family = item.split(":")
                fds.append((int(fd), FAMILIES[family]))
            return cls(index, env[ENV_NODE], tuple(fds))
        except (KeyError, ValueError) as e:
            raise ConfigError(f"bad worker environment ({e})") from None

    def endpoint_maker(
        self, descriptions: Sequence[str]
    ) -> Callable[[Any, str], IStreamServerEndpoint]:
        """A replacement for ``serverFromString`` that gives the inherited
        socket of each of ``descriptions`` (the ``--port`` strings)."""
        if len(descriptions) != len(self.fds):
            raise ConfigError(
                f"the supervisor passed {len(self.fds)} sockets for "
                f"{len(descriptions)} ports"
            )
        table = dict(zip(descriptions, self.fds, strict=True))

        def make(reactor: Any, description: str) -> IStreamServerEndpoint:
            fd, family = table[description]
            label = f"{description} (inherited, fd {fd}, worker {self.index})"
            return InheritedEndpoint(reactor, fd, family, label)

        return make


@implementer(IReadDescriptor)
class ParentWatch(Service):
    """Stops a worker when its supervisor is gone: the worker's standard
    input is a pipe from the supervisor, which reaches end of file when the
    supervisor exits, however it exits (SIGKILL included)."""

    log = Logger()

    def __init__(self, reactor: Any, on_gone: Callable[[], None], fd: int = 0) -> None:
        self.reactor = reactor
        self.on_gone = on_gone
        self.fd = fd

    def startService(self) -> None:
        """Watch the descriptor."""
        super().startService()
        os.set_blocking(self.fd, False)
        self.reactor.addReader(self)

    def stopService(self) -> None:
        """Stop watching."""
        super().stopService()
        self.reactor.removeReader(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "ParentWatch"

    def doRead(self) -> None:
        """Readable: data (ignored) or end of file (the supervisor left)."""
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._gone()

    def connectionLost(self, reason: Failure) -> None:
        """The reactor saw the pipe hang up (epoll reports a closed pipe
        that way, without a read): the supervisor left."""
        self._gone()

    def _gone(self) -> None:
        if not self.running:
            return
        self.running = False
        self.reactor.removeReader(self)
        self.log.warn("the supervisor is gone: this worker stops")
        self.on_gone()
