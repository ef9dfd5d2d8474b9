"""The documentation's code runs as shown.

For each page (README.md and docs/*.md, minus ``tests.doccheck.EXCLUDED``)
the blocks run in page order, in a fresh directory, as a reader following
the page would run them (markers: see ``tests/doccheck.py``):

- a complete program (a ```python block that runs a server:
  ``server.run()``/``reactor.run()``) starts as a subprocess on free
  loopback ports (``8888``/``8443`` and ``tcp:8888`` in the code are
  rewritten; ``/tmp/`` becomes the page's directory); it must listen, it
  serves the blocks that follow until the next server, and SIGTERM must
  end it with status 0 and no traceback. Run again with its port taken,
  it must exit with status 1 saying it cannot listen;
- a single ``twistd`` command in a ```sh block is such a server too;
- a client (a block importing ``websockets``, ``http.client``, ``urllib``
  or ``wsplugin.client``) runs against the current server; a ```text block
  right after it is what it must print;
- a ``.tac`` file or a module named on its first line (``# chat_server.py``)
  is written under that name, so later blocks import it; a test module
  (``# test_chat.py``) is run with trial and must pass;
- anything else (a handler class, a configuration snippet) is a fragment:
  executed in-process in a namespace with wsplugin's public names and the
  stand-ins of :func:`fragment_namespace`; a ```text block right after it
  is what it must print;
- ``<!-- run -->`` blocks and ``<!-- server-output -->`` checks as the
  markers say.

Every ``twistd`` command line of a sh/console block (and every
``ExecStart=`` of a unit) is parsed by twistd's own option parser, with
``wsplugin.tap.Options`` for ``ws``: each flag must exist and its value
be valid (files the line names are made as dummies first).
"""

from __future__ import annotations

import ast
import contextlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import bcrypt
import trustme
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from tests.doccheck import (
    PYTHON_EXCLUDED,
    ROOT,
    Block,
    TwistdLine,
    command_lines,
    doc_pages,
    lines_found_in_order,
    output_matches,
    read_blocks,
    twistd_lines,
)
from tests.integration.support import VENV_BIN, ServerTestCase, free_port, in_thread
from wsplugin import TLSOptions
from wsplugin.auth import BasicAuth
from wsplugin.testing import client_frame, handshake_request

DOC_PORTS = ("8888", "8443", "8889", "9000", "9001")
"""The ports the pages use; each run moves them to free loopback ports."""
_PORTS = "|".join(DOC_PORTS)

PYTHON = sys.executable
TWISTD = str(VENV_BIN / "twistd")

USERS = {"alice": "secret", "bob": "builder"}
"""The htpasswd users the pages use (web.md: alice's password is secret)."""


def htpasswd(path: Path) -> None:
    """A password file for USERS: bcrypt, one cost (4: the tests' speed)."""
    path.write_text(
        "".join(
            f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}\n"
            for user, pw in USERS.items()
        )
    )


def tls_files(directory: Path, names: dict[str, str]) -> trustme.CA:
    """TLS files made with trustme: ``names`` maps a file name to what it
    holds: ``cert+key``, ``cert``, ``key`` or ``ca``."""
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    key = server.private_key_pem.bytes()
    cert = b"".join(c.bytes() for c in server.cert_chain_pems)
    for name, kind in names.items():
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(
            {
                "cert+key": cert + key,
                "cert": cert,
                "key": key,
                "ca": ca.cert_pem.bytes(),
            }[kind]
        )
    return ca


def fixtures(page: str, directory: Path) -> None:
    """Files a page's reader has made by hand before its blocks run (the
    page tells them how, with tools the tests do not drive)."""
    if page == "docs/web.md":
        htpasswd(directory / "users.htpasswd")  # "htpasswd -cB ... alice"
    if page == "docs/tls.md":
        tls_files(
            directory,
            {
                "le/fullchain.pem": "cert",
                "le/privkey.pem": "key",
                "server.pem": "cert",
                "server-key.pem": "key",
                "devices-ca.pem": "ca",
                "cert.pem": "cert",
            },
        )
        tls_files(directory, {"key.pem": "key"})  # another certificate's key
    if page == "docs/client.md":
        htpasswd(directory / "users.htpasswd")  # its python -c bcrypt line
        # what its `python -m trustme -q` makes (client.pem is the CA)
        tls_files(
            directory, {"server.pem": "cert", "server.key": "key", "client.pem": "ca"}
        )


PATH_REWRITES = {
    "docs/tls.md": {"/etc/letsencrypt/live/ws.example.com/": "le/"},
}
"""Absolute paths of a page that point into its working directory instead."""


class Stand:
    """A handler that echoes text (the fragments' ``Chat``, ``Echo``...)."""

    def on_message(self, conn: Any, text: str) -> None:
        conn.send_text(text)


def fragment_namespace() -> dict[str, Any]:
    """What a fragment may use without importing it: every public name of
    ``wsplugin``, ``wsplugin.auth`` and ``wsplugin.web``, ``reactor``,
    ``Deferred``, and stand-ins for what the surrounding prose has built:
    handler classes ``Chat``, ``Echo``, ``Admin``, a ``handler``, a
    ``checker`` (alice/secret), a session ``store``, and ``conn``, an open
    connection of an in-memory server (``harness``)."""
    from wsplugin import WebSocketServer
    from wsplugin.auth import SessionStore
    from wsplugin.testing import ServerHarness

    ns: dict[str, Any] = {"__name__": "docs_fragment"}
    exec(
        "from wsplugin import *\n"
        "from wsplugin.auth import *\n"
        "from wsplugin.web import *\n"
        "from twisted.internet import reactor\n"
        "from twisted.internet.defer import Deferred\n",
        ns,
    )
    checker = InMemoryUsernamePasswordDatabaseDontUse()
    checker.addUser(b"alice", b"secret")
    clock = MemoryReactorClock()
    harness = ServerHarness(WebSocketServer(Stand(), reactor=clock))
    client = harness.open("/")
    ns.update(
        Chat=type("Chat", (Stand,), {}),
        Echo=type("Echo", (Stand,), {}),
        Admin=type("Admin", (Stand,), {}),
        handler=Stand(),
        checker=checker,
        store=SessionStore(Clock()),
        conn=client.connection,
        harness=harness,
    )
    return ns


class Program:
    """A server from a page, running as a subprocess."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        cwd: Path,
        env: dict[str, str],
        ports: list[int],
        *,
        twistd: bool,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.twistd = twistd
        self.ports = ports
        self.log = cwd / f".{name}.{time.monotonic_ns()}.out"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(self.ports)
        while waiting:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before "
                    f"listening:\n{self.output()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), 0.5):
                    waiting.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        f"{self.name} does not listen on {waiting[0]}:\n{self.output()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


class PageRun:
    """One page's blocks, run in order in a directory of their own."""

    def __init__(self, test: SynchronousTestCase, page: str) -> None:
        self.test = test
        self.page = page
        # short, so UNIX socket paths under it stay below 108 bytes
        self.dir = Path(tempfile.mkdtemp(prefix="wsdocs-"))
        test.addCleanup(shutil.rmtree, self.dir, True)
        (self.dir / ".venv").symlink_to(VENV_BIN.parent)
        self.ports = {port: free_port() for port in DOC_PORTS}
        self.env = {
            **os.environ,
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "80",
        }
        self.env.pop("PYTHONPATH", None)
        self.server: Program | None = None
        self.outputs: dict[str, str] = {}
        self.later: list[tuple[Block, str]] = []
        self.serial = 0
        self.sources: dict[str, str] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []
        test.addCleanup(self.stop_server)
        fixtures(page, self.dir)

    # --- rewriting --------------------------------------------------------

    def localize(self, text: str, ports: dict[str, int] | None = None) -> str:
        """The page's code with its ports, /tmp/ and absolute paths moved
        to this run's ports and directory, and every endpoint on loopback."""
        ports = ports or self.ports
        text = text.replace("/tmp/", f"{self.dir}/")
        for source, target in PATH_REWRITES.get(self.page, {}).items():
            text = text.replace(source, f"{self.dir}/{target}")
        text = re.sub(
            rf"\btcp:({_PORTS})\b(?!:interface)", r"tcp:\1:interface=127.0.0.1", text
        )
        text = re.sub(r"(interface=(?:\\{1,2}:){2})(?=[\"'\s]|$)", r"\g<1>1", text)
        return re.sub(rf"\b({_PORTS})\b", lambda m: str(ports[m.group(1)]), text)

    def unlocalize(self, text: str) -> str:
        """Output as the page shows it: our ports back to 8888/8443."""
        for original, port in self.ports.items():
            text = re.sub(rf"\b{port}\b", original, text)
            # undo what localize added to a bare tcp:8888
            text = text.replace(
                f"tcp:{original}:interface=127.0.0.1", f"tcp:{original}"
            )
        text = text.replace("interface=\\:\\:1", "interface=\\:\\:")
        return text.replace(f"{self.dir}/", "/tmp/")

    def used_ports(self, code: str) -> list[int]:
        return [p for n, p in self.ports.items() if re.search(rf"\b{n}\b", code)]

    # --- servers ----------------------------------------------------------

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        status = server.stop()
        output = self.unlocalize(server.output())
        self.outputs[server.name] = output
        self.outputs[server.name.split("#")[0]] = output  # the last run of it
        if server.twistd:
            self.outputs["twistd"] = output
        ok = (0, -signal.SIGTERM) if server.twistd else (0,)
        self.test.assertIn(
            status, ok, f"{server.name} ended with {status} on SIGTERM:\n{output}"
        )
        self.test.assertNotIn("Traceback", output, f"{server.name}:\n{output}")

    def start_server(self, block: Block, name: str, argv: list[str], code: str) -> None:
        self.stop_server()
        ports = self.used_ports(code)
        self.test.assertTrue(ports, f"{block.where}: a server without a port?")
        self.serial += 1
        name = f"{name}#{self.serial}"
        self.server = Program(
            name, argv, self.dir, self.env, ports, twistd="twistd" in argv[0]
        )
        self.server.wait_listening()
        self.ran.append(f"{block.where} server {name}")

    def restart_server(self, block: Block) -> None:
        assert self.server is not None
        server = self.server
        self.stop_server()
        self.serial += 1
        self.server = Program(
            f"{server.name.split('#')[0]}#{self.serial}",
            server.argv,
            self.dir,
            server.env,
            server.ports,
            twistd=server.twistd,
        )
        self.server.wait_listening()
        self.ran.append(f"{block.where} restarted {self.server.name}")

    def port_taken(self, block: Block, code: str) -> None:
        """The program, with its port held by someone else, says why and
        exits with status 1 (it must not run on without listening)."""
        with socket.socket() as blocker:
            blocker.bind(("127.0.0.1", 0))
            blocker.listen()
            taken = blocker.getsockname()[1]
            path = self.dir / f".taken-{block.line}.py"
            path.write_text(self.localize(code, dict.fromkeys(DOC_PORTS, taken)))
            done = subprocess.run(
                [PYTHON, str(path)],
                cwd=self.dir,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=60,
            )
        self.test.assertEqual(
            done.returncode, 1, f"{block.where} with its port taken:\n{done.stdout}"
        )
        # on standard error, or in the log if the program logs to stdout
        self.test.assertIn("cannot start: Couldn't listen on", done.stdout)

    # --- blocks -----------------------------------------------------------

    def run(self) -> None:
        blocks = read_blocks(self.page)
        python_blocks = 0
        for i, block in enumerate(blocks):
            following = blocks[i + 1] if i + 1 < len(blocks) else None
            if following is not None and not following.direct:
                following = None
            if block.lang == "python" and self.page not in PYTHON_EXCLUDED:
                python_blocks += 1
                self.python(block, following)
            elif block.lang in ("sh", "bash"):
                self.shell(block)
            elif block.lang in ("text", "console") and "run" in block.markers:
                self.transcript(block)
            if "server-output" in block.markers:
                name = block.markers["server-output"]
                if not name:
                    self.test.assertIsNotNone(self.server, f"{block.where}: no server")
                    assert self.server is not None
                    name = self.server.name  # this run of it (a unique name)
                self.later.append((block, name))
        self.stop_server()
        for block, name in self.later:
            self.check_server_output(block, name)
        self.parse_twistd_lines(blocks)
        self.python_blocks = python_blocks

    def python(self, block: Block, following: Block | None) -> None:
        if "not-run" in block.markers:
            self.skipped.append(f"{block.where}: {block.markers['not-run']}")
            return
        if "example" in block.markers:
            self.check_example(block)
        code = block.code
        name = block.filename or f"block{block.line}.py"
        path = self.dir / name
        path.write_text(self.localize(code))
        self.sources[name] = code
        if name.endswith(".tac"):
            compile(code, block.where, "exec")
            self.ran.append(f"{block.where} written {name}")
            return
        if re.search(r"^\s*(?:sys\.exit\()?[\w.]*\.run\(\)", code, re.M):
            self.port_taken(block, code)
            self.start_server(block, name, [PYTHON, str(path)], code)
            return
        if re.search(r"^class \w+\((?:Synchronous)?TestCase\):", code, re.M):
            done = self.command([PYTHON, "-m", "twisted.trial", path.stem])
            self.test.assertEqual(done.returncode, 0, f"{block.where}:\n{done.stdout}")
            self.ran.append(f"{block.where} trial {name}")
            return
        if re.search(
            r"^(?:from websockets|import http\.client|import urllib"
            r"|from wsplugin\.client import)",
            code,
            re.M,
        ):
            self.test.assertIsNotNone(self.server, f"{block.where}: no server runs")
            if "fresh-server" in block.markers:
                self.restart_server(block)
            done = self.command([PYTHON, str(path)])
            output = self.unlocalize(done.stdout)
            self.test.assertEqual(
                done.returncode, 0, f"{block.where} failed:\n{output}"
            )
            self.ran.append(f"{block.where} client {name}")
            if following is not None and following.lang == "text":
                self.compare(following, output, name)
            return
        output = self.fragment(block)
        self.ran.append(f"{block.where} fragment")
        if following is not None and following.lang == "text":
            self.compare(following, output, None)

    def fragment(self, block: Block) -> str:
        ns = fragment_namespace()
        out = io.StringIO()
        code = compile(
            block.code, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        cwd = os.getcwd()
        os.chdir(self.dir)
        try:
            with contextlib.redirect_stdout(out):
                result = eval(code, ns)  # a coroutine for top-level await
                if result is not None:
                    d = Deferred.fromCoroutine(result)
                    for _ in range(120):
                        ns["harness"].advance(1)
                    self.test.successResultOf(d)
        finally:
            os.chdir(cwd)
        return out.getvalue()

    def compare(self, shown: Block, output: str, name: str | None) -> None:
        expected = shown.code
        first = expected.split("\n", 1)[0]
        if first.startswith("$ "):
            if name is None or name not in first:
                return  # a transcript of something else
            expected = expected.split("\n", 1)[1]
        self.test.assertTrue(
            output_matches(expected, output),
            f"{shown.where}: the page shows\n{expected}\nbut it printed\n{output}",
        )
        self.ran.append(f"{shown.where} output as shown")

    def command(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.dir,
            env={**self.env, **kw.pop("env", {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            **kw,
        )

    def shell(self, block: Block) -> None:
        if "not-run" in block.markers:
            if twistd_lines(block):
                self.skipped.append(f"{block.where}: {block.markers['not-run']}")
            return
        if "run" in block.markers:
            done = self.command(["bash", "-e", "-c", self.localize(block.code)])
            self.test.assertEqual(done.returncode, 0, f"{block.where}:\n{done.stdout}")
            self.ran.append(f"{block.where} sh")
            return
        lines = twistd_lines(block)
        commands = [c for _, c in command_lines(block) if not c.startswith("#")]
        if len(lines) != 1 or len(commands) != 1 or "--help" in lines[0].twistd_args:
            return
        if re.search(r"<[^<>]*>|\bPORT\b", lines[0].text):
            return  # a template ("<mode flags>"): parsed below, not run
        line = lines[0]
        args = line.twistd_args
        if line.is_ws and not any(a in ("-p", "--port") for a in line.ws_args):
            args = [*args, "--port", "tcp:8888"]
        argv = [TWISTD, *(self.localize(a) for a in args)]
        code = " ".join(args)
        for flag, value in zip(args, args[1:], strict=False):
            if flag in ("-y", "--python"):
                code += "\n" + self.sources.get(value, "")  # the .tac's ports
        env_before = self.env
        self.env = {**self.env, **line.env}
        try:
            self.start_server(block, "twistd", argv, code)
        finally:
            self.env = env_before

    def transcript(self, block: Block) -> None:
        """``$ `` lines run in one bash; the rest is what they print."""
        script = []
        expected = []
        for text in block.code.rstrip("\n").split("\n"):
            if text.startswith("$ "):
                script.append(self.localize(text[2:]).replace("/srv/", f"{self.dir}/"))
            else:
                expected.append(text)
        done = self.command(["bash", "-c", "\n".join(script)])
        output = self.unlocalize(done.stdout.replace(str(self.dir), "/srv"))
        self.test.assertTrue(
            output_matches("\n".join(expected), output),
            f"{block.where}: the page shows\n{block.code}\nbut it printed\n{output}",
        )
        self.ran.append(f"{block.where} transcript")

    def check_server_output(self, block: Block, name: str) -> None:
        self.test.assertIn(name, self.outputs, f"{block.where}: no server {name}")
        missing = lines_found_in_order(block.code, self.outputs[name])
        self.test.assertEqual(
            missing,
            [],
            f"{block.where}: {name} did not print these lines (in this order):\n"
            + "\n".join(missing)
            + f"\nIts output:\n{self.outputs[name]}",
        )
        self.ran.append(f"{block.where} output of {name}")

    def check_example(self, block: Block) -> None:
        m = re.fullmatch(r"(\S+)(?:\s+from line\s+(\d+))?", block.markers["example"])
        self.test.assertIsNotNone(m, f"{block.where}: example marker unreadable")
        assert m is not None
        lines = (ROOT / m.group(1)).read_text().split("\n")[int(m.group(2) or 1) - 1 :]
        self.test.assertEqual(
            block.code.rstrip("\n"),
            "\n".join(lines).rstrip("\n"),
            f"{block.where} is not {block.markers['example']}",
        )

    # --- twistd command lines --------------------------------------------

    def parse_twistd_lines(self, blocks: list[Block]) -> None:
        # transcripts (<!-- run -->) show refused lines on purpose; they run
        lines = [t for b in blocks if "run" not in b.markers for t in twistd_lines(b)]
        lines = [t for t in lines if "--help" not in t.twistd_args]
        if not lines:
            return
        argvs = [self.prepare(t) for t in lines]
        results = parse_in_subprocess(argvs, self.dir)
        bad = [
            f"{t.where}: {t.text}\n    {result}"
            for t, result in zip(lines, results, strict=True)
            if result != "ok"
        ]
        self.test.assertEqual(bad, [], "twistd lines that twistd refuses")
        self.ran.extend(f"{t.where} twistd line parsed" for t in lines)

    def prepare(self, line: TwistdLine) -> list[str]:
        """The line's arguments, placeholders filled, absolute paths moved
        into the directory, and every file it names made."""
        args = []
        for a in line.twistd_args:
            if re.fullmatch(r"<[^<>]*>|<\S*|\S*>", a):
                continue  # a placeholder word: "<mode flags>"
            args.append(re.sub(r"<[^<>]*>", "x", a).replace("PORT", "8888"))
        args = [
            re.sub(r"(?<![\w.])/(etc|srv|opt|run|var)/", rf"{self.dir}/\1/", a)
            for a in args
        ]
        files: dict[str, str] = {}
        for flag, value in zip(args, args[1:], strict=False):
            if flag in ("--tls-cert", "--tls-key"):
                files[value] = "cert+key"
            elif flag in ("--tls-chain", "--tls-client-ca"):
                files[value] = "ca"
            elif flag == "--auth-file":
                if not (self.dir / value).exists():
                    (self.dir / value).parent.mkdir(parents=True, exist_ok=True)
                    htpasswd(self.dir / value)
            elif flag == "--static":
                (self.dir / value).mkdir(parents=True, exist_ok=True)
            elif flag == "--config" and not (self.dir / value).exists():
                (self.dir / value).parent.mkdir(parents=True, exist_ok=True)
                (self.dir / value).write_text("# an empty config: flags only\n")
            elif flag == "--app" and ":" in value:
                module = value.split(":")[0]
                target = self.dir / (module.replace(".", "/") + ".py")
                if not target.exists():
                    for parent in target.relative_to(self.dir).parents:
                        (self.dir / parent).mkdir(exist_ok=True)
                        (self.dir / parent / "__init__.py").touch()
                    target.write_text("class Chat:\n    pass\n")
        for a in args:
            for key, value in re.findall(
                r"(privateKey|certKey|extraCertChain)=([^:]+)", a
            ):
                files[value] = "ca" if key == "extraCertChain" else "cert+key"
        tls_files(
            self.dir,
            {
                str(Path(name).relative_to(self.dir))
                if name.startswith("/")
                else name: kind
                for name, kind in files.items()
                if not (self.dir / name).exists()
            },
        )
        return args


PARSER = """
import json, sys
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions
from wsplugin.tap import Options
results = []
for argv in json.load(sys.stdin):
    options = ServerOptions()
    try:
        options.parseOptions(argv)
        if "ws" in argv and not isinstance(options.subOptions, Options):
            raise usage.UsageError("ws is not wsplugin's plugin")
        results.append("ok")
    except (usage.UsageError, SystemExit) as e:
        results.append(f"{type(e).__name__}: {e}")
print(json.dumps(results))
"""


def parse_in_subprocess(argvs: list[list[str]], cwd: Path) -> list[str]:
    """Parse twistd argument lists with twistd's ``ServerOptions`` (which
    hands ``ws ...`` to wsplugin.tap.Options), in a process started as
    systemd starts a socket-activated service (one socket named ``ws``), so
    that ``systemd:`` ports parse as they do there."""
    env = {
        **os.environ,
        "PYTHONPATH": str(cwd),
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "ws",
    }
    done = subprocess.run(
        ["bash", "-c", 'LISTEN_PID=$$ exec "$0" -c "$1"', PYTHON, PARSER],
        input=json.dumps(argvs),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


class DocsRunTests(SynchronousTestCase):
    """Each page's code runs and prints what the page shows."""

    def run_page(self, page: str) -> None:
        run = PageRun(self, page)
        run.run()
        print(
            f"\n{page}: {run.python_blocks} python blocks, {len(run.ran)} checks, "
            f"{len(run.skipped)} not run"
        )
        for line in run.ran:
            print(f"  ran {line}")
        for line in run.skipped:
            print(f"  NOT RUN {line}")


def _page_test(page: str) -> Any:
    def test(self: DocsRunTests) -> None:
        self.run_page(page)

    test.__doc__ = f"{page}: its blocks run and print what it shows."
    return test


for _page in doc_pages():
    _name = "test_" + re.sub(r"\W", "_", Path(_page).stem.lower())
    setattr(DocsRunTests, _name, _page_test(_page))
del _page, _name


def block_after(page: str, heading: str, lang: str = "text") -> Block:
    """The first ``lang`` block after a heading of a page."""
    text = (ROOT / page).read_text()
    line = text[: text.index(f"\n{heading}\n")].count("\n") + 2
    return next(b for b in read_blocks(page) if b.line > line and b.lang == lang)


class LogLinesTests(ServerTestCase):
    """The log lines docs/reference.md quotes under "Logging" are the ones a
    server writes when clients do what the page says."""

    @inlineCallbacks
    def test_reference_logging_lines(self) -> None:
        """Invalid UTF-8, a message over max_message_size, a 1-byte close
        payload, and an upgrade from another site: the quoted lines."""
        lines = self.capture()
        yield self.start_server(
            Stand(),
            max_message_size=100,
            allowed_origins=["https://chat.example.com"],
        )
        port = self.server.ports[0].getHost().port

        results = yield in_thread(self._clients, port)
        self.assertEqual(
            [r[:12] for r in results], [b"HTTP/1.1 101"] * 3 + [b"HTTP/1.1 403"]
        )
        yield self.when(lambda: len([x for x in lines if "failing" in x]) >= 4)
        block = block_after("docs/reference.md", "## Logging")
        missing = lines_found_in_order(block.code, "\n".join(lines))
        self.assertEqual(missing, [], "\n".join(lines))

    def capture(self) -> list[str]:
        """wsplugin's log lines from now on, as textFileLogObserver writes
        them (without the time stamp)."""
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if str(event.get("log_namespace", "")).startswith("wsplugin"):
                level = event["log_level"].name
                lines.append(f"[{event['log_namespace']}#{level}] {formatEvent(event)}")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines

    @staticmethod
    def _clients(port: int) -> list[bytes]:
        """Each client in turn, waiting for the server to end it."""
        answers = []
        cases = [
            (client_frame(0x1, b"\xff\xfe"), []),
            (client_frame(0x1, b"x" * 200), []),
            (client_frame(0x8, b"\x03"), []),
            (b"", [("Origin", "http://evil.example")]),
        ]
        for frame, headers in cases:
            with socket.create_connection(("127.0.0.1", port), 10) as sock:
                sock.sendall(handshake_request("/", "127.0.0.1", headers))
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                answers.append(head)
                if frame:
                    sock.sendall(frame)
                    with contextlib.suppress(ConnectionResetError):
                        sock.recv(4096)  # the server's close frame
        return answers

    @inlineCallbacks
    def test_tls_plaintext_warning(self) -> None:
        """The warning docs/tls.md quotes for an authenticator without TLS."""
        lines = self.capture()
        checker = InMemoryUsernamePasswordDatabaseDontUse()
        checker.addUser(b"alice", b"secret")
        yield self.start_server(Stand(), auth=BasicAuth(checker))
        endpoint = self.server.endpoints[0]
        block = block_after(
            "docs/tls.md", "## Authentication without TLS is warned about"
        )
        expected = block.code.replace("tcp:8888", endpoint)
        missing = lines_found_in_order(expected, "\n".join(lines))
        self.assertEqual(missing, [], "\n".join(lines))


class Home(Resource):
    """A one-word page."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"home"


class SecurityClaimTests(ServerTestCase):
    """Claims docs/security.md makes that no other test performs."""

    @inlineCallbacks
    def test_no_redirect_on_the_same_port(self) -> None:
        """On a same-port server, Autobahn's ?redirect= never redirects: a
        plain GET to the WebSocket path gets 426, another path the HTTP
        tree's own answer; neither has a Location header."""
        page = Resource()
        page.putChild(b"", Home())
        yield self.start_server(Stand(), path="/chat", http=page)
        port = self.server.ports[0].getHost().port

        def get(path: str) -> tuple[int, str | None]:
            web = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                web.request("GET", path)
                response = web.getresponse()
                response.read()
                return response.status, response.getheader("Location")
            finally:
                web.close()

        for path, status in [
            ("/chat?redirect=https://evil.example", 426),
            ("/?redirect=https://evil.example", 200),
            ("/elsewhere?redirect=https://evil.example", 404),
        ]:
            self.assertEqual((yield in_thread(get, path)), (status, None), path)

    @inlineCallbacks
    def test_old_tls_versions_refused(self) -> None:
        """tls= accepts TLS 1.2 and refuses a client that offers only TLS 1.0
        or 1.1 (the client is told to offer them, weak ciphers allowed)."""
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        ca = tls_files(directory, {"server.pem": "cert+key"})
        yield self.start_server(
            Stand(), tls=TLSOptions(certificate=str(directory / "server.pem"))
        )
        port = self.server.ports[0].getHost().port

        def handshake(version: str) -> str:
            with warnings.catch_warnings():
                # naming TLS 1.0/1.1 at all is deprecated in Python's ssl
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ca.configure_trust(ctx)
                ctx.set_ciphers("ALL:@SECLEVEL=0")
                ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[version]
                with socket.create_connection(("127.0.0.1", port), 10) as sock:
                    try:
                        with ctx.wrap_socket(sock, server_hostname="localhost") as s:
                            return str(s.version())
                    except ssl.SSLError as e:
                        return f"refused: {e.reason}"

        self.assertEqual((yield in_thread(handshake, "TLSv1_2")), "TLSv1.2")
        for version in ("TLSv1", "TLSv1_1"):
            answer = yield in_thread(handshake, version)
            self.assertEqual(answer, "refused: TLSV1_ALERT_PROTOCOL_VERSION", version)
