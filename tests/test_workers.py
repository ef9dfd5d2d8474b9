"""wsplugin._workers: the supervisor of ``--workers N``, with a fake
process-spawning reactor (the real processes: tests/integration/test_workers.py)."""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._worker import ENV_FDS, ENV_NODE, ENV_WORKER
from wsplugin._workers import (
    WorkerPool,
    bind_port,
    check_shareable,
    split_description,
)
from wsplugin.errors import ConfigError


class SplitTests(SynchronousTestCase):
    def test_split(self) -> None:
        """Kind, positional and keyword arguments; backslash escapes."""
        self.assertEqual(
            split_description("tcp:8888:interface=127.0.0.1"),
            ("tcp", ["8888"], {"interface": "127.0.0.1"}),
        )
        self.assertEqual(
            split_description(r"tcp6:0:interface=\:\:1"),
            ("tcp6", ["0"], {"interface": "::1"}),
        )
        self.assertEqual(split_description("UNIX:/a"), ("unix", ["/a"], {}))

    def test_shareable(self) -> None:
        """ssl:/tls: strings (and plugins) cannot be shared: the error
        says to use --tls-cert."""
        for ok in ("tcp:1", "tcp6:1", "unix:/x", "systemd:domain=INET:index=0"):
            check_shareable(ok)
        e = self.assertRaises(ConfigError, check_shareable, "ssl:443:privateKey=k")
        self.assertIn("--tls-cert", str(e))


class BindTests(SynchronousTestCase):
    def test_tcp_one_socket_per_worker(self) -> None:
        """tcp:0 gives each worker its own socket on one port
        (SO_REUSEPORT), listening."""
        socks, family = bind_port("tcp:0:interface=127.0.0.1", 3)
        self.addCleanup(lambda: [s.close() for s in socks])
        self.assertEqual(family, "INET")
        self.assertEqual(len(socks), 3)
        self.assertEqual(len({s.getsockname() for s in socks}), 1)
        for s in socks:
            self.assertTrue(s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))

    def test_unix_shared_and_stale_file_replaced(self) -> None:
        """A Unix socket is shared; a stale socket file is replaced, one in
        use is refused."""
        d = tempfile.mkdtemp(prefix="wsw-", dir="/tmp")
        self.addCleanup(os.rmdir, d)
        path = os.path.join(d, "s")
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
        socks, family = bind_port(f"unix:{path}:mode=600", 4)
        self.addCleanup(os.unlink, path)
        self.addCleanup(socks[0].close)
        self.assertEqual((len(socks), family), (1, "UNIX"))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertRaises(OSError, bind_port, f"unix:{path}", 2)

    def test_bad_strings(self) -> None:
        self.assertRaises(ConfigError, bind_port, "tcp:notaport", 2)
        self.assertRaises(ConfigError, bind_port, "systemd:domain=INET:index=7", 2)

    def test_taken_port(self) -> None:
        """A port another socket holds (without SO_REUSEPORT) is an OSError."""
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        self.assertRaises(OSError, bind_port, f"tcp:{port}:interface=127.0.0.1", 2)


class Transport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeReactor(Clock):
    """A clock that records spawnProcess calls."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    def spawnProcess(self, proto: Any, executable: str, args: list[str], **kw: Any):
        transport = Transport(1000 + len(self.spawned))
        proto.makeConnection(transport)
        self.spawned.append({"proto": proto, "args": args, **kw})
        return transport


def exited(code: int | None = 0, sig: int | None = None) -> Failure:
    if code == 0 and sig is None:
        return Failure(ProcessDone(0))
    return Failure(ProcessTerminated(code, sig))


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.events: list[dict[str, Any]] = []
        self.pool = WorkerPool(
            count=2,
            argv=["--backplane", "redis://x", "--workers", "2"],
            descriptions=["tcp:0:interface=127.0.0.1"],
            node_name="box",
            shutdown_timeout=2.0,
            reactor=self.reactor,
            python="/py",
        )
        self.pool.log = Logger(observer=self.events.append)
        self.pool.startService()
        self.addCleanup(self.pool.close_sockets)

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def test_spawned_with_their_sockets(self) -> None:
        """Each worker runs the same ws options, with its index, the node
        name and its own socket at descriptor 3."""
        self.assertEqual(len(self.reactor.spawned), 2)
        for index, spawned in enumerate(self.reactor.spawned):
            self.assertEqual(
                spawned["args"],
                ["/py", "-m", "twisted", "--log-format", "text", "--log-file", "-"]
                + ["ws", "--backplane", "redis://x", "--workers", "2"],
            )
            env = spawned["env"]
            self.assertEqual(
                (env[ENV_WORKER], env[ENV_NODE], env[ENV_FDS]),
                (str(index), "box", "3:INET"),
            )
            self.assertNotIn("LISTEN_FDS", env)
            fds = spawned["childFDs"]
            self.assertEqual({k: fds[k] for k in (0, 1, 2)}, {0: "w", 1: "r", 2: "r"})
        socks = self.pool.sockets[0][0]
        self.assertEqual(
            [s["childFDs"][3] for s in self.reactor.spawned],
            [socks[0].fileno(), socks[1].fileno()],
        )
        self.assertIn("worker 1 started (pid 1001)", self.lines())

    def test_output_forwarded_at_its_level(self) -> None:
        """A worker's lines land in the supervisor's log, prefixed, at the
        level the worker logged them; a partial line waits for its end."""
        proto = self.reactor.spawned[1]["proto"]
        proto.childDataReceived(
            1, b"2026-01-01T00:00:00+0000 [x#error] boom\n[y#info] half"
        )
        proto.childDataReceived(2, b"Traceback\n")
        proto.childDataReceived(1, b" line\n")
        forwarded = [(e["log_level"].name, formatEvent(e)) for e in self.events[-3:]]
        self.assertEqual(
            forwarded,
            [
                ("error", "worker 1: [x#error] boom"),
                ("info", "worker 1: Traceback"),
                ("info", "worker 1: [y#info] half line"),
            ],
        )

    def test_dead_worker_restarted_with_backoff(self) -> None:
        """A death is logged with its cause and the worker started again
        (same index, same socket); quick deaths back off, doubling."""
        first = self.reactor.spawned[0]["proto"]
        self.reactor.advance(3)
        first.processEnded(exited(None, 9))
        self.assertIn(
            "worker 0 (pid 1000) died (signal SIGKILL) after 3.0s; "
            "starting it again in 1.0s",
            self.lines(),
        )
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.spawned), 3)
        again = self.reactor.spawned[2]
        self.assertEqual(again["env"][ENV_WORKER], "0")
        self.assertEqual(again["childFDs"][3], self.reactor.spawned[0]["childFDs"][3])
        again["proto"].processEnded(exited(1))
        self.assertIn("exit status 1", self.lines()[-1])
        self.assertIn("again in 2.0s", self.lines()[-1])
        self.reactor.advance(2)
        self.reactor.advance(60)
        self.reactor.spawned[3]["proto"].processEnded(exited(1))
        self.assertIn("again in 1.0s", self.lines()[-1])  # it ran a while
        self.assertEqual(self.pool.restarts, 3)

    def test_stop_terminates_then_kills(self) -> None:
        """stopService sends SIGTERM to each worker and fires once all have
        ended; one still running shutdown_timeout + 10 s later is killed.
        Workers ending then are not restarted; the sockets are closed."""
        protos = [s["proto"] for s in self.reactor.spawned]
        d = self.pool.stopService()
        self.assertEqual([p.transport.signals for p in protos], [["TERM"], ["TERM"]])
        protos[0].processEnded(exited(None, 15))
        self.reactor.advance(12)
        self.assertEqual(protos[1].transport.signals, ["TERM", "KILL"])
        self.assertNoResult(d)
        protos[1].processEnded(exited(None, 9))
        self.successResultOf(d)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(self.pool.sockets, [])
        self.assertIn("worker 0 (pid 1000) stopped: signal SIGTERM", self.lines())

    def test_stop_cancels_a_pending_restart(self) -> None:
        """A worker waiting to be started again is not, once stopping."""
        self.reactor.spawned[0]["proto"].processEnded(exited(3))
        d = self.pool.stopService()
        self.reactor.spawned[1]["proto"].processEnded(exited(None, 15))
        self.successResultOf(d)
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_privileged_bind_failure_exits(self) -> None:
        """A port that cannot be bound ends the supervisor with one line."""
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        self.addCleanup(taken.close)
        pool = WorkerPool(
            count=2,
            argv=[],
            descriptions=[f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"],
            node_name="n",
            shutdown_timeout=1,
            reactor=FakeReactor(),
        )
        e = self.assertRaises(SystemExit, pool.privilegedStartService)
        self.assertIn("cannot listen", str(e))
