"""The wsplugin Grafana dashboard's panels, drawn from a real Prometheus
during a ``make bench``-like load run (docs/metrics.md, "The dashboard").

    python benchmarks/dashboard.py [--out docs/dashboards/wsplugin-grafana.png]

Grafana is not in Debian's (nor PyPI's, nor npm's) packages, so the panels
are drawn with matplotlib instead; Prometheus is Debian's ``prometheus``
(``apt-get install prometheus``). The script:

1. starts ``twistd ws --metrics`` on a free loopback port (server on CPU 0,
   as ``benchmarks/run.py`` pins it) with a handler that echoes on ``/``
   and relays to everyone on ``/broadcast``;
2. starts Prometheus with a config of its own (scrape every second, data in
   a temporary directory), on another free loopback port;
3. runs the benchmark's load client (``benchmarks/loadgen.c``, CPU 1):
   echo (workload A), handshakes (F), broadcast to 1,000 clients (D), and a
   few refused upgrades and application close codes;
4. asks Prometheus (``/api/v1/query_range``) for every target of every
   panel of ``docs/dashboards/wsplugin-grafana.json``, with Grafana's
   ``$__rate_interval`` as 4 scrape intervals, and draws the panels in
   the dashboard's grid;
5. stops Prometheus and the server by their PIDs.

Needs matplotlib (``pip install matplotlib``) and a C compiler for loadgen.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "profile"))
from _harness import bench  # noqa: E402

DASHBOARD = ROOT / "docs" / "dashboards" / "wsplugin-grafana.json"
SCRAPE = 1  # seconds
RATE_INTERVAL = f"{4 * SCRAPE}s"

HANDLER = '''
from wsplugin import Reject


class Mixed:
    """Echo on /, relay to everyone on /broadcast, refuse /private."""

    def allow(self, conn):
        return Reject(403) if conn.request.path == "/private" else True

    def on_message(self, conn, text):
        if conn.request.path == "/broadcast":
            conn.server.broadcast(text)
        else:
            conn.send_text(text)

    def on_binary(self, conn, data):
        conn.send_binary(data)
'''

PHASES = [  # (label, loadgen arguments without --port)
    ("A echo", ["echo", "--conns", "64", "--inflight", "16", "--size", "64",
                "--text", "--duration", "25", "--warmup", "1"]),
    ("F handshakes", ["handshake", "--concurrency", "32", "--duration", "20",
                      "--warmup", "1"]),
    ("D broadcast", ["bcast", "--conns", "1000", "--window", "8", "--size", "64",
                     "--duration", "25", "--warmup", "1", "--path", "/broadcast"]),
]  # fmt: skip


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def refusals_and_codes(port: int) -> None:
    """Upgrades refused with 403, and closes with an application code."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    for path in ["/private"] * 20:
        try:
            with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=5):
                pass
        except InvalidStatus:
            pass
    for _ in range(20):
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=5) as ws:
            ws.close(4001, "done")


def start_server(workdir: Path, port: int, mport: int) -> subprocess.Popen:
    (workdir / "mixed_app.py").write_text(HANDLER)
    argv = ["taskset", "-c", bench.SERVER_CPU, str(Path(sys.executable).parent / "twistd"),
            "-n", "--pidfile=", f"--logfile={workdir / 'server.log'}", "ws",
            "--app", "mixed_app:Mixed", "--port", f"tcp:{port}:interface=127.0.0.1",
            "--metrics", f"tcp:{mport}:interface=127.0.0.1",
            "--max-connections-per-ip", "0"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen(argv, cwd=workdir, env=env)
    wait_http(f"http://127.0.0.1:{mport}/metrics")
    return proc


def start_prometheus(
    binary: str, workdir: Path, mport: int, pport: int
) -> subprocess.Popen:
    config = workdir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {SCRAPE}s\n  evaluation_interval: {SCRAPE}s\n"
        "scrape_configs:\n  - job_name: wsplugin\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{mport}']\n"
    )
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{pport}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(workdir / "prometheus.log", "w"),
    )  # fmt: skip
    wait_http(f"http://127.0.0.1:{pport}/-/ready")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def query_range(pport: int, expr: str, start: float, end: float) -> list[dict]:
    params = urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": SCRAPE}
    )
    url = f"http://127.0.0.1:{pport}/api/v1/query_range?{params}"
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def draw(dashboard: dict, series: list[list[tuple[str, list, list]]], marks: list,
         start: float, out: Path) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) // 8
    fig, axes = plt.subplots(rows, 3, figsize=(18, 4.2 * rows), squeeze=False)
    fig.patch.set_facecolor("#111217")
    for panel, lines in zip(panels, series, strict=True):
        ax = axes[panel["gridPos"]["y"] // 8][panel["gridPos"]["x"] // 8]
        ax.set_facecolor("#181b1f")
        ax.set_title(panel["title"], color="#d8d9da", fontsize=11, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=8)
        for spine in ax.spines.values():
            spine.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.6)
        for label, xs, ys in lines:
            ax.plot(xs, ys, linewidth=1.4, label=label)
        for t, name in marks:
            ax.axvline(t - start, color="#555", linewidth=0.7, linestyle=":")
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        if unit == "s":
            ax.yaxis.set_major_formatter(
                matplotlib.ticker.FuncFormatter(lambda v, _: f"{v * 1000:g} ms")
            )
        ax.set_ylim(bottom=0)
        ax.set_xlabel("seconds into the run", color="#8e8e8e", fontsize=8)
        if lines:
            ax.legend(fontsize=7, facecolor="#181b1f", labelcolor="#d8d9da",
                      edgecolor="#2c3235", loc="upper left")  # fmt: skip
        else:
            ax.text(0.5, 0.5, "no data (no backplane in this run)",
                    transform=ax.transAxes, ha="center", color="#8e8e8e")  # fmt: skip
    phases = ", ".join(f"{name} at {t - start:.0f} s" for t, name in marks)
    fig.suptitle(
        f"wsplugin dashboard (docs/dashboards/wsplugin-grafana.json), drawn by "
        f"benchmarks/dashboard.py from Prometheus; load: {phases}",
        color="#d8d9da", fontsize=12,
    )  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=80, facecolor=fig.get_facecolor())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DASHBOARD.with_suffix(".png"))
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "")
    args = ap.parse_args()
    if not args.prometheus:
        print("needs Prometheus: apt-get install prometheus", file=sys.stderr)
        return 1
    dashboard = json.loads(DASHBOARD.read_text())
    bench.build_loadgen()
    workdir = Path(tempfile.mkdtemp(prefix="wsdash-"))
    port, mport, pport = bench.free_port(), bench.free_port(), bench.free_port()
    server = start_server(workdir, port, mport)
    prometheus = None
    try:
        prometheus = start_prometheus(args.prometheus, workdir, mport, pport)
        start = time.time()
        time.sleep(5)
        marks = []
        for name, lg_args in PHASES:
            marks.append((time.time(), name))
            argv = ["taskset", "-c", bench.CLIENT_CPU, str(bench.LOADGEN), *lg_args,
                    "--port", str(port)]  # fmt: skip
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=120)
            time.sleep(4)
        marks.append((time.time(), "refusals"))
        refusals_and_codes(port)
        time.sleep(8)
        end = time.time()
        series = []
        for panel in dashboard["panels"]:
            lines = []
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
                for result in query_range(pport, expr, start, end):
                    xs = [float(t) - start for t, _ in result["values"]]
                    ys = [float(v) if v not in ("NaN", "+Inf") else float("nan")
                          for _, v in result["values"]]  # fmt: skip
                    lines.append(
                        (legend(target["legendFormat"], result["metric"]), xs, ys)
                    )
            series.append(lines)
        draw(dashboard, series, marks, start, args.out)
        print(f"wrote {args.out}")
    finally:
        if prometheus is not None:
            stop(prometheus)
        stop(server)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
