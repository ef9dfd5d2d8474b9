"""Servers as one, over a real ``redis-server``, with real WebSocket clients
(issue 14 items 4 and 6).

- ``OutageTests``: two in-process servers on different ports; Redis is
  killed and restarted: local delivery goes on, no client is disconnected,
  and a client that comes back afterwards recovers everything still in
  history.
- ``AcrossNodesTests``: the sending API of one in-process server reaches
  the clients of another: ``broadcast`` with ``ids=``, ``exclude=`` and
  ``subprotocol=``, ``disconnect(id)`` and ``disconnect_all``.
- ``TwoNodesTests``: two ``twistd ws`` processes on different ports against
  one Redis: a channel broadcast from node A reaches subscribers on node B,
  ``write_data`` from B reaches a connection on A, and cutting node A's
  Redis links (``CLIENT KILL``) loses nothing for its subscribers, nor for
  a client that recovers from its last position; Redis restarted under
  them (``websockets`` clients on both, as in the issue's independent
  check); and the same two nodes
  behind nginx (``examples/nginx/wsplugin-cluster.conf``, no sticky
  sessions).

The app is ``tests/integration/cluster_app.py``. Without ``redis-server``
these skip locally and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from contextlib import ExitStack
from typing import Any

from twisted.internet.defer import inlineCallbacks
from websockets.sync.client import connect as ws_connect

from tests.integration.cluster_app import Node
from tests.integration.proxy_support import EXAMPLES, Nginx, TLSFiles
from tests.integration.redis_support import RedisServer
from tests.integration.support import ServerTestCase, Twistd, in_thread
from wsplugin.backplane import RedisBackplane
from wsplugin.channels import SUBPROTOCOL
from wsplugin.client import connect

APP = "tests.integration.cluster_app:Node"


def redis_clients_of(pid: int, redis: RedisServer) -> list[str]:
    """The ``addr`` of every Redis client connection that process ``pid``
    holds (its sockets' inodes, matched in /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].split(":")[1], 16))
    listing = redis.command("CLIENT", "LIST")
    assert isinstance(listing, bytes)
    out = []
    for entry in listing.decode().splitlines():
        addr = dict(kv.split("=", 1) for kv in entry.split() if "=" in kv)["addr"]
        if int(addr.rsplit(":", 1)[1]) in ports:
            out.append(addr)
    return out


class TwoServers(ServerTestCase):
    """Two in-process servers on one Redis, and clients of them."""

    timeout = 90

    @inlineCallbacks
    def node(self, redis: RedisServer, name: str) -> Any:
        bp = RedisBackplane(
            redis.url,
            node_id=f"{name}.0",
            history_size=100,
            reconnect_initial=0.05,
            reconnect_max=0.4,
            heartbeat_interval=0.5,
            counts_delay=0.05,
        )
        server = yield self.start_server(Node(), backplane=bp)
        yield self.when(lambda: bp.state == "connected", 20)
        return server, self.url

    @inlineCallbacks
    def client(self, url: str, **kw: Any) -> Any:
        conn = yield connect(url, **kw)
        self.addCleanup(lambda: conn.close() if conn.is_open else None)
        return conn

    @inlineCallbacks
    def command(self, conn: Any, text: str, answer: bool = True) -> Any:
        conn.send_text(text)
        if answer:
            reply = yield conn.receive()
            return reply
        return None


class OutageTests(TwoServers):
    """Redis goes away under two running servers."""

    @inlineCallbacks
    def test_outage_as_clients_see_it(self) -> Any:
        """While Redis is down, each node delivers its own publications to
        its own clients at once and no client is disconnected; after Redis
        returns (with its saved data), delivery crosses nodes again, and a
        client that left before the outage and comes back with its last
        position gets every publication since, the outage's included, in
        order, once."""
        redis = RedisServer(self).start()
        a, url_a = yield self.node(redis, "a")
        b, url_b = yield self.node(redis, "b")
        pa = yield self.client(url_a)
        pb = yield self.client(url_b)
        self.assertEqual((yield self.command(pa, "sub room")), "subscribed room")
        self.assertEqual((yield self.command(pb, "sub room")), "subscribed room")
        page = yield self.client(url_b, subprotocols=[SUBPROTOCOL])
        page.send_text(json.dumps({"type": "subscribe", "channel": "room"}))
        json.loads((yield page.receive()))
        pa.send_text("pub room before")
        self.assertEqual((yield pa.receive()), "before")
        self.assertEqual((yield pb.receive()), "before")
        last = json.loads((yield page.receive()))
        self.assertEqual((last["data"], last["offset"]), ("before", 1))
        page.close()
        yield page.wait_closed()

        self.assertEqual(redis.command("SAVE"), "OK")
        redis.kill()
        yield self.when(
            lambda: a.backplane.state == "disconnected" == b.backplane.state
        )
        pa.send_text("pub room during")
        self.assertEqual((yield pa.receive()), "during")  # local, at once
        self.assertTrue(pa.is_open and pb.is_open)

        redis.restart()
        yield self.when(
            lambda: a.backplane.state == "connected" == b.backplane.state, 20
        )
        pb.send_text("pub room after")
        # pb: "during" (A's queued publication, flushed with an offset, or
        # B's catch-up from history), then "after"; pa: "after" only
        first = yield pb.receive()
        second = yield pb.receive()
        got_b = [first, second]
        self.assertEqual(got_b, ["during", "after"])
        self.assertEqual((yield pa.receive()), "after")
        self.assertTrue(pa.is_open and pb.is_open)

        back = yield self.client(url_a, subprotocols=[SUBPROTOCOL])
        since = {"epoch": last["epoch"], "offset": last["offset"]}
        back.send_text(
            json.dumps({"type": "subscribe", "channel": "room", "since": since})
        )
        got = []
        for _ in range(3):
            got.append(json.loads((yield back.receive())))
        self.assertEqual(
            [(m.get("data"), m.get("offset")) for m in got],
            [("during", 2), ("after", 3), (None, 3)],
        )
        self.assertEqual(
            (got[2]["type"], got[2]["status"]), ("subscribed", "recovered")
        )
        self.assertEqual(a.backplane.stats.queue_flushed, 1)


class AcrossNodesTests(TwoServers):
    """The sending API of one server reaches the clients of another."""

    @inlineCallbacks
    def test_filters_disconnect_and_disconnect_all_cross_nodes(self) -> Any:
        """Called on server A: ``broadcast`` with ``ids=``, ``exclude=`` and
        ``subprotocol=`` reaches exactly the matching clients of server B
        (and A); ``disconnect(id)`` closes a client B holds with the code
        and reason given; ``disconnect_all`` closes every client of both
        servers. Each client's messages are checked up to an end marker
        broadcast to all, so an extra delivery would show."""
        redis = RedisServer(self).start()
        a, url_a = yield self.node(redis, "a")
        b, url_b = yield self.node(redis, "b")
        a1 = yield self.client(url_a)
        b1 = yield self.client(url_b)
        b2 = yield self.client(url_b)
        b3 = yield self.client(url_b, subprotocols=[SUBPROTOCOL])
        ids = {}
        for name, conn in (("a1", a1), ("b1", b1), ("b2", b2)):
            ids[name] = (yield self.command(conn, "id")).split()[1]
        (b3_conn,) = [c for c in b.connections if c.subprotocol == SUBPROTOCOL]
        ids["b3"] = b3_conn.id
        self.assertTrue(ids["b1"].startswith("b.0.") and ids["a1"].startswith("a.0."))

        a.broadcast("only b1", ids=[ids["b1"]])
        a.broadcast("not b1", exclude=[ids["b1"], ids["b3"]])
        a.broadcast("channels only", subprotocol=SUBPROTOCOL)
        a.broadcast("end")

        @inlineCallbacks
        def until_end(conn: Any, envelope: bool = False) -> Any:
            got = []
            while True:
                msg = yield conn.receive()
                if envelope:
                    msg = json.loads(msg)["data"]
                if msg == "end":
                    return got
                got.append(msg)

        self.assertEqual((yield until_end(a1)), ["not b1"])
        self.assertEqual((yield until_end(b1)), ["only b1"])
        self.assertEqual((yield until_end(b2)), ["not b1"])
        self.assertEqual((yield until_end(b3, envelope=True)), ["channels only"])

        a.disconnect(ids["b2"], 4001, "moved")
        yield b2.wait_closed()
        self.assertEqual((b2.close_code, b2.close_reason), (4001, "moved"))
        self.assertTrue(a1.is_open and b1.is_open and b3.is_open)

        a.disconnect_all(4002, "maintenance")
        for conn in (a1, b1, b3):
            yield conn.wait_closed()
            self.assertEqual(
                (conn.close_code, conn.close_reason), (4002, "maintenance")
            )
        self.assertEqual(len(a.connections) + len(b.connections), 0)
        # the servers still listen
        again = yield self.client(url_b)
        self.assertTrue(again.is_open)


class TwoNodesTests(ServerTestCase):
    """Two ``twistd ws`` nodes, one Redis."""

    timeout = 120

    def nodes(self) -> tuple[Twistd, Twistd, RedisServer]:
        redis = RedisServer(self).start()
        out = []
        for name in ("a", "b"):
            node = Twistd(
                self, "--backplane", redis.url, "--node-name", name, "--app", APP,
                "--history-size", "1000",
            )  # fmt: skip
            out.append(node)
        for node in out:
            node.wait_listening()
        return out[0], out[1], redis

    def clients(self, stack: ExitStack, node: Twistd, n: int, **kw: Any) -> list[Any]:
        url = f"ws://127.0.0.1:{node.port}/"
        return [stack.enter_context(ws_connect(url, **kw)) for _ in range(n)]

    @inlineCallbacks
    def test_broadcast_and_write_data_cross_nodes(self) -> Any:
        """A channel broadcast made on node A reaches the subscribers on
        node B (and not the others); write_data on node B reaches a
        connection that node A holds; counts cover both nodes."""
        a, b, _ = self.nodes()

        def scenario() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with ExitStack() as stack:
                (ca,) = self.clients(stack, a, 1)
                sub_b, other_b = self.clients(stack, b, 2)
                sub_b.send("sub room")
                assert sub_b.recv(timeout=10) == "subscribed room"
                ca.send("pub room hello from a")
                seen["b subscriber"] = sub_b.recv(timeout=10)
                ca.send("id")
                conn_a = ca.recv(timeout=10).split()[1]
                seen["a id"] = conn_a
                other_b.send(f"send {conn_a} hello from b")
                seen["a direct"] = ca.recv(timeout=10)
                try:
                    other_b.recv(timeout=0.5)
                except TimeoutError:
                    seen["b other"] = None
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    other_b.send("count")
                    seen["count"] = other_b.recv(timeout=10)
                    if seen["count"] == "count 3":
                        break
                    time.sleep(0.1)
            return seen

        seen = yield in_thread(scenario)
        self.assertEqual(seen["b subscriber"], "hello from a")
        self.assertTrue(seen["a id"].startswith("a.0."))
        self.assertEqual(seen["a direct"], "hello from b")
        self.assertIsNone(seen["b other"])
        self.assertEqual(seen["count"], "count 3")

    @inlineCallbacks
    def test_cut_link_loses_nothing(self) -> Any:
        """Node A's Redis connections are killed while node B publishes 200
        messages: A's subscriber gets every one, once, in order (A catches
        up from history when its links are back), and a page client that
        left A before the cut recovers all of them from its position."""
        a, b, redis = self.nodes()

        def scenario() -> tuple[list[str], list[Any], int]:
            with ExitStack() as stack:
                (sub_a,) = self.clients(stack, a, 1)
                (pub_b,) = self.clients(stack, b, 1)
                sub_a.send("sub room")
                assert sub_a.recv(timeout=10) == "subscribed room"
                with ws_connect(
                    f"ws://127.0.0.1:{a.port}/", subprotocols=[SUBPROTOCOL]
                ) as page:
                    page.send(json.dumps({"type": "subscribe", "channel": "room"}))
                    start = json.loads(page.recv(timeout=10))
                pub_b.send("pub room m0")
                assert sub_a.recv(timeout=10) == "m0"
                killed = 0
                for i in range(1, 201):
                    if i == 20:
                        for addr in redis_clients_of(a.proc.pid, redis):
                            redis.command("CLIENT", "KILL", "ADDR", addr)
                            killed += 1
                    pub_b.send(f"pub room m{i}")
                    time.sleep(0.01)
                got = [sub_a.recv(timeout=30) for _ in range(200)]
                with ws_connect(
                    f"ws://127.0.0.1:{a.port}/", subprotocols=[SUBPROTOCOL]
                ) as page:
                    since = {"epoch": start["epoch"], "offset": start["offset"]}
                    page.send(
                        json.dumps(
                            {"type": "subscribe", "channel": "room", "since": since}
                        )
                    )
                    recovered = [json.loads(page.recv(timeout=10)) for _ in range(202)]
            return got, recovered, killed

        got, recovered, killed = yield in_thread(scenario)
        self.assertEqual(killed, 2)  # its command link and its subscriber link
        self.assertEqual(got, [f"m{i}" for i in range(1, 201)])
        self.assertEqual(
            [m["data"] for m in recovered[:201]], [f"m{i}" for i in range(201)]
        )
        offsets = [m["offset"] for m in recovered[:201]]
        self.assertEqual(offsets, list(range(offsets[0], offsets[0] + 201)))
        self.assertEqual(recovered[201]["status"], "recovered")
        self.assertIn("reconnected", a.read_log())

    @inlineCallbacks
    def test_redis_restart_under_two_nodes(self) -> Any:
        """The issue's independent check, with the ``websockets`` library on
        both ``twistd`` nodes: Redis is stopped (after SAVE) and started
        again; no client is dropped, a publication made on node B during
        the outage reaches A's subscriber once Redis is back, and a page
        that left before the outage and comes back to node A gets every
        publication since, in order, once."""
        a, b, redis = self.nodes()

        def reconnected(node: Twistd) -> bool:
            return "reconnected to" in node.read_log()

        def scenario() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            with ExitStack() as stack:
                (sub_a,) = self.clients(stack, a, 1)
                (pub_b,) = self.clients(stack, b, 1)
                sub_a.send("sub room")
                assert sub_a.recv(timeout=10) == "subscribed room"
                with ws_connect(
                    f"ws://127.0.0.1:{b.port}/", subprotocols=[SUBPROTOCOL]
                ) as page:
                    page.send(json.dumps({"type": "subscribe", "channel": "room"}))
                    json.loads(page.recv(timeout=10))
                    pub_b.send("pub room before")
                    last = json.loads(page.recv(timeout=10))
                seen["before"] = sub_a.recv(timeout=10)
                assert redis.command("SAVE") == "OK"
                redis.kill()
                pub_b.send("pub room during")
                time.sleep(0.5)
                redis.restart()
                deadline = time.monotonic() + 30
                while not (reconnected(a) and reconnected(b)):
                    assert time.monotonic() < deadline, "the nodes did not reconnect"
                    time.sleep(0.1)
                pub_b.send("pub room after")
                seen["a live"] = [sub_a.recv(timeout=10) for _ in range(2)]
                with ws_connect(
                    f"ws://127.0.0.1:{a.port}/", subprotocols=[SUBPROTOCOL]
                ) as page:
                    since = {"epoch": last["epoch"], "offset": last["offset"]}
                    page.send(
                        json.dumps(
                            {"type": "subscribe", "channel": "room", "since": since}
                        )
                    )
                    seen["recovered"] = [
                        json.loads(page.recv(timeout=10)) for _ in range(3)
                    ]
                seen["open"] = [c.state.name for c in (sub_a, pub_b)]
            seen["last"] = last
            return seen

        seen = yield in_thread(scenario)
        self.assertEqual((seen["last"]["data"], seen["last"]["offset"]), ("before", 1))
        self.assertEqual(seen["before"], "before")
        self.assertEqual(seen["a live"], ["during", "after"])
        self.assertEqual(
            [(m.get("data"), m.get("offset")) for m in seen["recovered"]],
            [("during", 2), ("after", 3), (None, 3)],
        )
        self.assertEqual(seen["recovered"][2]["status"], "recovered")
        self.assertEqual(seen["open"], ["OPEN", "OPEN"])

    @inlineCallbacks
    def test_behind_nginx_without_sticky_sessions(self) -> Any:
        """examples/nginx/wsplugin-cluster.conf spreads clients over both
        nodes; a broadcast from any client reaches all of them; a page that
        reconnects (through nginx, to whichever node) recovers what it
        missed."""
        a, b, _ = self.nodes()
        tls = TLSFiles(self)
        nginx = Nginx(
            self,
            a.port,
            tls,
            site_file=EXAMPLES / "nginx" / "wsplugin-cluster.conf",
            more=[("server 127.0.0.1:8889;", f"server 127.0.0.1:{b.port};")],
        ).run()
        url = f"wss://127.0.0.1:{nginx.https_port}/"
        context = tls.client_context()

        def scenario() -> tuple[set[str], list[str], list[Any]]:
            with ExitStack() as stack:
                clients = [
                    stack.enter_context(ws_connect(url, ssl=context)) for _ in range(6)
                ]
                holders = set()
                for ws in clients:
                    ws.send("id")
                    holders.add(ws.recv(timeout=10).split()[1].split(".")[0])
                    ws.send("sub room")
                    assert ws.recv(timeout=10) == "subscribed room"
                with ws_connect(url, ssl=context, subprotocols=[SUBPROTOCOL]) as page:
                    page.send(json.dumps({"type": "subscribe", "channel": "room"}))
                    start = json.loads(page.recv(timeout=10))
                clients[0].send("pub room one")
                clients[-1].send("pub room two")
                got = [ws.recv(timeout=10) + ws.recv(timeout=10) for ws in clients]
                with ws_connect(url, ssl=context, subprotocols=[SUBPROTOCOL]) as page:
                    since = {"epoch": start["epoch"], "offset": start["offset"]}
                    page.send(
                        json.dumps(
                            {"type": "subscribe", "channel": "room", "since": since}
                        )
                    )
                    recovered = [json.loads(page.recv(timeout=10)) for _ in range(3)]
            return holders, got, recovered

        try:
            holders, got, recovered = yield in_thread(scenario)
        except Exception as e:
            # the client-side error first, then what nginx and the nodes saw
            where = traceback.extract_tb(e.__traceback__)
            steps = [f"{f.lineno}: {f.line}" for f in where if f.name == "scenario"]
            raise self.failureException(
                f"{type(e).__name__}: {e} (at {steps[-1:]})\n"
                f"{nginx.describe()}\n--- node a\n{a.read_log()[-3000:]}\n"
                f"--- node b\n{b.read_log()[-3000:]}"
            ) from None
        self.assertEqual(holders, {"a", "b"})
        # one order for everyone: a channel's publications carry offsets
        self.assertEqual(len(set(got)), 1, got)
        self.assertIn(got[0], ("onetwo", "twoone"))
        self.assertEqual(sorted(m.get("data") for m in recovered[:2]), ["one", "two"])
        self.assertEqual(recovered[2]["status"], "recovered")
