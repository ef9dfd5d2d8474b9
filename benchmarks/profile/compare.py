"""Before/after figures for one change: the same workloads against several
wsplugin checkouts, interleaved run by run (issue 6, item 4).

    python benchmarks/profile/compare.py --checkout before=/tmp/old \\
        --checkout after=. [--workloads ABCDEFG] [--runs 3]
    python benchmarks/profile/compare.py --checkout epoll=. \\
        --checkout uvloop=.@uvloop --workloads ABCDEFG

Each run starts ``serve.py`` from the checkout (server on CPU 0, loadgen on
CPU 1, as in ``make bench``) and reports two figures per workload: the rate
loadgen saw, and operations per second of *server CPU time* over the same
window. On a machine whose host steals CPU from its guests the first swings
by tens of percent between runs; the second counts only the CPU the server
got, so a change's effect shows through the noise. E is the server's RSS
growth per idle connection (10,000 connections). Medians are printed as a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = HERE.parents[1] / ".venv" / "bin" / "python"
sys.path.insert(0, str(HERE))
from _harness import bench  # noqa: E402

PARAMS = {
    "duration": 4,
    "warmup": 1,
    "conns": 1000,
    "window": 8,
    "count": 10000,
    "warmup_count": 1000,
}
MODE = {
    "A": "echo",
    "B": "echo",
    "C": "echo",
    "D": "broadcast",
    "F": "echo",
    "G": "broadcast-deflate",
}
COUNT = {
    "A": "msgs",
    "C": "msgs",
    "D": "deliveries",
    "F": "handshakes",
    "G": "deliveries",
}


def loadgen(workload: str, params: dict, port: int, **kw) -> subprocess.Popen:
    """loadgen on the client CPU, with the benchmark's arguments."""
    argv = ["taskset", "-c", bench.CLIENT_CPU, str(bench.LOADGEN)]
    argv += [*bench.loadgen_args(workload, params), "--port", str(port)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kw)


def start(checkout: Path, mode: str, reactor: str = "") -> tuple[subprocess.Popen, int]:
    port = bench.free_port()
    base, _, deflate = mode.partition("-")
    argv = ["taskset", "-c", bench.SERVER_CPU, str(PY), str(HERE / "serve.py")]
    proc = subprocess.Popen(
        [*argv, str(port), base]
        + (["--compression"] if deflate else [])
        + ([f"--reactor={reactor}"] if reactor else []),
        env={**os.environ, "PYTHONPATH": str(checkout)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not bench.wait_ready(port, proc, timeout=20):
        proc.kill()
        raise RuntimeError(f"server from {checkout} did not start")
    return proc, port


def run_one(checkout: Path, workload: str, reactor: str = "") -> dict:
    if workload == "E":
        return run_memory(checkout, reactor)
    proc, port = start(checkout, MODE[workload], reactor)
    try:
        lg = loadgen(workload, PARAMS, port)
        marks, result = {}, None
        for line in lg.stdout:
            line = line.strip()
            if line.startswith("MARK"):
                marks[line.split()[1]] = (time.monotonic(), bench.proc_cpu_s(proc.pid))
            elif line.startswith("{"):
                result = json.loads(line)
        lg.wait(60)
    finally:
        proc.kill()
        proc.wait()
    (t0, c0), (t1, c1) = marks["start"], marks["end"]
    if workload == "B":
        # round trips one at a time: p50, and round trips per server CPU-second
        return {
            "p50_us": result["p50_us"],
            "per_cpu_s": result["count"] / max(c1 - c0, 1e-9),
            "server_cpu": (c1 - c0) / (t1 - t0),
            "errors": result.get("errors", 0),
        }
    n = result[COUNT[workload]]
    return {
        "rate": n / result["window_s"],
        "per_cpu_s": n / max(c1 - c0, 1e-9),
        "server_cpu": (c1 - c0) / (t1 - t0),
        "errors": result.get("errors", 0),
    }


def run_memory(checkout: Path, reactor: str = "") -> dict:
    proc, port = start(checkout, "echo", reactor)
    try:
        time.sleep(0.5)
        before = bench.proc_rss(proc.pid)
        lg = loadgen("E", {"conns": 10000}, port, stdin=subprocess.PIPE)
        held = 0
        for line in lg.stdout:
            if line.startswith("READY"):
                held = int(line.split()[1])
                time.sleep(0.5)
                after = bench.proc_rss(proc.pid)
                lg.stdin.write("\n")
                lg.stdin.flush()
                break
        lg.wait(60)
    finally:
        proc.kill()
        proc.wait()
    return {"bytes_per_conn": (after - before) / held if held else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--checkout",
        action="append",
        required=True,
        help="NAME=PATH, or NAME=PATH@uvloop for that checkout on the uvloop reactor",
    )
    ap.add_argument("--workloads", default="ADEFG")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    checkouts = []
    for c in args.checkout:
        name, _, spec = c.partition("=")
        path, _, reactor = spec.partition("@")
        checkouts.append((name, Path(path).resolve(), reactor))
    bench.build_loadgen()
    results: dict = {}
    for r in range(args.runs):
        for w in args.workloads.upper():
            for name, path, reactor in checkouts:  # interleaved: drift hits all alike
                res = run_one(path, w, reactor)
                results.setdefault((name, w), []).append(res)
                print(f"run {r + 1} {w} {name}: {res}", file=sys.stderr, flush=True)
    print("| workload | " + " | ".join(n for n, _, _ in checkouts) + " |")
    print("|---|" + "---:|" * len(checkouts))
    for w in args.workloads.upper():
        keys = ["bytes_per_conn"] if w == "E" else ["rate", "per_cpu_s"]
        if w == "B":
            keys = ["p50_us", "per_cpu_s"]
        for key in keys:
            cells = []
            for name, _, _ in checkouts:
                vals = [x[key] for x in results[(name, w)]]
                cells.append(
                    f"{statistics.median(vals):,.1f}"
                    if key == "p50_us"
                    else f"{statistics.median(vals):,.0f}"
                )
            label = {
                "p50_us": "p50 us",
                "rate": "rate /s" if w != "C" else "64 KiB messages /s",
                "per_cpu_s": "per server CPU-second",
                "bytes_per_conn": "bytes per idle connection",
            }[key]
            print(f"| {w} {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
