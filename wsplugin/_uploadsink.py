"""The body of an upload as it arrives: :class:`UploadSink` parses each
piece (:mod:`wsplugin._multipart`), writes files under temporary names,
calls the handler's events, and gives every file its final name once the
body is complete (all or nothing). :class:`~wsplugin.uploads.UploadResource`
makes one per request."""

from __future__ import annotations

import errno
import os
import tempfile
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._events import as_deferred
from wsplugin._multipart import (
    Done,
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
)
from wsplugin._uploadparts import FilePart, SavedFile, Upload, check_name
from wsplugin.errors import UploadRefused

if TYPE_CHECKING:
    from wsplugin.uploads import UploadResource

__all__ = [
    "UploadFailed",
    "UploadSink",
    "apply_outcome",
    "peer_host",
    "unlink_quietly",
]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.uploads")

_TEMP_PREFIX = ".upload-"
_TEMP_SUFFIX = ".part"


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


class UploadFailed(Exception):
    """The upload fails with ``status`` and ``message`` (internal: the
    resource answers it as JSON)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class UploadSink:
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
        events: dict[str, Callable[..., Any]],
        request: Any,
        boundary: bytes,
        transport: Any,
    ) -> None:
        self._resource = resource
        self._handler_events = events
        self._request = request
        self._transport = transport
        self._parser = MultipartParser(
            boundary, max_header_size=resource.max_part_header
        )
        self._events: deque[Any] = deque()
        self._waiting = False
        self._paused: Any = None
        self._error: UploadFailed | None = None
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
            self._fail(UploadFailed(e.status, str(e)))
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
                self._end.errback(UploadFailed(499, "the client went away"))
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
                self._fail(UploadFailed(e.status, str(e)))
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
        except UploadFailed as e:
            self._fail(e)
        except UploadRefused as e:
            self._fail(UploadFailed(e.status, e.message))
        except OSError as e:
            _log.failure(
                "upload to {directory}: cannot write",
                Failure(),
                directory=self._resource.directory,
            )
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            self._fail(
                UploadFailed(507, "no space left for the upload")
                if full
                else UploadFailed(500, "the upload could not be stored")
            )
        except Exception:
            _log.failure("upload handler failed", Failure())
            self._fail(UploadFailed(500, "the upload could not be handled"))

    def _call(self, name: str, then: Callable[[Any], None], *args: Any) -> None:
        """Call the handler's ``name`` and pass its answer to ``then``, now
        or, for a Deferred or coroutine, when it fires (holding the parts
        behind it meanwhile)."""
        method = self._handler_events.get(name)
        result = method(self._request, *args) if method is not None else None
        if not isinstance(result, Deferred) and not isawaitable(result):
            then(result)
            return
        d = as_deferred(result)
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        if outcome:  # it had already fired
            apply_outcome(then, outcome[0])
            return
        self._waiting = True

        def fired(_: None) -> None:
            self._waiting = False
            if self._error is None and not self._closed:
                self._guarded(apply_outcome, then, outcome[0])
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
            raise UploadFailed(413, f"more than {limit} form fields")
        self._field = _Field(event.name)

    def _field_data(self, current: _Field, data: bytes) -> None:
        current.size += len(data)
        limit = self._resource.max_field_size
        if current.size > limit:
            raise UploadFailed(413, f"field {current.name!r} is over {limit} bytes")
        current.chunks.append(data)

    def _end_field(self, current: _Field) -> None:
        self._field = None
        try:
            value = b"".join(current.chunks).decode("utf-8")
        except UnicodeDecodeError:
            raise UploadFailed(400, f"field {current.name!r} is not UTF-8") from None
        self.upload.fields.setdefault(current.name, []).append(value)
        self._call("on_field", lambda _: None, current.name, value)

    def _start_file(self, event: PartStart) -> None:
        self._files += 1
        limit = self._resource.max_files
        if self._files > limit:
            raise UploadFailed(413, f"more than {limit} files")
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
                current.name = check_name(answer)
            except ValueError as e:
                _log.error("before_save_file returned an {problem}", problem=str(e))
                raise UploadFailed(500, "the upload could not be handled") from None
        elif answer is not None and answer is not True:
            _log.error(
                "before_save_file must return a name, None or False, not {answer!r}",
                answer=answer,
            )
            raise UploadFailed(500, "the upload could not be handled")
        fd, current.temp = tempfile.mkstemp(
            prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=self._resource.directory
        )
        current.handle = os.fdopen(fd, "wb")
        self._pending.append(current)

    def _file_data(self, current: _File, data: bytes) -> None:
        current.size += len(data)
        limit = self._resource.max_file_size
        if limit and current.size > limit:
            raise UploadFailed(
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
                unlink_quietly(current.temp)
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
            except UploadFailed as e:
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
                unlink_quietly(path)
            self.upload.files.clear()
            raise UploadFailed(409, f"a file named {name!r} already exists") from None
        except OSError as e:
            for path in done:
                unlink_quietly(path)
            self.upload.files.clear()
            _log.error(
                "upload to {directory}: cannot save: {error}",
                directory=directory,
                error=e,
            )
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            raise UploadFailed(
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
            unlink_quietly(saved.path)
        self.upload.files.clear()

    def _fail(self, error: UploadFailed) -> None:
        if self._error is not None:
            return
        self._error = error
        self._events.clear()
        self._discard()
        _log.info(
            "upload to {path} from {peer} refused with {status}: {message}",
            path=self._request.path.decode("latin-1"),
            peer=peer_host(self._request),
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
                unlink_quietly(current.temp)
                current.temp = None
        self._pending = []
        self._file = None


def apply_outcome(then: Callable[[Any], None], outcome: Any) -> None:
    if isinstance(outcome, Failure):
        outcome.raiseException()
    then(outcome)


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def peer_host(request: Any) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))
