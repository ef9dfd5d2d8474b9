#!/usr/bin/env python3
"""Scale-out benchmarks (issue 14 item 7), run by ``make bench`` after the
main workloads (``benchmarks/run.py`` calls :func:`run_and_report`), or
alone: ``python benchmarks/scaleout.py [--quick] [--docs]``.

  W  workload A (64 connections x 16 in flight, 64-byte text echo) against
     ``twistd ws --workers 2`` and ``--workers 1``: msgs/s, and msgs per
     server CPU-second
  X  workload D (1,000 clients, 64-byte broadcasts relayed to all) on one
     node (in-process backplane), one node on Redis, and two nodes on Redis
     with the clients split between them: deliveries/s, and per server
     CPU-second
  L  the backplane's added latency: publish on one connection, delivery on
     another, p50 / p99, on one node (in-process), one node via Redis, and
     across two nodes via Redis
  R  history replay: a client recovers 10,000 missed publications
     (``subscribe(since=...)``): publications/s, in-process and Redis

The machine has 2 cores shared by the servers, Redis and the load client, so
nothing is pinned here; each figure comes with the CPU that the servers,
Redis and loadgen used over the measured window, and the per-CPU rate,
which is the number that carries over to a machine with more cores.

Needs ``redis-server`` (Debian package); it runs a private one on a Unix
socket in ``build/bench/scaleout/``. Standard library only: the clients of
L and R are minimal WebSocket clients written here.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = BENCH / "build" / "loadgen"
OUT = ROOT / "build" / "bench" / "scaleout"
RESULTS = ROOT / "build" / "bench" / "scaleout.json"
TWISTD = ROOT / ".venv" / "bin" / "twistd"
SERVERS = BENCH / "servers"
# (not of the form "<!-- kind: value -->": tests/doccheck.py reads those)
BEGIN = "<!-- scaleout section begins (benchmarks/scaleout.py) -->"
END = "<!-- scaleout section ends -->"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[scaleout] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_of(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids``."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError, ValueError):
            pass
    return total


def busy_cores_s() -> float:
    """CPU seconds every core of the machine spent busy so far (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / TICK


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


# -- processes ----------------------------------------------------------------


class Redis:
    """A private redis-server on a Unix socket."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.sock = str(directory / "redis.sock")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", self.sock, "--save", "",
             "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        self.url = f"unix://{self.sock}"

    def flush(self) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            s.recv(64)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Node:
    """``twistd -n ws`` on a free port, with its own log."""

    def __init__(self, name: str, app: str, *args: str) -> None:
        self.port = free_port()
        self.log = OUT / f"{name}-{self.port}.log"
        env = dict(os.environ, PYTHONPATH=str(SERVERS))
        self.proc = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile=", f"--logfile={self.log}", "ws",
             "--app", app, "--port", f"tcp:{self.port}:interface=127.0.0.1",
             "--node-name", name, *args],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.workers = 1
        if "--workers" in args:
            self.workers = int(args[args.index("--workers") + 1])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            if text.count("WebSocketServer#info] listening on") >= self.workers:
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {text[-500:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{name} did not start: see {self.log}")
        time.sleep(0.5)

    def pids(self) -> list[int]:
        return [self.proc.pid, *children_of(self.proc.pid)]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def build_loadgen() -> None:
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["gcc", "-O2", "-o", str(LOADGEN), str(LOADGEN_SRC), "-lz"], check=True
    )


def loadgen(args: list[str], watch: list[int]) -> dict[str, Any]:
    """Run loadgen; add the CPU cores ``watch`` (server processes) used
    over its measured window."""
    proc = subprocess.Popen(
        [str(LOADGEN), *args], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    marks: dict[str, tuple[float, float, float]] = {}
    result: dict[str, Any] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("MARK "):
            marks[line[5:]] = (time.monotonic(), cpu_of(watch), busy_cores_s())
        elif line.startswith("{"):
            result = json.loads(line)
    proc.wait(30)
    if "start" in marks and "end" in marks:
        (t0, c0, b0), (t1, c1, b1) = marks["start"], marks["end"]
        window = t1 - t0
        result["server_cores"] = round((c1 - c0) / window, 3)
        # the machine's busy cores, minus ours: other work sharing the cores
        other = (b1 - b0) / window - result["server_cores"]
        result["other_cores"] = round(max(0.0, other - result.get("cpu_share", 0)), 3)
    return result


# -- a minimal WebSocket client (L and R) ----------------------------------------


class MiniWS:
    """Blocking RFC 6455 client: enough for one-frame text messages."""

    def __init__(self, port: int, protocol: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        head = (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
        )
        if protocol:
            head += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        self.sock.sendall((head + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(4096)
        status, _, rest = data.partition(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n")[0]:
            raise RuntimeError(f"handshake failed: {status[:80]!r}")
        self.buf = bytearray(rest)
        self.pos = 0

    def send(self, text: str) -> None:
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0xFE, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0xFF, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def _need(self, n: int) -> None:
        while len(self.buf) - self.pos < n:
            if self.pos > 1 << 16:  # drop what was read, now and then
                del self.buf[: self.pos]
                self.pos = 0
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def recv(self) -> bytes:
        self._need(2)
        p = self.pos
        n = self.buf[p + 1] & 0x7F
        at = 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack_from("!H", self.buf, self.pos + 2)[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack_from("!Q", self.buf, self.pos + 2)[0], 10
        self._need(at + n)
        start = self.pos + at
        self.pos = start + n
        return bytes(self.buf[start : self.pos])

    def close(self) -> None:
        self.sock.close()


# -- the workloads ---------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_workers(redis: Redis, p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workers in (1, 2):
        runs = []
        for _ in range(p["runs"]):
            node = Node(
                "w", "echo", "--backplane", redis.url, "--workers", str(workers)
            )
            try:
                runs.append(
                    loadgen(
                        ["echo", "--conns", "64", "--inflight", "16", "--size", "64",
                         "--text", "--duration", str(p["duration"]), "--warmup",
                         str(p["warmup"]), "--port", str(node.port)],
                        node.pids(),
                    )
                )  # fmt: skip
            finally:
                node.stop()
        out[f"workers{workers}"] = _median(runs, "msgs_per_s")
    return out


def _median(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ok = [r for r in runs if key in r and not r.get("errors")]
    if not ok:
        return {"error": str(runs[:1])}
    rate = statistics.median(r[key] for r in ok)
    cores = statistics.median(r.get("server_cores", 0) for r in ok)
    client = statistics.median(r.get("cpu_share", 0) for r in ok)
    return {
        "rate": rate,
        "server_cores": cores,
        "loadgen_cores": client,
        "other_cores": statistics.median(r.get("other_cores", 0) for r in ok),
        "per_server_cpu_s": rate / cores if cores else None,
        "runs": [r.get(key) for r in runs],
    }


def run_fanout(redis: Redis, p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    app = "wsplugin_broadcast:Broadcast"
    setups = {
        "one node, in-process": [[]],
        "one node, Redis": [["--backplane", redis.url]],
        "two nodes, Redis": [["--backplane", redis.url]] * 2,
    }
    for label, nodes_args in setups.items():
        runs = []
        for _ in range(p["runs"]):
            redis.flush()
            nodes = [Node(f"d{i}", app, *a) for i, a in enumerate(nodes_args)]
            try:
                ports = ["--port", str(nodes[0].port)]
                if len(nodes) > 1:
                    ports += ["--port2", str(nodes[1].port)]
                watch = [pid for n in nodes for pid in n.pids()] + [redis.proc.pid]
                runs.append(
                    loadgen(
                        ["bcast", "--conns", str(p["conns"]), "--window", "8",
                         "--size", "64", "--duration", str(p["duration"]),
                         "--warmup", str(p["warmup"]), *ports],
                        watch,
                    )
                )  # fmt: skip
            finally:
                for n in nodes:
                    n.stop()
        out[label] = _median(runs, "deliveries_per_s")
    return out


def run_latency(redis: Redis, p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    app = "wsplugin_cluster:Cluster"
    for label, nodes_args in {
        "one node, in-process": [[]],
        "one node, Redis": [["--backplane", redis.url]],
        "two nodes, Redis": [["--backplane", redis.url]] * 2,
    }.items():
        redis.flush()
        nodes = [Node(f"l{i}", app, *a) for i, a in enumerate(nodes_args)]
        try:
            publisher = MiniWS(nodes[0].port)
            subscriber = MiniWS(nodes[-1].port)
            subscriber.send("sub lat")
            assert subscriber.recv() == b"subscribed lat"
            samples = []
            for i in range(p["warm_count"] + p["count"]):
                t0 = time.perf_counter_ns()
                publisher.send(f"pub lat {i}")
                got = subscriber.recv()
                t1 = time.perf_counter_ns()
                assert got == str(i).encode(), got
                if i >= p["warm_count"]:
                    samples.append((t1 - t0) / 1000)
            publisher.close()
            subscriber.close()
        finally:
            for n in nodes:
                n.stop()
        out[label] = {
            "p50_us": percentile(samples, 0.5),
            "p99_us": percentile(samples, 0.99),
            "count": len(samples),
        }
    base = out["one node, in-process"]
    for label in ("one node, Redis", "two nodes, Redis"):
        out[label]["added_p50_us"] = out[label]["p50_us"] - base["p50_us"]
        out[label]["added_p99_us"] = out[label]["p99_us"] - base["p99_us"]
    return out


def run_replay(redis: Redis, p: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    n = p["replay"]
    for label, args in {
        "in-process": [],
        "Redis": ["--backplane", redis.url],
    }.items():
        redis.flush()
        node = Node("r", "wsplugin_cluster:Cluster", *args)
        try:
            filler = MiniWS(node.port)
            filler.send(f"fill replay {n}")
            assert filler.recv() == f"filled {n}".encode()
            rates = []
            for _ in range(p["runs"]):
                page = MiniWS(node.port, "wsplugin.channels.v1")
                page.send('{"type":"subscribe","channel":"replay"}')
                top = json.loads(page.recv())
                page.close()
                since = {"epoch": top["epoch"], "offset": top["offset"] - n}
                page = MiniWS(node.port, "wsplugin.channels.v1")
                t0 = time.perf_counter()
                page.send(json.dumps({"type": "subscribe", "channel": "replay",
                                      "since": since}))  # fmt: skip
                got = 0
                while not page.recv().startswith(b'{"type":"subscribed"'):
                    got += 1
                elapsed = time.perf_counter() - t0
                page.close()
                assert got == n, (got, n)
                rates.append(n / elapsed)
            filler.close()
        finally:
            node.stop()
        out[label] = {"publications": n, "per_s": statistics.median(rates)}
    return out


def params(quick: bool, smoke: bool) -> dict[str, Any]:
    if smoke:
        return dict(runs=1, duration=0.5, warmup=0.2, conns=100, count=100,
                    warm_count=20, replay=500)  # fmt: skip
    if quick:
        return dict(runs=1, duration=2.0, warmup=0.5, conns=1000, count=2000,
                    warm_count=200, replay=10_000)  # fmt: skip
    return dict(runs=3, duration=5.0, warmup=1.0, conns=1000, count=5000,
                warm_count=500, replay=10_000)  # fmt: skip


def run(quick: bool = False, smoke: bool = False) -> dict[str, Any]:
    """Run every scale-out figure; returns them (also in build/bench/)."""
    p = params(quick, smoke)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "params": p,
        "quick": quick,
        "cores": os.cpu_count(),
    }
    if not TWISTD.exists():
        results["error"] = "the project venv is missing (make venv)"
        return results
    if not (shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server")):
        results["error"] = "redis-server is not installed (make system-deps)"
        return results
    build_loadgen()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    redis = Redis(OUT)
    try:
        for key, func in (
            ("workers", run_workers),
            ("fanout", run_fanout),
            ("latency", run_latency),
            ("replay", run_replay),
        ):
            log(f"{key}...")
            try:
                results[key] = func(redis, p)
            except Exception as e:  # a failed figure must not hide the others
                results[key] = {"error": f"{type(e).__name__}: {e}"}
    finally:
        redis.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    return results


# -- the report ------------------------------------------------------------------


def _n(v: Any, unit: str = "") -> str:
    if not isinstance(v, (int, float)):
        return "n/a"
    return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:,.2f}{unit}"


def section(r: dict[str, Any]) -> str:
    """The scale-out section of docs/performance.md."""
    lines = [BEGIN, "## Scale-out: workers, nodes, Redis", ""]
    if "error" in r:
        return "\n".join([*lines, f"Not measured: {r['error']}.", "", END, ""])
    p = r["params"]
    lines += [
        f"`benchmarks/scaleout.py`, run by `make bench` after the workloads above "
        f"({r['date']}, {r['cores']} cores, median of {p['runs']} run(s)). Nothing "
        "is pinned: the servers, Redis (a private `redis-server` on a Unix "
        "socket) and loadgen share the cores, so each rate comes with the CPU "
        "the servers used over the measured window and the rate per server "
        "CPU-second. The machine is shared with other work: the per-CPU "
        "figures are the ones to compare.",
        "",
    ]
    w = r.get("workers", {})
    if "workers1" in w and "workers2" in w:
        one, two = w["workers1"], w["workers2"]
        ratio = two.get("rate", 0) / one["rate"] if one.get("rate") else None
        eff = (
            two["per_server_cpu_s"] / one["per_server_cpu_s"]
            if one.get("per_server_cpu_s") and two.get("per_server_cpu_s")
            else None
        )
        lines += [
            "**Echo (A) across workers** (`twistd ws --app echo --workers N "
            "--backplane unix://...`, 64 connections x 16 in flight):",
            "",
            "| | msgs/s | server CPU (cores) | loadgen CPU (cores) "
            "| other processes (cores) | msgs per server CPU-s |",
            "|---|---|---|---|---|---|",
        ]
        for label, v in (("`--workers 1`", one), ("`--workers 2`", two)):
            lines.append(
                f"| {label} | {_n(v.get('rate'))} | {_n(v.get('server_cores'))} "
                f"| {_n(v.get('loadgen_cores'))} | {_n(v.get('other_cores'))} "
                f"| {_n(v.get('per_server_cpu_s'))} |"
            )
        lines += [
            "",
            f"Ratio 2 workers / 1: **{_n(ratio)}** in msgs/s; "
            f"{_n(eff)} in msgs per server CPU-second.",
            "",
        ]
    f = r.get("fanout", {})
    if f and "error" not in f:
        lines += [
            f"**Broadcast fan-out (D)** ({p['conns']} clients, 64-byte messages "
            "relayed to all, 8 outstanding; two nodes: loadgen `--port2` puts "
            "every other client on the second node):",
            "",
            "| | deliveries/s | servers + Redis (cores) | loadgen (cores) "
            "| other processes (cores) | deliveries per server + Redis CPU-s |",
            "|---|---|---|---|---|---|",
        ]
        for label, v in f.items():
            lines.append(
                f"| {label} | {_n(v.get('rate'))} | {_n(v.get('server_cores'))} "
                f"| {_n(v.get('loadgen_cores'))} | {_n(v.get('other_cores'))} "
                f"| {_n(v.get('per_server_cpu_s'))} |"
            )
        lines.append("")
    lat = r.get("latency", {})
    if lat and "error" not in lat:
        lines += [
            "**Publish to delivery** (one publisher connection, one subscriber "
            "connection, one message at a time, blocking Python clients; the "
            "added latency is over the in-process backplane's):",
            "",
            "| | p50 | p99 | added p50 | added p99 |",
            "|---|---|---|---|---|",
        ]
        for label, v in lat.items():
            cells = [
                _n(v.get(k), " µs")
                for k in ("p50_us", "p99_us", "added_p50_us", "added_p99_us")
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    rep = r.get("replay", {})
    if rep and "error" not in rep:
        lines += [
            "**History replay** (a `wsplugin.channels.v1` client recovers "
            f"{_n(next(iter(rep.values())).get('publications'))} missed publications: "
            "from its request to the `subscribed` answer after the last one):",
            "",
            "| engine | publications/s |",
            "|---|---|",
        ]
        for label, v in rep.items():
            lines.append(f"| {label} | {_n(v.get('per_s'))} |")
        lines.append("")
    for key in ("workers", "fanout", "latency", "replay"):
        if "error" in r.get(key, {}):
            lines += [f"{key}: not measured: {r[key]['error']}", ""]
    notes = BENCH / "SCALEOUT.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    return "\n".join([*lines, END, ""])


def write_section(md: Path, results: dict[str, Any]) -> None:
    """Put the section in ``md`` (replacing an earlier one, else at the end)."""
    text = md.read_text() if md.exists() else ""
    new = section(results)
    if BEGIN in text and END in text:
        before, _, rest = text.partition(BEGIN)
        _, _, after = rest.partition(END)
        text = before + new.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + new
    md.write_text(text)


def summary(r: dict[str, Any]) -> str:
    """The figures, for the terminal."""
    return section(r).replace(BEGIN, "").replace(END, "").strip()


def run_and_report(md: Path | None, quick: bool = False, smoke: bool = False) -> None:
    """What ``make bench`` calls: run, print, and write the section into
    ``md`` (the report it just wrote)."""
    results = run(quick=quick, smoke=smoke)
    print()
    print(summary(results))
    if md is not None:
        write_section(md, results)


def restore_section(md: Path) -> None:
    """Put the last results' section back into ``md`` (after the report was
    rewritten from saved results, without running anything)."""
    if RESULTS.exists():
        write_section(md, json.loads(RESULTS.read_text()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 short run")
    ap.add_argument("--smoke", action="store_true", help="tiny loads")
    ap.add_argument("--docs", action="store_true", help="update docs/performance.md")
    args = ap.parse_args()
    md = ROOT / "docs" / "performance.md" if args.docs else None
    run_and_report(md, quick=args.quick or args.smoke, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    sys.exit(main())
