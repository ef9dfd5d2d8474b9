"""``twistd ws --workers N``: real worker processes behind one port, sharing
state through a real ``redis-server`` (issue 14 item 5).

The clients are the ``websockets`` library's; the app is
``tests/integration/cluster_app.py``, which answers ``id`` with the
connection id and the process id of the worker that holds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.integration.redis_support import RedisServer
from tests.integration.support import Twistd, in_thread
from wsplugin.backplane import holder_of

APP = "tests.integration.cluster_app:Node"


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (blocking; run in a thread) until it is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out: {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def whoami(ws: ClientConnection) -> tuple[str, int]:
    """The connection id and the worker pid holding ``ws``."""
    ws.send("id")
    _, conn_id, pid = ws.recv(timeout=10).split()
    return conn_id, int(pid)


class WorkersTests(TestCase):
    """N workers, one port, one Redis."""

    timeout = 120

    def start(self, *args: str, workers: int = 2) -> tuple[Twistd, RedisServer]:
        redis = RedisServer(self).start()
        node = Twistd(
            self,
            "--workers",
            str(workers),
            "--backplane",
            redis.url,
            "--node-name",
            "box",
            "--app",
            APP,
            "--shutdown-timeout",
            "3",
            *args,
        )
        node.wait_listening()
        return node, redis

    def clients(self, node: Twistd, count: int) -> list[ClientConnection]:
        """``count`` clients, closed at cleanup; each may land on any worker."""
        stack = contextlib.ExitStack()
        self.addCleanup(stack.close)
        url = f"ws://127.0.0.1:{node.port}/"
        return [
            stack.enter_context(connect(url, open_timeout=10)) for _ in range(count)
        ]

    def test_without_backplane_is_a_one_line_error(self) -> None:
        """--workers 2 alone exits 1; the last line names --backplane."""
        node = Twistd(self, "--workers", "2")
        status = node.proc.wait(timeout=60)
        output = node.proc.stdout.read().decode() if node.proc.stdout else ""
        self.assertEqual(status, 1)
        last = output.strip().splitlines()[-1]
        self.assertIn("--workers 2 needs --backplane URL", last)

    @inlineCallbacks
    def test_workers_share_the_port_not_state(self) -> Any:
        """Connections spread over both workers; their ids name node and
        worker; a broadcast and write_data from one worker reach
        connections of the other (through Redis); counts are the node's."""
        node, _ = self.start()

        def scenario() -> tuple[dict[str, set[int]], list[str], str]:
            conns = self.clients(node, 16)
            holders: dict[str, set[int]] = {}
            ids = []
            for ws in conns:
                conn_id, pid = whoami(ws)
                ids.append(conn_id)
                holders.setdefault(holder_of(conn_id) or "?", set()).add(pid)
            conns[0].send("bcast to everyone")
            got = [ws.recv(timeout=10) for ws in conns]
            assert got == ["to everyone"] * 16, got
            other = next(
                i for i, c in enumerate(ids) if holder_of(c) != holder_of(ids[0])
            )
            conns[0].send(f"send {ids[other]} just you")
            direct = conns[other].recv(timeout=10)

            def counted() -> Any:
                conns[1].send("count")
                return conns[1].recv(timeout=10) == "count 16"

            wait_until(counted, 20, "a cluster-wide count of 16")
            return holders, ids, direct

        holders, ids, direct = yield in_thread(scenario)
        self.assertEqual(set(holders), {"box.0", "box.1"})
        self.assertEqual(len(holders["box.0"] | holders["box.1"]), 2)
        self.assertEqual(direct, "just you")

    @inlineCallbacks
    def test_dead_worker_is_restarted_and_logged(self) -> Any:
        """SIGKILL on a worker: the supervisor logs it and starts another
        on the same socket; connections of the other worker stay up."""
        node, _ = self.start()

        def scenario() -> tuple[int, int]:
            conns = self.clients(node, 12)
            found = {holder_of(whoami(ws)[0]): (ws, whoami(ws)[1]) for ws in conns}
            victim_pid = found["box.1"][1]
            survivor = found["box.0"][0]
            os.kill(victim_pid, signal.SIGKILL)
            wait_until(
                lambda: f"(pid {victim_pid}) died (signal SIGKILL)" in node.read_log(),
                30,
                "the supervisor logged the death",
            )
            wait_until(
                lambda: node.read_log().count("worker 1 started") >= 2,
                30,
                "worker 1 started again",
            )

            def new_worker_1() -> Any:
                (ws,) = self.clients(node, 1)
                conn_id, pid = whoami(ws)
                return pid if holder_of(conn_id) == "box.1" else None

            new_pid = wait_until(new_worker_1, 60, "a connection on the new worker 1")
            survivor.send("id")
            survivor.recv(timeout=10)  # still open
            return victim_pid, new_pid

        victim, new = yield in_thread(scenario)
        self.assertNotEqual(victim, new)
        self.assertFalse(alive(victim))

    @inlineCallbacks
    def test_sigterm_drains_every_worker(self) -> Any:
        """SIGTERM to the supervisor: every client of every worker gets a
        1001 close, the workers exit, then the supervisor does."""
        node, _ = self.start()

        def scenario() -> tuple[list[int | None], set[int], int]:
            conns = self.clients(node, 10)
            pids = {whoami(ws)[1] for ws in conns}
            assert len(pids) == 2, pids
            node.proc.send_signal(signal.SIGTERM)
            codes: list[int | None] = []
            for ws in conns:
                try:
                    ws.recv(timeout=20)
                except ConnectionClosed as e:
                    codes.append(e.rcvd.code if e.rcvd else None)
            status = node.proc.wait(timeout=30)
            return codes, pids, status

        codes, pids, status = yield in_thread(scenario)
        self.assertEqual(codes, [1001] * 10)
        self.assertIn(status, (0, -signal.SIGTERM))
        self.assertFalse(any(alive(pid) for pid in pids))
        self.assertIn("stopping 2 workers", node.read_log())

    @inlineCallbacks
    def test_killed_supervisor_takes_its_workers(self) -> Any:
        """A supervisor killed outright leaves no worker behind: each sees
        its standard input close and stops."""
        node, _ = self.start()

        def scenario() -> set[int]:
            conns = self.clients(node, 8)
            pids = {whoami(ws)[1] for ws in conns}
            node.proc.kill()
            node.proc.wait(timeout=10)
            wait_until(lambda: not any(alive(p) for p in pids), 30, "workers gone")
            return pids

        pids = yield in_thread(scenario)
        self.assertEqual(len(pids), 2)
