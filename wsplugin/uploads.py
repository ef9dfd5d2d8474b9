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

import errno
import json
import os
import tempfile
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wsplugin._events import as_deferred, bind_events
from wsplugin._multipart import (
    Done,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)
from wsplugin.config import MiB
from wsplugin.errors import ConfigError, WSPluginError

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
_TEMP_PREFIX = ".upload-"
_TEMP_SUFFIX = ".part"
_READ_SIZE = 64 * KiB  # pieces read from a spooled body (the fallback)


class UploadRefused(WSPluginError):
    """Raised by an upload handler's method to refuse the whole upload.

    Args:
        status: The HTTP status to answer with (400-599; 403 by default).
        message: Sent to the client as ``{"error": message}`` (so no secrets
            in it) and logged.

    Raised from ``before_upload`` the answer comes before any body byte is
    read (with an empty body: the message is then only logged); from any
    other method, files already written for the request are removed.
    """

    def __init__(self, status: int = 403, message: str = "upload refused") -> None:
        if not 400 <= status <= 599:
            raise ConfigError(
                f"an upload refusal needs a 4xx or 5xx status, not {status!r}"
            )
        super().__init__(status, message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class FilePart:
    """A file part whose content is about to arrive (``before_save_file``).

    Attributes:
        field: The form field's name.
        filename: The client's file name exactly as sent (``""`` when the
            form's file input was left empty). Untrusted: it may hold ``../``,
            an absolute path, a NUL byte; never use it as a path, see
            :func:`safe_filename`.
        content_type: The part's ``Content-Type`` as sent, or None. Also
            untrusted: check the content itself when it matters.
        headers: All the part's headers, names lower-cased.
    """

    field: str
    filename: str
    content_type: str | None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SavedFile:
    """A file saved under its final name (``after_save_file``, :class:`Upload`).

    Attributes:
        field: The form field's name.
        filename: The client's file name, as sent (metadata only).
        name: The name it is saved under, in the upload directory.
        path: The full path of the saved file.
        size: Its size in bytes.
        content_type: The part's ``Content-Type`` as sent, or None.
    """

    field: str
    filename: str
    name: str
    path: str
    size: int
    content_type: str | None


@dataclass
class Upload:
    """What one request uploaded (``on_complete``).

    Attributes:
        files: The saved files, in the order of the form.
        fields: The non-file fields: name -> values, in order.
        skipped: File parts not saved (``before_save_file`` returned False,
            or an empty file input).
    """

    files: list[SavedFile] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)
    skipped: list[FilePart] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The default JSON answer: the files and the field names (field
        values are not echoed back)."""
        return {
            "files": [
                {
                    "field": f.field,
                    "filename": f.filename,
                    "name": f.name,
                    "size": f.size,
                    "content_type": f.content_type,
                }
                for f in self.files
            ],
            "fields": list(self.fields),
            "skipped": [
                {"field": p.field, "filename": p.filename} for p in self.skipped
            ],
        }


def safe_filename(name: str | None, max_bytes: int = 255) -> str | None:
    """A file name made from a client's ``name`` that is safe to save under,
    or None when nothing usable is left.

    The last path component is kept (after ``/`` or ``\\``: old browsers
    send ``C:\\Users\\me\\file.txt``), Unicode is normalized (NFC), control
    and format characters are removed (NUL, newlines, and the right-to-left
    override that makes ``exe.txt`` look like ``txt.exe``), leading dots and
    surrounding spaces are stripped (no hidden files, no ``..``), and the
    name is cut to ``max_bytes`` bytes of UTF-8, keeping its extension.

    ``safe_filename("../../etc/passwd") == "passwd"``,
    ``safe_filename("..") is None``.
    """
    if not name:
        return None
    text = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if not unicodedata.category(c).startswith("C"))
    text = text.strip().lstrip(".").strip()
    if not text:
        return None
    encoded = text.encode("utf-8")
    if len(encoded) > max_bytes:
        stem, dot, ext = text.rpartition(".")
        if not dot or len(ext.encode()) > 16 or not stem:
            stem, ext, dot = text, "", ""
        room = max_bytes - len((dot + ext).encode())
        stem = stem.encode("utf-8")[:room].decode("utf-8", errors="ignore").rstrip()
        text = stem + dot + ext
    return text or None


def _check_name(name: str) -> str:
    """``name`` if it is one plain path component; ValueError otherwise."""
    problem = None
    if not isinstance(name, str) or not name:
        problem = "not a non-empty string"
    elif name.startswith("."):
        problem = "starts with a dot"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator"
    elif any(unicodedata.category(c) == "Cc" for c in name):
        problem = "holds a control character"
    elif len(name.encode("utf-8", errors="surrogatepass")) > 255:
        problem = "is over 255 bytes"
    if problem is not None:
        raise ValueError(f"unsafe file name {name!r}: it {problem}")
    return name


@dataclass
class _File:
    """A file part being received."""

    part: FilePart
    name: str | None = None  # chosen by before_save_file; None: generated
    temp: str | None = None  # its temporary path; None: skipped
    handle: Any = None
    size: int = 0


@dataclass
class _Field:
    name: str
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


class _Failed(Exception):
    """Internal: the upload fails with ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class _UploadSink:
    """``request.content`` of an upload: takes the body as it arrives.

    Twisted writes each piece of the body here (through
    :meth:`wsplugin.web.SiteRequest.handleContentChunk`, which enforces the
    resource's ``max_request_body`` first) and closes it when the request
    ends or the connection is lost. The content goes to files, so there is
    nothing to read back: ``read`` returns ``b""`` and ``tell`` 0, which also
    keeps Twisted from parsing the form itself into ``request.args`` (which
    it would do by reading the whole body into memory).

    A handler method that returns a Deferred or coroutine holds the parts
    after it until it fires; meanwhile reading from the client is paused, so
    at most one socket read (64 KiB) waits in memory.
    """

    def __init__(
        self,
        resource: UploadResource,
        request: Any,
        boundary: bytes,
        transport: Any,
    ) -> None:
        self._resource = resource
        self._request = request
        self._transport = transport
        self._parser = MultipartParser(
            boundary, max_header_size=resource.max_part_header
        )
        self._events: deque[Any] = deque()
        self._waiting = False
        self._paused: Any = None
        self._error: _Failed | None = None
        self._closed = False
        self._ended = False
        self._committed = False
        self._end: Deferred[Upload] | None = None
        self._file: _File | None = None
        self._field: _Field | None = None
        self._pending: list[_File] = []
        self._files = 0
        self._fields = 0
        self._idle: list[Deferred[None]] = []
        self.upload = Upload()

    # -- the file surface Twisted uses ---------------------------------------

    def write(self, data: bytes) -> None:
        """A piece of the body, as it arrives."""
        if self._error is not None or self._closed:
            return  # dropped: the answer is an error (or nobody is left)
        try:
            self._events.extend(self._parser.feed(data))
        except MultipartError as e:
            self._fail(_Failed(e.status, str(e)))
            return
        self._pump()

    def close(self) -> None:
        """The request is over; an upload not yet committed leaves no file."""
        if self._closed:
            return
        self._closed = True
        if not self._committed:
            self._discard()
            if self._end is not None and not self._end.called:
                self._end.errback(_Failed(499, "the client went away"))
        self._release_idle()

    def read(self, size: int = -1) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0

    # -- driving ---------------------------------------------------------------

    def end(self) -> Deferred[Upload]:
        """The body is complete: fires with the :class:`Upload` once every
        part is handled and every file has its final name, or fails with
        the reason the upload is refused."""
        self._ended = True
        self._end = Deferred()
        if self._error is None and not self._closed:
            try:
                self._parser.close()
            except MultipartError as e:
                self._fail(_Failed(e.status, str(e)))
        self._finish_if_done()
        return self._end

    def idle(self) -> Deferred[None]:
        """Fires once no handler method is pending (feeding a spooled body)."""
        d: Deferred[None] = Deferred()
        if self._waiting and self._error is None and not self._closed:
            self._idle.append(d)
        else:
            d.callback(None)
        return d

    def _pump(self) -> None:
        while (
            self._events
            and not self._waiting
            and self._error is None
            and not self._closed
        ):
            event = self._events.popleft()
            self._guarded(self._handle, event)
        if self._waiting and not self._ended:
            self._pause()  # until the handler's Deferred fires
        self._finish_if_done()

    def _guarded(self, func: Callable[..., None], *args: Any) -> None:
        try:
            func(*args)
        except _Failed as e:
            self._fail(e)
        except UploadRefused as e:
            self._fail(_Failed(e.status, e.message))
        except OSError as e:
            _log.failure(
                "upload to {directory}: cannot write",
                Failure(),
                directory=self._resource.directory,
            )
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            self._fail(
                _Failed(507, "no space left for the upload")
                if full
                else _Failed(500, "the upload could not be stored")
            )
        except Exception:
            _log.failure("upload handler failed", Failure())
            self._fail(_Failed(500, "the upload could not be handled"))

    def _call(self, name: str, then: Callable[[Any], None], *args: Any) -> None:
        """Call the handler's ``name`` and pass its answer to ``then``, now
        or, for a Deferred or coroutine, when it fires (holding the parts
        behind it meanwhile)."""
        method = self._resource._events.get(name)
        result = method(self._request, *args) if method is not None else None
        if not isinstance(result, Deferred) and not isawaitable(result):
            then(result)
            return
        d = as_deferred(result)
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        if outcome:  # it had already fired
            _apply(then, outcome[0])
            return
        self._waiting = True

        def fired(_: None) -> None:
            self._waiting = False
            if self._error is None and not self._closed:
                self._guarded(_apply, then, outcome[0])
            self._resume()
            self._release_idle()
            self._pump()

        d.addCallback(fired)

    def _pause(self) -> None:
        if self._paused is None and self._transport is not None:
            self._paused = self._transport
            self._transport.pauseProducing()

    def _resume(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not self._closed:
            paused.resumeProducing()

    def _release_idle(self) -> None:
        waiting, self._idle = self._idle, []
        for d in waiting:
            d.callback(None)

    # -- the parts ------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        if isinstance(event, PartData):
            if self._file is not None:
                self._file_data(self._file, event.data)
            elif self._field is not None:
                self._field_data(self._field, event.data)
        elif isinstance(event, PartStart):
            if event.filename is None:
                self._start_field(event)
            else:
                self._start_file(event)
        elif isinstance(event, PartEnd):
            if self._file is not None:
                self._end_file(self._file)
            elif self._field is not None:
                self._end_field(self._field)
        elif isinstance(event, Done):
            pass

    def _start_field(self, event: PartStart) -> None:
        self._fields += 1
        limit = self._resource.max_fields
        if self._fields > limit:
            raise _Failed(413, f"more than {limit} form fields")
        self._field = _Field(event.name)

    def _field_data(self, current: _Field, data: bytes) -> None:
        current.size += len(data)
        limit = self._resource.max_field_size
        if current.size > limit:
            raise _Failed(413, f"field {current.name!r} is over {limit} bytes")
        current.chunks.append(data)

    def _end_field(self, current: _Field) -> None:
        self._field = None
        try:
            value = b"".join(current.chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise _Failed(400, f"field {current.name!r} is not UTF-8") from None
        self.upload.fields.setdefault(current.name, []).append(value)
        self._call("on_field", lambda _: None, current.name, value)

    def _start_file(self, event: PartStart) -> None:
        self._files += 1
        limit = self._resource.max_files
        if self._files > limit:
            raise _Failed(413, f"more than {limit} files")
        part = FilePart(
            field=event.name,
            filename=event.filename or "",
            content_type=event.content_type,
            headers=event.headers,
        )
        current = _File(part)
        self._file = current
        self._call("before_save_file", lambda answer: self._open(current, answer), part)

    def _open(self, current: _File, answer: Any) -> None:
        if answer is False:
            return  # skipped: its content is dropped
        if isinstance(answer, str):
            try:
                current.name = _check_name(answer)
            except ValueError as e:
                _log.error("before_save_file returned an {problem}", problem=str(e))
                raise _Failed(500, "the upload could not be handled") from None
        elif answer is not None and answer is not True:
            _log.error(
                "before_save_file must return a name, None or False, not {answer!r}",
                answer=answer,
            )
            raise _Failed(500, "the upload could not be handled")
        fd, current.temp = tempfile.mkstemp(
            prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=self._resource.directory
        )
        current.handle = os.fdopen(fd, "wb")
        self._pending.append(current)

    def _file_data(self, current: _File, data: bytes) -> None:
        current.size += len(data)
        limit = self._resource.max_file_size
        if limit and current.size > limit:
            raise _Failed(
                413,
                f"file {current.part.filename!r} in field {current.part.field!r} "
                f"is over {limit} bytes",
            )
        if current.handle is not None:
            current.handle.write(data)

    def _end_file(self, current: _File) -> None:
        self._file = None
        if current.handle is not None:
            current.handle.close()
            current.handle = None
        if current.temp is None or (current.part.filename == "" and not current.size):
            # skipped, or an empty file input (what browsers send for it)
            if current.temp is not None:
                _unlink(current.temp)
                self._pending.remove(current)
            self.upload.skipped.append(current.part)

    # -- the end ----------------------------------------------------------------

    def _finish_if_done(self) -> None:
        end = self._end
        if end is None or end.called:
            return
        if self._error is not None:
            end.errback(self._error)
        elif not self._events and not self._waiting and not self._closed:
            try:
                self._commit()
            except _Failed as e:
                self._fail(e)
                return
            end.callback(self.upload)

    def _commit(self) -> None:
        """Give every file its final name, never replacing a file; on any
        failure the names already given are taken back."""
        directory = self._resource.directory
        done: list[str] = []
        try:
            for current in self._pending:
                name = current.name or uuid.uuid4().hex
                final = os.path.join(directory, name)
                # O_EXCL reserves the name (and refuses a planted symlink);
                # replace() then swaps the content in atomically
                fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.close(fd)
                done.append(final)
                assert current.temp is not None
                os.replace(current.temp, final)
                current.temp = None
                self.upload.files.append(
                    SavedFile(
                        field=current.part.field,
                        filename=current.part.filename,
                        name=name,
                        path=final,
                        size=current.size,
                        content_type=current.part.content_type,
                    )
                )
        except FileExistsError:
            for path in done:
                _unlink(path)
            self.upload.files.clear()
            raise _Failed(409, f"a file named {name!r} already exists") from None
        except OSError as e:
            for path in done:
                _unlink(path)
            self.upload.files.clear()
            _log.error(
                "upload to {directory}: cannot save: {error}",
                directory=directory,
                error=e,
            )
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            raise _Failed(
                507 if full else 500,
                "no space left for the upload"
                if full
                else "the upload could not be stored",
            ) from None
        self._pending = []
        self._committed = True

    def rollback(self) -> None:
        """Remove the files this request saved (a later step failed)."""
        for saved in self.upload.files:
            _unlink(saved.path)
        self.upload.files.clear()

    def _fail(self, error: _Failed) -> None:
        if self._error is not None:
            return
        self._error = error
        self._events.clear()
        self._discard()
        _log.info(
            "upload to {path} from {peer} refused with {status}: {message}",
            path=self._request.path.decode("latin-1"),
            peer=_peer(self._request),
            status=error.status,
            message=error.message,
        )
        # the rest of the body is read and dropped (bounded by the
        # resource's max_request_body and request_body_timeout), so that
        # the client gets the answer instead of a reset connection
        self._waiting = False
        self._resume()
        self._release_idle()
        self._finish_if_done()

    def _discard(self) -> None:
        for current in [*self._pending, *([self._file] if self._file else [])]:
            if current.handle is not None:
                current.handle.close()
                current.handle = None
            if current.temp is not None:
                _unlink(current.temp)
                current.temp = None
        self._pending = []
        self._file = None


def _apply(then: Callable[[Any], None], outcome: Any) -> None:
    if isinstance(outcome, Failure):
        outcome.raiseException()
    then(outcome)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _peer(request: Any) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


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
        channel = getattr(request, "channel", None)
        return _UploadSink(self, request, boundary, getattr(channel, "transport", None))

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
        if not isinstance(sink, _UploadSink):
            # not on wsplugin's site: Twisted stored the body; parse it from
            # its file, in pieces
            spooled = sink
            opened = self.open_request_body(request, None)
            if isinstance(opened, tuple):
                status, message = opened
                _log.info(
                    "upload to {path} from {peer} refused with {status}: {message}",
                    path=request.path.decode("latin-1"),
                    peer=_peer(request),
                    status=status,
                    message=message,
                )
                _answer(request, status, {"error": message})
                return NOT_DONE_YET
            sink = opened
            sink._transport = None  # nothing to pause: the body is all here
        d = Deferred.fromCoroutine(self._respond(request, sink, spooled))
        d.addErrback(_crashed, request, sink)
        return NOT_DONE_YET

    async def _respond(self, request: Any, sink: _UploadSink, spooled: Any) -> None:
        try:
            if spooled is not None:
                spooled.seek(0)
                while piece := spooled.read(_READ_SIZE):
                    sink.write(piece)
                    await sink.idle()
            upload = await sink.end()
        except _Failed as e:
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
                peer=_peer(request),
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


def _crashed(failure: Failure, request: Any, sink: _UploadSink) -> None:
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
