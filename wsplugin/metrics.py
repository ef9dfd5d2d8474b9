"""Prometheus metrics for a :class:`~wsplugin.WebSocketServer`.

Needs ``prometheus_client`` (``pip install 'wsplugin[metrics]'``). Turn
them on with ``WebSocketServer(..., metrics="tcp:9100:interface=127.0.0.1")``
(``/metrics`` served on that endpoint), ``metrics=True`` (counted, served
where you mount :meth:`Metrics.resource`), a :class:`Metrics` of your own,
or ``twistd ws --metrics ENDPOINT``. docs/metrics.md lists every metric.

Cost: with metrics off nothing is added to the per-message path (the
counting classes of :mod:`wsplugin._metered` are installed only when they
are on). With them on, a message in and a message out each cost one more
Python call and two integer increments, read when Prometheus scrapes
(about 2 us per echoed message, 10% of the echo path); per-connection and
per-broadcast events use ``prometheus_client``'s counters and histograms.

With ``twistd ws --workers N`` each worker serves its own ``/metrics``:
``{worker}`` in the endpoint is the worker's index, and a ``tcp:`` port
without it is offset by the index (9100, 9101, ...). Prometheus scrapes each
worker as a target and ``sum()`` adds them up. prometheus_client's
multiprocess mode was not used: it needs a shared directory set before the
import, cleaned of dead workers' files, and it ignores custom collectors,
which is how the per-message counts, the open connections and the
backplane's state are read here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from wsplugin._connlog import route_label
from wsplugin._metered import Tally, metered_protocol
from wsplugin._version import __version__
from wsplugin.errors import ConfigError

try:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.exposition import generate_latest
except ImportError:  # pragma: no cover - checked by Metrics() with the fix
    CollectorRegistry = None  # type: ignore[assignment,misc]

__all__ = [
    "BACKPLANE_STATES",
    "BROADCAST_LATENCY_BUCKETS",
    "LOOP_LAG_BUCKETS",
    "RECIPIENT_BUCKETS",
    "Metrics",
    "MetricsService",
    "attach_metrics",
    "close_code_label",
    "metrics_endpoint",
]

_log = Logger()

BROADCAST_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
"""Seconds: a broadcast to 1,000 clients takes about 2 ms of reactor time."""

RECIPIENT_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000)
"""Connections one broadcast reached."""

LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
"""Seconds a timer fired late: under 5 ms is a responsive reactor; 100 ms
and more means callbacks block it (ws#1827)."""

BACKPLANE_STATES = ("stopped", "connecting", "connected", "disconnected", "failed")
"""The values of :attr:`wsplugin.backplane.Backplane.state`."""

_RECOVERY_OUTCOMES = (
    "not_requested",
    "recovered",
    "epoch_changed",
    "too_old",
    "unavailable",
)


def close_code_label(code: int | None) -> str:
    """A close code as a label value, with bounded cardinality: the codes
    of RFC 6455 as they are, application codes as ``"3xxx"`` / ``"4xxx"``
    (a peer chooses those freely), ``"none"`` for a close frame without one."""
    if code is None:
        return "none"
    if 1000 <= code <= 1015:
        return str(code)
    if 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return "other"


_SEPARATOR = re.compile(r"(?<!\\):")


def metrics_endpoint(description: str, worker: int | None) -> str:
    """The endpoint worker number ``worker`` serves its metrics on.

    ``{worker}`` in ``description`` is replaced by the index; otherwise a
    ``tcp:``/``tcp6:`` port is offset by it (``tcp:9100`` is 9100, 9101,
    ... for workers 0, 1, ...). With ``worker`` None (one process) the
    description is used as it is.

    Raises:
        ConfigError: several workers would share a non-TCP endpoint without
            ``{worker}`` (``unix:/run/metrics.sock``).
    """
    if worker is None:
        return description.replace("{worker}", "0")
    if "{worker}" in description:
        return description.replace("{worker}", str(worker))
    parts = _SEPARATOR.split(description)
    if parts[0] in ("tcp", "tcp6"):
        for i, part in enumerate(parts[1:], 1):
            name, eq, value = part.rpartition("=")
            if (not eq or name == "port") and value.isdigit():
                port = int(value) + worker if int(value) else 0
                parts[i] = f"{name}={port}" if eq else str(port)
                return ":".join(parts)
    raise ConfigError(
        f"metrics endpoint {description!r}: with several workers, put {{worker}} "
        "in it (e.g. unix:/run/wsplugin/metrics-{worker}.sock) or use tcp:PORT"
    )


def attach_metrics(server: Any, metrics: Any) -> Metrics | None:
    """What ``WebSocketServer(metrics=...)`` does: None or False leave
    metrics off (None is returned); an endpoint string or True make a
    :class:`Metrics` (served there, or not served); a :class:`Metrics` is
    used as it is. The metrics are installed on ``server`` and returned."""
    if metrics is None or metrics is False:
        return None
    if not isinstance(metrics, Metrics):
        metrics = Metrics(None if metrics is True else metrics)
    metrics.install(server)
    return metrics


class Metrics:
    """The metrics of one server, in a registry of their own.

    Args:
        endpoint: A Twisted endpoint string to serve ``/metrics`` on
            (``"tcp:9100:interface=127.0.0.1"``), or None to serve nothing
            (mount :meth:`resource` in a site yourself).
        registry: The ``prometheus_client`` registry to register in; a new
            one by default (two servers in a process then count apart).
        loop_lag_interval: Seconds between the timers whose lateness is the
            event-loop lag (0: not measured). One timer a half second costs
            nothing measurable.
        worker: This process's worker index with ``--workers``, or None
            (see :func:`metrics_endpoint`); may be set until the server starts.

    Raises:
        ConfigError: ``prometheus_client`` is not installed.

    Attributes:
        tally: The per-message counts (:class:`~wsplugin._metered.Tally`).
        server: The server it counts for, once installed.
        service: The :class:`MetricsService` (lag timer, endpoint), once
            installed.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        registry: Any = None,
        loop_lag_interval: float = 0.5,
        worker: int | None = None,
    ) -> None:
        if CollectorRegistry is None:
            raise ConfigError(
                "metrics need prometheus_client: pip install 'wsplugin[metrics]'"
            )
        if loop_lag_interval < 0:
            raise ConfigError(
                f"loop_lag_interval must be >= 0, not {loop_lag_interval}"
            )
        self.endpoint = endpoint
        self.worker = worker
        self.loop_lag_interval = loop_lag_interval
        self.registry = registry if registry is not None else CollectorRegistry()
        self.tally = Tally()
        self.server: Any = None
        self.service: MetricsService | None = None
        self._backplane: Callable[[], Any] = lambda: getattr(
            self.server, "backplane", None
        )
        r = self.registry
        self.handshakes = Counter(
            "wsplugin_handshakes",
            "Opening handshakes answered, by outcome and HTTP status "
            "(101 accepted; 4xx/5xx refused by wsplugin or the application)",
            ["outcome", "status"],
            registry=r,
        )
        self.close_sent = Counter(
            "wsplugin_close_frames_sent",
            "Close frames sent, by close code (application codes as 3xxx/4xxx)",
            ["code"],
            registry=r,
        )
        self.close_received = Counter(
            "wsplugin_close_frames_received",
            "Valid close frames received, by close code",
            ["code"],
            registry=r,
        )
        self.recipients = Histogram(
            "wsplugin_broadcast_recipients",
            "Connections that took each broadcast (fan-out size)",
            buckets=RECIPIENT_BUCKETS,
            registry=r,
        )
        self.broadcast_latency = Histogram(
            "wsplugin_broadcast_latency_seconds",
            "Reactor time to hand one broadcast to every receiver: encode "
            "once, offer to each (the bytes leave at the end of that turn)",
            buckets=BROADCAST_LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "wsplugin_event_loop_lag_seconds",
            "How late a periodic reactor timer fired (time the reactor was "
            "busy with other work)",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        r.register(_Collector(self))

    # -- installing ----------------------------------------------------------

    def install(self, server: Any) -> None:
        """Count for ``server`` (a :class:`~wsplugin.WebSocketServer`): its
        factory builds metered protocols, its fan-out reports broadcasts,
        and a :class:`MetricsService` child runs the lag timer and serves
        the endpoint while the server runs. ``WebSocketServer(metrics=...)``
        calls it; call it yourself only for a server made without.

        Raises:
            ConfigError: these metrics already count for a server.
        """
        if self.server is not None:
            raise ConfigError("these Metrics already count for a server")
        self.server = server
        factory = server.factory
        factory.protocol = metered_protocol(factory.protocol, self)
        factory.fanout.observe = self.broadcast_sent
        self.service = MetricsService(self, server.reactor)
        self.service.setServiceParent(server)

    def watch_backplane(self, source: Any) -> None:
        """Report this backplane's state and counters (``source``: a
        :class:`~wsplugin.backplane.Backplane`, or a callable returning one
        or None). By default the server's ``backplane`` attribute is read
        at each scrape, if it has one."""
        self._backplane = source if callable(source) else (lambda: source)

    # -- exposing ------------------------------------------------------------

    def resource(self) -> Any:
        """A ``twisted.web`` resource answering with the metrics
        (``prometheus_client.twisted.MetricsResource``; it renders in the
        reactor's thread pool). Mount it in a site:
        ``root.putChild(b"metrics", server.metrics.resource())``."""
        # imported here: prometheus_client.twisted imports the global
        # reactor, which would install the default reactor before a program
        # (or twistd --reactor) picks its own
        from prometheus_client.twisted import MetricsResource

        return MetricsResource(self.registry)

    def scrape(self) -> bytes:
        """The metrics in Prometheus' text format, as ``/metrics`` serves them."""
        return bytes(generate_latest(self.registry))

    # -- counting (the Meter of wsplugin._metered, and the fan-out's hook) --

    def handshake_accepted(self) -> None:
        """A 101 answer was sent."""
        self.handshakes.labels("accepted", "101").inc()

    def handshake_refused(self, status: int) -> None:
        """A handshake was answered with HTTP ``status``."""
        self.handshakes.labels("rejected", str(status)).inc()

    def connection_ended(self, sent: int | None, received: int | None) -> None:
        """An open connection ended, having sent and received close frames
        with these codes (None: no such frame)."""
        if sent is not None:
            self.close_sent.labels(close_code_label(sent)).inc()
        if received is not None:
            self.close_received.labels(close_code_label(received)).inc()

    def broadcast_sent(
        self, nbytes: int, is_binary: bool, count: int, started: float
    ) -> None:
        """The fan-out sent one message to ``count`` connections (its
        ``observe`` hook)."""
        self.broadcast_latency.observe(perf_counter() - started)
        self.recipients.observe(count)
        self.tally.sent(count, nbytes, is_binary)

    # -- reading at scrape time ----------------------------------------------

    def connections_by_route(self) -> dict[str, int]:
        """Open connections now, by route label (every registered route,
        0 included)."""
        counts: dict[str, int] = {}
        server = self.server
        if server is None:
            return counts
        for route in server.factory.router.routes():
            counts[route_label(route)] = 0
        for conn in server.registry.snapshot():
            label = route_label(getattr(conn.engine, "route", None))
            counts[label] = counts.get(label, 0) + 1
        return counts

    def backplane(self) -> Any:
        """The backplane reported on, or None."""
        try:
            return self._backplane()
        except Exception:
            _log.failure("reading the backplane for metrics failed")
            return None


class _Collector:
    """What is read at scrape time: per-message counts, open connections,
    the backplane, and the build."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # names are checked against nothing: they are wsplugin's own

    def collect(self) -> Iterable[Any]:
        m = self.metrics
        t = m.tally
        info = GaugeMetricFamily(
            "wsplugin_info",
            "wsplugin's version and worker index",
            labels=["version", "worker"],
        )
        info.add_metric([__version__, "" if m.worker is None else str(m.worker)], 1)
        yield info
        conns = GaugeMetricFamily(
            "wsplugin_connections",
            "Open WebSocket connections, by route",
            labels=["route"],
        )
        for label, count in sorted(m.connections_by_route().items()):
            conns.add_metric([label], count)
        yield conns
        for direction, verb in (("received", "in"), ("sent", "out")):
            msgs = CounterMetricFamily(
                f"wsplugin_messages_{direction}",
                f"Data messages {direction}, by kind (broadcasts once per receiver)",
                labels=["kind"],
            )
            size = CounterMetricFamily(
                f"wsplugin_messages_{direction}_bytes",
                f"Payload bytes of the data messages {direction}, by kind",
                labels=["kind"],
            )
            for kind in ("text", "binary"):
                msgs.add_metric([kind], getattr(t, f"{kind}_{verb}"))
                size.add_metric([kind], getattr(t, f"{kind}_{verb}_bytes"))
            yield msgs
            yield size
        yield CounterMetricFamily(
            "wsplugin_heartbeat_timeouts",
            "Connections closed (1011) for not answering the heartbeat",
            value=t.heartbeat_timeouts,
        )
        yield CounterMetricFamily(
            "wsplugin_send_buffer_drops",
            "Messages skipped for a client over max_send_buffer (policy drop)",
            value=t.send_buffer_drops,
        )
        yield CounterMetricFamily(
            "wsplugin_send_buffer_closes",
            "Connections closed (1008) over max_send_buffer (policy close, wait)",
            value=t.send_buffer_closes,
        )
        backplane = m.backplane()
        if backplane is not None:
            yield from _backplane_families(backplane)


def _backplane_families(backplane: Any) -> Iterable[Any]:
    state = GaugeMetricFamily(
        "wsplugin_backplane_state",
        "The backplane's link state: 1 for the current one",
        labels=["state"],
    )
    now = str(backplane.state)
    for name in (*BACKPLANE_STATES, *(() if now in BACKPLANE_STATES else (now,))):
        state.add_metric([name], 1 if name == now else 0)
    yield state
    stats = backplane.stats
    for attr, text in (
        ("published", "Publications and commands handed to the backplane"),
        ("received", "Publications and commands received from other nodes"),
        ("publish_failures", "Publications and commands not sent when made"),
        ("queue_dropped", "Publications dropped: the outage queue was full"),
        ("queue_flushed", "Publications sent late, after the engine came back"),
        ("reconnects", "Times the link to the engine was re-established"),
        ("rollbacks", "Channels given a new epoch: the engine lost offsets"),
    ):
        yield CounterMetricFamily(
            f"wsplugin_backplane_{attr}", text, value=getattr(stats, attr)
        )
    yield GaugeMetricFamily(
        "wsplugin_backplane_queued",
        "Publications waiting for the engine now",
        value=stats.queued,
    )
    for attr, text in (
        ("recoveries", "History recoveries at subscribe, by outcome"),
        ("catch_ups", "Catch-ups after the subscriber link came back, by outcome"),
    ):
        family = CounterMetricFamily(
            f"wsplugin_backplane_{attr}", text, labels=["outcome"]
        )
        counts = dict(getattr(stats, attr))
        for outcome in sorted({*_RECOVERY_OUTCOMES, *counts}):
            family.add_metric([outcome], counts.get(outcome, 0))
        yield family


class _LagProbe:
    """A timer every ``interval`` seconds whose lateness is observed."""

    def __init__(self, reactor: Any, interval: float, observe: Any) -> None:
        self.reactor = reactor
        self.interval = interval
        self.observe = observe
        self.call: Any = None
        self.due = 0.0

    def start(self) -> None:
        if self.interval > 0 and self.call is None:
            self.due = self.reactor.seconds() + self.interval
            self.call = self.reactor.callLater(self.interval, self.tick)

    def tick(self) -> None:
        now = self.reactor.seconds()
        self.observe(max(now - self.due, 0.0))
        self.due = now + self.interval
        self.call = self.reactor.callLater(self.interval, self.tick)

    def stop(self) -> None:
        if self.call is not None:
            if self.call.active():
                self.call.cancel()
            self.call = None


class MetricsService(Service):
    """Runs the event-loop lag timer and serves ``/metrics`` on the
    metrics' endpoint, while its server runs (a child service of it).

    A metrics endpoint that cannot listen is logged as an error; the
    WebSocket server runs on.

    Attributes:
        port: The listening port of the endpoint, once listening.
        failure: Why the endpoint could not listen, or None.
    """

    def __init__(self, metrics: Metrics, reactor: Any) -> None:
        self.metrics = metrics
        self.reactor = reactor
        self.port: Any = None
        self.failure: Any = None
        self.probe = _LagProbe(
            reactor, metrics.loop_lag_interval, metrics.loop_lag.observe
        )

    def startService(self) -> None:
        """Start the lag timer and listen on the endpoint."""
        super().startService()
        self.probe.start()
        endpoint = self.metrics.endpoint
        if endpoint is None:
            return
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        description = metrics_endpoint(endpoint, self.metrics.worker)
        root = Resource()
        root.putChild(b"metrics", self.metrics.resource())
        site = Site(root)
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        d = serverFromString(self.reactor, description).listen(site)

        def listening(port: Any) -> None:
            self.port = port
            _log.info("metrics on {endpoint}/metrics", endpoint=description)

        def failed(failure: Any) -> None:
            self.failure = failure
            _log.error(
                "cannot serve metrics on {endpoint}: {error}",
                endpoint=description,
                error=failure.getErrorMessage(),
            )

        d.addCallbacks(listening, failed)

    def stopService(self) -> Any:
        """Stop the lag timer and the endpoint."""
        super().stopService()
        self.probe.stop()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
