"""wsplugin._uploadsink: an upload's body taken as it arrives, driven
directly (no site): parts to files under temporary names, the handler's
events in order, final names all or nothing, every refusal cleaning up."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.test_uploads import BOUNDARY, form
from wsplugin._uploadparts import Upload
from wsplugin._uploadsink import (
    UploadFailed,
    UploadSink,
    apply_outcome,
    peer_host,
    unlink_quietly,
)
from wsplugin.errors import UploadRefused
from wsplugin.uploads import UploadResource


class Request:
    """What the sink uses of a request: its path and client, for the log."""

    path = b"/upload"

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", "203.0.113.9", 40000)


class Transport:
    """The connection's producer side: paused while a handler is pending."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")


def outcome(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    return out[0] if out else None


class SinkTestCase(SynchronousTestCase):
    """A sink on an upload directory of its own."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        self.transport = Transport()
        self.seen: list[tuple[Any, ...]] = []

    def sink(self, events: dict[str, Any] | None = None, **limits: Any) -> UploadSink:
        resource = UploadResource(self.directory, None, **limits)
        return UploadSink(
            resource, events or {}, Request(), BOUNDARY.encode(), self.transport
        )

    def files(self) -> list[str]:
        """Everything in the directory, temporary files included."""
        return sorted(os.listdir(self.directory))

    def upload(self, sink: UploadSink, body: bytes, piece: int = 0) -> Any:
        """Feed ``body`` (in pieces of ``piece`` bytes), end: the outcome."""
        pieces = (
            [body[i : i + piece] for i in range(0, len(body), piece)]
            if piece
            else [body]
        )
        for chunk in pieces:
            sink.write(chunk)
        return outcome(sink.end())

    def failed(self, result: Any, status: int) -> str:
        self.assertIsInstance(result, Failure)
        self.assertTrue(result.check(UploadFailed))
        self.assertEqual(result.value.status, status, result.value.message)
        return result.value.message


class SavingTests(SinkTestCase):
    """Files and fields of a complete body."""

    def test_saved(self) -> None:
        """Files get generated names, fields their values; the body reads
        as empty to Twisted; no temporary file is left."""
        sink = self.sink()
        result = self.upload(
            sink, form(("note", None, "héllo".encode()), ("doc", "a.txt", b"abc"))
        )
        self.assertIsInstance(result, Upload)
        self.assertEqual(result.fields, {"note": ["héllo"]})
        [saved] = result.files
        self.assertEqual((saved.field, saved.filename, saved.size), ("doc", "a.txt", 3))
        self.assertRegex(saved.name, r"^[0-9a-f]{32}$")
        self.assertEqual(Path(saved.path).read_bytes(), b"abc")
        self.assertEqual(self.files(), [saved.name])
        self.assertEqual((sink.read(), sink.tell(), sink.seek(0)), (b"", 0, 0))

    def test_any_pieces(self) -> None:
        """A body arriving a byte at a time gives the same upload."""
        body = form(("f", None, b"v"), ("doc", "a.txt", b"x" * 300))
        result = self.upload(self.sink(), body, piece=1)
        self.assertEqual(result.fields, {"f": ["v"]})
        self.assertEqual(result.files[0].size, 300)

    def test_chosen_and_skipped(self) -> None:
        """before_save_file names a file, or skips it (False); an empty file
        input is skipped; events come in order."""

        def before(request: Any, part: Any) -> Any:
            self.seen.append(("before", part.filename))
            return {"keep.txt": "kept.txt", "drop.txt": False}.get(part.filename)

        def field(request: Any, name: str, value: str) -> None:
            self.seen.append(("field", name, value))

        sink = self.sink({"before_save_file": before, "on_field": field})
        result = self.upload(
            sink,
            form(
                ("a", "keep.txt", b"1"),
                ("n", None, b"v"),
                ("b", "drop.txt", b"2"),
                ("c", "", b""),
            ),
        )
        self.assertEqual([f.name for f in result.files], ["kept.txt"])
        self.assertEqual([p.filename for p in result.skipped], ["drop.txt", ""])
        self.assertEqual(self.files(), ["kept.txt"])
        self.assertEqual(
            self.seen,
            [
                ("before", "keep.txt"),
                ("field", "n", "v"),
                ("before", "drop.txt"),
                ("before", ""),
            ],
        )

    def test_rollback(self) -> None:
        """rollback() removes what the request saved."""
        sink = self.sink()
        result = self.upload(sink, form(("a", "a", b"1"), ("b", "b", b"2")))
        self.assertEqual(len(self.files()), 2)
        sink.rollback()
        self.assertEqual((self.files(), result.files), ([], []))


class AsyncTests(SinkTestCase):
    """A handler answering later holds the parts behind it."""

    def test_deferred_pauses_reading(self) -> None:
        """While before_save_file's Deferred is pending, the transport is
        paused and the later parts wait; firing it goes on, in order."""
        answers: list[Deferred[Any]] = []

        def before(request: Any, part: Any) -> Deferred[Any]:
            answers.append(Deferred())
            return answers[-1]

        def field(request: Any, name: str, value: str) -> None:
            self.seen.append(("field", name))

        sink = self.sink({"before_save_file": before, "on_field": field})
        sink.write(form(("doc", "a.txt", b"abc"), ("later", None, b"v")))
        self.assertEqual(self.transport.calls, ["pause"])
        idle = sink.idle()
        self.assertFalse(idle.called)
        self.assertEqual(self.seen, [])
        answers[0].callback("named.txt")
        self.assertEqual(self.transport.calls, ["pause", "resume"])
        self.assertTrue(idle.called)
        self.assertEqual(self.seen, [("field", "later")])
        result = outcome(sink.end())
        self.assertEqual([f.name for f in result.files], ["named.txt"])

    def test_already_fired_and_coroutines(self) -> None:
        """A Deferred that already fired costs no pause; a coroutine works."""

        async def field(request: Any, name: str, value: str) -> None:
            self.seen.append((name, value))

        sink = self.sink(
            {"before_save_file": lambda r, p: succeed("x.txt"), "on_field": field}
        )
        result = self.upload(sink, form(("doc", "a", b"1"), ("n", None, b"v")))
        self.assertEqual(self.transport.calls, [])
        self.assertEqual(self.seen, [("n", "v")])
        self.assertEqual(result.files[0].name, "x.txt")
        self.assertTrue(sink.idle().called)

    def test_client_gone_while_pending(self) -> None:
        """The client leaving while a handler is pending: nothing is kept,
        the transport is not resumed, the end fails with 499."""
        answer: Deferred[Any] = Deferred()
        sink = self.sink({"before_save_file": lambda r, p: answer})
        sink.write(form(("doc", "a.txt", b"abc")))
        end = sink.end()
        sink.close()
        self.failed(outcome(end), 499)
        answer.callback(None)
        self.assertEqual(self.transport.calls, ["pause"])
        self.assertEqual(self.files(), [])


class RefusalTests(SinkTestCase):
    """Every refusal answers a status and leaves no file."""

    def test_limits(self) -> None:
        """Too many files or fields, a file or field too large: 413."""
        cases = [
            (
                {"max_files": 1},
                form(("a", "a", b"1"), ("b", "b", b"2")),
                "more than 1 files",
            ),
            (
                {"max_fields": 1},
                form(("a", None, b"1"), ("b", None, b"2")),
                "more than 1 form fields",
            ),
            (
                {"max_field_size": 3},
                form(("a", None, b"1234")),
                "field 'a' is over 3 bytes",
            ),
            (
                {"max_file_size": 3},
                form(("ok", "ok", b"1"), ("f", "big.bin", b"1234")),
                "file 'big.bin' in field 'f' is over 3 bytes",
            ),
        ]
        for limits, body, message in cases:
            self.assertEqual(
                self.failed(self.upload(self.sink(**limits), body), 413), message
            )
            self.assertEqual(self.files(), [], limits)

    def test_malformed_and_not_utf8(self) -> None:
        """A body that is not the multipart it says, or a field that is
        not UTF-8, is 400."""
        self.failed(self.upload(self.sink(), b"nonsense"), 400)
        message = self.failed(self.upload(self.sink(), form(("n", None, b"\xff"))), 400)
        self.assertEqual(message, "field 'n' is not UTF-8")
        cut = form(("doc", "a.txt", b"abc"))[:-10]
        self.failed(self.upload(self.sink(), cut), 400)
        self.assertEqual(self.files(), [])

    def test_handler_refuses_or_fails(self) -> None:
        """UploadRefused from a handler is its status; any other exception
        is 500 (logged); a disk full is 507."""

        def refuse(request: Any, name: str, value: str) -> None:
            raise UploadRefused(422, "no thanks")

        def crash(request: Any, name: str, value: str) -> None:
            raise KeyError("bug")

        def full(request: Any, name: str, value: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        body = form(("doc", "a.txt", b"abc"), ("n", None, b"v"))
        for handler, status in ((refuse, 422), (crash, 500), (full, 507)):
            self.failed(self.upload(self.sink({"on_field": handler}), body), status)
            self.assertEqual(self.files(), [])
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_bad_names_from_the_handler(self) -> None:
        """A name that is not one plain component, or an answer that is no
        name, is 500 and nothing is saved."""
        for bad in ("../x", ".hidden", "a/b", 42):
            sink = self.sink({"before_save_file": lambda r, p, bad=bad: bad})
            self.failed(self.upload(sink, form(("f", "a.txt", b"x"))), 500)
            self.assertEqual(self.files(), [])

    def test_existing_name_taken_back(self) -> None:
        """A chosen name that exists is 409; the files already given their
        names by the request are taken back; the old file is kept."""
        (self.directory / "taken.txt").write_bytes(b"original")
        sink = self.sink({"before_save_file": lambda r, p: p.filename})
        body = form(("a", "first.txt", b"1"), ("b", "taken.txt", b"new"))
        message = self.failed(self.upload(sink, body), 409)
        self.assertEqual(message, "a file named 'taken.txt' already exists")
        self.assertEqual(self.files(), ["taken.txt"])
        self.assertEqual((self.directory / "taken.txt").read_bytes(), b"original")

    def test_after_a_refusal(self) -> None:
        """The rest of the body is dropped and reading resumes, so that the
        client gets the answer."""
        answer: Deferred[Any] = Deferred()
        sink = self.sink({"before_save_file": lambda r, p: answer}, max_fields=0)
        sink.write(form(("doc", "a.txt", b"abc"), ("n", None, b"v")))
        answer.callback(None)
        self.assertEqual(self.transport.calls, ["pause", "resume"])
        sink.write(b"more data after the refusal")
        self.failed(outcome(sink.end()), 413)
        self.assertEqual(self.files(), [])

    def test_close_after_commit_keeps_files(self) -> None:
        """Closing a committed upload leaves its files; closing twice is
        harmless."""
        sink = self.sink()
        self.upload(sink, form(("a", "a", b"1")))
        sink.close()
        sink.close()
        self.assertEqual(len(self.files()), 1)


class HelperTests(SynchronousTestCase):
    """The small functions the sink and the resource share."""

    def test_apply_outcome(self) -> None:
        """A value goes to ``then``; a Failure is raised instead."""
        got: list[Any] = []
        apply_outcome(got.append, "name")
        self.assertEqual(got, ["name"])
        self.assertRaises(
            ValueError, apply_outcome, got.append, Failure(ValueError("x"))
        )
        self.assertEqual(got, ["name"])

    def test_unlink_quietly(self) -> None:
        """A file is removed; a missing one is not an error."""
        path = Path(self.mktemp())
        path.write_bytes(b"x")
        unlink_quietly(str(path))
        self.assertFalse(path.exists())
        unlink_quietly(str(path))

    def test_peer_host(self) -> None:
        """The client's host, or the address as it is (a UNIX socket)."""
        self.assertEqual(peer_host(Request()), "203.0.113.9")

        class Unix:
            """A request over a UNIX socket."""

            def getClientAddress(self) -> str:
                return "/run/ws.sock"

        self.assertEqual(peer_host(Unix()), "/run/ws.sock")

    def test_upload_failed(self) -> None:
        """UploadFailed carries its status and message."""
        e = UploadFailed(413, "too big")
        self.assertEqual((e.status, e.message), (413, "too big"))
