"""wsplugin._worker: what a worker of ``--workers N`` learns and does."""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._worker import (
    ENV_FDS,
    ENV_NODE,
    ENV_WORKER,
    InheritedEndpoint,
    ParentWatch,
    WorkerEnv,
)
from wsplugin.errors import ConfigError


class WorkerEnvTests(SynchronousTestCase):
    def test_outside_a_worker(self) -> None:
        """No ENV_WORKER: not a worker."""
        self.assertIsNone(WorkerEnv.from_environ({}))

    def test_parsed(self) -> None:
        """Index, node name and one descriptor per port, in order."""
        env = WorkerEnv.from_environ(
            {ENV_WORKER: "1", ENV_NODE: "web", ENV_FDS: "3:INET,4:UNIX"}
        )
        assert env is not None
        self.assertEqual(env.index, 1)
        self.assertEqual(env.node_name, "web")
        self.assertEqual(env.fds, ((3, socket.AF_INET), (4, socket.AF_UNIX)))

    def test_malformed(self) -> None:
        """A broken environment is a ConfigError, not a crash later."""
        for env in (
            {ENV_WORKER: "x", ENV_NODE: "n"},
            {ENV_WORKER: "0"},
            {ENV_WORKER: "0", ENV_NODE: "n", ENV_FDS: "3:APPLETALK"},
        ):
            self.assertRaises(ConfigError, WorkerEnv.from_environ, env)

    def test_endpoints_adopt_without_closing(self) -> None:
        """Each port string maps to its inherited descriptor; listening
        adopts it (again after a stop: the descriptor is not closed)."""
        env = WorkerEnv(0, "n", ((3, socket.AF_INET), (4, socket.AF_INET6)))
        self.assertRaises(ConfigError, env.endpoint_maker, ["tcp:1"])
        make = env.endpoint_maker(["tcp:1", "tcp6:2"])
        reactor = MemoryReactorClock()
        endpoint = make(reactor, "tcp6:2")
        self.assertIsInstance(endpoint, InheritedEndpoint)
        self.assertIn("tcp6:2 (inherited, fd 4, worker 0)", str(endpoint))
        adopted: list[Any] = []
        reactor.adoptStreamPort = lambda fd, fam, f: adopted.append((fd, fam)) or "p"
        self.assertEqual(self.successResultOf(endpoint.listen(object())), "p")
        self.successResultOf(endpoint.listen(object()))
        self.assertEqual(adopted, [(4, socket.AF_INET6)] * 2)

    def test_adopt_failure_is_a_failed_deferred(self) -> None:
        """A descriptor that cannot be adopted fails the listen."""

        class Refusing(MemoryReactorClock):
            def adoptStreamPort(self, *a: Any) -> Any:
                raise OSError("bad fd")

        endpoint = InheritedEndpoint(Refusing(), 99, socket.AF_INET, "x")
        self.failureResultOf(endpoint.listen(object()), OSError)


class FakeReactor:
    def __init__(self) -> None:
        self.readers: list[Any] = []

    def addReader(self, reader: Any) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: Any) -> None:
        if reader in self.readers:
            self.readers.remove(reader)


class ParentWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.r, self.w = os.pipe()
        self.addCleanup(os.close, self.r)
        self.reactor = FakeReactor()
        self.gone: list[bool] = []
        self.watch = ParentWatch(self.reactor, lambda: self.gone.append(True), self.r)
        self.watch.startService()

    def test_end_of_file_stops_the_worker(self) -> None:
        """Data is ignored; end of file (the supervisor exited) calls
        on_gone once and stops watching."""
        self.assertEqual(self.reactor.readers, [self.watch])
        os.write(self.w, b"x")
        self.watch.doRead()
        self.watch.doRead()  # nothing to read: not an end
        self.assertEqual(self.gone, [])
        os.close(self.w)
        self.watch.doRead()
        self.watch.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.gone, [True])
        self.assertEqual(self.reactor.readers, [])

    def test_hang_up_without_read(self) -> None:
        """epoll reports a closed pipe as a hang-up (connectionLost)."""
        os.close(self.w)
        self.watch.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(self.gone, [True])

    def test_stopping_stops_watching(self) -> None:
        os.close(self.w)
        self.watch.stopService()
        self.assertEqual(self.reactor.readers, [])
        self.assertEqual(self.watch.fileno(), self.r)
        self.assertEqual(self.watch.logPrefix(), "ParentWatch")
