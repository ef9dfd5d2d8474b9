#!/usr/bin/env python3
"""wsplugin benchmarks (tracker issue 6): ``make bench`` / ``make bench-quick``.

One invocation builds the C load client (``benchmarks/loadgen.c``), installs
the peers (``benchmarks/requirements.txt`` into ``benchmarks/.venv-peers``,
Node ``ws`` with npm into ``benchmarks/servers/node``), then for each run and
each server starts the server pinned to CPU 0 on a free loopback port and
drives it with loadgen pinned to CPU 1:

  A  64 connections x 16 in flight, 64-byte text echo        msgs/s
  B  one connection, one message in flight, 64-byte text    p50 / p99 round trip
  C  8 connections x 4 in flight, 64 KiB binary echo        MB/s (1e6 B, one way)
  D  1,000 clients, 64-byte messages relayed to all          deliveries/s
  E  10,000 idle connections                                 server RSS bytes/conn
  F  32 concurrent connectors: handshake + close, repeated   handshakes/s
  G  D with permessage-deflate, no context takeover          deliveries/s

Results are the median of R runs (3; 1 with --quick, which also shortens
every duration). They go to build/bench/results.json, and (full runs, or
--docs) to docs/performance.md and docs/performance.png; a quick run writes
its report to build/bench/ unless --docs is given.

Only the Python standard library is needed to run this file; the chart is
drawn by ``chart.py`` in the peers venv (matplotlib).
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SERVERS_DIR = BENCH / "servers"
NODE_DIR = SERVERS_DIR / "node"
LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = BENCH / "build" / "loadgen"
PEERS_VENV = BENCH / ".venv-peers"
PEERS_PY = PEERS_VENV / "bin" / "python"
REQUIREMENTS = BENCH / "requirements.txt"
NOTES = BENCH / "NOTES.md"  # included in docs/performance.md as it is
OUT = ROOT / "build" / "bench"
PROJECT_VENV = ROOT / ".venv"
PROJECT_PY = PROJECT_VENV / "bin" / "python"

# run only when named in --servers (a variant of wsplugin, not a peer)
OPT_IN_SERVERS = {"wsplugin-uvloop"}

SERVER_CPU = "0"
CLIENT_CPU = "1"

# ------------------------------------------------------------ workloads

# name, label, metric key in the result, unit, which way is better
METRICS = [
    ("A", "A echo 64 B, 64x16", "msgs_per_s", "msgs/s", "higher"),
    ("B50", "B round trip p50", "p50_us", "us", "lower"),
    ("B99", "B round trip p99", "p99_us", "us", "lower"),
    ("C", "C echo 64 KiB, 8x4", "mb_per_s", "MB/s", "higher"),
    ("D", "D broadcast to {D}", "deliveries_per_s", "deliveries/s", "higher"),
    ("E", "E memory, {E} idle", "bytes_per_conn", "bytes/conn", "lower"),
    ("F", "F handshakes, 32 conc.", "handshakes_per_s", "handshakes/s", "higher"),
    ("G", "G broadcast to {D}, deflate", "deliveries_per_s", "deliveries/s", "higher"),
]


def label_of(label: str, params: dict) -> str:
    """Fill in the connection counts of D and E (smaller in --smoke)."""
    return label.format(D=f"{params['D']['conns']:,}", E=f"{params['E']['conns']:,}")


WORKLOAD_OF = {
    "A": "A",
    "B50": "B",
    "B99": "B",
    "C": "C",
    "D": "D",
    "E": "E",
    "F": "F",
    "G": "G",
}
WORKLOADS = "ABCDEFG"


def workload_params(quick: bool, smoke: bool = False) -> dict:
    params = _workload_params(quick, smoke)
    params["G"] = dict(params["D"])  # D's load, with permessage-deflate
    return params


def _workload_params(quick: bool, smoke: bool) -> dict:
    if smoke:  # checks the harness end to end in seconds; figures mean nothing
        dur, warm = 0.3, 0.1
        return {
            "A": dict(duration=dur, warmup=warm),
            "B": dict(count=200, warmup_count=20),
            "C": dict(duration=dur, warmup=warm),
            "D": dict(conns=100, window=8, duration=dur, warmup=warm),
            "E": dict(conns=200, settle=0.1),
            "F": dict(duration=dur, warmup=warm),
        }
    if quick:
        dur, warm = 2.0, 0.5
        return {
            "A": dict(duration=dur, warmup=warm),
            "B": dict(count=5000, warmup_count=500),
            "C": dict(duration=dur, warmup=warm),
            "D": dict(conns=1000, window=8, duration=dur, warmup=warm),
            "E": dict(conns=10000, settle=0.5),
            "F": dict(duration=dur, warmup=warm),
        }
    dur, warm = 5.0, 1.0
    return {
        "A": dict(duration=dur, warmup=warm),
        "B": dict(count=20000, warmup_count=2000),
        "C": dict(duration=dur, warmup=warm),
        "D": dict(conns=1000, window=8, duration=dur, warmup=warm),
        "E": dict(conns=10000, settle=1.0),
        "F": dict(duration=dur, warmup=warm),
    }


def loadgen_args(workload: str, p: dict) -> list[str]:
    if workload == "A":
        return [
            "echo",
            "--conns",
            "64",
            "--inflight",
            "16",
            "--size",
            "64",
            "--text",
            "--duration",
            str(p["duration"]),
            "--warmup",
            str(p["warmup"]),
        ]
    if workload == "B":
        return [
            "latency",
            "--size",
            "64",
            "--text",
            "--count",
            str(p["count"]),
            "--warmup-count",
            str(p["warmup_count"]),
        ]
    if workload == "C":
        return [
            "echo",
            "--conns",
            "8",
            "--inflight",
            "4",
            "--size",
            "65536",
            "--binary",
            "--duration",
            str(p["duration"]),
            "--warmup",
            str(p["warmup"]),
        ]
    if workload in ("D", "G"):
        return [
            "bcast",
            "--conns",
            str(p["conns"]),
            "--window",
            str(p["window"]),
            "--size",
            "64",
            "--duration",
            str(p["duration"]),
            "--warmup",
            str(p["warmup"]),
        ] + (["--deflate"] if workload == "G" else [])
    if workload == "E":
        return ["idle", "--conns", str(p["conns"]), "--hold", "120"]
    if workload == "F":
        return [
            "handshake",
            "--concurrency",
            "32",
            "--duration",
            str(p["duration"]),
            "--warmup",
            str(p["warmup"]),
        ]
    raise ValueError(workload)


WORKLOAD_TIMEOUT = {"A": 60, "B": 90, "C": 60, "D": 120, "E": 180, "F": 60, "G": 120}

# -------------------------------------------------------------- servers


class Server:
    """How to start one server; ``unavailable`` says why it cannot run."""

    def __init__(self, name, label, argv, env=None, note="", skip=None):
        self.name = name
        self.label = label
        self._argv = argv  # (port, mode) -> argv
        self.env = env or {}
        self.note = note
        self.skip: dict[str, str] = skip or {}  # workload -> why it cannot run
        self.unavailable: str | None = None
        self.version = ""

    def argv(self, port: int, mode: str) -> list[str]:
        return self._argv(port, mode)


def project_bin(name: str) -> str:
    p = PROJECT_VENV / "bin" / name
    return str(p) if p.exists() else name


def py_mode(mode: str) -> list[str]:
    """``--mode`` for the Python peer scripts; broadcast-deflate adds --deflate."""
    base, _, deflate = mode.partition("-")
    return ["--mode", base] + (["--deflate"] if deflate else [])


def make_servers() -> list[Server]:
    py = str(PROJECT_PY) if PROJECT_PY.exists() else sys.executable
    peers = str(PEERS_PY)
    return [
        Server(
            "wsplugin",
            "wsplugin",
            lambda port, mode: [
                project_bin("twistd"),
                "-n",
                "--pidfile=",
                "ws",
                "--app",
                "echo" if mode == "echo" else "wsplugin_broadcast:Broadcast",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                *(["--compression"] if mode == "broadcast-deflate" else []),
            ],
            env={"PYTHONPATH": str(SERVERS_DIR)},
            note="`twistd -n ws --app echo` (D: `--app wsplugin_broadcast:Broadcast`; "
            "G: the same with `--compression`), every other option at its default",
        ),
        Server(
            "wsplugin-uvloop",
            "wsplugin (uvloop)",
            lambda port, mode: [
                project_bin("twistd"),
                "--reactor=uvloop",
                "-n",
                "--pidfile=",
                "ws",
                "--app",
                "echo" if mode == "echo" else "wsplugin_broadcast:Broadcast",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
                *(["--compression"] if mode == "broadcast-deflate" else []),
            ],
            env={"PYTHONPATH": str(SERVERS_DIR)},
            note="the same with `twistd --reactor=uvloop` (Twisted's asyncio "
            "reactor on uvloop); run only when named in `--servers`",
        ),
        Server(
            "autobahn",
            "Autobahn (raw)",
            lambda port, mode: [
                py,
                str(SERVERS_DIR / "autobahn_server.py"),
                "--port",
                str(port),
                *py_mode(mode),
            ],
            note="WebSocketServerProtocol on the same Twisted/Autobahn; "
            "D: prepareMessage + sendPreparedMessage; G: accepts permessage-deflate "
            "(then Autobahn compresses per receiver)",
        ),
        Server(
            "websockets",
            "websockets",
            lambda port, mode: [
                peers,
                str(SERVERS_DIR / "websockets_server.py"),
                "--port",
                str(port),
                *py_mode(mode),
            ],
            note="asyncio implementation, default asyncio loop; "
            "D: websockets.broadcast; G: its default permessage-deflate",
        ),
        Server(
            "aiohttp",
            "aiohttp",
            lambda port, mode: [
                peers,
                str(SERVERS_DIR / "aiohttp_server.py"),
                "--port",
                str(port),
                *py_mode(mode),
            ],
            note="web.WebSocketResponse, default asyncio loop, access log off; "
            "G: `compress=True` (its default)",
        ),
        Server(
            "picows",
            "picows",
            lambda port, mode: [
                peers,
                str(SERVERS_DIR / "picows_server.py"),
                "--port",
                str(port),
                *py_mode(mode),
            ],
            note="frame-level API, no UTF-8 validation, "
            "default asyncio loop (not uvloop)",
            skip={"G": "picows has no permessage-deflate"},
        ),
        Server(
            "node-ws",
            "Node ws",
            lambda port, mode: [
                "node",
                str(NODE_DIR / "server.js"),
                str(port),
                *mode.split("-"),
            ],
            note="ws defaults, with the optional native `bufferutil` (masking) "
            "that the ws README recommends; G: `perMessageDeflate` with "
            "`threshold: 0` (its default threshold leaves 64-byte messages "
            "uncompressed)",
        ),
    ]


# ------------------------------------------------------ process handling

_children: list[subprocess.Popen] = []


def _kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def _kill_all() -> None:
    for proc in list(_children):
        try:
            _kill_group(proc, grace=1.0)
        except Exception:
            pass


def _on_signal(signum, frame):
    _kill_all()
    sys.exit(128 + signum)


def spawn(argv, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(argv, start_new_session=True, **kw)
    _children.append(proc)
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ws_probe(port: int, timeout: float = 2.0) -> bool:
    """A full opening handshake (101), then a plain close."""
    req = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(req)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(b"HTTP/1.1 101")
    except OSError:
        return False


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    """Until the server on ``port`` answers a handshake; False if ``proc``
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ws_probe(port):
            return True
        time.sleep(0.1)
    return False


def proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class ServerDied(RuntimeError):
    pass


class RunningServer:
    def __init__(self, spec: Server, mode: str, log_path: Path):
        self.spec = spec
        self.port = free_port()
        env = dict(os.environ)
        env.update(spec.env)
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.log.write(
            f"\n==== {dt.datetime.now().isoformat()} {spec.name} {mode}\n".encode()
        )
        self.log.flush()
        argv = ["taskset", "-c", SERVER_CPU, *spec.argv(self.port, mode)]
        self.proc = spawn(
            argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(ROOT),
        )
        if not wait_ready(self.port, self.proc):
            if self.proc.poll() is not None:
                raise ServerDied(
                    f"exited with {self.proc.returncode}: {self.log_tail()}"
                )
            self.stop()
            raise ServerDied(f"not answering a handshake after 30 s: {self.log_tail()}")
        time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 300) -> str:
        try:
            self.log.flush()
            text = self.log_path.read_text(errors="replace")[-n:]
            return " ".join(text.split())
        except OSError:
            return ""

    def stop(self) -> None:
        _kill_group(self.proc)
        self.log.close()


def run_loadgen(server: RunningServer, workload: str, params: dict) -> dict:
    """Run loadgen on CPU 1 against ``server``; returns its JSON result plus
    the server's CPU share over the measured window (and RSS for E)."""
    argv = [
        "taskset",
        "-c",
        CLIENT_CPU,
        str(LOADGEN),
        *loadgen_args(workload, params),
        "--port",
        str(server.port),
    ]
    timeout = WORKLOAD_TIMEOUT[workload]
    argv += ["--timeout", str(timeout - 5)]
    extra: dict = {}
    if workload == "E":
        time.sleep(params["settle"])
        extra["rss_before"] = proc_rss(server.pid)
    proc = spawn(
        argv,
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    timer = threading.Timer(timeout, _kill_group, args=(proc, 1.0))
    timer.start()
    result = None
    marks: dict = {}
    try:
        for line in proc.stdout:
            line = line.strip()
            if line == "MARK start":
                marks["start"] = (time.monotonic(), proc_cpu_s(server.pid))
            elif line == "MARK end":
                marks["end"] = (time.monotonic(), proc_cpu_s(server.pid))
            elif line.startswith("READY"):
                time.sleep(params["settle"])
                extra["rss_after"] = proc_rss(server.pid)
                extra["server_alive"] = server.alive()
                proc.stdin.write("\n")
                proc.stdin.flush()
            elif line.startswith("{"):
                result = json.loads(line)
        proc.wait(10)
        stderr = proc.stderr.read()
    finally:
        timer.cancel()
        _kill_group(proc, 1.0)
        _children.remove(proc)
    if result is None:
        result = {"error": f"no result (exit {proc.returncode}) {stderr.strip()[:200]}"}
    if "start" in marks and "end" in marks:
        (t0, c0), (t1, c1) = marks["start"], marks["end"]
        if c0 is not None and c1 is not None and t1 > t0:
            result["server_cpu_share"] = round((c1 - c0) / (t1 - t0), 3)
    result.update(extra)
    if workload == "G" and "error" not in result:
        if result.get("plain") or not result.get("compressed"):
            result["error"] = (
                f"{result.get('plain', 0)} of "
                f"{result.get('plain', 0) + result.get('compressed', 0)} "
                "messages arrived uncompressed"
            )
    if workload == "E" and "error" not in result:
        before, after = extra.get("rss_before"), extra.get("rss_after")
        held = result.get("held_at_end", 0)
        if before and after and held:
            result["bytes_per_conn"] = (after - before) / held
        else:
            result["error"] = "could not read the server's RSS"
    if not server.alive():
        result.setdefault("error", f"server died: {server.log_tail()}")
    return result


# --------------------------------------------------------------- setup


def log(msg: str) -> None:
    print(msg, flush=True)


def build_loadgen() -> None:
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return
    cmd = ["gcc", "-O2", "-o", str(LOADGEN), str(LOADGEN_SRC), "-lz"]
    log("building loadgen: " + " ".join(shlex.quote(c) for c in cmd))
    try:
        subprocess.run(cmd, check=True, timeout=120)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(
            f"building loadgen failed ({e}): it needs gcc and the zlib headers "
            "(Debian: apt-get install gcc zlib1g-dev)"
        ) from None


def setup_peers_venv() -> str | None:
    """Create/refresh benchmarks/.venv-peers; returns an error or None."""
    stamp = PEERS_VENV / ".installed"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want and PEERS_PY.exists():
        return None
    log("installing Python peers into benchmarks/.venv-peers (requirements.txt)")
    try:
        if not PEERS_PY.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(PEERS_VENV)], check=True, timeout=300
            )
        subprocess.run(
            [
                str(PEERS_PY),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as e:
        return f"pip install failed: {e}"
    stamp.write_text(want + "\n")
    return None


def setup_node() -> str | None:
    if not shutil.which("node") or not shutil.which("npm"):
        return "node/npm not installed"
    lock = NODE_DIR / "node_modules" / ".package-lock.json"
    if (
        lock.exists()
        and lock.stat().st_mtime >= (NODE_DIR / "package.json").stat().st_mtime
    ):
        return None
    log("npm install (benchmarks/servers/node)")
    try:
        r = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (subprocess.SubprocessError, OSError) as e:
        return f"npm install failed: {e}"
    if r.returncode != 0:
        return "npm install failed: " + " ".join((r.stderr or r.stdout).split())[-200:]
    return None


def py_versions(python: str, modules: list[str]) -> dict:
    code = (
        "import json, sys, importlib.metadata as m\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for name in {modules!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except Exception as e: out[name] = None\n"
        "try:\n"
        "    import autobahn.websocket as w; out['nvx'] = bool(w.USES_NVX)\n"
        "except Exception: pass\n"
        "try:\n"
        "    import wsplugin._codec as c; out['codec'] = c.IMPLEMENTATION\n"
        "except Exception: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        r = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60
        )
        return json.loads(r.stdout)
    except Exception:
        return {}


def check_import(python: str, module: str) -> str | None:
    try:
        r = subprocess.run(
            [python, "-c", f"import {module}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (subprocess.SubprocessError, OSError) as e:
        return str(e)
    if r.returncode:
        return (r.stderr.strip().splitlines() or ["import failed"])[-1]
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cmd_version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except Exception:
        return "unknown"


def git_state() -> str:
    """The checked-out commit, and whether wsplugin/ differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "wsplugin", "twisted"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (
        " with uncommitted changes to wsplugin/" if dirty else ""
    )


def other_load() -> list[str]:
    """Other busy processes (a benchmark next to them measures nothing)."""
    try:
        r = subprocess.run(
            ["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except Exception:
        return []
    busy = []
    for line in r.stdout.splitlines()[1:]:
        parts = line.split(None, 2)
        if len(parts) == 3 and int(parts[0]) != os.getpid() and parts[2] != "ps":
            try:
                if float(parts[1]) >= 20.0:
                    busy.append(f"{parts[2]} (pid {parts[0]}, {parts[1]}% CPU)")
            except ValueError:
                pass
    return busy


# ---------------------------------------------------------------- runs


def run_server_workloads(
    spec: Server, params: dict, workloads: list[str], logs: Path
) -> dict:
    """One run of every workload against one server: echo-mode server for
    A, B, C, F; a fresh broadcast-mode one for D; a fresh echo one for E."""
    out: dict = {}
    plan = [
        ("echo", [w for w in "ABCF" if w in workloads]),
        ("broadcast", [w for w in "D" if w in workloads]),
        ("broadcast-deflate", [w for w in "G" if w in workloads]),
        ("echo", [w for w in "E" if w in workloads]),
    ]
    for mode, group in plan:
        for w in [w for w in group if w in spec.skip]:
            out[w] = {"skipped": spec.skip[w]}
        group = [w for w in group if w not in spec.skip]
        if not group:
            continue
        try:
            server = RunningServer(spec, mode, logs / f"{spec.name}.log")
        except ServerDied as e:
            for w in group:
                out[w] = {"error": f"server did not start: {e}"}
            continue
        try:
            for w in group:
                t0 = time.monotonic()
                try:
                    res = run_loadgen(server, w, params[w])
                except Exception as e:  # keep going with the other workloads
                    res = {"error": f"{type(e).__name__}: {e}"}
                res["elapsed_s"] = round(time.monotonic() - t0, 2)
                out[w] = res
                log(f"  {spec.name:10s} {w}: {summary(w, res)}")
                if not server.alive():
                    break
        finally:
            server.stop()
        for w in group:
            out.setdefault(w, {"error": "server died earlier in this group"})
    return out


def summary(w: str, r: dict) -> str:
    if "error" in r:
        return "ERROR " + str(r["error"])[:160]
    share = (
        f" (loadgen CPU {r.get('cpu_share', 0) * 100:.0f}%, server CPU "
        f"{r.get('server_cpu_share', float('nan')) * 100:.0f}%)"
    )
    err = f" errors={r['errors']}" if r.get("errors") else ""
    if w == "A" or w == "C":
        return f"{r['msgs_per_s']:.0f} msgs/s, {r['mb_per_s']:.1f} MB/s" + share + err
    if w == "B":
        return f"p50 {r['p50_us']:.1f} us, p99 {r['p99_us']:.1f} us" + share + err
    if "skipped" in r:
        return "n/a: " + r["skipped"]
    if w in ("D", "G"):
        return f"{r['deliveries_per_s']:.0f} deliveries/s" + share + err
    if w == "E":
        return f"{r['bytes_per_conn']:.0f} bytes/conn ({r['held_at_end']} conns)" + err
    if w == "F":
        return f"{r['handshakes_per_s']:.0f} handshakes/s" + share + err
    return json.dumps(r)


def first_soft_error(runs: list[dict]) -> str:
    return next((r["first_error"] for r in runs if r.get("first_error")), "")


# Workloads that keep the server busy all the time: a server using less than
# SUSPECT_BELOW of its core there was disturbed (another process on its core)
# or was not the bottleneck; such runs are left out of the medians when the
# other runs of the same figure are not.
SATURATING = "ACDFG"
SUSPECT_BELOW = 0.9


def is_suspect(result: dict, workload: str) -> bool:
    share = result.get("server_cpu_share")
    return workload in SATURATING and share is not None and share < SUSPECT_BELOW


def usable(runs: list[dict], workload: str) -> list[dict]:
    ok = [r for r in runs if "error" not in r and "skipped" not in r]
    clean = [r for r in ok if not is_suspect(r, workload)]
    return clean or ok


def median_of(runs: list[dict], key: str) -> float | None:
    vals = [
        r[key]
        for r in runs
        if "error" not in r and "skipped" not in r and r.get(key) is not None
    ]
    return statistics.median(vals) if vals else None


def aggregate(raw: dict, servers: list[tuple[str, str | None]]) -> dict:
    """Medians per server and metric, plus loadgen/server CPU shares.
    ``servers``: (name, why unavailable or None)."""
    agg: dict = {}
    for name, unavailable in servers:
        s = agg[name] = {
            "metrics": {},
            "cpu": {},
            "errors": {},
            "excluded": {},
            "skipped": {},
        }
        if unavailable:
            continue
        s["spread"] = {}
        for mkey, _label, key, _unit, _better in METRICS:
            w = WORKLOAD_OF[mkey]
            runs = usable([run[w] for run in raw[name] if w in run], w)
            s["metrics"][mkey] = median_of(runs, key)
            vals = [
                r[key]
                for r in runs
                if "error" not in r and "skipped" not in r and r.get(key)
            ]
            if len(vals) > 1:
                s["spread"][mkey] = (max(vals) - min(vals)) / statistics.median(vals)
        for w in WORKLOADS:
            runs = [run[w] for run in raw[name] if w in run]
            skipped = [r["skipped"] for r in runs if "skipped" in r]
            if skipped:
                s["skipped"][w] = skipped[0]
                continue
            errs = sorted({str(r["error"])[:200] for r in runs if "error" in r})
            if errs:
                s["errors"][w] = errs
            kept = usable(runs, w)
            left_out = [
                i + 1
                for i, r in enumerate(runs)
                if "error" not in r and all(r is not k for k in kept)
            ]
            if left_out:
                s["excluded"][w] = left_out
            soft = sum(r.get("errors", 0) for r in runs if "error" not in r)
            if soft:
                s["errors"].setdefault(w, []).append(
                    f"{soft} connection/echo errors reported by loadgen "
                    f"(first: {first_soft_error(runs)})"
                )
            s["cpu"][w] = {
                "loadgen": median_of(kept, "cpu_share"),
                "server": median_of(kept, "server_cpu_share"),
            }
    return agg


def ratios(agg: dict, servers: list[str]) -> dict:
    """wsplugin/peer for every metric (as is: for p50/p99/memory, < 1 is
    wsplugin better; for the rest, > 1 is)."""
    base = agg.get("wsplugin", {}).get("metrics", {})
    out: dict = {}
    for name in servers:
        if name == "wsplugin":
            continue
        out[name] = {}
        for mkey, *_ in METRICS:
            a, b = base.get(mkey), agg.get(name, {}).get("metrics", {}).get(mkey)
            out[name][mkey] = (a / b) if a is not None and b else None
    return out


# -------------------------------------------------------------- report


def fmt_num(v: float | None, unit: str) -> str:
    if v is None:
        return "n/a"
    if unit == "us":
        return f"{v:,.1f}"
    if unit == "MB/s":
        return f"{v:,.1f}"
    return f"{v:,.0f}"


def fmt_ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def table(results: dict) -> str:
    servers = results["servers"]
    agg, rat = results["aggregate"], results["ratios"]
    names = [s["name"] for s in servers]
    labels = {s["name"]: s["label"] for s in servers}
    unavailable = {s["name"]: s["unavailable"] for s in servers if s["unavailable"]}
    lines = [
        "| workload | unit | " + " | ".join(labels[n] for n in names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for mkey, label, _key, unit, better in METRICS:
        if WORKLOAD_OF[mkey] not in results["workloads"]:
            continue
        label = label_of(label, results["params"])
        cells = []
        for n in names:
            if n in unavailable or WORKLOAD_OF[mkey] in agg[n].get("skipped", {}):
                cells.append("n/a")
            else:
                v = agg[n]["metrics"].get(mkey)
                cells.append(fmt_num(v, unit) if v is not None else "failed")
        lines.append(
            f"| {label} | {unit} ({better} is better) | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "wsplugin / peer (the raw ratio of the figures above: for rows where "
        "higher is better, > 1.00 means wsplugin is ahead; for p50, p99 and "
        "memory, < 1.00 means wsplugin is ahead):",
        "",
    ]
    peers = [n for n in names if n != "wsplugin"]
    lines += [
        "| workload | " + " | ".join(f"wsplugin / {labels[n]}" for n in peers) + " |",
        "|---|" + "---:|" * len(peers),
    ]
    for mkey, label, *_ in METRICS:
        if WORKLOAD_OF[mkey] not in results["workloads"]:
            continue
        label = label_of(label, results["params"])
        cells = [
            fmt_ratio(rat[n].get(mkey))
            if n not in unavailable
            and WORKLOAD_OF[mkey] not in agg[n].get("skipped", {})
            else "n/a"
            for n in peers
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_table(results: dict) -> str:
    servers = [s for s in results["servers"] if not s["unavailable"]]
    agg = results["aggregate"]
    lines = [
        "| workload | " + " | ".join(s["label"] for s in servers) + " |",
        "|---|" + "---:|" * len(servers),
    ]
    titles = {
        "A": "A echo 64 B",
        "B": "B round trip",
        "C": "C echo 64 KiB",
        "D": "D broadcast",
        "F": "F handshakes",
        "G": "G broadcast, deflate",
    }
    for w, title in titles.items():
        if w not in results["workloads"]:
            continue
        cells = []
        for s in servers:
            c = agg[s["name"]]["cpu"].get(w, {})
            lg, sv = c.get("loadgen"), c.get("server")
            cells.append(
                "n/a"
                if lg is None
                else f"{lg * 100:.0f}% / {sv * 100:.0f}%"
                if sv is not None
                else f"{lg * 100:.0f}% / ?"
            )
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_table(results: dict) -> str:
    servers = [s for s in results["servers"] if not s["unavailable"]]
    agg = results["aggregate"]
    lines = [
        "| workload | " + " | ".join(s["label"] for s in servers) + " |",
        "|---|" + "---:|" * len(servers),
    ]
    for mkey, label, *_ in METRICS:
        if WORKLOAD_OF[mkey] not in results["workloads"]:
            continue
        label = label_of(label, results["params"])
        cells = []
        for s in servers:
            v = agg[s["name"]].get("spread", {}).get(mkey)
            cells.append("n/a" if v is None else f"{v * 100:.0f}%")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trails_autobahn(results: dict, threshold: float = 0.05) -> list[str]:
    agg = results["aggregate"]
    out = []
    w, a = (
        agg.get("wsplugin", {}).get("metrics", {}),
        agg.get("autobahn", {}).get("metrics", {}),
    )
    for mkey, label, _key, unit, better in METRICS:
        if WORKLOAD_OF[mkey] not in results["workloads"]:
            continue
        label = label_of(label, results["params"])
        x, y = w.get(mkey), a.get(mkey)
        if x is None or y is None or not y:
            continue
        if better == "higher":
            worse = (y - x) / y
        else:
            worse = (x - y) / y
        if worse > threshold:
            out.append(
                f"- {label}: wsplugin {fmt_num(x, unit)} vs raw Autobahn "
                f"{fmt_num(y, unit)} {unit} "
                f"({'-' if better == 'higher' else '+'}{worse * 100:.1f}%)"
            )
    return out


def write_report(results: dict, md_path: Path, png_name: str) -> None:
    v = results["versions"]
    p = results["params"]
    servers = results["servers"]
    lines = [
        "# Performance",
        "",
        "Generated by `benchmarks/run.py` (tracker issue 6); do not edit by hand,",
        "re-run `make bench` instead. Numbers are from one machine and one run of",
        "the harness: compare ratios, not absolute figures, across machines.",
        "",
        "## How it was run",
        "",
        f"- Command: `{results['command']}`"
        + (" (quick mode: shorter durations, 1 run)" if results["quick"] else ""),
        f"- Date: {results['date']} (total {results['elapsed_s'] / 60:.1f} min)",
        f"- Machine: {v['cpu_model']}, {v['cores']} cores, Linux {v['kernel']}",
        f"- Runs: median of {results['runs']} run(s) per figure; a fresh server "
        "process per run and workload group",
        f"- Pinning: server `taskset -c {SERVER_CPU}`, "
        f"load client `taskset -c {CLIENT_CPU}`",
        f"- Python {v['project'].get('python')}, "
        f"Twisted {v['project'].get('twisted')}, "
        f"Autobahn {v['project'].get('autobahn')}, NVX "
        f"{'on' if v['project'].get('nvx') else 'off'} "
        "(`autobahn.websocket.USES_NVX`), "
        f"wsplugin {v['project'].get('wsplugin')} at commit {v.get('git', 'unknown')}"
        + (
            f" (changed to {v['git_end']} during the run)"
            if v.get("git_end") and v["git_end"] != v.get("git")
            else ""
        ),
        "- wsplugin's active path: frame codec "
        + {"c": "compiled (`wsplugin._speedups`)", "python": "pure Python"}.get(
            v["project"].get("codec"), "unknown"
        )
        + ", reactor: Twisted's default (epoll) unless a server note says "
        "otherwise",
        f"- Peers: websockets {v['peers'].get('websockets')}, aiohttp "
        f"{v['peers'].get('aiohttp')}, picows {v['peers'].get('picows')} (Python "
        f"{v['peers'].get('python')}, default asyncio event loop for every asyncio "
        f"peer, no uvloop); Node {v.get('node')}, ws {v.get('node_ws')}",
        f"- Load client: `benchmarks/loadgen.c`, {v.get('gcc')}, `-O2`",
    ]
    if results.get("other_load"):
        lines.append(
            "- **Warning**: other busy processes seen at start or during the run: "
            + "; ".join(results["other_load"])
        )
    lines += ["", "Servers:", ""]
    for s in servers:
        state = f" — **n/a ({s['unavailable']})**" if s["unavailable"] else ""
        lines.append(f"- {s['label']}: {s['note']}{state}")
    lines += [
        "",
        "## Workloads",
        "",
        "Every server runs the same two behaviours, with the same trigger:",
        "",
        "- *echo*: every message comes back, same type, on its connection;",
        "- *broadcast*: every message a client sends is relayed to every",
        "  connected client, sender included.",
        "",
        "| | what loadgen does | figure |",
        "|---|---|---|",
        f"| A | 64 connections x 16 messages in flight, 64-byte text echo, "
        f"{p['A']['duration']} s after {p['A']['warmup']} s warm-up "
        "| messages echoed per second |",
        "| B | 1 connection, 1 message in flight, 64-byte text, "
        f"{p['B']['count']:,} round trips after {p['B']['warmup_count']:,} "
        "| p50 and p99 round trip, microseconds |",
        "| C | 8 connections x 4 in flight, 65,536-byte binary echo, "
        f"{p['C']['duration']} s "
        "| payload MB/s received back (1 MB = 10^6 bytes) |",
        f"| D | {p['D']['conns']:,} connections; connection 0 sends 64-byte "
        "texts, each "
        f"relayed by the server to all; {p['D']['window']} broadcasts kept outstanding "
        "(the next is sent "
        f"when every client has an earlier one), {p['D']['duration']} s | messages "
        "received over all clients per second |",
        f"| E | {p['E']['conns']:,} idle connections (opened 32 handshakes at a time), "
        "held while the harness reads the server's VmRSS "
        "| (RSS with them - RSS before) / "
        "connections |",
        "| F | 32 concurrent connectors, each: connect, opening handshake, "
        "close frame, server's close frame, socket reset (SO_LINGER 0: no TIME_WAIT "
        "pile-up across workloads); "
        f"{p['F']['duration']} s | cycles per second |",
        "| G | D with permessage-deflate: every client offers "
        "`permessage-deflate; server_no_context_takeover; "
        "client_no_context_takeover`; the server must accept, and loadgen "
        "inflates every message it receives and checks it is compressed and "
        "64 bytes | messages received over all clients per second |",
        "",
        "Round trips (B) are application messages, not WebSocket pings (a ping is",
        "answered inside each library, never by the application).",
        "",
        "## Results",
        "",
        table(results),
        "",
        f"![wsplugin relative to each peer]({png_name})",
        "",
        "The chart shows how wsplugin compares with each peer with the direction",
        "made uniform: the throughput ratios as they are, and peer / wsplugin for",
        "latency and memory, so that above 1 always means wsplugin is ahead.",
        "",
    ]
    if results["runs"] > 1:
        lines += [
            "Run-to-run spread of each figure, (max - min) / median over the "
            f"{results['runs']} runs: a ratio closer to 1 than this spread is "
            "not a measured difference.",
            "",
            spread_table(results),
            "",
        ]
    trail = trails_autobahn(results)
    lines += ["## Where wsplugin trails raw Autobahn by more than 5%", ""]
    if not {"wsplugin", "autobahn"} <= {
        s["name"] for s in servers if not s["unavailable"]
    }:
        trail = ["Not measured: wsplugin and raw Autobahn were not both run."]
    lines += trail or ["Nowhere: every figure is within 5% of raw Autobahn or better."]
    lines += [
        "",
        "## Is the load client the bottleneck?",
        "",
        "CPU used over each measured window, as a share of one core (median of the "
        "runs): load client / server. Each has a core to itself, so a server near "
        "100% and a client well below it means the server is what is measured. "
        "(E measures memory, not speed.)",
        "",
        cpu_table(results),
        "",
    ]
    busy_client = []
    for s in servers:
        if s["unavailable"]:
            continue
        for w, c in results["aggregate"][s["name"]]["cpu"].items():
            lg, sv = c.get("loadgen"), c.get("server")
            if lg is not None and lg >= 0.75:
                busy_client.append(
                    f"{s['label']} {w} (load client {lg * 100:.0f}%, server "
                    + (f"{sv * 100:.0f}%)" if sv is not None else "?)")
                )
    if busy_client:
        lines += [
            "The load client used 75% of its core or more for: "
            + "; ".join(busy_client)
            + ". A server at ~100% of its core is still the bottleneck there "
            "(it has no idle time), but the client is close to its own limit, so "
            "treat those figures as lower bounds for that peer.",
            "",
        ]
    lines += [
        "D depends on the broadcast window (`--d-window`, default 8): the "
        "Twisted-based servers buffer writes until the reactor's next turn, so "
        "with more broadcasts outstanding they coalesce several messages into one "
        "write per client, while the others write each message at once.",
        "",
    ]
    errors = []
    for s in servers:
        if s["unavailable"]:
            continue
        agg_s = results["aggregate"][s["name"]]
        for w, errs in agg_s["errors"].items():
            for e in errs:
                errors.append(f"- {s['label']}, {w}: {e}")
        for w, which in agg_s.get("excluded", {}).items():
            shares = [
                results["raw"][s["name"]][i - 1][w].get("server_cpu_share", 0)
                for i in which
            ]
            errors.append(
                f"- {s['label']}, {w}: run(s) {', '.join(map(str, which))} left out "
                f"of the median: the server used only "
                f"{', '.join(f'{x * 100:.0f}%' for x in shares)} of its core in a "
                "workload that keeps it busy (another process competing for its core, "
                "or the server was not the bottleneck)"
            )
    if errors:
        lines += ["## Failures, errors and runs left out", ""] + errors + [""]
    if results["quick"]:
        lines += ["## Against the baseline", ""] + baseline_table(results) + [""]
    if NOTES.exists():
        # hand-written: profiles, what each change bought, Autobahn's costs
        lines += [NOTES.read_text().rstrip("\n"), ""]
    lines += [
        "## Reproduce",
        "",
        "```sh",
        "make bench        # full: 3 runs, ~12 min on 2 cores",
        "make bench-quick  # 1 short run, under 3 min; report in build/bench/",
        "```",
        "",
        "Raw per-run results: `build/bench/results.json`; server logs: "
        "`build/bench/logs/`. Run nothing else CPU-heavy meanwhile.",
        "",
    ]
    md_path.write_text("\n".join(lines))


def draw_chart(results_path: Path, png_path: Path) -> str | None:
    if not PEERS_PY.exists():
        return "no peers venv (matplotlib)"
    r = subprocess.run(
        [str(PEERS_PY), str(BENCH / "chart.py"), str(results_path), str(png_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode:
        return "chart failed: " + r.stderr.strip()[-300:]
    return None


# ------------------------------------------------------------ baseline

BASELINE = BENCH / "baseline.json"
"""wsplugin's figures that ``make bench-quick`` compares a run with (the
regression guard of issue 16): written by ``--save-baseline``."""


def save_baseline(results: dict, path: Path = BASELINE) -> None:
    """Keep wsplugin's medians of this run, with how they were made."""
    metrics = results["aggregate"].get("wsplugin", {}).get("metrics", {})
    v = results["versions"]
    path.write_text(
        json.dumps(
            {
                "command": results["command"],
                "date": results["date"],
                "quick": results["quick"],
                "machine": f"{v['cpu_model']}, {v['cores']} cores",
                "commit": v.get("git"),
                "codec": v["project"].get("codec"),
                "params": results["params"],
                "metrics": {k: metrics.get(k) for k, *_ in METRICS},
            },
            indent=1,
        )
        + "\n"
    )


def load_of(params: dict | None) -> dict | None:
    """A workload's load (connections, window), without its durations and
    counts: a quick run puts the same load as a full one for less time, so
    their figures compare; a --smoke run's do not."""
    if params is None:
        return None
    timing = {"duration", "warmup", "count", "warmup_count", "settle"}
    return {k: v for k, v in params.items() if k not in timing}


def baseline_table(results: dict, path: Path = BASELINE) -> list[str]:
    """Markdown lines: each wsplugin figure of this run against the stored
    baseline, as a ratio (now / baseline) and which way it moved."""
    if not path.exists():
        return [f"No baseline ({os.path.relpath(path, ROOT)}): run with --save-baseline."]
    base = json.loads(path.read_text())
    now = results["aggregate"].get("wsplugin", {}).get("metrics", {})
    lines = [
        f"wsplugin against `{os.path.relpath(path, ROOT)}` ({base.get('date')}, "
        f"commit {base.get('commit')}, codec {base.get('codec')}; "
        f"{'quick' if base.get('quick') else 'full'} run). Ratio now / baseline; "
        "on a shared machine differences under about 20% are noise.",
        "",
        "| workload | baseline | now | now / baseline | |",
        "|---|---:|---:|---:|---|",
    ]
    for mkey, label, _key, unit, better in METRICS:
        if WORKLOAD_OF[mkey] not in results["workloads"]:
            continue
        old, new = base.get("metrics", {}).get(mkey), now.get(mkey)
        if old is None or new is None or not old:
            lines.append(f"| {mkey} | {fmt_num(old, unit)} | {fmt_num(new, unit)} | n/a | |")
            continue
        ratio = new / old
        worse = ratio < 1 if better == "higher" else ratio > 1
        verdict = "worse" if worse and abs(ratio - 1) > 0.2 else ""
        w = WORKLOAD_OF[mkey]
        if load_of(base.get("params", {}).get(w)) != load_of(
            results["params"].get(w)
        ):
            verdict = "other load: not comparable"
        lines.append(
            f"| {mkey} {unit} | {fmt_num(old, unit)} | {fmt_num(new, unit)} "
            f"| {ratio:.2f} | {verdict} |"
        )
    return lines


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 short run (< 3 min)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="tiny loads to check the harness; report in build/bench/",
    )
    ap.add_argument(
        "--d-window",
        type=int,
        default=8,
        help="D: broadcasts kept outstanding (default 8)",
    )
    ap.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    ap.add_argument("--servers", help="comma-separated subset, e.g. wsplugin,autobahn")
    ap.add_argument("--workloads", default=WORKLOADS, help=f"subset of {WORKLOADS}")
    ap.add_argument(
        "--docs",
        action="store_true",
        help="write docs/performance.{md,png} (default for full runs)",
    )
    ap.add_argument("--no-docs", action="store_true", help="never write docs/")
    ap.add_argument(
        "--no-scaleout",
        action="store_true",
        help="skip benchmarks/scaleout.py (workers, nodes, Redis)",
    )
    ap.add_argument(
        "--tag",
        help="write build/bench/results-TAG.json and performance-TAG.{md,png} "
        "only (a side experiment that leaves results.json and docs/ alone)",
    )
    ap.add_argument(
        "--save-baseline",
        action="store_true",
        help="store wsplugin's figures of this run in benchmarks/baseline.json",
    )
    ap.add_argument(
        "--report-from",
        metavar="RESULTS_JSON",
        help="only rewrite the report and chart from a results file",
    )
    args = ap.parse_args()
    if args.save_baseline and args.smoke:
        ap.error("--smoke figures mean nothing: not a baseline")
    if args.report_from:
        src = Path(args.report_from)
        results = json.loads(src.read_text())
        listed = [(s["name"], s["unavailable"]) for s in results["servers"]]
        results["aggregate"] = aggregate(results["raw"], listed)
        results["ratios"] = ratios(results["aggregate"], [n for n, _ in listed])
        src.write_text(json.dumps(results, indent=1))
        if args.docs:
            md = ROOT / "docs" / "performance.md"
        else:
            md = src.with_name(src.stem.replace("results", "performance") + ".md")
        err = draw_chart(src, md.with_suffix(".png"))
        if err:
            log("chart: " + err)
        write_report(results, md, md.with_suffix(".png").name)
        _scaleout().restore_section(md)
        log(f"wrote {os.path.relpath(md, ROOT)} and its chart from {src}")
        return 0
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    atexit.register(_kill_all)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 10100:
        log("warning: fewer than 10,100 file descriptors allowed; E will fail")
    if os.cpu_count() is not None and os.cpu_count() < 2:
        log("warning: fewer than 2 CPUs; server and client share a core")

    if args.smoke:
        args.quick = True
    runs = args.runs or (1 if args.quick else 3)
    params = workload_params(args.quick, args.smoke)
    params["D"]["window"] = params["G"]["window"] = args.d_window
    workloads = [w for w in WORKLOADS if w in args.workloads.upper()]
    OUT.mkdir(parents=True, exist_ok=True)
    logs = OUT / "logs"
    logs.mkdir(exist_ok=True)

    busy = other_load()
    if busy:
        log("warning: busy processes: " + "; ".join(busy))

    build_loadgen()
    servers = make_servers()
    if args.servers:
        keep = set(args.servers.split(","))
        servers = [s for s in servers if s.name in keep]
    else:
        servers = [s for s in servers if s.name not in OPT_IN_SERVERS]
    peers_err = setup_peers_venv()
    node_err = setup_node()
    for s in servers:
        if s.name in ("websockets", "aiohttp", "picows"):
            s.unavailable = peers_err or check_import(str(PEERS_PY), s.name)
        elif s.name == "node-ws":
            s.unavailable = node_err
        elif not PROJECT_PY.exists():
            s.unavailable = "project venv missing (make venv)"

    project = py_versions(
        str(PROJECT_PY), ["twisted", "autobahn", "wsplugin", "websockets"]
    )
    peers_v = (
        py_versions(str(PEERS_PY), ["websockets", "aiohttp", "picows", "matplotlib"])
        if PEERS_PY.exists()
        else {}
    )
    node_ws = None
    try:
        node_ws = json.loads((NODE_DIR / "node_modules/ws/package.json").read_text())[
            "version"
        ]
    except (OSError, ValueError, KeyError):
        pass
    versions = {
        "project": project,
        "peers": peers_v,
        "node": cmd_version(["node", "--version"]),
        "node_ws": node_ws,
        "gcc": cmd_version(["gcc", "--version"]),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "git": git_state(),
    }
    log(
        f"Python {project.get('python')}, Twisted {project.get('twisted')}, Autobahn "
        f"{project.get('autobahn')} (NVX {'on' if project.get('nvx') else 'off'}); "
        f"{runs} run(s){' quick' if args.quick else ''}"
    )
    for s in servers:
        if s.unavailable:
            log(f"  {s.name}: n/a ({s.unavailable})")

    raw: dict = {s.name: [] for s in servers}
    try:
        for r in range(runs):
            log(f"run {r + 1}/{runs}")
            for s in servers:
                if s.unavailable:
                    continue
                for p in other_load():
                    name = p.split(" (pid")[0]
                    if not any(b.startswith(name) for b in busy):
                        log(f"warning: busy process during the run: {p}")
                        busy.append(p)
                raw[s.name].append(run_server_workloads(s, params, workloads, logs))
    finally:
        _kill_all()

    results = {
        "command": " ".join(
            shlex.quote(a)
            for a in [
                os.path.relpath(sys.executable, ROOT)
                if sys.executable.startswith(str(ROOT))
                else sys.executable,
                os.path.relpath(__file__, ROOT),
                *sys.argv[1:],
            ]
        ),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "smoke": args.smoke,
        "runs": runs,
        "params": params,
        "workloads": workloads,
        "versions": versions,
        "other_load": busy,
        "servers": [
            {
                "name": s.name,
                "label": s.label,
                "note": s.note,
                "unavailable": s.unavailable,
            }
            for s in servers
        ],
        "raw": raw,
    }
    results["aggregate"] = aggregate(raw, [(s.name, s.unavailable) for s in servers])
    results["ratios"] = ratios(results["aggregate"], [s.name for s in servers])
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    versions["git_end"] = git_state()
    if versions["git_end"] != versions["git"]:
        log(
            f"warning: the checkout changed during the run: {versions['git']} -> "
            f"{versions['git_end']}"
        )

    if args.tag:
        results_path = OUT / f"results-{args.tag}.json"
        results_path.write_text(json.dumps(results, indent=1))
        md = OUT / f"performance-{args.tag}.md"
    else:
        name = "results-quick.json" if args.quick else "results-full.json"
        results_path = OUT / "results.json"
        for path in (results_path, OUT / name):
            path.write_text(json.dumps(results, indent=1))
        write_docs = (
            (args.docs or not args.quick) and not args.no_docs and not args.smoke
        )
        md = ROOT / "docs" / "performance.md" if write_docs else OUT / "performance.md"
    png = md.with_suffix(".png")
    err = draw_chart(results_path, png)
    if err:
        log("chart: " + err)
    write_report(results, md, png.name)

    print()
    print(table(results))
    print()
    print("loadgen CPU / server CPU over each measured window:")
    print(cpu_table(results))
    trail = trails_autobahn(results)
    print()
    ran = {s.name for s in servers if not s.unavailable}
    if not {"wsplugin", "autobahn"} <= ran:
        print("wsplugin vs raw Autobahn: not both run")
    else:
        print(
            "wsplugin trails raw Autobahn by > 5%:"
            if trail
            else "wsplugin is within 5% of raw Autobahn everywhere"
        )
    for line in trail:
        print(line)
    if not args.no_scaleout and not args.tag:
        # workers, two nodes, Redis: their own section of the same report
        _scaleout().run_and_report(md, quick=args.quick, smoke=args.smoke)
    if args.quick or args.save_baseline:
        print()
        print("\n".join(baseline_table(results)))
    if args.save_baseline:
        save_baseline(results)
        print(f"\nsaved wsplugin's figures to {os.path.relpath(BASELINE, ROOT)}")
    print(
        f"\nwrote {os.path.relpath(results_path, ROOT)}, "
        f"{os.path.relpath(md, ROOT)}, {os.path.relpath(png, ROOT)} "
        f"in {results['elapsed_s']:.0f} s"
    )
    return 0


def _scaleout():
    """benchmarks/scaleout.py (issue 14), imported when needed."""
    sys.path.insert(0, str(BENCH))
    import scaleout

    return scaleout


if __name__ == "__main__":
    sys.exit(main())
