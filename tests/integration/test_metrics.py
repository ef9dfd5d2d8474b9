"""Prometheus metrics over real loopback sockets: ``/metrics`` scraped twice
while clients load the server, in-process and under ``twistd ws --metrics``."""

from __future__ import annotations

import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import gatherResults, inlineCallbacks
from websockets.sync.client import connect

from tests.integration.support import (
    ServerTestCase,
    Twistd,
    free_port,
    in_thread,
    wait_for_port,
)
from wsplugin.apps.echo import Echo
from wsplugin.metrics import Metrics

CLIENTS = 4
MESSAGES = 400  # per client: bounded load


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET http://127.0.0.1:port/metrics, as ``curl`` would, parsed."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def lag_count(metrics: Metrics) -> float:
    """Timers the lag probe has observed so far."""
    return float(
        metrics.registry.get_sample_value("wsplugin_event_loop_lag_seconds_count") or 0
    )


def get(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def echo_load(url: str, stop: threading.Event, done: list[int]) -> None:
    """One client: MESSAGES echoes (or until ``stop``), then a clean close."""
    with connect(url, open_timeout=10) as ws:
        for i in range(MESSAGES):
            if stop.is_set():
                break
            ws.send(f"message {i:04d}")
            ws.recv(timeout=10)
            done[0] += 1
        stop.wait(10)  # stay open until the scrapes are done


class ScrapeDuringLoadTests(ServerTestCase):
    """The counters move between two scrapes taken while clients talk."""

    @inlineCallbacks
    def test_scrape_twice_during_load(self) -> None:
        """Four clients echo messages; /metrics, scraped twice meanwhile,
        shows four open connections on the route both times, and more
        handshakes, messages and bytes each way the second time."""
        metrics = Metrics("tcp:0:interface=127.0.0.1", loop_lag_interval=0.05)
        server = yield self.start_server(Echo(), metrics=metrics)
        yield self.when(lambda: server.metrics.service.port is not None)
        mport = server.metrics.service.port.getHost().port
        stop = threading.Event()
        self.addCleanup(stop.set)
        done = [0]
        clients = [
            in_thread(echo_load, self.url + "/load", stop, done) for _ in range(CLIENTS)
        ]
        tally = server.metrics.tally
        yield self.when(lambda: tally.text_in >= 100)
        first = yield in_thread(scrape, mport)
        seen = tally.text_in
        yield self.when(lambda: tally.text_in >= seen + 200)
        yield self.when(lambda: lag_count(metrics) > 0)
        second = yield in_thread(scrape, mport)
        stop.set()
        yield gatherResults(clients)
        for samples in (first, second):
            self.assertEqual(get(samples, "wsplugin_connections", route="*"), CLIENTS)
        for name in (
            "wsplugin_messages_received_total",
            "wsplugin_messages_received_bytes_total",
            "wsplugin_messages_sent_total",
            "wsplugin_messages_sent_bytes_total",
        ):
            before = get(first, name, kind="text")
            after = get(second, name, kind="text")
            self.assertGreater(before, 0, name)
            self.assertGreater(after, before, name)
        self.assertEqual(
            get(second, "wsplugin_handshakes_total", outcome="accepted", status="101"),
            CLIENTS,
        )
        self.assertGreater(get(second, "wsplugin_event_loop_lag_seconds_count"), 0)
        yield self.when(lambda: len(server.connections) == 0)
        final = yield in_thread(scrape, mport)
        self.assertEqual(get(final, "wsplugin_connections", route="*"), 0)
        self.assertEqual(
            get(final, "wsplugin_close_frames_received_total", code="1000"), CLIENTS
        )
        self.assertEqual(
            get(final, "wsplugin_messages_received_total", kind="text"), done[0]
        )


class TwistdMetricsTests(ServerTestCase):
    """``twistd ws --metrics ENDPOINT``: curl 127.0.0.1:PORT/metrics."""

    @inlineCallbacks
    def test_twistd_metrics(self) -> None:
        """The metrics endpoint answers next to the WebSocket port; a second
        scrape after traffic shows the counters moved; a refused handshake
        is counted by its status."""
        mport = free_port()
        server = Twistd(
            self,
            "--app",
            "echo",
            "--path",
            "/echo",
            "--metrics",
            f"tcp:{mport}:interface=127.0.0.1",
        )
        yield in_thread(server.wait_listening)
        # the metrics port is its own listener, started beside the
        # WebSocket port: wait for it too
        yield in_thread(wait_for_port, mport)
        first = yield in_thread(scrape, mport)

        def talk() -> None:
            with connect(f"ws://127.0.0.1:{server.port}/echo", open_timeout=10) as ws:
                for _ in range(10):
                    ws.send(b"\x00" * 100)
                    ws.recv(timeout=10)
            try:
                with connect(f"ws://127.0.0.1:{server.port}/nowhere", open_timeout=10):
                    pass
            except Exception:
                pass  # 404: counted below

        yield in_thread(talk)
        second = yield in_thread(scrape, mport)
        self.assertEqual(
            get(first, "wsplugin_messages_received_total", kind="binary"), 0
        )
        self.assertEqual(
            get(second, "wsplugin_messages_received_total", kind="binary"), 10
        )
        self.assertEqual(
            get(second, "wsplugin_messages_sent_bytes_total", kind="binary"), 1000
        )
        self.assertEqual(
            get(second, "wsplugin_handshakes_total", outcome="rejected", status="404"),
            1,
        )
        self.assertIn("metrics on", server.read_log())
