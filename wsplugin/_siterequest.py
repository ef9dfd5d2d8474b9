"""The request of wsplugin's site: its head is checked, its resource found
and its body limits applied before any body byte is read
(:class:`SiteRequest`; the channel that drives it is in
:mod:`wsplugin._httpchannel`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from wsplugin._httplimits import Refusal, head_answer, resource_limit
from wsplugin._pending import settle
from wsplugin._upgrade import WebSocketResource, wants_upgrade
from wsplugin.config import MiB
from wsplugin.handshake import target_problem, version_problem

__all__ = ["SiteRequest"]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.web")


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
    defer_length = False
    """True while the head is still to be checked when ``gotLength`` comes
    (HTTP/2 streams report the length before the last header): the body's
    destination is then chosen once the head is accepted."""
    on_refuse: Callable[[int, str, Sequence[tuple[bytes, bytes]]], None] | None = None
    """How to refuse this request mid-body (413); set by the HTTP/2
    connection for its streams. Otherwise the channel's ``refuse``."""
    _found: tuple[Any, ...] | None = None
    _body_limit = 0
    _received = 0
    _over = False
    _body_sink: Any = None  # a resource that takes its body (open_request_body)
    _length: int | None = 0
    _server_limit = 0
    _server_timeout = 0.0
    _early_length: tuple[int | None] | None = None
    _form_limit = MiB

    def head_received(
        self,
        line: bytes,
        length: int | None,
        *,
        max_request_body: int | None = None,
        body_timeout: float | None = None,
    ) -> Refusal | Deferred[Refusal | None] | None:
        """Check the head, find the resource, apply its body limits.

        Args:
            line: The request line, as received (for HTTP/2, made from the
                ``:method`` and ``:path`` pseudo-headers).
            length: The declared body length; None for a chunked body (or an
                HTTP/2 body without ``content-length``).
            max_request_body: The server's limit (default: the channel's).
            body_timeout: The server's body time (default: the channel's).

        Returns:
            None to go on, ``(status, reason)`` to refuse the request, or a
            Deferred firing with one of those while a ``before_request``
            hook or an authenticator decides (:mod:`wsplugin._pending`):
            the caller stops reading until it fires.
        """
        channel = self.channel
        self._server_limit = (
            channel.max_request_body if max_request_body is None else max_request_body
        )
        self._server_timeout = (
            channel.body_timeout if body_timeout is None else body_timeout
        )
        self._form_limit = self._server_limit or MiB
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
        self._length = length
        if path == b"*":
            return self._resource_found(None)
        self.site = channel.site
        self.prepath = []
        self.postpath = [unquote_to_bytes(p) for p in path[1:].split(b"/")]
        try:
            found = settle(self.site.getResourceFor(self), self)
        except Exception:
            return self._resource_failed(Failure())
        if isinstance(found, Deferred):
            return found.addCallbacks(self._resource_found, self._resource_failed)
        return self._resource_found(found)

    def _resource_failed(self, failure: Failure) -> None:
        """The walk raised: ``render`` gets the failure (500), as in
        ``twisted.web``; the body limits are the server's."""
        self._found = (None, None, None, None, failure)
        self._apply_limits(None)
        return None

    def _resource_found(self, resource: Any) -> Refusal | None:
        if resource is not None:
            self._found = (resource, self.prepath, self.postpath, self.sitepath, None)
        return self._apply_limits(resource)

    def _apply_limits(self, resource: Any) -> Refusal | None:
        length = self._length
        if isinstance(resource, WebSocketResource) and wants_upgrade(
            self, resource.route
        ):
            problem = version_problem(self.clientproto.decode("latin-1"))
            if problem is not None:
                return 400, problem
            if length != 0:
                return 400, "a WebSocket handshake has no body"
        limit = int(resource_limit(resource, "max_request_body", self._server_limit))
        self.body_timeout = resource_limit(
            resource, "request_body_timeout", self._server_timeout
        )
        if length != 0:
            answer = head_answer(resource)
            if answer is not None:
                return answer
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
        if self._early_length is not None:  # HTTP/2: gotLength came first
            (early,) = self._early_length
            self._early_length = None
            self.defer_length = False
            self.gotLength(early)
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
        if self.defer_length:
            self._early_length = (length,)
            return
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
            self.refuse(413, f"body over {limit} bytes")
            return
        self.content.write(data)

    def refuse(
        self, status: int, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Answer ``status`` with an empty body and read no more of the body:
        the HTTP/2 stream's refusal, or the channel's (which closes the
        connection)."""
        if self.on_refuse is not None:
            self.on_refuse(status, reason, headers)
            return
        channel = self.channel
        refuse = getattr(channel, "refuse", None)  # a BoundedHTTPChannel
        if refuse is not None:
            refuse(status, reason, headers)
        elif channel is not None:  # pragma: no cover - always on our channels
            channel.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """The whole body is in: let ``twisted.web`` parse a form into
        ``request.args`` only when it is small.

        ``twisted.web`` parses any ``POST`` with a form content type whole in
        memory (measured: a 256 MiB ``multipart/form-data`` body raised the
        peak resident memory by 3.6 GiB). Bodies over the server's
        ``max_request_body`` (1 MiB by default; 1 MiB when that is 0), which
        only resources that raise their own limit receive, are left
        unparsed: ``request.args`` then holds the query only, and
        ``request.content`` the body.
        """
        content = self.content
        if content is not None and self._received > self._form_limit:
            # Twisted takes the size to parse from the body file's position;
            # at 0 it parses nothing (and leaves the file at 0, as usual)
            content.seek(0, 0)
        super().requestReceived(command, path, version)
