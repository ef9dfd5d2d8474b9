"""Uploads over real loopback sockets: forged file names, limits, a 1 GiB
upload judged by the server's resident memory, and examples/upload_server.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.web.resource import Resource
from websockets.sync.client import connect

from tests.integration.support import (
    ROOT,
    ServerTestCase,
    free_port,
    in_thread,
    wait_for_port,
)
from tests.integration.test_examples import EXAMPLES, Example
from wsplugin.config import MiB
from wsplugin.uploads import UploadResource, safe_filename

BOUNDARY = "----wsplugin-loopback-7f3a"
GiB = 1024 * MiB


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart body from (field, file name or None, content)."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (
            (
                f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + content
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def post(port: int, body: bytes, path: str = "/upload") -> tuple[int, Any]:
    """POST a multipart body over a real socket; (status, JSON answer)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(
            "POST",
            path,
            body,
            {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        conn.close()


def http_get(port: int, path: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


def stream_upload(port: int, size: int, chunk: int = MiB) -> tuple[int, Any]:
    """POST one file of ``size`` bytes, generated as it is sent (one
    ``chunk``-sized buffer reused: the client never holds the body)."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    length = len(head) + size + len(tail)
    block = bytes(range(256)) * (chunk // 256)
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(
            (
                "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
            ).encode()
            + head
        )
        sent = 0
        while sent < size:
            piece = block if size - sent >= len(block) else block[: size - sent]
            s.sendall(piece)
            sent += len(piece)
        s.sendall(tail)
        answer = b""
        while data := s.recv(65536):
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, json.loads(answer.split(b"\r\n\r\n", 1)[1])


class UploadLoopbackTests(ServerTestCase):
    """UploadResource on a WebSocketServer's site, over loopback."""

    def serve(self, handler: Any = None, **options: Any) -> Any:
        self.directory = Path(self.mktemp()).resolve() / "uploads"
        self.directory.mkdir(parents=True)
        root = Resource()
        root.putChild(b"upload", UploadResource(self.directory, handler, **options))
        return self.start_server(None, http=root)

    def port(self) -> int:
        return int(self.server.ports[0].getHost().port)

    @inlineCallbacks
    def test_forged_names(self) -> None:
        """The traversal attack: file names with ``../``, absolute paths,
        backslashes, dotfiles and an empty name, sent over a real socket,
        never write outside the upload directory; with the default names
        nothing the client chose is used, and with safe_filename only a
        sanitized last component."""
        forged = [
            "../../escaped.txt",
            "/tmp/absolute.txt",
            "..\\..\\windows.txt",
            ".bashrc",
            "..",
            "",
        ]
        yield self.serve()
        before = sorted(os.listdir(self.directory.parent))
        status, answer = yield in_thread(
            post, self.port(), form(*[("f", name, b"pwned") for name in forged])
        )
        self.assertEqual(status, 200)
        self.assertEqual([f["filename"] for f in answer["files"]], forged)
        self.assertEqual(sorted(os.listdir(self.directory.parent)), before)
        saved = sorted(os.listdir(self.directory))
        self.assertEqual(saved, sorted(f["name"] for f in answer["files"]))
        self.assertTrue(all(len(n) == 32 and n.isalnum() for n in saved), saved)
        self.assertFalse(Path("/tmp/absolute.txt").exists())

    @inlineCallbacks
    def test_forged_names_sanitized(self) -> None:
        """Keeping client names through safe_filename: the last component
        only, no leading dot; nothing lands outside."""

        class Keep:
            def before_save_file(self, request: Any, part: Any) -> Any:
                return safe_filename(part.filename)

        yield self.serve(Keep())
        before = sorted(os.listdir(self.directory.parent))
        status, answer = yield in_thread(
            post,
            self.port(),
            form(
                ("f", "../../escaped.txt", b"1"),
                ("g", "/etc/cron.d/job", b"2"),
                ("h", "..\\..\\win.ini", b"3"),
                ("i", ".profile", b"4"),
            ),
        )
        self.assertEqual(status, 200)
        self.assertEqual(
            sorted(os.listdir(self.directory)),
            ["escaped.txt", "job", "profile", "win.ini"],
        )
        self.assertEqual(sorted(os.listdir(self.directory.parent)), before)

    @inlineCallbacks
    def test_limits(self) -> None:
        """Over the per-file limit: 413 with a message, read to the end so
        the client gets it, no file left; over the body limit (declared):
        413 before the body is read."""
        yield self.serve(max_file_size=100_000, max_request_body=4 * MiB)
        status, answer = yield in_thread(
            post, self.port(), form(("f", "big.bin", b"x" * 300_000))
        )
        self.assertEqual(
            (status, answer),
            (413, {"error": "file 'big.bin' in field 'f' is over 100000 bytes"}),
        )
        self.assertEqual(os.listdir(self.directory), [])

        def declared() -> bytes:
            with socket.create_connection(("127.0.0.1", self.port()), timeout=10) as s:
                s.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: multipart/form-data; boundary=b\r\n"
                    b"Content-Length: 5000000\r\n\r\n"
                )
                return s.recv(1024)

        answer = yield in_thread(declared)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 Content Too Large"), answer)


class UploadMemoryTests(ServerTestCase):
    """A 1 GiB upload, measured by the server process's resident memory."""

    timeout = 600

    @inlineCallbacks
    def test_one_gib_upload_memory(self) -> None:
        """A 1 GiB file streamed to a server in its own process raises that
        process's peak resident memory (VmHWM) by less than 64 MiB over its
        resident memory before the upload, and lands whole on disk."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "integration" / "upload_memory_server.py"),
                f"tcp:{port}:interface=127.0.0.1",
                str(directory),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            proc.terminate()
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()

        self.addCleanup(stop)

        def run() -> tuple[dict[str, int], tuple[int, Any], dict[str, int]]:
            wait_for_port(port)
            before = http_get(port, "/rss")
            result = stream_upload(port, GiB)
            after = http_get(port, "/rss")
            return before, result, after

        before, (status, answer), after = yield in_thread(run)
        self.assertEqual(status, 200, answer)
        [saved] = answer["files"]
        path = directory / saved["name"]
        self.addCleanup(lambda: path.unlink(missing_ok=True))
        self.assertEqual(saved["size"], GiB)
        self.assertEqual(path.stat().st_size, GiB)
        with path.open("rb") as f:
            f.seek(GiB - 256)
            self.assertEqual(f.read(), bytes(range(256)))
        growth = after["peak"] - before["rss"]
        print(
            f"\n1 GiB upload: resident {before['rss'] / MiB:.1f} MiB before, "
            f"peak {after['peak'] / MiB:.1f} MiB, growth {growth / MiB:.1f} MiB"
        )
        self.assertLess(growth, 64 * MiB)


class UploadExampleTests(ServerTestCase):
    """examples/upload_server.py does what docs/web.md shows."""

    timeout = 120

    @inlineCallbacks
    def test_upload_server(self) -> None:
        """Files are saved under sanitized names, others skipped, a field is
        read, the WebSocket route hears of each file, an existing name gets
        409, a refused request 403."""
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        example = Example(
            self,
            sys.executable,
            str(EXAMPLES / "upload_server.py"),
            "{endpoint}",
            str(directory),
        )

        def client() -> tuple[Any, ...]:
            wait_for_port(example.port)
            with connect(f"ws://127.0.0.1:{example.port}/ws", open_timeout=10) as ws:
                hello = ws.recv(timeout=10)
                first = post(
                    example.port,
                    form(
                        ("note", None, b"hello"),
                        ("file", "../../notes.txt", b"hi\n"),
                        ("file", "data.csv", b"a,b\n1,2\n"),
                        ("file", "evil.php", b"<?php"),
                    ),
                )
                heard = [ws.recv(timeout=10), ws.recv(timeout=10)]
            again = post(example.port, form(("file", "../../notes.txt", b"hi\n")))
            return hello, first, heard, again

        hello, first, heard, again = yield in_thread(client)
        self.assertEqual(hello, "you will hear about new uploads here")
        self.assertEqual(
            first,
            (
                200,
                {
                    "files": [
                        {
                            "field": "file",
                            "filename": "../../notes.txt",
                            "name": "notes.txt",
                            "size": 3,
                            "content_type": "application/octet-stream",
                        },
                        {
                            "field": "file",
                            "filename": "data.csv",
                            "name": "data.csv",
                            "size": 8,
                            "content_type": "application/octet-stream",
                        },
                    ],
                    "fields": ["note"],
                    "skipped": [{"field": "file", "filename": "evil.php"}],
                },
            ),
        )
        self.assertEqual(
            heard, ["new file: notes.txt (3 bytes)", "new file: data.csv (8 bytes)"]
        )
        self.assertEqual(
            again, (409, {"error": "a file named 'notes.txt' already exists"})
        )
        self.assertEqual(sorted(os.listdir(directory)), ["data.csv", "notes.txt"])
        output = yield in_thread(example.stop)
        self.assertIn(f"saving uploads in {directory}", output)
        self.assertIn("field note='hello'", output)
        self.assertIn("saved notes.txt (3 bytes)", output)
        self.assertNotIn("Traceback", output)

    @inlineCallbacks
    def test_port_taken(self) -> None:
        """On a port that is taken it says why and exits with status 1."""
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        example = Example(
            self,
            sys.executable,
            str(EXAMPLES / "upload_server.py"),
            "{endpoint}",
            str(directory),
            port=blocker.getsockname()[1],
        )

        def wait() -> tuple[int, str]:
            output, _ = example.proc.communicate(timeout=30)
            return example.proc.returncode, output

        status, output = yield in_thread(wait)
        self.assertEqual(status, 1, output)
        self.assertIn("cannot start: Couldn't listen on 127.0.0.1:", output)
