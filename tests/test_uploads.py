"""wsplugin.uploads in memory: UploadResource on the same-port site (the
body streamed in as it arrives), its limits, file names, handler methods,
and the fallback on a plain twisted.web Site."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from wsplugin import WebSocketServer, uploads
from wsplugin.config import MiB
from wsplugin.errors import ConfigError
from wsplugin.testing import FakeTransport
from wsplugin.uploads import (
    SavedFile,
    UploadRefused,
    UploadResource,
    safe_filename,
)

BOUNDARY = "wsplugin-test-boundary"


def form(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart body from (field name, file name or None, content)."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += (
            f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    return out + f"--{BOUNDARY}--\r\n".encode()


def head(path: str = "/upload", length: int | None = None, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: example.com"]
    fields = {name.replace("_", "-"): value for name, value in headers.items()}
    fields.setdefault("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    for name, value in fields.items():
        lines.append(f"{name}: {value}")
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Peer:
    """One in-memory client connection to a server's listening factory."""

    def __init__(self, server: WebSocketServer) -> None:
        self.clock = server.reactor
        addr = IPv4Address("TCP", "203.0.113.9", 40000)
        self.transport = FakeTransport(self.clock, addr)
        protocol = server.listening_factory.buildProtocol(addr)
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        if not self.transport.lost:
            self.transport.protocol.dataReceived(data)

    def post(self, body: bytes, path: str = "/upload", **headers: str) -> None:
        self.send(head(path, len(body), **headers) + body)

    def status(self) -> int:
        data = self.transport.value()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0

    def json(self) -> Any:
        return json.loads(self.transport.value().split(b"\r\n\r\n", 1)[1])

    def close(self) -> None:
        self.transport.loseConnection()
        self.clock.advance(0)


class Recorder:
    """An upload handler recording what it sees; answers configurable."""

    def __init__(self, name: Any = None) -> None:
        self.seen: list[tuple[Any, ...]] = []
        self.name = name

    def before_upload(self, request: Any) -> Any:
        self.seen.append(("before_upload", request.path))
        return None

    def before_save_file(self, request: Any, part: Any) -> Any:
        self.seen.append(("before_save_file", part.field, part.filename))
        return self.name(part) if callable(self.name) else self.name

    def on_field(self, request: Any, name: str, value: str) -> None:
        self.seen.append(("on_field", name, value))

    def after_save_file(self, request: Any, saved: SavedFile) -> None:
        self.seen.append(("after_save_file", saved.field, saved.name, saved.size))


class UploadTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)

    def serve(
        self,
        handler: Any = None,
        server_options: dict[str, Any] | None = None,
        **kw: Any,
    ) -> tuple[WebSocketServer, UploadResource]:
        resource = UploadResource(self.directory, handler, **kw)
        root = Resource()
        root.putChild(b"upload", resource)
        server = WebSocketServer(
            None, reactor=MemoryReactorClock(), http=root, **(server_options or {})
        )
        return server, resource

    def files(self) -> list[str]:
        """Everything in the upload directory, temporary files included."""
        return sorted(os.listdir(self.directory))


class SavingTests(UploadTestCase):
    """Files and fields of a form."""

    def test_saved_with_generated_name(self) -> None:
        """Each file is saved under a generated name with the client's name
        kept as metadata; fields are collected (names in the answer, not
        their values)."""
        handler = Recorder()
        server, _ = self.serve(handler)
        peer = Peer(server)
        peer.post(
            form(("title", None, b"holiday"), ("photo", "beach.jpg", b"JPEG" * 1000))
        )
        self.assertEqual(peer.status(), 200)
        answer = peer.json()
        [saved] = answer["files"]
        self.assertEqual(
            (saved["field"], saved["filename"], saved["size"]),
            ("photo", "beach.jpg", 4000),
        )
        self.assertRegex(saved["name"], r"^[0-9a-f]{32}$")
        self.assertEqual(answer["fields"], ["title"])
        self.assertNotIn(b"holiday", peer.transport.value())
        self.assertEqual(self.files(), [saved["name"]])
        self.assertEqual((self.directory / saved["name"]).read_bytes(), b"JPEG" * 1000)
        self.assertEqual(
            handler.seen,
            [
                ("before_upload", b"/upload"),
                ("on_field", "title", "holiday"),
                ("before_save_file", "photo", "beach.jpg"),
                ("after_save_file", "photo", saved["name"], 4000),
            ],
        )
        self.assertEqual(
            oct(os.stat(self.directory / saved["name"]).st_mode & 0o777), "0o600"
        )

    def test_streamed_not_spooled(self) -> None:
        """On wsplugin's site the body goes to the file as it arrives: the
        file grows before the body is complete, request.content holds
        nothing, and Twisted never parses the form into request.args."""
        seen: list[Any] = []

        class Look:
            def on_complete(self, request: Any, upload: Any) -> bytes:
                seen.append((request.content.read(), request.args))
                return b"done"

        server, _ = self.serve(Look())
        peer = Peer(server)
        body = form(("f", "big.bin", b"x" * 300_000))
        peer.send(head(length=len(body)) + body[:200_000])
        [temp] = self.files()
        self.assertTrue(temp.startswith(".upload-") and temp.endswith(".part"))
        self.assertGreater(os.path.getsize(self.directory / temp), 150_000)
        peer.send(body[200_000:])
        self.assertEqual(peer.status(), 200)
        self.assertEqual(seen, [(b"", {})])
        self.assertTrue(peer.transport.value().endswith(b"done"))

    def test_chunked_body(self) -> None:
        """A chunked body is parsed as its chunks arrive."""
        server, _ = self.serve()
        peer = Peer(server)
        body = form(("f", "a.txt", b"hello, chunks"))
        peer.send(head(Transfer_Encoding="chunked"))
        for i in range(0, len(body), 7):
            piece = body[i : i + 7]
            peer.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        peer.send(b"0\r\n\r\n")
        self.assertEqual(peer.status(), 200)
        [saved] = peer.json()["files"]
        self.assertEqual(
            (self.directory / saved["name"]).read_bytes(), b"hello, chunks"
        )

    def test_empty_file_input_skipped(self) -> None:
        """A file part with an empty name and no content (a browser's empty
        file input) is skipped, not saved."""
        server, _ = self.serve()
        peer = Peer(server)
        peer.post(form(("f", "", b"")))
        self.assertEqual(peer.json()["skipped"], [{"field": "f", "filename": ""}])
        self.assertEqual((peer.json()["files"], self.files()), ([], []))

    def test_keep_alive(self) -> None:
        """Two uploads in a row on one connection."""
        server, _ = self.serve()
        peer = Peer(server)
        peer.post(form(("f", "1.txt", b"one")))
        peer.post(form(("f", "2.txt", b"two")))
        self.assertEqual(peer.transport.value().count(b"HTTP/1.1 200 OK"), 2)
        self.assertEqual(len(self.files()), 2)


class FileNameTests(UploadTestCase):
    """Client file names never become paths."""

    HOSTILE = [
        "../../../../etc/passwd",
        "/etc/passwd",
        "..",
        ".",
        "..\\..\\windows\\win.ini",
        "C:\\Users\\me\\report.pdf",
        ".htaccess",
        "...",
        "",
        "a/../../b",
        "\u202etxt.exe",
    ]

    def test_generated_names_ignore_client_names(self) -> None:
        """With the default names, every hostile client name gives a file
        inside the directory with a generated name; the client's name is
        only reported."""
        server, _ = self.serve()
        peer = Peer(server)
        peer.post(form(*[("f", name, b"x") for name in self.HOSTILE]))
        answer = peer.json()
        # the empty name with content is saved too; only empty+empty is skipped
        self.assertEqual([f["filename"] for f in answer["files"]], self.HOSTILE)
        self.assertEqual(sorted(f["name"] for f in answer["files"]), self.files())
        for name in self.files():
            self.assertRegex(name, r"^[0-9a-f]{32}$")

    def test_sanitized_names(self) -> None:
        """before_save_file returning safe_filename(part.filename) keeps a
        safe form of each client name, or a generated one when none is left."""
        server, _ = self.serve(Recorder(lambda part: safe_filename(part.filename)))
        peer = Peer(server)
        hostile = [self.HOSTILE[i] for i in (0, 2, 4, 5, 6, 10)]
        peer.post(form(*[("f", name, b"x") for name in hostile]))
        names = [f["name"] for f in peer.json()["files"]]
        self.assertEqual(names[0], "passwd")
        self.assertRegex(names[1], r"^[0-9a-f]{32}$")  # ".": nothing left
        self.assertEqual(names[2:], ["win.ini", "report.pdf", "htaccess", "txt.exe"])
        self.assertEqual(sorted(names), self.files())

    def test_nul_and_percent_encoded_names(self) -> None:
        """A raw NUL in a part header is a malformed body (400); one smuggled
        in RFC 8187 percent-encoding stays metadata, and is removed by
        safe_filename."""
        server, _ = self.serve(Recorder(lambda part: safe_filename(part.filename)))
        peer = Peer(server)
        peer.post(form(("f", "a\x00b.txt", b"x")))
        self.assertEqual(peer.status(), 400)
        self.assertEqual(self.files(), [])
        peer = Peer(server)
        body = (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=f; "
            f"filename*=utf-8''..%2F..%2Fa%00b.txt\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
        ).encode()
        peer.post(body)
        [saved] = peer.json()["files"]
        self.assertEqual(
            (saved["filename"], saved["name"]), ("../../a\x00b.txt", "ab.txt")
        )

    def test_unsafe_names_from_the_handler(self) -> None:
        """A name from before_save_file that is not one plain component is
        a server error (500), logged, and nothing is saved."""
        for bad in ["../x", "/abs", "a/b", "a\\b", ".hidden", "", "a\x00b", "x" * 256]:
            server, _ = self.serve(Recorder(bad))
            peer = Peer(server)
            peer.post(form(("f", "a.txt", b"x")))
            self.assertEqual(peer.status(), 500, repr(bad))
            self.assertEqual(self.files(), [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_existing_file_never_replaced(self) -> None:
        """A chosen name that exists gets 409, the existing file is kept, and
        the other files of the request are taken back."""
        (self.directory / "taken.txt").write_bytes(b"original")
        server, _ = self.serve(Recorder(lambda part: part.filename))
        peer = Peer(server)
        peer.post(form(("a", "first.txt", b"1"), ("b", "taken.txt", b"new")))
        self.assertEqual(peer.status(), 409)
        self.assertIn("taken.txt", peer.json()["error"])
        self.assertEqual(self.files(), ["taken.txt"])
        self.assertEqual((self.directory / "taken.txt").read_bytes(), b"original")

    def test_planted_symlink_not_followed(self) -> None:
        """A chosen name that is a symbolic link (even a dangling one) is
        refused (409): the file it points to is not written."""
        target = Path(self.mktemp())
        (self.directory / "link.txt").symlink_to(target)
        server, _ = self.serve(Recorder("link.txt"))
        peer = Peer(server)
        peer.post(form(("f", "x", b"payload")))
        self.assertEqual(peer.status(), 409)
        self.assertFalse(target.exists())


class LimitTests(UploadTestCase):
    """Body, file, field and count limits."""

    def test_request_limit_is_the_resource_own(self) -> None:
        """The upload resource's max_request_body replaces the server's for
        its own requests only: 5 MiB passes there, 413 elsewhere."""
        server, _ = self.serve(
            server_options={"max_request_body": MiB}, max_request_body=8 * MiB
        )
        other = Resource()
        other.isLeaf = True
        server.site.resource._http.putChild(b"other", other)
        body = form(("f", "big", b"z" * (5 * MiB)))
        peer = Peer(server)
        peer.post(body)
        self.assertEqual(peer.status(), 200)
        peer = Peer(server)
        peer.post(body, path="/other", Content_Type="application/octet-stream")
        self.assertEqual(peer.status(), 413)

    def test_declared_body_over_limit(self) -> None:
        """A declared length over the upload's limit: 413 from the head,
        before any byte is read or a file created, and no 100 Continue."""
        server, _ = self.serve(max_request_body=1000)
        peer = Peer(server)
        peer.send(head(length=1001, Expect="100-continue"))
        self.assertTrue(peer.transport.value().startswith(b"HTTP/1.1 413"))
        self.assertNotIn(b"100 Continue", peer.transport.value())
        self.assertEqual(self.files(), [])

    def test_chunked_body_over_limit(self) -> None:
        """A chunked body crossing the limit is cut with 413 and its partial
        file is removed."""
        server, _ = self.serve(max_request_body=10_000)
        peer = Peer(server)
        body = form(("f", "a", b"y" * 20_000))
        peer.send(head(Transfer_Encoding="chunked"))
        peer.send(b"%x\r\n%s\r\n" % (8000, body[:8000]))
        self.assertEqual(len(self.files()), 1)
        peer.send(b"%x\r\n%s\r\n" % (8000, body[8000:16000]))
        self.assertEqual(peer.status(), 413)
        self.assertEqual(self.files(), [])

    def test_file_limit(self) -> None:
        """A file over max_file_size: its partial file is removed at once,
        the rest of the body is read and dropped, then 413 with a message;
        no file of the request is kept."""
        server, _ = self.serve(max_file_size=1000)
        peer = Peer(server)
        body = form(("ok", "small.txt", b"s" * 500), ("f", "big.bin", b"b" * 5000))
        cut = body.index(b"b" * 5000) + 2000
        peer.send(head(length=len(body)) + body[:cut])
        self.assertEqual(self.files(), [])  # removed before the body ends
        self.assertEqual(peer.status(), 0)
        peer.send(body[cut:])
        self.assertEqual(peer.status(), 413)
        self.assertEqual(
            peer.json(), {"error": "file 'big.bin' in field 'f' is over 1000 bytes"}
        )
        self.assertEqual(self.files(), [])

    def test_field_limits(self) -> None:
        """A field value over max_field_size, or too many fields or files:
        413 with a message, nothing saved."""
        cases = [
            (
                {"max_field_size": 10},
                form(("a", None, b"x" * 11)),
                "field 'a' is over 10",
            ),
            (
                {"max_fields": 2},
                form(*[("a", None, b"1")] * 3),
                "more than 2 form fields",
            ),
            (
                {"max_files": 1},
                form(("a", "1", b"1"), ("b", "2", b"2")),
                "more than 1 files",
            ),
        ]
        for options, body, message in cases:
            server, _ = self.serve(**options)
            peer = Peer(server)
            peer.post(body)
            self.assertEqual(peer.status(), 413, options)
            self.assertIn(message, peer.json()["error"])
            self.assertEqual(self.files(), [])

    def test_slow_body(self) -> None:
        """A body slower than the resource's request_body_timeout: 408, and
        the partial file is removed."""
        server, _ = self.serve(request_body_timeout=60)
        peer = Peer(server)
        body = form(("f", "a", b"q" * 1000))
        peer.send(head(length=len(body)) + body[:500])
        self.assertEqual(len(self.files()), 1)
        server.reactor.advance(61)
        self.assertEqual(peer.status(), 408)
        server.reactor.advance(0)
        self.assertEqual(self.files(), [])

    def test_client_leaves(self) -> None:
        """A client that disconnects mid-body leaves no file behind."""
        server, _ = self.serve()
        peer = Peer(server)
        body = form(("a", "1", b"1"), ("f", "a", b"q" * 1000))
        peer.send(head(length=len(body)) + body[:-200])
        self.assertEqual(len(self.files()), 2)
        peer.close()
        self.assertEqual(self.files(), [])

    def test_options_checked(self) -> None:
        """Bad options are refused when the resource is made."""
        with self.assertRaises(ConfigError):
            UploadResource(self.directory / "missing")
        with self.assertRaises(ConfigError):
            UploadResource(self.directory, max_files=-1)
        with self.assertRaises(ConfigError):
            UploadResource(self.directory, request_body_timeout=-1)
        with self.assertRaises(ConfigError):
            UploadRefused(200)


class RefusalTests(UploadTestCase):
    """Requests refused before or while their body arrives."""

    def test_not_multipart(self) -> None:
        """Another content type: 415 from the head; no boundary: 400."""
        server, _ = self.serve()
        for content_type, status in [
            ("application/json", 415),
            ("multipart/form-data", 400),
        ]:
            peer = Peer(server)
            peer.send(head(length=10, Content_Type=content_type))
            self.assertEqual(peer.status(), status)
            self.assertTrue(peer.transport.disconnecting)

    def test_methods(self) -> None:
        """GET gets 405 with Allow: POST; a PUT with a body gets 405 from
        its head."""
        server, _ = self.serve()
        peer = Peer(server)
        peer.send(b"GET /upload HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(peer.status(), 405)
        self.assertIn(b"Allow: POST", peer.transport.value())
        peer = Peer(server)
        peer.send(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(peer.status(), 405)

    def test_malformed(self) -> None:
        """A body cut before its closing delimiter, or with a malformed part,
        gets 400 and leaves no file."""
        server, _ = self.serve()
        for body in [
            form(("f", "a", b"x"))[:-8],
            form(("f", "a", b"x")).replace(b"form-data;", b"attachment;"),
        ]:
            peer = Peer(server)
            peer.post(body)
            self.assertEqual(peer.status(), 400)
            self.assertEqual(self.files(), [])

    def test_field_not_utf8(self) -> None:
        """A field value that is not UTF-8: 400."""
        server, _ = self.serve()
        peer = Peer(server)
        peer.post(form(("a", None, b"\xff")))
        self.assertEqual(
            (peer.status(), peer.json()), (400, {"error": "field 'a' is not UTF-8"})
        )

    def test_before_upload(self) -> None:
        """before_upload returning False refuses with 403, raising
        UploadRefused with its status, both before any body byte; raising
        anything else is 500, logged; returning a Deferred is a misuse: 500."""

        class Gate:
            def __init__(self, answer: Any) -> None:
                self.answer = answer

            def before_upload(self, request: Any) -> Any:
                if isinstance(self.answer, Exception):
                    raise self.answer
                return self.answer

        for answer, status in [
            (False, 403),
            (UploadRefused(401, "log in first"), 401),
            (RuntimeError("bug"), 500),
            (Deferred(), 500),
            (True, 200),
        ]:
            server, _ = self.serve(Gate(answer))
            peer = Peer(server)
            body = form(("f", "a", b"x"))
            peer.send(head(length=len(body)))
            if status != 200:
                self.assertEqual(peer.status(), status, answer)
                self.assertTrue(peer.transport.disconnecting)
            peer.send(body)
            self.assertEqual(peer.status(), status)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_refused_from_a_field(self) -> None:
        """on_field raising UploadRefused refuses the whole upload with its
        status and message; files before it are removed."""

        class Csrf:
            def on_field(self, request: Any, name: str, value: str) -> None:
                if name == "token" and value != "good":
                    raise UploadRefused(403, "bad token")

        server, _ = self.serve(Csrf())
        peer = Peer(server)
        peer.post(form(("f", "a", b"1"), ("token", None, b"evil"), ("g", "b", b"2")))
        self.assertEqual((peer.status(), peer.json()), (403, {"error": "bad token"}))
        self.assertEqual(self.files(), [])

    def test_skip_a_file(self) -> None:
        """before_save_file returning False skips that file: its bytes are
        dropped and it is listed as skipped."""
        server, _ = self.serve(
            Recorder(lambda part: part.filename != "no.exe" and None)
        )
        peer = Peer(server)
        peer.post(form(("a", "no.exe", b"MZ" * 100), ("b", "yes.txt", b"ok")))
        answer = peer.json()
        self.assertEqual([f["filename"] for f in answer["files"]], ["yes.txt"])
        self.assertEqual(answer["skipped"], [{"field": "a", "filename": "no.exe"}])
        self.assertEqual(len(self.files()), 1)

    def test_disk_full(self) -> None:
        """A write failing with ENOSPC answers 507 and removes the file."""
        real_fdopen = os.fdopen

        class Full:
            def __init__(self, handle: Any) -> None:
                self.handle = handle

            def write(self, data: bytes) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            def close(self) -> None:
                self.handle.close()

        self.patch(uploads.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
        server, _ = self.serve()
        peer = Peer(server)
        peer.post(form(("f", "a", b"x" * 10)))
        self.assertEqual(peer.status(), 507)
        self.assertEqual(self.files(), [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class AsyncHandlerTests(UploadTestCase):
    """Handler methods returning Deferreds and coroutines."""

    def test_before_save_file_deferred_pauses_reading(self) -> None:
        """While before_save_file's Deferred is pending, reading from the
        client is paused and the part's content waits; when it fires with a
        name, the file is written under that name."""
        pending: list[Deferred[str]] = []

        class Later:
            def before_save_file(self, request: Any, part: Any) -> Deferred[str]:
                d: Deferred[str] = Deferred()
                pending.append(d)
                return d

        server, _ = self.serve(Later())
        peer = Peer(server)
        body = form(("f", "a.txt", b"content"))
        peer.send(head(length=len(body)) + body[:-30])
        self.assertEqual(peer.transport.producerState, "paused")
        self.assertEqual(self.files(), [])
        peer.send(body[-30:])
        self.assertEqual(peer.status(), 0)
        pending[0].callback("chosen.txt")
        self.assertEqual(peer.transport.producerState, "producing")
        self.assertEqual(peer.status(), 200)
        self.assertEqual((self.directory / "chosen.txt").read_bytes(), b"content")

    def test_coroutines(self) -> None:
        """Coroutine methods are awaited; on_complete's dict is the JSON
        answer, with the status it set."""

        class Async:
            async def on_field(self, request: Any, name: str, value: str) -> None:
                pass

            async def after_save_file(self, request: Any, saved: Any) -> None:
                pass

            async def on_complete(self, request: Any, upload: Any) -> Any:
                request.setResponseCode(201)
                return {"stored": [f.name for f in upload.files]}

        server, _ = self.serve(Async())
        peer = Peer(server)
        peer.post(form(("t", None, b"v"), ("f", "a", b"x")))
        self.assertEqual(peer.status(), 201)
        self.assertEqual(peer.json(), {"stored": self.files()})

    def test_after_save_refuses(self) -> None:
        """after_save_file raising UploadRefused (a virus scan, say) answers
        its status and removes every file of the request."""

        class Scan:
            def after_save_file(self, request: Any, saved: Any) -> None:
                with open(saved.path, "rb") as f:
                    if b"EICAR" in f.read():
                        raise UploadRefused(422, f"{saved.filename} is infected")

        server, _ = self.serve(Scan())
        peer = Peer(server)
        peer.post(form(("a", "clean.txt", b"fine"), ("b", "bad.com", b"EICAR")))
        self.assertEqual(
            (peer.status(), peer.json()), (422, {"error": "bad.com is infected"})
        )
        self.assertEqual(self.files(), [])

    def test_on_complete_bytes(self) -> None:
        """on_complete returning bytes answers with them."""

        class Plain:
            def on_complete(self, request: Any, upload: Any) -> str:
                request.setHeader(b"content-type", b"text/plain")
                return f"{len(upload.files)} file(s)\n"

        server, _ = self.serve(Plain())
        peer = Peer(server)
        peer.post(form(("f", "a", b"x")))
        self.assertTrue(peer.transport.value().endswith(b"\r\n\r\n1 file(s)\n"))

    def test_on_complete_wrong_type(self) -> None:
        """on_complete returning something that is not an answer is a bug:
        500, logged, and the request's files are removed."""

        class Wrong:
            def on_complete(self, request: Any, upload: Any) -> int:
                return 42

        server, _ = self.serve(Wrong())
        peer = Peer(server)
        peer.post(form(("f", "a", b"x")))
        self.assertEqual(peer.status(), 500)
        self.assertEqual(self.files(), [])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_client_gone_while_pending(self) -> None:
        """A client that leaves while a handler's Deferred is pending leaves
        no file; the Deferred firing later changes nothing."""
        pending: list[Deferred[None]] = []

        class Later:
            def before_save_file(self, request: Any, part: Any) -> Deferred[None]:
                d: Deferred[None] = Deferred()
                pending.append(d)
                return d

        server, _ = self.serve(Later())
        peer = Peer(server)
        body = form(("f", "a", b"x" * 100))
        peer.post(body)
        peer.close()
        pending[0].callback(None)
        self.assertEqual(self.files(), [])


class PlainSiteTests(UploadTestCase):
    """On a plain twisted.web Site, the stored body is parsed in pieces."""

    def test_plain_site(self) -> None:
        """The resource saves files from Twisted's stored body too."""
        resource = UploadResource(self.directory, Recorder(lambda part: "kept.txt"))
        root = Resource()
        root.putChild(b"upload", resource)
        site = Site(root)
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        body = form(("t", None, b"v"), ("f", "a.txt", b"data" * 50_000))
        protocol.dataReceived(head(length=len(body)) + body)
        self.assertIn(b"200 OK", transport.value())
        self.assertEqual((self.directory / "kept.txt").read_bytes(), b"data" * 50_000)
        protocol.connectionLost(None)

    def test_plain_site_refusal(self) -> None:
        """A wrong content type on a plain Site: 415 with a JSON message."""
        resource = UploadResource(self.directory)
        site = Site(resource)
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(head("/", 2, Content_Type="text/plain") + b"hi")
        self.assertIn(b"415 Unsupported Media Type", transport.value())
        self.assertIn(
            b'{"error": "the body must be multipart/form-data', transport.value()
        )
        protocol.connectionLost(None)


class ExportTests(SynchronousTestCase):
    """The public names of wsplugin.uploads."""

    def test_all(self) -> None:
        """``__all__`` is pinned and every name resolves."""
        self.assertEqual(
            sorted(uploads.__all__),
            [
                "FilePart",
                "SavedFile",
                "Upload",
                "UploadRefused",
                "UploadResource",
                "safe_filename",
            ],
        )
        for name in uploads.__all__:
            self.assertTrue(hasattr(uploads, name))
