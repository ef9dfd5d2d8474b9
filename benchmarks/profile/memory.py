"""Where an idle connection's memory goes (workload E), as collapsed stacks.

Starts wsplugin's echo server in this process with tracemalloc on, opens
N idle connections with ``loadgen idle`` (pinned like the benchmarks),
and writes the memory those connections hold, by allocating stack, as
``frame;frame;... bytes`` lines that ``flame.py`` renders:

    python benchmarks/profile/memory.py --conns 2000 --out build/prof/E.txt

Python allocations only (tracemalloc): the kernel's socket buffers and
allocator overhead are not in it, so the total is below workload E's RSS
figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import bench  # noqa: E402


def frame_name(frame: tracemalloc.Frame) -> str:
    path = frame.filename
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = os.path.relpath(path, ROOT)
    return f"{path}:{frame.lineno}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    tracemalloc.start(40)

    from twisted.internet import reactor

    from wsplugin import WebSocketServer
    from wsplugin.apps.echo import Echo

    server = WebSocketServer(Echo(), endpoints=["tcp:0:interface=127.0.0.1"])
    result: dict = {}

    def started(_: object) -> None:
        port = server.ports[0].getHost().port
        baseline = tracemalloc.take_snapshot()
        proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                bench.CLIENT_CPU,
                str(bench.LOADGEN),
                *bench.loadgen_args("E", {"conns": args.conns}),
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
        )

        def on_ready(line: str) -> None:
            result["held"] = int(line.split()[1]) if line.startswith("READY") else 0
            if result["held"]:
                snap = tracemalloc.take_snapshot()
                result["stats"] = snap.compare_to(baseline, "traceback")
            proc.stdin.write("\n")
            proc.stdin.flush()
            reactor.callLater(1, reactor.stop)

        def read_ready() -> None:  # in a thread: the reactor serves meanwhile
            for line in proc.stdout:
                if line.startswith("READY") or line.startswith("{"):
                    reactor.callFromThread(on_ready, line)
                    return
            reactor.callFromThread(on_ready, "")

        reactor.callInThread(read_ready)

    server.start().addCallback(started)
    reactor.run()
    held = result.get("held")
    if not held:
        print("no connections held", file=sys.stderr)
        return 1
    lines = []
    total = 0
    for stat in result["stats"]:
        if stat.size_diff <= 0:
            continue
        frames = [frame_name(f) for f in stat.traceback]  # oldest first
        lines.append(f"{';'.join(frames)} {stat.size_diff}")
        total += stat.size_diff
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{held} connections: {total / held:,.0f} bytes/conn of Python allocations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
