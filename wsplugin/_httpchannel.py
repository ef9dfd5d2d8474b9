"""``twisted.web`` with bounds: requests bounded in time and size before
their body is read (:class:`SiteRequest`, :class:`BoundedSite`,
:class:`BoundedHTTPChannel`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from http import HTTPStatus
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from wsplugin._decision import screen_connection
from wsplugin._transport import close_without_reading
from wsplugin._upgrade import WebSocketResource, wants_upgrade
from wsplugin.config import MiB
from wsplugin.handshake import target_problem, version_problem

__all__ = ["BoundedHTTPChannel", "BoundedSite", "SiteRequest"]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.web")

_PHRASES = {413: b"Content Too Large", 414: b"URI Too Long"}


def _limit(resource: Any, name: str, default: float) -> float:
    """A resource's own ``max_request_body`` / ``request_body_timeout``, or
    the server's. Only the resource that answers the request is consulted."""
    value = getattr(resource, name, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        _log.error(
            "{resource!r}.{name} must be a number >= 0, not {value!r}; "
            "using the server's {default}",
            resource=resource,
            name=name,
            value=value,
            default=default,
        )
        return default
    return value


class SiteRequest(Request):
    """A ``twisted.web`` request whose resource is known before its body.

    ``twisted.web`` finds a request's resource only once the whole body has
    arrived, so it cannot know that an upload resource may take 100 MiB and
    every other one 1 MiB; meanwhile it spools any body, of any declared
    length, into a temporary file. :class:`BoundedHTTPChannel` instead calls
    :meth:`head_received` as soon as the head is complete: the target is
    checked (:func:`~wsplugin.handshake.target_problem`, 400), the resource
    tree is walked once (``before_request`` runs here), and the body limits
    are taken from the resource found:

    * ``max_request_body`` (bytes, 0 for no limit) and
      ``request_body_timeout`` (seconds, 0 for none): attributes of the
      resource that answers (class or instance attributes); without them the
      server's options apply. Only that resource's requests get its limits,
      so an upload resource raises them for itself only::

          class Upload(Resource):
              isLeaf = True
              max_request_body = 200 * MiB
              request_body_timeout = 600

    * a declared ``Content-Length`` over the limit gets 413 before any body
      byte is read or stored; a chunked body is cut with 413 where it crosses
      the limit; a body still incomplete after the timeout gets 408.

    The walk is not repeated: :meth:`BoundedSite.getResourceFor` hands the
    same resource to ``render``. A ``before_request`` hook and ``getChild``
    methods therefore see the head only (``request.content`` is not there
    yet; ``request.args`` holds the query); ``render`` sees the body.
    """

    body_timeout: float = 0.0
    _found: tuple[Any, ...] | None = None
    _body_limit = 0
    _received = 0
    _over = False
    _body_sink: Any = None  # a resource that takes its body (open_request_body)

    def head_received(self, line: bytes, length: int | None) -> tuple[int, str] | None:
        """Check the head, find the resource, apply its body limits.

        Args:
            line: The request line, as received.
            length: The declared body length; None for a chunked body.

        Returns:
            None to go on, or ``(status, reason)`` to refuse the request.
        """
        channel = self.channel
        try:
            method, target, version = line.split(b" ")
        except ValueError:
            return 400, "malformed request line"
        self.method, self.uri, self.clientproto = method, target, version
        path, _, query = target.partition(b"?")
        self.path = path
        self.args = parse_qs(query, keep_blank_values=True)
        problem = target_problem(
            target.decode("latin-1"), allow_asterisk=method == b"OPTIONS"
        )
        if problem is not None:
            return 400, problem
        self.parseCookies()
        resource: Any = None
        if path != b"*":
            self.site = channel.site
            self.prepath = []
            self.postpath = [unquote_to_bytes(p) for p in path[1:].split(b"/")]
            try:
                resource = self.site.getResourceFor(self)
            except Exception:
                self._found = (None, None, None, None, Failure())
            else:
                self._found = (
                    resource,
                    self.prepath,
                    self.postpath,
                    self.sitepath,
                    None,
                )
        if isinstance(resource, WebSocketResource) and wants_upgrade(
            self, resource.route
        ):
            problem = version_problem(version.decode("latin-1"))
            if problem is not None:
                return 400, problem
            if length != 0:
                return 400, "a WebSocket handshake has no body"
        limit = int(_limit(resource, "max_request_body", channel.max_request_body))
        self.body_timeout = _limit(
            resource, "request_body_timeout", channel.body_timeout
        )
        if limit and length is not None and length > limit:
            return 413, f"declared body of {length} bytes, over {limit}"
        self._body_limit = limit
        # A resource with ``open_request_body(request, length)`` takes the
        # body chunk by chunk (wsplugin.uploads, wsplugin.forward): it returns
        # the object that becomes request.content (write/close, and an empty
        # read/seek/tell), None for the usual spooling, or (status, reason)
        # to refuse before any body byte.
        opener = getattr(resource, "open_request_body", None)
        if opener is not None:
            sink = opener(self, length)
            if isinstance(sink, tuple):
                return sink
            self._body_sink = sink
        return None

    def take_found(self) -> Any:
        """The resource found by :meth:`head_received` (once), or None."""
        found, self._found = self._found, None
        if found is None:
            return None
        resource, self.prepath, self.postpath, self.sitepath, failure = found
        if failure is not None:
            failure.raiseException()
        return resource

    def gotLength(self, length: int | None) -> None:
        """Where the body goes: memory up to 100 kB declared, else a temporary
        file (as ``twisted.web`` does), now only for bodies within the limit;
        or the resource's own sink (``open_request_body``)."""
        if self._body_sink is not None:
            self.content = self._body_sink
            return
        if length is not None and length < 100_000:
            self.content = BytesIO()
        else:
            self.content = tempfile.TemporaryFile()

    def handleContentChunk(self, data: bytes) -> None:
        """Store a piece of the body, or cut the request at the limit (413)."""
        if self._over:
            return
        self._received += len(data)
        limit = self._body_limit
        if limit and self._received > limit:
            self._over = True
            if self.content is not None:
                self.content.close()
            channel = self.channel
            if isinstance(channel, BoundedHTTPChannel):
                channel.refuse(413, f"body over {limit} bytes")
            else:  # pragma: no cover - SiteRequest always runs on our channel
                channel.loseConnection()
            return
        self.content.write(data)


class BoundedSite(Site):
    """A ``twisted.web`` site for :class:`SiteRequest` and
    :class:`BoundedHTTPChannel`: the resource found from the request head is
    the one that renders the request."""

    requestFactory = SiteRequest

    def getResourceFor(self, request: Any) -> Any:
        """The resource found when the head arrived, else a fresh walk."""
        if isinstance(request, SiteRequest):
            resource = request.take_found()
            if resource is not None:
                request.site = self
                return resource
        return super().getResourceFor(request)


class BoundedHTTPChannel(HTTPChannel):
    """An HTTP channel that bounds each request in time and size, and asks
    the server's ``on_connect`` before it reads a byte.

    * **Head time**: ``twisted.web``'s own timeout is an idle timeout that
      every byte resets, so a client trickling a header a byte at a time
      (slowloris) would hold the connection for ever. Here each request
      head, from the connection's start or the previous request's end, must
      be complete within ``head_timeout`` seconds (``open_handshake_timeout``,
      10 s), or the connection is aborted.
    * **Body size and time**: with :class:`SiteRequest`, the body limits of
      the resource that answers (``max_request_body``, 1 MiB, and
      ``request_body_timeout``, 30 s, by default) apply from the end of the
      head: 413 for a body over the limit (declared or chunked), 408 for one
      too slow. The answer is written, and the connection closed, without
      reading the rest of the body.
    * **on_connect**: the server handler's ``on_connect(peer)`` runs for every
      accepted connection, before any byte is processed, exactly as on a
      WebSocket-only server: False (or a Deferred firing False) closes the
      connection; while a Deferred is pending nothing is read.
    * **Pipelined data**: bytes received behind a request head that is then
      taken over by a WebSocket protocol (frames sent with the upgrade) are
      kept for it (:meth:`take_rest`).
    * **Closing reads no more**, over TLS too: once the channel closes (a
      refusal, a 400 from ``twisted.web``, a ``Connection: close`` answer),
      nothing more is read and the connection ends once the answer is out
      (:func:`~wsplugin._transport.close_without_reading`). A request line or
      header line over ``MAX_LENGTH`` (16384 bytes) gets 414 or 431 instead
      of a silent close.
    """

    head_timeout: float = 10.0
    body_timeout: float = 30.0
    max_request_body: int = MiB
    clock: Any = None
    on_connect: Callable[[Any], Any] | None = None
    log_limited: Callable[..., None] | None = None
    _head_call: Any = None
    _body_call: Any = None
    _abort_call: Any = None
    _refused = False
    _awaiting_line = True
    _request_line = b""
    _handling = False
    _held: list[bytes] | None = None
    _screen_paused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()
        if self.on_connect is not None:
            self._ask_on_connect(self.on_connect)

    # -- on_connect ----------------------------------------------------------

    def _ask_on_connect(self, hook: Callable[[Any], Any]) -> None:
        # the same decision as a WebSocket-only server's (wsplugin._decision)
        screen_connection(
            hook,
            self.transport.getPeer(),
            log=_log,
            log_peer=self.transport.getPeer(),
            refuse=lambda: self._drop(abort=False),
            drop=lambda: self._drop(abort=True),
            pause=self._screen_pause,
            resume=self._screen_resume,
        )

    def _screen_pause(self) -> None:
        self._screen_paused = True
        self.transport.pauseProducing()

    def _screen_resume(self) -> None:
        if self._screen_paused and self.transport is not None and not self._refused:
            self._screen_paused = False
            self.transport.resumeProducing()

    def _drop(self, abort: bool) -> None:
        self._refused = True
        self._disarm()
        if self.transport is None:
            return
        if abort:
            self.transport.abortConnection()
        else:
            close_without_reading(self.transport)

    def loseConnection(self) -> None:
        """Close once what was written is out, reading nothing more (over
        TLS too: Twisted's TLS layer would read until the peer's
        ``close_notify``, which a client still uploading never sends)."""
        super().loseConnection()
        if self.transport is not None:
            close_without_reading(self.transport)

    # -- request heads and bodies -----------------------------------------

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_line and line:
            self._awaiting_line = False
            self._request_line = line
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request line or header line over ``MAX_LENGTH`` bytes: 414 or
        431 (``twisted.web`` would close without an answer)."""
        if self._awaiting_line:
            self.refuse(414, f"request line over {self.MAX_LENGTH} bytes")
        else:
            self.refuse(431, f"header line over {self.MAX_LENGTH} bytes")

    def _arm(self) -> None:
        if self.head_timeout and self.clock is not None and self._head_call is None:
            self._head_call = self.clock.callLater(self.head_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_call is not None:
            if self._head_call.active():
                self._head_call.cancel()
            self._head_call = None

    def _cancel_body_timer(self) -> None:
        if self._body_call is not None:
            if self._body_call.active():
                self._body_call.cancel()
            self._body_call = None

    def allHeadersReceived(self) -> None:
        self._disarm()
        request = self.requests[-1]
        timeout = self.body_timeout
        if isinstance(request, SiteRequest):
            refusal = request.head_received(self._request_line, self.length)
            if refusal is not None:
                self.refuse(*refusal)
                return  # no gotLength: nothing of the body is stored
            timeout = request.body_timeout
        super().allHeadersReceived()
        if self.length != 0 and timeout and self.clock is not None:
            self._body_call = self.clock.callLater(timeout, self._body_expired)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        self._cancel_body_timer()
        self._awaiting_line = True
        self._handling = True
        super().allContentReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        if self._handling:
            # twisted.web holds bytes received while a request is handled,
            # for the next request; a copy is kept in case a WebSocket
            # protocol takes the connection over instead (take_rest)
            if self._held is None:
                self._held = []
            self._held.append(data)
        super().rawDataReceived(data)

    def take_rest(self) -> bytes:
        """Everything received after the current request, for the protocol
        that takes the connection over; the channel forgets it."""
        held, self._held = self._held or [], None
        return bytes(self.clearLineBuffer()) + b"".join(held)

    def requestDone(self, request: Request) -> None:
        self._handling = False
        self._held = None
        if self.persistent and self.transport is not None:
            # armed before the next pipelined head is parsed (in the call
            # below), so a complete one disarms it again at once
            self._arm()
        super().requestDone(request)

    def refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` with an empty body and close, reading no more of
        this connection (the rest of a refused body is never read)."""
        if self._refused or self.transport is None:
            return
        self._refused = True
        self._disarm()
        self._cancel_body_timer()
        peer = self.transport.getPeer()
        log = self.log_limited
        if log is not None:
            log(
                "refusing an HTTP request from {peer} with {status}: {reason}",
                peer=getattr(peer, "host", peer),
                status=status,
                reason=reason,
            )
        # RFC 9110's names for 413 and 414 (Python before 3.13 has old ones)
        phrase = _PHRASES.get(status) or HTTPStatus(status).phrase.encode("ascii")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            % (status, phrase)
        )
        self.loseConnection()
        if self.clock is not None:
            # a peer that never reads would keep the closing connection
            self._abort_call = self.clock.callLater(5.0, self.transport.abortConnection)

    def _expired(self) -> None:
        self._head_call = None
        if self.transport is not None:
            _log.info(
                "dropping {peer}: request head too slow", peer=self.transport.getPeer()
            )
            self.transport.abortConnection()

    def _body_expired(self) -> None:
        self._body_call = None
        self.refuse(408, "request body too slow")

    def connectionLost(self, reason: Any) -> None:
        self._disarm()
        self._cancel_body_timer()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        super().connectionLost(reason)
