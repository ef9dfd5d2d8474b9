"""wsplugin._tapcluster: ``twistd ws``'s scale-out options."""

from __future__ import annotations

import os
from typing import Any

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._worker import ENV_FDS, ENV_NODE, ENV_WORKER
from wsplugin._workers import WorkerPool
from wsplugin.backplane import LocalBackplane, RedisBackplane, holder_of
from wsplugin.server import WebSocketServer
from wsplugin.tap import Options, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """No scale-out option: one process, the in-process engine with no
        history, a random node name."""
        options = parse()
        cluster = options.cluster
        assert cluster is not None
        self.assertIsInstance(cluster.backplane, LocalBackplane)
        self.assertEqual(cluster.backplane.history_size, 0)
        self.assertEqual((cluster.workers, cluster.worker), (1, None))
        self.assertFalse(cluster.supervises)
        self.assertRegex(cluster.backplane.node_id, r"^[\w-]+-[0-9a-f]{6}\.0$")

    def test_redis(self) -> None:
        """--backplane builds the Redis engine (not connected) with the
        node name and history options; the server uses it."""
        options = parse(
            "--backplane", "redis://:pw@127.0.0.1:6399/2", "--node-name", "web-1",
            "--history-size", "50", "--history-ttl", "60",
        )  # fmt: skip
        bp = options.cluster.backplane
        self.assertIsInstance(bp, RedisBackplane)
        self.assertEqual(
            (bp.node_id, bp.history_size, bp.history_ttl), ("web-1.0", 50, 60.0)
        )
        self.assertEqual(bp.state, "stopped")
        server = makeService(options)
        self.assertIsInstance(server, WebSocketServer)
        self.assertIs(server.backplane, bp)

    def test_errors_are_one_line_and_name_the_flag(self) -> None:
        for args, expected in [
            (["--workers", "2"], "--workers 2 needs --backplane URL"),
            (["--workers", "2", "--backplane", "local"], "needs --backplane URL"),
            (["--workers", "0"], "--workers takes 1 to 256, not 0"),
            (["--workers", "two"], "--workers takes a whole number, not 'two'"),
            (["--node-name", "a.b"], "--node-name: node name 'a.b' must be"),
            (["--history-size", "-1"], "--history-size must be an int >= 0"),
            (["--history-ttl", "0"], "--history-ttl must be seconds > 0"),
            (["--backplane", "http://x"], "--backplane: "),
            (
                ["--workers", "2", "--backplane", "redis://h", "--port", "ssl:1"],
                "cannot be shared by workers",
            ),
        ]:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertIn(expected, str(e), args)
            self.assertNotIn("\n", str(e))

    def test_backplane_password_not_in_errors(self) -> None:
        e = self.assertRaises(
            usage.UsageError, parse, "--backplane", "redis://:s3cret@h:notaport/0"
        )
        self.assertNotIn("s3cret", str(e))

    def test_supervisor(self) -> None:
        """--workers N with a backplane: makeService is the supervisor, with
        the ws options as given and the node name for every worker."""
        args = ["--workers", "3", "--backplane", "redis://127.0.0.1:1/0"]
        args += ["--node-name", "box", "--shutdown-timeout", "7"]
        options = parse(*args)
        pool = makeService(options)
        self.assertIsInstance(pool, WorkerPool)
        self.assertEqual((pool.count, pool.node_name), (3, "box"))
        self.assertEqual(pool.argv, args)
        self.assertEqual(pool.descriptions, ["tcp:8888"])
        self.assertEqual(pool.shutdown_timeout, 7.0)


class WorkerModeTests(SynchronousTestCase):
    def setUp(self) -> None:
        saved = {k: os.environ.get(k) for k in (ENV_WORKER, ENV_NODE, ENV_FDS)}

        def restore() -> None:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

        self.addCleanup(restore)
        os.environ.update({ENV_WORKER: "1", ENV_NODE: "box", ENV_FDS: "3:INET"})

    def test_worker_builds_the_server(self) -> None:
        """In a worker, --workers is not a supervisor: the server adopts the
        inherited socket, and its ids say node and worker; a systemd: port
        is not checked (the supervisor owns it)."""
        options = parse(
            "--workers", "2", "--backplane", "redis://127.0.0.1:1/0",
            "--port", "systemd:domain=INET:index=0",
        )  # fmt: skip
        server: Any = makeService(options)
        self.assertIsInstance(server, WebSocketServer)
        self.assertEqual(server.backplane.node_id, "box.1")
        self.assertEqual(holder_of(server.backplane.new_connection_id()), "box.1")
        endpoint = server.listening.make_endpoint(None, "systemd:domain=INET:index=0")
        self.assertEqual(endpoint.fd, 3)
        self.assertIn("ParentWatch", [type(s).__name__ for s in server])
