"""Flame graphs of wsplugin's hot paths (tracker issue 6): ``make profile``.

    python benchmarks/profile/run.py [--workloads AEF] [--out docs/profiles]

A and F: ``twistd ws --app echo`` on CPU 0 under py-spy (sampling at
500 Hz, Python frames only), driven by loadgen on CPU 1 with the same
arguments as the benchmark's A (64 connections x 16 in flight, 64-byte
echo) and F (32 concurrent handshake + close cycles). E: tracemalloc, see
``memory.py``. Each profile is written as collapsed stacks (``.txt``) and
rendered by ``flame.py`` (``.svg``): wsplugin's frames are blue, Autobahn's
orange, Twisted's green, the rest red. Stacks go to ``build/profiles/``,
SVGs to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(HERE))
from _harness import bench  # noqa: E402

PARAMS = {"duration": 6, "warmup": 0.5}  # loadgen's A and F, 6 s measured
TITLES = {
    "A": "A: 64-byte text echo, 64 connections x 16 in flight (CPU samples)",
    "E": "E: Python memory held by idle connections (bytes, tracemalloc)",
    "F": "F: handshake + close cycles, 32 concurrent (CPU samples)",
}


def cpu_profile(workload: str, out: Path) -> str:
    port = bench.free_port()
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            bench.SERVER_CPU,
            str(VENV_BIN / "twistd"),
            "-n",
            "--pidfile=",
            "ws",
            "--app",
            "echo",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not bench.wait_ready(port, server, timeout=15):
            raise SystemExit("twistd ws did not start")
        spy = subprocess.Popen(
            [
                str(VENV_BIN / "py-spy"),
                "record",
                "--pid",
                str(server.pid),
                "--rate",
                "500",
                "--duration",
                "6",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        load = subprocess.run(
            [
                "taskset",
                "-c",
                bench.CLIENT_CPU,
                str(bench.LOADGEN),
                *bench.loadgen_args(workload, PARAMS),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        _, err = spy.communicate(timeout=60)
        if spy.returncode:
            raise SystemExit(f"py-spy failed: {err.strip()[-300:]}")
        return load.stdout.strip().splitlines()[-1]
    finally:
        server.kill()
        server.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="AEF")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "profiles")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bench.build_loadgen()
    py = str(VENV_BIN / "python")
    for w in args.workloads.upper():
        stacks = ROOT / "build" / "profiles" / f"{w}.txt"
        stacks.parent.mkdir(parents=True, exist_ok=True)
        svg = args.out / f"{w}.svg"
        if w == "E":
            res = subprocess.run(
                [py, str(HERE / "memory.py"), "--conns", "2000", "--out", str(stacks)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            ).stdout.strip()
            unit = "bytes"
        else:
            res = cpu_profile(w, stacks)
            unit = "samples"
        subprocess.run(
            [
                py,
                str(HERE / "flame.py"),
                str(stacks),
                str(svg),
                "--title",
                TITLES[w],
                "--unit",
                unit,
            ],
            check=True,
        )
        print(f"{w}: {os.path.relpath(svg, ROOT)}  ({res})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
