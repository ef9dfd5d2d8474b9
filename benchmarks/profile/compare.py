"""Before/after figures for one change: the same workloads against several
wsplugin checkouts, interleaved run by run (issue 6, item 4).

    python benchmarks/profile/compare.py --checkout before=/tmp/old \\
        --checkout after=. [--workloads ADEFG] [--runs 3]

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
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = ROOT / ".venv" / "bin" / "python"
LOADGEN = ROOT / "benchmarks" / "build" / "loadgen"
TICK = os.sysconf("SC_CLK_TCK")

BCAST = ["bcast", "--conns", "1000", "--window", "8", "--size", "64"]
LOAD = {
    "A": (
        "echo",
        ["echo", "--conns", "64", "--inflight", "16", "--size", "64", "--text"],
    ),
    "D": ("broadcast", BCAST),
    "F": ("echo", ["handshake", "--concurrency", "32"]),
    "G": ("broadcast-deflate", [*BCAST, "--deflate"]),
}
COUNT = {"A": "msgs", "D": "deliveries", "F": "handshakes", "G": "deliveries"}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(checkout: Path, mode: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    base, _, deflate = mode.partition("-")
    argv = ["taskset", "-c", "0", str(PY), str(HERE / "serve.py"), str(port), base]
    proc = subprocess.Popen(
        argv + (["--compression"] if deflate else []),
        env={**os.environ, "PYTHONPATH": str(checkout)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server from {checkout} did not start")


def run_one(checkout: Path, workload: str) -> dict:
    if workload == "E":
        return run_memory(checkout)
    mode, args = LOAD[workload]
    proc, port = start(checkout, mode)
    try:
        lg = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                str(LOADGEN),
                args[0],
                "--port",
                str(port),
                *args[1:],
                "--duration",
                "4",
                "--warmup",
                "1",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        marks, result = {}, None
        for line in lg.stdout:
            line = line.strip()
            if line.startswith("MARK"):
                marks[line.split()[1]] = (time.monotonic(), cpu_s(proc.pid))
            elif line.startswith("{"):
                result = json.loads(line)
        lg.wait(60)
    finally:
        proc.kill()
        proc.wait()
    (t0, c0), (t1, c1) = marks["start"], marks["end"]
    n = result[COUNT[workload]]
    return {
        "rate": n / result["window_s"],
        "per_cpu_s": n / max(c1 - c0, 1e-9),
        "server_cpu": (c1 - c0) / (t1 - t0),
        "errors": result.get("errors", 0),
    }


def run_memory(checkout: Path) -> dict:
    proc, port = start(checkout, "echo")
    try:
        time.sleep(0.5)
        before = rss(proc.pid)
        lg = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                str(LOADGEN),
                "idle",
                "--port",
                str(port),
                "--conns",
                "10000",
                "--hold",
                "60",
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )
        held = 0
        for line in lg.stdout:
            if line.startswith("READY"):
                held = int(line.split()[1])
                time.sleep(0.5)
                after = rss(proc.pid)
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
    ap.add_argument("--checkout", action="append", required=True, help="NAME=PATH")
    ap.add_argument("--workloads", default="ADEFG")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    checkouts = [
        (c.split("=", 1)[0], Path(c.split("=", 1)[1]).resolve()) for c in args.checkout
    ]
    if not LOADGEN.exists():
        subprocess.run(
            [
                "gcc",
                "-O2",
                "-o",
                str(LOADGEN),
                str(ROOT / "benchmarks" / "loadgen.c"),
                "-lz",
            ],
            check=True,
        )
    results: dict = {}
    for r in range(args.runs):
        for w in args.workloads.upper():
            for name, path in checkouts:  # interleaved: drift hits all alike
                res = run_one(path, w)
                results.setdefault((name, w), []).append(res)
                print(f"run {r + 1} {w} {name}: {res}", file=sys.stderr, flush=True)
    print("| workload | " + " | ".join(n for n, _ in checkouts) + " |")
    print("|---|" + "---:|" * len(checkouts))
    for w in args.workloads.upper():
        keys = ["bytes_per_conn"] if w == "E" else ["rate", "per_cpu_s"]
        for key in keys:
            cells = []
            for name, _ in checkouts:
                vals = [x[key] for x in results[(name, w)]]
                cells.append(f"{statistics.median(vals):,.0f}")
            label = {
                "rate": "rate /s",
                "per_cpu_s": "per server CPU-second",
                "bytes_per_conn": "bytes per idle connection",
            }[key]
            print(f"| {w} {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
