"""``twisted.web`` with bounds: requests bounded in time and size before
their body is read (:class:`SiteRequest`, :class:`BoundedSite`,
:class:`BoundedHTTPChannel`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import H2_ENABLED, HTTPChannel
from twisted.web.server import Request, Site

from wsplugin._decision import screen_connection
from wsplugin._httplimits import Refusal, status_phrase
from wsplugin._siterequest import SiteRequest
from wsplugin._transport import close_without_reading
from wsplugin.config import MiB

__all__ = ["BoundedHTTPChannel", "BoundedSite", "SiteRequest"]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.web")


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""What an HTTP/2 client sends first (RFC 9113, section 3.4)."""


def _continue_failed(failure: Failure) -> None:
    _log.failure("continuing a request after its head failed", failure)


class BoundedSite(Site):
    """A ``twisted.web`` site for :class:`SiteRequest` and
    :class:`BoundedHTTPChannel`: the resource found from the request head is
    the one that renders the request."""

    requestFactory = SiteRequest
    alpn: tuple[bytes, ...] | None = None
    """What the site offers over ALPN when the listening endpoint asks it
    (``ssl:`` endpoint strings): None for ``h2`` (when the ``h2`` package is
    installed) and ``http/1.1``. A server with ``tls=`` sets ``()``: its
    :class:`~wsplugin.TLSOptions` decide alone."""

    def acceptableProtocols(self) -> list[bytes]:
        """The ALPN protocols of this site (see :attr:`alpn`)."""
        if self.alpn is not None:
            return list(self.alpn)
        return [b"h2", b"http/1.1"] if H2_ENABLED else [b"http/1.1"]

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
    _head_waiting = False
    _content_waiting = False
    _lost = False
    _first_read = True
    h2: Any = None
    """The HTTP/2 connection this channel passes its bytes to, once the
    client negotiated ``h2``; None for HTTP/1.1."""

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
        request = self.requests[-1]
        timeout = self.body_timeout
        if isinstance(request, SiteRequest):
            outcome = request.head_received(self._request_line, self.length)
            if isinstance(outcome, Deferred):
                self._wait_for_head(request, outcome)
                return
            self._disarm()
            if outcome is not None:
                self.refuse(*outcome)
                return  # no gotLength: nothing of the body is stored
            timeout = request.body_timeout
        else:
            self._disarm()
        self._head_accepted(timeout)

    def _head_accepted(self, timeout: float) -> None:
        super().allHeadersReceived()
        if self.length != 0 and timeout and self.clock is not None:
            self._body_call = self.clock.callLater(timeout, self._body_expired)

    # -- a head decided later (before_request or guard() with a Deferred) --

    def _wait_for_head(self, request: SiteRequest, decision: Deferred[Any]) -> None:
        """Read nothing more (the body, pipelined requests) until the
        decision; the head timer keeps running, so a hook that never
        decides is bounded too (503)."""
        self._head_waiting = True
        self.paused = True  # LineReceiver: stop at the bytes behind the head
        self.transport.pauseProducing()
        decision.addCallbacks(
            self._head_decided, self._head_failed, callbackArgs=(request,)
        ).addErrback(_continue_failed)

    def _head_failed(self, failure: Failure) -> None:
        _log.failure("deciding the resource of a request failed", failure)
        self._head_decided((500, "the request could not be dispatched"), None)

    def _head_decided(self, refusal: Refusal | None, request: Any) -> None:
        if not self._head_waiting or self._refused or self._lost:
            return  # timed out and refused, or the client left
        self._head_waiting = False
        self._disarm()
        if refusal is not None:
            self.refuse(*refusal)
            return
        self._head_accepted(request.body_timeout)
        if self._content_waiting:
            self._content_waiting = False
            self.allContentReceived()
        if self.transport is None or self._refused:
            return  # taken over by a WebSocket protocol, or refused
        self.paused = False
        self.transport.resumeProducing()
        self.dataReceived(b"")  # what arrived behind the head, in order

    def dataReceived(self, data: bytes) -> None:
        if self.h2 is not None:
            self.h2.dataReceived(data)
            return
        if self._first_read:
            self._first_read = False
            if getattr(
                self.transport, "negotiatedProtocol", None
            ) == b"h2" and _H2_PREFACE.startswith(data[:24]):
                # (a client that negotiated h2 but sends HTTP/1.1, say a
                # WebSocket client offering h2 by mistake, is read as such)
                from wsplugin._h2 import start_h2  # needs the h2 package

                self._disarm()  # HTTP/2 has a head timer of its own
                self.h2 = start_h2(self)
                self.h2.dataReceived(data)
                return
        if self._head_waiting and self.transport is not None:
            # a read that raced the pause: kept, and reading stops again
            self.transport.pauseProducing()
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        if self._refused:
            return
        if self._head_waiting:
            # a bodiless request whose resource is still being decided
            self._content_waiting = True
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

    def refuse(
        self, status: int, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """Answer ``status`` (with ``headers``) and an empty body, and close,
        reading no more of this connection (the rest of a refused body is
        never read)."""
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
        extra = b"".join(b"%s: %s\r\n" % pair for pair in headers)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n"
            % (status, status_phrase(status), extra)
        )
        self.loseConnection()
        if self.clock is not None:
            # a peer that never reads would keep the closing connection
            self._abort_call = self.clock.callLater(5.0, self.transport.abortConnection)

    def _expired(self) -> None:
        self._head_call = None
        if self._head_waiting:
            self._head_waiting = False
            self.refuse(503, "the request's resource was not decided in time")
            return
        if self.transport is not None:
            _log.info(
                "dropping {peer}: request head too slow", peer=self.transport.getPeer()
            )
            self.transport.abortConnection()

    def _body_expired(self) -> None:
        self._body_call = None
        self.refuse(408, "request body too slow")

    def connectionLost(self, reason: Any) -> None:
        if self.h2 is not None:
            self.h2.connectionLost(reason)
        self._lost = True
        self._disarm()
        self._cancel_body_timer()
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        super().connectionLost(reason)
