"""A real ``redis-server`` for tests: started on a free loopback port (or a
Unix socket) in a temporary directory, stopped by PID, killed and restarted
on the same port for failure tests.

``require_redis()`` finds the Debian binary. A missing binary skips the test
with the reason printed; under CI (``CI`` set) it fails instead, because CI
runs ``.ci/install-system-deps`` first.

The server runs with ``--save '' --appendonly no``: nothing is written
unless a test asks for ``SAVE``, which is how a restart that keeps its data
is simulated (the dump in the temporary directory is loaded at start).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.support import free_port

REDIS_SERVER = "/usr/bin/redis-server"


def require_redis() -> str:
    """The ``redis-server`` binary: skip the test (or fail under CI) if absent."""
    path = REDIS_SERVER if os.access(REDIS_SERVER, os.X_OK) else None
    path = path or shutil.which("redis-server")
    if path:
        return path
    why = (
        "redis-server is not installed (Debian package redis-server; "
        "run `make system-deps`)"
    )
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        raise AssertionError(why + "; CI must run .ci/install-system-deps first")
    print(f"\nskipped: {why}")
    raise SkipTest(why)


def _encode(*args: str | bytes | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    """Reads one RESP2 reply from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError(f"bad reply line {line!r}")


class RedisReplyError(Exception):
    """Redis answered a test's command with an error."""


class RedisServer:
    """One ``redis-server`` process for one test.

    Args:
        test: The test case (for a temporary directory and cleanup).
        password: ``--requirepass`` if given.
        unix: Listen on a Unix socket in the temporary directory, not TCP.
        tls: ``(cert_file, key_file)``: also listen with TLS on ``tls_port``
            (the plain port stays, for the test's own commands).
    """

    def __init__(
        self,
        test: TestCase,
        *,
        password: str | None = None,
        unix: bool = False,
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.binary = require_redis()
        self.dir = Path(test.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.password = password
        self.unix_path: str | None = None
        if unix:
            # sun_path holds 108 bytes; trial's temporary paths are longer
            short = tempfile.mkdtemp(prefix="wsredis-", dir="/tmp")
            test.addCleanup(shutil.rmtree, short, ignore_errors=True)
            self.unix_path = os.path.join(short, "redis.sock")
        self.tls = tls
        self.port = 0 if unix else free_port()
        self.tls_port = free_port() if tls else 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        test.addCleanup(self.stop)

    @property
    def url(self) -> str:
        """A backplane URL for this server (password included)."""
        auth = f":{self.password}@" if self.password else ""
        if self.unix_path:
            return f"unix://{auth}{self.unix_path}?db=0"
        if self.tls:
            return f"rediss://{auth}localhost:{self.tls_port}/0"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start the server and wait (bounded) until it answers PING."""
        self.starts += 1
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        if self.unix_path:
            args += ["--port", "0", "--unixsocket", self.unix_path]
            args += ["--unixsocketperm", "700"]
        else:
            args += ["--port", str(self.port)]
        if self.tls:
            cert, key = self.tls
            args += ["--tls-port", str(self.tls_port)]
            args += ["--tls-cert-file", cert, "--tls-key-file", key]
            args += ["--tls-auth-clients", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited:\n{self.log()}")
            try:
                if self.command("PING") == "PONG":
                    return self
            except (OSError, RedisReplyError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"redis-server did not answer:\n{self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        """The server's log file so far."""
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing saved) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM the server by PID and wait (bounded); SIGKILL if needed."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def restart(self) -> RedisServer:
        """Start again on the same port and directory (a dump made by
        ``SAVE`` is loaded; without one the server starts empty)."""
        self.kill()
        return self.start()

    def command(
        self, *args: str | bytes | int, db: int = 0, timeout: float = 5.0
    ) -> object:
        """Run one command (in database ``db``) on a fresh blocking
        connection; return the reply.

        Blocking is fine in tests: it talks only to this local server, which
        answers without the reactor's help.
        """
        if self.unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.unix_path)
        else:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        with sock:
            reader = _Reader(sock)
            if self.password:
                sock.sendall(_encode("AUTH", self.password))
                reader.reply()
            if db:
                sock.sendall(_encode("SELECT", db))
                reader.reply()
            sock.sendall(_encode(*args))
            return reader.reply()
