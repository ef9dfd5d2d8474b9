"""The client's side of a forwarded request (:mod:`wsplugin.forward`): the
stored request body (:class:`BodySpool`), the link to the client
(:class:`Call`), the relay of the upstream's body at the client's pace
(:class:`Relay`), and the short answers and log reasons of a failure."""

from __future__ import annotations

import tempfile
from io import BytesIO
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, PartialDownloadError
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

__all__ = [
    "MESSAGES",
    "BodySpool",
    "Call",
    "Drop",
    "Relay",
    "describe",
    "is_timeout",
    "plain",
    "render_instead",
    "stop_producer",
]

MESSAGES = {
    400: b"400 Bad Request: this path cannot be forwarded.\n",
    500: b"500 Internal Server Error\n",
    502: b"502 Bad Gateway: the upstream server gave no valid answer.\n",
    504: b"504 Gateway Timeout: the upstream server did not answer in time.\n",
}


class BodySpool:
    """``request.content`` of a forwarded request on wsplugin's site: keeps
    the body for the upstream request (in memory under 100 kB, else in a
    temporary file, as Twisted does) and reads as empty to Twisted itself,
    so that it never parses a forwarded form into ``request.args`` (which it
    does by reading the whole body into memory)."""

    def __init__(self, length: int | None) -> None:
        self.file: Any = (
            BytesIO()
            if length is not None and length < 100_000
            else tempfile.TemporaryFile()
        )
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def close(self) -> None:
        self.file.close()

    def read(self, size: int = -1) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0


class Call:
    """One forwarded request's link to its client: stops the upstream side
    when the client goes away."""

    def __init__(self, request: Any) -> None:
        self.gone = False
        self.pending: Deferred[Any] | None = None
        self.relay: Relay | None = None
        address = request.getClientAddress()
        self.peer = str(getattr(address, "host", address))
        request.notifyFinish().addErrback(self._left)

    def _left(self, _: Failure) -> None:
        self.gone = True
        if self.pending is not None:
            self.pending.cancel()
        if self.relay is not None:
            self.relay.stop()


@implementer(IPushProducer)
class Relay(Protocol):
    """Relays the upstream's body to the client as it arrives; the client's
    pace pauses the upstream (the request is this producer's consumer)."""

    def __init__(self, request: Any, clock: Any, idle: float) -> None:
        self.request = request
        self.clock = clock
        self.idle = idle
        self.done: Deferred[list[Failure]] = Deferred()  # [why it ended]
        self.stalled = False
        self._timer: Any = None
        self._registered = False
        self._stopped = False
        self._upstream: Any = None  # the upstream body's producer

    def connectionMade(self) -> None:
        self._upstream = self.transport
        self.request.registerProducer(self, True)
        self._registered = True
        self._arm()

    def dataReceived(self, data: bytes) -> None:
        self._arm()
        self.request.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self._registered and not self._stopped:
            self.request.unregisterProducer()
        self._registered = False
        self.done.callback([reason])  # a list: a bare Failure would errback

    # IPushProducer, for the client's side
    def pauseProducing(self) -> None:
        self._disarm()  # a silence the client causes is not the upstream's
        self._upstream.pauseProducing()

    def resumeProducing(self) -> None:
        self._arm()
        self._upstream.resumeProducing()

    def stopProducing(self) -> None:
        self.stop()

    def stop(self) -> None:
        """The client went away: drop the upstream connection."""
        if not self._stopped:
            self._stopped = True
            self._disarm()
            if self._upstream is not None:
                self._upstream.stopProducing()

    def _arm(self) -> None:
        if not self.idle:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self.idle)
        else:
            self._timer = self.clock.callLater(self.idle, self._stalled)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stalled(self) -> None:
        self._timer = None
        self.stalled = True
        if self._upstream is not None:
            self._upstream.stopProducing()


class Drop(Protocol):
    """Takes an upstream body nobody wants: closes its connection."""

    def connectionMade(self) -> None:
        producer: Any = self.transport
        producer.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pass


def stop_producer(producer: Any) -> None:
    """Stop sending a request body (the answer came, or nobody waits)."""
    if isinstance(producer, FileBodyProducer):
        try:
            producer.stopProducing()
        except (AttributeError, ValueError):
            pass  # never started, or its file already closed


def is_timeout(failure: Failure) -> bool:
    kinds = (net_error.TimeoutError, DeferredTimeout)
    if failure.check(*kinds):
        return True
    return any(
        isinstance(r, Failure) and r.check(*kinds)
        for r in getattr(failure.value, "reasons", ()) or ()
    )


def describe(failure: Failure) -> str:
    """A short reason for the log (never sent to the client)."""
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        inner = "; ".join(
            (r.getErrorMessage() or type(r.value).__name__)
            if isinstance(r, Failure)
            else str(r)
            for r in reasons
        )
        return f"{type(failure.value).__name__}: {inner}"
    if failure.check(CancelledError, PartialDownloadError):
        return type(failure.value).__name__
    if failure.check(net_error.ConnectionRefusedError):
        return "connection refused"
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}"


def plain(request: Any, status: int) -> None:
    if request.channel is None:
        return  # the client is gone
    body = MESSAGES[status]
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def render_instead(request: Any, resource: Any) -> None:
    """Answer with ``resource`` (``before_forward`` chose not to forward)."""
    body = resource.render(request)
    if body is NOT_DONE_YET:
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
