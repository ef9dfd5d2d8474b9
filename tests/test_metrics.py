"""wsplugin.metrics: what is counted where, with in-memory clients and a fake
clock; and that a server without metrics runs the classes it always ran."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin import Reject, WebSocketServer
from wsplugin._dispatch import Dispatch
from wsplugin._metered import MeteredDispatch, MeteredProtocol
from wsplugin.apps.echo import Echo
from wsplugin.backplane import LocalBackplane, RecoveryStatus
from wsplugin.errors import ConfigError
from wsplugin.metrics import Metrics, close_code_label, metrics_endpoint
from wsplugin.protocol import WebSocketServerProtocol
from wsplugin.testing import ServerHarness


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(metrics.scrape().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


class Refuser(Echo):
    """Refuses /private with 403."""

    def allow(self, conn: Any) -> Any:
        return Reject(403) if conn.request.path == "/private" else True


def metered_server(**options: Any) -> tuple[WebSocketServer, ServerHarness, Metrics]:
    clock = MemoryReactorClock()
    metrics = Metrics(loop_lag_interval=options.pop("lag", 0))
    server = WebSocketServer(
        options.pop("handler", Echo()),
        reactor=clock,
        heartbeat_interval=0,
        metrics=metrics,
        **options,
    )
    return server, ServerHarness(server), metrics


class OffTests(SynchronousTestCase):
    """Metrics off: nothing of them in the server's classes or paths."""

    def test_nothing_installed(self) -> None:
        """Without ``metrics=``, the factory builds the plain protocol, whose
        dispatch is the plain Dispatch, and the fan-out has no observer: the
        per-message path is the one it was."""
        server = WebSocketServer(Echo(), reactor=MemoryReactorClock())
        self.assertIsNone(server.metrics)
        self.assertIs(server.factory.protocol, WebSocketServerProtocol)
        self.assertIsNone(server.fanout.observe)
        client = ServerHarness(server).open("/")
        self.assertIs(type(client.protocol.dispatch), Dispatch)
        self.assertIs(type(client.protocol), WebSocketServerProtocol)

    def test_on_installs_subclasses(self) -> None:
        """With metrics on, a per-server subclass counts, and the fan-out
        reports broadcasts."""
        server, harness, metrics = metered_server()
        protocol = harness.open("/").protocol
        self.assertIsInstance(protocol, MeteredProtocol)
        self.assertIsInstance(protocol, WebSocketServerProtocol)
        self.assertIsInstance(protocol.dispatch, MeteredDispatch)
        self.assertEqual(server.fanout.observe, metrics.broadcast_sent)

    def test_two_servers_count_apart(self) -> None:
        """Each server has its own classes and registry."""
        a, ha, ma = metered_server()
        b, hb, mb = metered_server()
        ha.open("/").send_text("x")
        self.assertEqual(value(ma, "wsplugin_messages_received_total", kind="text"), 1)
        self.assertEqual(value(mb, "wsplugin_messages_received_total", kind="text"), 0)
        self.assertIsNot(a.factory.protocol, b.factory.protocol)

    def test_true_and_string(self) -> None:
        """``metrics=True`` counts without an endpoint; a string is the
        endpoint."""
        on = WebSocketServer(Echo(), reactor=MemoryReactorClock(), metrics=True)
        self.assertIsNone(on.metrics.endpoint)
        served = WebSocketServer(
            Echo(), reactor=MemoryReactorClock(), metrics="tcp:9100"
        )
        self.assertEqual(served.metrics.endpoint, "tcp:9100")

    def test_installed_once(self) -> None:
        """One Metrics counts for one server."""
        metrics = Metrics()
        WebSocketServer(Echo(), reactor=MemoryReactorClock(), metrics=metrics)
        with self.assertRaises(ConfigError):
            WebSocketServer(Echo(), reactor=MemoryReactorClock(), metrics=metrics)


class CountingTests(SynchronousTestCase):
    """Each metric moves at its counting point."""

    def test_messages_and_bytes_by_kind(self) -> None:
        """Messages received (Dispatch.message) and sent (send_text and
        send_binary), with their payload bytes, by kind."""
        _, harness, m = metered_server()
        client = harness.open("/")
        client.send_text("héllo")  # 5 characters, 6 bytes of UTF-8
        client.send_text("hi")
        client.send_binary(b"\x00\x01\x02")
        self.assertEqual(client.messages(), ["héllo", "hi", b"\x00\x01\x02"])
        for direction in ("received", "sent"):
            name = f"wsplugin_messages_{direction}"
            self.assertEqual(value(m, name + "_total", kind="text"), 2)
            self.assertEqual(value(m, name + "_total", kind="binary"), 1)
            self.assertEqual(value(m, name + "_bytes_total", kind="text"), 8)
            self.assertEqual(value(m, name + "_bytes_total", kind="binary"), 3)

    def test_send_with_frame_size(self) -> None:
        """send_text(..., frame_size=4) (2 payload bytes a frame) works
        with metrics on (the metered send passes it on) and counts one
        message with its bytes."""
        _, harness, m = metered_server()
        client = harness.open("/")
        client.connection.send_text("abcdef", frame_size=4)
        self.assertEqual(client.messages(), ["abcdef"])
        name = "wsplugin_messages_sent"
        self.assertEqual(value(m, name + "_total", kind="text"), 1)
        self.assertEqual(value(m, name + "_bytes_total", kind="text"), 6)

    def test_fragments(self) -> None:
        """Frame by frame: bytes per frame, one message per final frame, in
        and out."""
        _, harness, m = metered_server(frame_by_frame=True)
        client = harness.open("/")
        client.send_frame(1, b"ab", fin=False)
        client.send_frame(0, b"cde", fin=True)
        for direction in ("received", "sent"):
            name = f"wsplugin_messages_{direction}"
            self.assertEqual(value(m, name + "_total", kind="text"), 1)
            self.assertEqual(value(m, name + "_bytes_total", kind="text"), 5)

    def test_handshakes_and_connections(self) -> None:
        """Accepted (101) and refused handshakes by status; open connections
        by route, every route listed."""
        server, harness, m = metered_server(handler=Refuser())
        server.register_handler("*", "/chat", Echo())
        a = harness.open("/chat")
        harness.open("/other")
        self.assertEqual(harness.connect().handshake("/private").status, 403)
        self.assertEqual(
            value(m, "wsplugin_handshakes_total", outcome="accepted", status="101"), 2
        )
        self.assertEqual(
            value(m, "wsplugin_handshakes_total", outcome="rejected", status="403"), 1
        )
        self.assertEqual(value(m, "wsplugin_connections", route="/chat"), 1)
        self.assertEqual(value(m, "wsplugin_connections", route="*"), 1)
        a.send_close(1000)
        self.assertEqual(value(m, "wsplugin_connections", route="/chat"), 0)

    def test_bad_request_counted_by_status(self) -> None:
        """A handshake wsplugin refuses itself (no Upgrade: 426) counts too."""
        _, harness, m = metered_server()
        response = harness.connect().handshake("/", upgrade=False)
        self.assertEqual(
            value(
                m,
                "wsplugin_handshakes_total",
                outcome="rejected",
                status=str(response.status),
            ),
            1,
        )

    def test_close_codes(self) -> None:
        """Close frames sent and received, by code; application codes are
        grouped; a connection dropped without one counts none (the server
        answers a close with 1000)."""
        _, harness, m = metered_server()
        harness.open("/").send_close(1001)
        harness.open("/").send_close(4321, "bye")
        harness.open("/").drop()
        self.assertEqual(
            value(m, "wsplugin_close_frames_received_total", code="1001"), 1
        )
        self.assertEqual(
            value(m, "wsplugin_close_frames_received_total", code="4xxx"), 1
        )
        self.assertEqual(value(m, "wsplugin_close_frames_sent_total", code="1000"), 2)
        client = harness.open("/")
        client.connection.close(4000)
        client.send_close(4000)
        self.assertEqual(value(m, "wsplugin_close_frames_sent_total", code="4xxx"), 1)
        total = sum(
            v
            for (name, _), v in samples(m).items()
            if name == "wsplugin_close_frames_received_total"
        )
        self.assertEqual(total, 3)  # 1001, 4321 and 4000; none for the drop

    def test_heartbeat_timeout(self) -> None:
        """A client that does not answer the heartbeat is counted once."""
        clock = MemoryReactorClock()
        metrics = Metrics(loop_lag_interval=0)
        server = WebSocketServer(
            Echo(),
            reactor=clock,
            heartbeat_interval=1.0,
            heartbeat_timeout=1.0,
            metrics=metrics,
        )
        client = ServerHarness(server).open("/")
        clock.advance(1.0)
        clock.advance(1.0)
        self.assertEqual(client.frames()[-1].close_code, 1011)
        self.assertEqual(value(metrics, "wsplugin_heartbeat_timeouts_total"), 1)

    def test_send_buffer_drops_and_closes(self) -> None:
        """The send-buffer policy: each skipped message (drop) and each
        connection closed for it (close) is counted."""
        for policy, name in (
            ("drop", "wsplugin_send_buffer_drops_total"),
            ("close", "wsplugin_send_buffer_closes_total"),
        ):
            _, harness, m = metered_server(
                max_send_buffer=10, send_buffer_policy=policy
            )
            client = harness.open("/")
            client.protocol.pauseProducing()  # the socket is full from here
            for _ in range(3):
                if client.connection.is_open:
                    client.connection.send_text("x" * 20)
            self.assertGreaterEqual(value(m, name), 1, policy)
            if policy == "drop":
                self.assertEqual(value(m, name), client.connection.dropped_messages)

    def test_broadcast(self) -> None:
        """A broadcast counts its fan-out size, its latency, and one message
        per receiver."""
        server, harness, m = metered_server()
        clients = [harness.open("/") for _ in range(3)]
        server.broadcast("news")
        self.assertEqual(value(m, "wsplugin_broadcast_recipients_sum"), 3)
        self.assertEqual(value(m, "wsplugin_broadcast_recipients_count"), 1)
        self.assertEqual(value(m, "wsplugin_broadcast_latency_seconds_count"), 1)
        self.assertEqual(value(m, "wsplugin_messages_sent_total", kind="text"), 3)
        self.assertEqual(
            value(m, "wsplugin_messages_sent_bytes_total", kind="text"), 12
        )
        self.assertEqual([c.messages() for c in clients], [["news"]] * 3)

    def test_event_loop_lag(self) -> None:
        """The lag timer observes how late it fired, while the server runs."""
        server, harness, m = metered_server(lag=0.5)
        server.startService()
        clock = harness.clock
        clock.advance(0.5)  # on time
        clock.advance(0.8)  # due at 1.0, ran at 1.3
        self.assertEqual(value(m, "wsplugin_event_loop_lag_seconds_count"), 2)
        self.assertAlmostEqual(value(m, "wsplugin_event_loop_lag_seconds_sum"), 0.3)
        self.assertEqual(
            value(m, "wsplugin_event_loop_lag_seconds_bucket", le="0.25"), 1
        )
        server.stopService()
        clock.advance(5)
        self.assertEqual(value(m, "wsplugin_event_loop_lag_seconds_count"), 2)

    def test_info(self) -> None:
        """wsplugin_info names the version and the worker."""
        from wsplugin import __version__

        metrics = Metrics(worker=3)
        self.assertEqual(
            value(metrics, "wsplugin_info", version=__version__, worker="3"), 1
        )


class BackplaneTests(SynchronousTestCase):
    """The backplane's state and counters, read at scrape time."""

    def test_no_backplane(self) -> None:
        """A server without backplane= reports its in-process one (stopped
        until the server starts, nothing failed); a watched None has no
        backplane series."""
        _, _, m = metered_server()
        self.assertEqual(value(m, "wsplugin_backplane_state", state="stopped"), 1)
        self.assertEqual(value(m, "wsplugin_backplane_publish_failures_total"), 0)
        m.watch_backplane(lambda: None)
        self.assertFalse(
            [n for (n, _) in samples(m) if n.startswith("wsplugin_backplane")]
        )

    def test_server_attribute(self) -> None:
        """A server's ``backplane`` attribute is read at each scrape: its
        state as a one-hot gauge, its counters, recoveries by outcome."""
        server, _, m = metered_server()
        backplane = LocalBackplane()
        server.backplane = backplane  # as the scale-out wiring sets it
        self.assertEqual(value(m, "wsplugin_backplane_state", state="stopped"), 1)
        self.assertEqual(value(m, "wsplugin_backplane_state", state="connected"), 0)
        backplane.start(server.factory)
        backplane.stats.publish_failures = 2
        backplane.stats.count_recovery(RecoveryStatus.TOO_OLD)
        self.assertEqual(value(m, "wsplugin_backplane_state", state="connected"), 1)
        self.assertEqual(value(m, "wsplugin_backplane_publish_failures_total"), 2)
        self.assertEqual(
            value(m, "wsplugin_backplane_recoveries_total", outcome="too_old"), 1
        )
        self.assertEqual(
            value(m, "wsplugin_backplane_recoveries_total", outcome="recovered"), 0
        )

    def test_watch_backplane(self) -> None:
        """``watch_backplane`` names the backplane explicitly."""
        metrics = Metrics()
        backplane = LocalBackplane()
        metrics.watch_backplane(backplane)
        self.assertEqual(value(metrics, "wsplugin_backplane_published_total"), 0)
        self.assertEqual(value(metrics, "wsplugin_backplane_queued"), 0)


class HelperTests(SynchronousTestCase):
    """Endpoint per worker, close-code labels, the registry argument."""

    def test_metrics_endpoint(self) -> None:
        """``{worker}`` is the index; a TCP port is offset by it; one
        process uses the description as given."""
        self.assertEqual(metrics_endpoint("tcp:9100", None), "tcp:9100")
        self.assertEqual(metrics_endpoint("tcp:9100", 0), "tcp:9100")
        self.assertEqual(
            metrics_endpoint("tcp:9100:interface=127.0.0.1", 2),
            "tcp:9102:interface=127.0.0.1",
        )
        self.assertEqual(
            metrics_endpoint("tcp6:port=9100:interface=\\:\\:1", 1),
            "tcp6:port=9101:interface=\\:\\:1",
        )
        self.assertEqual(metrics_endpoint("tcp:0", 3), "tcp:0")
        self.assertEqual(
            metrics_endpoint("unix:/run/m-{worker}.sock", 4), "unix:/run/m-4.sock"
        )
        self.assertEqual(
            metrics_endpoint("unix:/run/m-{worker}.sock", None), "unix:/run/m-0.sock"
        )
        with self.assertRaises(ConfigError) as e:
            metrics_endpoint("unix:/run/m.sock", 1)
        self.assertIn("{worker}", str(e.exception))

    def test_close_code_label(self) -> None:
        """Bounded label values for any code a peer can send."""
        self.assertEqual(close_code_label(None), "none")
        self.assertEqual(close_code_label(1000), "1000")
        self.assertEqual(close_code_label(1011), "1011")
        self.assertEqual(close_code_label(3001), "3xxx")
        self.assertEqual(close_code_label(4999), "4xxx")
        self.assertEqual(close_code_label(2000), "other")

    def test_own_registry(self) -> None:
        """Metrics register in the registry given."""
        registry = CollectorRegistry()
        Metrics(registry=registry)
        self.assertIsNotNone(
            registry.get_sample_value(
                "wsplugin_info",
                {"version": __import__("wsplugin").__version__, "worker": ""},
            )
        )

    def test_bad_interval(self) -> None:
        """A negative lag interval is refused."""
        with self.assertRaises(ConfigError):
            Metrics(loop_lag_interval=-1)
