"""Real nginx and HAProxy in front of wsplugin, and ``twistd`` started the
way systemd starts wsplugin.service, for tests.

Each proxy is the Debian binary (``/usr/sbin/nginx``, ``/usr/sbin/haproxy``;
``.ci/install-system-deps`` installs them), started in the foreground on free
loopback ports with its own configuration in the test's temporary directory,
and stopped by PID at cleanup (SIGTERM, then SIGKILL to its process group).

The proxy configuration is never written here: it is the example file under
``examples/`` that docs/proxies.md shows, with only its ports and
certificate paths replaced (:func:`render` checks that each replaced text
occurs exactly once, so the example and the tests cannot drift apart).

:class:`ActivatedTwistd` runs examples/systemd/wsplugin.service's
``ExecStart`` on a socket the test binds, handed over by
tests/integration/systemd_launch.py with systemd's ``LISTEN_*`` variables.

A missing binary skips the test with the reason printed; under CI (``CI``
set) it fails instead, because CI runs ``.ci/install-system-deps`` first.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.support import ROOT, VENV_BIN, free_port

EXAMPLES = ROOT / "examples"
NGINX_SITE = EXAMPLES / "nginx" / "wsplugin.conf"
HAPROXY_SITE = EXAMPLES / "haproxy" / "wsplugin.cfg"
SYSTEMD_SOCKET = EXAMPLES / "systemd" / "wsplugin.socket"
SYSTEMD_SERVICE = EXAMPLES / "systemd" / "wsplugin.service"
LAUNCHER = Path(__file__).with_name("systemd_launch.py")

#: Where docs/deploy.md installs wsplugin; the tests run the checkout's venv.
INSTALLED_TWISTD = "/opt/wsplugin/.venv/bin/twistd"
#: The certificate paths the examples use (docs/proxies.md makes them).
TLS_DIR = "/etc/wsplugin/tls/"

WAIT = 20.0  # seconds for a process to start or stop


def under_ci() -> bool:
    """Whether the tests run in CI, where nothing may be skipped."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_binary(name: str, package: str) -> str:
    """The path of Debian's ``name`` (``/usr/sbin``, ``/usr/bin`` or PATH).

    Missing: skip the test, printing why; under CI fail instead.
    """
    for directory in ("/usr/sbin", "/usr/bin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    _missing(f"{name} is not installed (Debian package {package})")


def require_file(path: str, package: str) -> Path:
    """A file a Debian package installs (``/etc/nginx/nginx.conf``...);
    missing: skip the test, printing why; under CI fail instead."""
    if not os.path.exists(path):
        _missing(f"{path} is missing (Debian package {package})")
    return Path(path)


def _missing(why: str) -> NoReturn:
    why += "; run `make system-deps`"
    if under_ci():
        raise AssertionError(why + "; CI must run .ci/install-system-deps first")
    print(f"\nskipped: {why}")
    raise SkipTest(why)


def render(template: Path, replacements: Sequence[tuple[str, str]]) -> str:
    """``template``'s text with each ``(old, new)`` replaced.

    Each ``old`` must occur exactly once: an example edited so that a
    replacement no longer applies fails the test instead of silently
    testing something else.
    """
    text = template.read_text()
    for old, new in replacements:
        count = text.count(old)
        if count != 1:
            raise AssertionError(
                f"{template.relative_to(ROOT)}: expected {old!r} exactly once, "
                f"found it {count} times; update the example and its test together"
            )
        text = text.replace(old, new)
    return text


def fenced_blocks(markdown: Path) -> list[str]:
    """The contents of every fenced code block (```) in a Markdown file."""
    return re.findall(r"^```[^\n]*\n(.*?)^```", markdown.read_text(), re.M | re.S)


def unit_value(unit: Path, key: str) -> str:
    """The value of ``key=`` in a systemd unit file (its only occurrence)."""
    values = [
        line.split("=", 1)[1].strip()
        for line in unit.read_text().splitlines()
        if line.startswith(key + "=")
    ]
    if len(values) != 1:
        raise AssertionError(f"{unit.name}: expected one {key}=, found {values}")
    return values[0]


def service_command(replacements: Sequence[tuple[str, str]] = ()) -> list[str]:
    """wsplugin.service's ``ExecStart`` as an argument list, with the
    checkout's ``twistd`` instead of the installed one and the documented
    ``replacements`` applied (each must occur exactly once)."""
    command = unit_value(SYSTEMD_SERVICE, "ExecStart")
    for old, new in replacements:
        if command.count(old) != 1:
            raise AssertionError(f"ExecStart {command!r} has no single {old!r}")
        command = command.replace(old, new)
    args = shlex.split(command)
    if args[0] != INSTALLED_TWISTD:
        raise AssertionError(f"ExecStart runs {args[0]}, not {INSTALLED_TWISTD}")
    return [str(VENV_BIN / "twistd"), *args[1:]]


class TLSFiles:
    """A CA and a server certificate for ``localhost`` and ``127.0.0.1``,
    made with trustme and written where the proxies can read them.

    Attributes:
        dir: The directory (``/etc/wsplugin/tls/`` in the examples).
        cert: ``server.pem``, the certificate chain.
        key: ``server.key``, its private key.
        combined: ``haproxy.pem``, chain and key in one file (HAProxy).
    """

    def __init__(self, test: TestCase) -> None:
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert("localhost", "127.0.0.1")
        self.dir = Path(test.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.cert = self.dir / "server.pem"
        self.key = self.dir / "server.key"
        self.combined = self.dir / "haproxy.pem"
        self.ca_file = self.dir / "ca.pem"
        chain = b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems)
        self.cert.write_bytes(chain)
        self.key.write_bytes(self.leaf.private_key_pem.bytes())
        self.combined.write_bytes(chain + self.leaf.private_key_pem.bytes())
        self.ca_file.write_bytes(self.ca.cert_pem.bytes())

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def spki_hash(self) -> str:
        """The base64 SHA-256 of the server key (Chromium's
        ``--ignore-certificate-errors-spki-list`` trusts exactly that key)."""
        cert = x509.load_pem_x509_certificate(self.leaf.cert_chain_pems[0].bytes())
        der = cert.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


class Process:
    """A foreground server process in its own process group, on loopback
    ports it must open, stopped by PID at cleanup."""

    name = "process"

    def __init__(self, test: TestCase, workdir: Path | None = None) -> None:
        if workdir is None:
            workdir = Path(test.mktemp()).resolve()
            workdir.mkdir(parents=True)
        self.dir = workdir
        self.output = self.dir / f"{self.name}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        test.addCleanup(self.stop)

    def logs(self) -> list[Path]:
        """Files worth showing when something fails."""
        return [self.output]

    def describe(self) -> str:
        """The process's output and logs, for failure messages."""
        parts = []
        for path in self.logs():
            if path.exists():
                text = path.read_text(errors="replace")[-6000:]
                parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    def start(
        self,
        cmd: Sequence[str],
        ports: Sequence[int],
        pass_fds: Sequence[int] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        """Run ``cmd`` and wait (bounded) until every port accepts."""
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                list(cmd),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: workers die with it
                pass_fds=tuple(pass_fds),
                env=env,
            )
        deadline = time.monotonic() + WAIT
        for port in ports:
            while not _accepts(port):
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.proc.returncode}:\n"
                        f"{shlex.join(cmd)}\n{self.describe()}"
                    )
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"{self.name} did not listen on {port} in {WAIT}s:\n"
                        f"{self.describe()}"
                    )
                time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM the process by PID and wait (bounded); then SIGKILL its
        whole group, which takes any worker left behind. Returns the exit
        status (None if it never started)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(timeout=5)
        return proc.returncode


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Nginx(Process):
    """nginx serving examples/nginx/wsplugin.conf (or ``site_file``, with
    ``more`` replacements) on free loopback ports.

    The site file goes inside a minimal main configuration, as Debian's
    ``/etc/nginx/nginx.conf`` includes ``conf.d/*.conf`` in its ``http``
    block. ``daemon off`` keeps the master in the foreground, so the test
    owns its PID; the pid file, logs and temporary paths are in the test's
    directory. As root, workers run as root too (``user`` set to the current
    user): they must read the test's files.

    Attributes:
        http_port: Where ``listen 80`` went.
        https_port: Where ``listen 443 ssl`` went.
    """

    name = "nginx"

    def __init__(
        self,
        test: TestCase,
        upstream_port: int,
        tls: TLSFiles,
        *,
        site_file: Path = NGINX_SITE,
        more: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(test)
        self.binary = require_binary("nginx", "nginx")
        self.http_port = free_port()
        self.https_port = free_port()
        site = render(
            site_file,
            [
                *more,
                ("listen 80;", f"listen 127.0.0.1:{self.http_port};"),
                ("listen 443 ssl;", f"listen 127.0.0.1:{self.https_port} ssl;"),
                ("server 127.0.0.1:8888;", f"server 127.0.0.1:{upstream_port};"),
                (
                    f"ssl_certificate     {TLS_DIR}server.pem;",
                    f"ssl_certificate     {tls.cert};",
                ),
                (
                    f"ssl_certificate_key {TLS_DIR}server.key;",
                    f"ssl_certificate_key {tls.key};",
                ),
            ],
        )
        (self.dir / "wsplugin.conf").write_text(site)
        user = ""
        if os.geteuid() == 0:
            account = pwd.getpwuid(os.geteuid())
            group = grp.getgrgid(account.pw_gid).gr_name
            user = f"user {account.pw_name} {group};\n"
        d = self.dir
        (d / "nginx.conf").write_text(
            f"{user}"
            "daemon off;\n"
            "worker_processes 1;\n"
            f"pid {d}/nginx.pid;\n"
            f"error_log {d}/error.log info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {d}/access.log;\n"
            f"    client_body_temp_path {d}/client_body;\n"
            f"    proxy_temp_path {d}/proxy;\n"
            f"    fastcgi_temp_path {d}/fastcgi;\n"
            f"    uwsgi_temp_path {d}/uwsgi;\n"
            f"    scgi_temp_path {d}/scgi;\n"
            f"    include {d}/wsplugin.conf;\n"
            "}\n"
        )

    def logs(self) -> list[Path]:
        return [self.output, self.dir / "error.log", self.dir / "access.log"]

    def run(self) -> Nginx:
        """Start nginx and wait until both ports accept."""
        self.start(
            [
                self.binary,
                "-p",
                f"{self.dir}/",
                "-e",
                f"{self.dir}/error.log",
                "-c",
                f"{self.dir}/nginx.conf",
            ],
            [self.http_port, self.https_port],
        )
        return self


class HAProxy(Process):
    """HAProxy serving examples/haproxy/wsplugin.cfg on free loopback ports,
    in the foreground (``-db``), so the test owns its PID.

    The example is what docs/proxies.md appends to Debian's
    ``/etc/haproxy/haproxy.cfg``; here it follows an empty ``global``
    section (no ``daemon``, no ``chroot``, no ``user``).

    Attributes:
        http_port: Where ``bind :80`` went.
        https_port: Where ``bind :443`` went.
    """

    name = "haproxy"

    def __init__(self, test: TestCase, upstream_port: int, tls: TLSFiles) -> None:
        super().__init__(test)
        self.binary = require_binary("haproxy", "haproxy")
        self.http_port = free_port()
        self.https_port = free_port()
        site = render(
            HAPROXY_SITE,
            [
                ("bind :80\n", f"bind 127.0.0.1:{self.http_port}\n"),
                (
                    f"bind :443 ssl crt {TLS_DIR}haproxy.pem",
                    f"bind 127.0.0.1:{self.https_port} ssl crt {tls.combined}",
                ),
                (
                    "127.0.0.1:8888 send-proxy-v2",
                    f"127.0.0.1:{upstream_port} send-proxy-v2",
                ),
            ],
        )
        (self.dir / "haproxy.cfg").write_text("global\n\n" + site)

    def run(self) -> HAProxy:
        """Start HAProxy (after a ``-c`` check of the file) and wait until
        both ports accept."""
        cfg = str(self.dir / "haproxy.cfg")
        check = subprocess.run(
            [self.binary, "-c", "-f", cfg], capture_output=True, text=True, timeout=WAIT
        )
        if check.returncode != 0:
            raise AssertionError(f"haproxy -c failed:\n{check.stdout}{check.stderr}")
        self.start([self.binary, "-db", "-f", cfg], [self.http_port, self.https_port])
        return self


class ActivatedTwistd(Process):
    """wsplugin.service's ``twistd`` started the way systemd starts it for
    wsplugin.socket: the test binds the listening socket, and
    tests/integration/systemd_launch.py hands it over as descriptor 3 with
    ``LISTEN_FDS``, ``LISTEN_PID`` and ``LISTEN_FDNAMES``.

    Attributes:
        port: The listening socket's port (wsplugin.socket's 8888 moved).
        socket_port: The socket itself, bound before twistd starts.
    """

    name = "twistd"

    def __init__(
        self,
        test: TestCase,
        replacements: Sequence[tuple[str, str]] = (),
        extra: Sequence[str] = (),
    ) -> None:
        super().__init__(test)
        self.cmd = [*service_command(replacements), *extra]
        listen = unit_value(SYSTEMD_SOCKET, "ListenStream")
        host, _, _ = listen.rpartition(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        test.addCleanup(self.sock.close)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.fd_name = SYSTEMD_SOCKET.name  # no FileDescriptorName=: the unit's name

    def run(self) -> ActivatedTwistd:
        """Launch twistd on the socket and wait until it serves (bounded)."""
        fd = self.sock.fileno()
        self.start(
            [sys.executable, str(LAUNCHER), str(fd), self.fd_name, "--", *self.cmd],
            [],
            pass_fds=[fd],
        )
        # the socket accepts even before twistd adopts it: wait for the log
        deadline = time.monotonic() + WAIT
        while "listening on" not in self.output.read_text(errors="replace"):
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"twistd did not start:\n{self.describe()}")
            time.sleep(0.05)
        return self
