"""Streamed ``multipart/form-data`` uploads to a directory (sgc ``OnHTTPUpload*``).

:class:`UploadResource` is a ``twisted.web`` resource that takes an HTML
form's files and fields as the body arrives: file content goes straight to
disk, in pieces of the size the socket delivers, so a 1 GiB file costs the
server a few hundred KiB of memory, not a GiB (measured: see
docs/web.md, "Uploads"). It carries its own body limits, so the server's
1 MiB ``max_request_body`` still holds for every other resource::

    from wsplugin.uploads import UploadResource

    uploads = UploadResource("/srv/uploads", max_request_body=200 * MiB)
    root.putChild(b"upload", uploads)
    server = WebSocketServer(Chat(), http=root)

The application follows and steers an upload with a handler whose methods
are all optional (sgc's upload events):

=========================================  ==========================================
``before_upload(request)``                 head received, before any body byte
                                           (``OnHTTPUploadBeforeCreatePostStream``)
``before_save_file(request, part)``        a file part starts, before its file is
                                           created: choose the name, skip, refuse
                                           (``OnHTTPUploadBeforeSaveFile``)
``on_field(request, name, value)``         a non-file field is complete
                                           (``OnHTTPUploadReadInput``)
``after_save_file(request, saved)``        a file is saved under its final name
                                           (``OnHTTPUploadAfterSaveFile``)
``on_complete(request, upload)``           everything is saved: the response
=========================================  ==========================================

An upload is all or nothing: files are written under hidden temporary names
(``.upload-*.part``) and get their final names only once the whole body has
arrived and parsed; a body that is cut short, over a limit, malformed or
refused leaves no file behind.

File names: by default each file is saved under a generated name (32
hexadecimal characters) and the client's name is kept as metadata
(:attr:`SavedFile.filename`); ``before_save_file`` may return a name of its
own choosing, for instance ``safe_filename(part.filename)`` to keep a
sanitized form of the client's. A name returned by the application must be
one plain path component (no ``/``, ``\\``, NUL, control characters, no
leading dot, at most 255 bytes), and a file that exists is never replaced
(409).
"""

from __future__ import annotations

import json
import os
from inspect import isawaitable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wsplugin._events import as_deferred, bind_events
from wsplugin._multipart import MultipartError, boundary_of
from wsplugin._uploadparts import FilePart, SavedFile, Upload, safe_filename
from wsplugin._uploadsink import UploadFailed, UploadSink, peer_host
from wsplugin.config import MiB
from wsplugin.errors import ConfigError, UploadRefused

__all__ = [
    "FilePart",
    "SavedFile",
    "Upload",
    "UploadRefused",
    "UploadResource",
    "safe_filename",
]

_log = Logger()

KiB = 1024
_EVENTS = (
    "before_upload",
    "before_save_file",
    "on_field",
    "after_save_file",
    "on_complete",
)
_READ_SIZE = 64 * KiB  # pieces read from a spooled body (the fallback)


class UploadResource(Resource):
    """A ``twisted.web`` resource that saves ``multipart/form-data`` uploads.

    ``POST`` a form to it (``<form method="post" enctype="multipart/form-data">``,
    ``curl -F file=@big.iso``); each file part is streamed to ``directory``
    and each other field is collected. The default answer is ``200`` with a
    JSON summary (:meth:`Upload.summary`); ``on_complete`` may answer
    otherwise. Other methods get 405 (a ``GET`` that should show a form is
    yours to add: subclass and define ``render_GET``).

    On wsplugin's site (``WebSocketServer(http=...)``, or
    :class:`~wsplugin.web.BoundedSite` with
    :class:`~wsplugin.web.BoundedHTTPChannel`) the body is parsed as it
    arrives and never stored whole, in memory or in a temporary file; its
    limits apply from the request head. On a plain ``twisted.web`` ``Site``
    the resource works too, but Twisted has then already stored the body in
    a temporary file and, for a form, parsed it whole in memory into
    ``request.args``: use it there for small bodies only.

    Args:
        directory: Where files are saved; it must exist. Temporary files
            (``.upload-*.part``) are written there too, so that the final
            rename is atomic.
        handler: An object with any of the methods in the module docstring.
            ``before_upload``, ``before_save_file`` and ``on_field`` run as
            the body arrives; the others once it is complete. Each may
            return a value, a Deferred or a coroutine (except
            ``before_upload``, which answers before the body is read and
            must return at once); while one is pending, reading from the
            client is paused.
        max_request_body: Largest body of one request, in bytes (100 MiB; 0
            for no limit). Over it: 413, as for any resource (see
            :class:`~wsplugin.web.SiteRequest`): this resource raises the
            server's ``max_request_body`` for itself only.
        request_body_timeout: Seconds for the whole body (900: 100 MiB at
            1 Mbit/s); 408 after it. 0 for no limit.
        max_file_size: Largest single file, in bytes (None: only
            ``max_request_body`` bounds it). Over it: 413 with a message;
            the partial file is removed at once.
        max_files: Most file parts in one request (100).
        max_fields: Most non-file fields in one request (100).
        max_field_size: Largest non-file field value (64 KiB). Fields are
            kept in memory: at most ``max_fields * max_field_size`` bytes
            (6.4 MiB by default) per request.
        max_part_header: Largest header block of one part (16 KiB).
    """

    isLeaf = True

    def __init__(
        self,
        directory: str | os.PathLike[str],
        handler: Any = None,
        *,
        max_request_body: int = 100 * MiB,
        request_body_timeout: float = 900.0,
        max_file_size: int | None = None,
        max_files: int = 100,
        max_fields: int = 100,
        max_field_size: int = 64 * KiB,
        max_part_header: int = 16 * KiB,
    ) -> None:
        super().__init__()
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise ConfigError(f"upload directory {directory!r} is not a directory")
        for name, value in (
            ("max_request_body", max_request_body),
            ("max_file_size", 0 if max_file_size is None else max_file_size),
            ("max_files", max_files),
            ("max_fields", max_fields),
            ("max_field_size", max_field_size),
            ("max_part_header", max_part_header),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an int >= 0, not {value!r}")
        if request_body_timeout < 0:
            raise ConfigError("request_body_timeout must be >= 0")
        self.directory = os.path.realpath(directory)
        self.handler = handler
        self.max_request_body = max_request_body
        self.request_body_timeout = request_body_timeout
        self.max_file_size = max_file_size or 0
        self.max_files = max_files
        self.max_fields = max_fields
        self.max_field_size = max_field_size
        self.max_part_header = max_part_header
        self._events = bind_events(handler, _EVENTS)

    def open_request_body(self, request: Any, length: int | None) -> Any:
        """Called by wsplugin's site once the request head is complete:
        check it, and return the object the body streams into, or
        ``(status, reason)`` to refuse before any body byte is read."""
        checked = self._check_head(request, length)
        if not isinstance(checked, bytes):
            return checked
        channel = getattr(request, "channel", None)
        producer = getattr(channel, "transport", None)
        if producer is None and hasattr(channel, "pauseProducing"):
            producer = channel  # an HTTP/2 stream: pausing it holds its body
        return UploadSink(self, self._events, request, checked, producer)

    def _check_head(
        self, request: Any, length: int | None
    ) -> bytes | tuple[int, str] | None:
        """The body's boundary; None for a bodiless non-POST (405 from
        ``render``); ``(status, reason)`` to refuse."""
        if request.method != b"POST":
            if length == 0:
                return None  # answered by render (405)
            return 405, "only POST uploads here"
        content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
        try:
            boundary = boundary_of(content_type)
        except MultipartError as e:
            return e.status, str(e)
        before = self._events.get("before_upload")
        if before is not None:
            try:
                answer = before(request)
            except UploadRefused as e:
                return e.status, e.message
            except Exception:
                _log.failure("before_upload raised", Failure())
                return 500, "before_upload raised"
            if isinstance(answer, Deferred) or isawaitable(answer):
                _log.error(
                    "before_upload must answer at once (True, False or None), "
                    "not with {answer!r}",
                    answer=answer,
                )
                if isinstance(answer, Deferred):
                    answer.addErrback(lambda _: None)
                elif hasattr(answer, "close"):
                    answer.close()
                return 500, "before_upload returned a Deferred"
            if answer is False:
                return 403, "refused by before_upload"
        return boundary

    def render(self, request: Any) -> Any:
        """POST saves; another method goes to ``render_<METHOD>`` if a
        subclass has one, else gets 405 with ``Allow: POST``."""
        name = request.method.decode("ascii", errors="replace")
        method = getattr(self, "render_" + name, None)
        if method is not None and name.isalpha() and name.isupper():
            return method(request)
        request.setHeader(b"allow", b"POST")
        _answer(request, 405, {"error": f"{name} is not allowed here: POST a form"})
        return NOT_DONE_YET

    def render_POST(self, request: Any) -> Any:
        sink = request.content
        spooled = None
        if not isinstance(sink, UploadSink):
            # not on wsplugin's site: Twisted stored the body; parse it from
            # its file, in pieces
            spooled = sink
            checked = self._check_head(request, None)
            if isinstance(checked, tuple):
                status, message = checked
                _log.info(
                    "upload to {path} from {peer} refused with {status}: {message}",
                    path=request.path.decode("latin-1"),
                    peer=peer_host(request),
                    status=status,
                    message=message,
                )
                _answer(request, status, {"error": message})
                return NOT_DONE_YET
            assert isinstance(checked, bytes)  # a POST, so never None
            # no transport to pause: the body is all here
            sink = UploadSink(self, self._events, request, checked, None)
        d = Deferred.fromCoroutine(self._respond(request, sink, spooled))
        d.addErrback(_crashed, request, sink)
        return NOT_DONE_YET

    async def _respond(self, request: Any, sink: UploadSink, spooled: Any) -> None:
        try:
            if spooled is not None:
                spooled.seek(0)
                while piece := spooled.read(_READ_SIZE):
                    sink.write(piece)
                    await sink.idle()
            upload = await sink.end()
        except UploadFailed as e:
            _answer(request, e.status, {"error": e.message})
            return
        try:
            for saved in upload.files:
                method = self._events.get("after_save_file")
                if method is not None:
                    await as_deferred(method(request, saved))
            body: Any = None
            method = self._events.get("on_complete")
            if method is not None:
                body = await as_deferred(method(request, upload))
        except UploadRefused as e:
            sink.rollback()
            _log.info(
                "upload to {path} from {peer} refused with {status}: {message}",
                path=request.path.decode("latin-1"),
                peer=peer_host(request),
                status=e.status,
                message=e.message,
            )
            _answer(request, e.status, {"error": e.message})
            return
        except Exception:
            sink.rollback()
            _log.failure("upload handler failed", Failure())
            _answer(request, 500, {"error": "the upload could not be handled"})
            return
        if request.channel is None:
            return  # the client left; its files are saved
        if body is None:
            _answer(request, 200, upload.summary())
        elif isinstance(body, (dict, list)):
            _answer(request, request.code, body)
        else:
            if isinstance(body, str):
                data = body.encode("utf-8")
            elif isinstance(body, (bytes, bytearray, memoryview)):
                data = bytes(body)
            else:
                raise TypeError(
                    "on_complete must return None, bytes, str, a dict or a list, "
                    f"not {type(body).__name__}"
                )
            request.setHeader(b"content-length", b"%d" % len(data))
            request.write(data)
            request.finish()


def _crashed(failure: Failure, request: Any, sink: UploadSink) -> None:
    """A bug on the way: logged, the request's files removed, 500 (or the
    connection closed when the answer had already begun)."""
    _log.failure("upload failed", failure)
    sink.rollback()
    sink.close()
    if request.channel is None or request.finished:
        return
    if request.startedWriting:
        request.loseConnection()
    else:
        _answer(request, 500, {"error": "the upload could not be handled"})


def _answer(request: Any, status: int, payload: Any) -> None:
    if request.channel is None:
        return  # the client is gone (Twisted sets channel to None then)
    body = json.dumps(payload).encode("utf-8") + b"\n"
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
