"""HTTP/2 for the same-port site, with the bounds of its HTTP/1.1 channel
(:class:`BoundedH2Connection`).

Over TLS, a client that negotiated ``h2`` with ALPN speaks HTTP/2 from its
first byte. :class:`~wsplugin.web.BoundedHTTPChannel` then hands the
connection to a :class:`BoundedH2Connection`: Twisted's ``H2Connection``
(``twisted.web._http2``, which needs the ``h2`` package: ``pip install
'wsplugin[http2]'``), with the same guarantees per stream as the HTTP/1.1
channel gives per request:

* **Heads**: each stream's head goes through
  :meth:`~wsplugin.web.SiteRequest.head_received` (target check,
  ``before_request``, authenticators, the resource found) before a byte of
  its body is delivered; a hook that decides later holds that stream's body
  (HTTP/2 flow control then stops the client, at most 64 KiB per stream),
  not the other streams. A connection without an open stream must send a
  complete request head within ``head_timeout`` (``open_handshake_timeout``)
  of its start or of its last stream's end, or it is closed with GOAWAY: an
  idle or trickling connection does not stay for ever. A decision still
  pending after ``head_timeout`` answers 503.
* **Bodies**: the resource's ``max_request_body`` (413 from the head for a
  declared ``content-length``, where it crosses the limit otherwise) and
  ``request_body_timeout`` (408).
* **Refusals** answer the stream alone, with its status and an empty body,
  then reset it with ``NO_ERROR`` (RFC 9113 section 8.1: the client stops
  sending the body without an error); the connection and its other streams
  go on.
* h2's own bounds stay: 100 concurrent streams, 64 KiB of header list;
  Twisted's bound on reset floods (CVE-2023-44487) and on buffered control
  frames.

WebSocket upgrades are HTTP/1.1 only (RFC 8441, WebSocket over HTTP/2, is
not implemented): browsers open ``wss://`` on a connection of its own with
HTTP/1.1, which this server offers next to ``h2``.

Twisted's HTTP/2 module is private (its names may change in any release),
and so are the hooks overridden here, each because no public one exists:
``_requestReceived`` (the point where a stream's head is complete),
``_requestDataReceived``, ``_requestEnded`` and ``_requestAborted`` (events
of a stream answered and dropped early, which Twisted does not expect),
``_requestDone`` (a stream's end, also called to drop a stream answered
early) and ``_send100Continue`` (held until the head is accepted); and
``_tryToWriteControlData``, which writes h2's output in order with the
frames Twisted holds back while the client does not read. ``conn`` (the
h2 state machine), ``streams`` and ``abortRequest`` are documented
attributes of ``H2Connection``. The tests
in ``tests/test_h2.py`` and ``tests/integration/test_http2.py`` pin the
behaviour on the Twisted version installed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import h2.exceptions
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection

__all__ = ["BoundedH2Connection", "start_h2"]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.web")


class BoundedH2Connection(H2Connection):
    """Twisted's HTTP/2 connection with wsplugin's bounds (see the module).

    Args:
        reactor: The clock for its timers (and Twisted's).
        head_timeout: Seconds for a request head while no stream is open,
            and for a pending ``before_request`` decision (0: none).
        max_request_body: The server's body limit (resources may change it).
        body_timeout: The server's body time (resources may change it).
        log_limited: A rate-limited logger for refusals.
    """

    def __init__(
        self,
        reactor: Any,
        *,
        head_timeout: float = 10.0,
        max_request_body: int = 0,
        body_timeout: float = 0.0,
        log_limited: Callable[..., None] | None = None,
    ) -> None:
        super().__init__(reactor)
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.clock = reactor
        self.head_timeout = head_timeout
        self.max_request_body = max_request_body
        self.body_timeout = body_timeout
        self.log_limited = log_limited
        self.site_request_factory: Any = None
        self._made: Any = None
        self._head_call: Any = None
        self._timers: dict[int, Any] = {}  # a stream's decision or body timer
        self._pending: set[int] = set()  # streams whose head is being decided
        self._continue: set[int] = set()  # 100 Continue held for these
        self._bodies: set[int] = set()  # streams whose body is still coming

    # -- wiring ----------------------------------------------------------------

    def _make_request(self, stream: Any, queued: bool = False) -> Any:
        request = self.site_request_factory(stream, queued=queued)
        if hasattr(request, "head_received"):  # a wsplugin.web.SiteRequest
            request.defer_length = True  # its head is checked once complete
        self._made = request
        return request

    def connectionMade(self) -> None:
        self.site_request_factory = self.requestFactory
        self.requestFactory = self._make_request
        super().connectionMade()
        self._arm_head()

    def connectionLost(self, reason: Any = None, _cancelTimeouts: bool = True) -> None:
        self._disarm_head()
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()
        super().connectionLost(reason, _cancelTimeouts=_cancelTimeouts)

    # -- the connection's head timer ------------------------------------------

    def _arm_head(self) -> None:
        if self.head_timeout and self._head_call is None:
            self._head_call = self.clock.callLater(self.head_timeout, self._idle)

    def _disarm_head(self) -> None:
        if self._head_call is not None:
            if self._head_call.active():
                self._head_call.cancel()
            self._head_call = None

    def _idle(self) -> None:
        self._head_call = None
        if self.streams or self.transport is None:
            return
        _log.info(
            "dropping {peer}: no HTTP/2 request for {seconds:g} s",
            peer=self.transport.getPeer(),
            seconds=self.head_timeout,
        )
        try:
            self.conn.close_connection()  # GOAWAY
            self.transport.write(self.conn.data_to_send())
        except h2.exceptions.ProtocolError:
            pass  # the connection is closing already
        self.transport.loseConnection()

    # -- a stream's head -------------------------------------------------------

    def _requestReceived(self, event: Any) -> None:
        self._made = None
        self._disarm_head()
        super()._requestReceived(event)
        request, self._made = self._made, None
        stream_id = event.stream_id
        stream = self.streams.get(stream_id)
        if stream is None or not hasattr(request, "head_received"):
            return
        request.on_refuse = lambda status, reason, headers=(): self.refuse_stream(
            stream_id, status, reason, headers
        )
        length: int | None
        declared = request.requestHeaders.getRawHeaders(b"content-length")
        if event.stream_ended is not None:
            length = 0  # END_STREAM on the head: no body
        else:
            self._bodies.add(stream_id)
            length = int(declared[0]) if declared else None  # Twisted parsed it
        line = b"%s %s HTTP/2" % (stream.command or b"", stream.path or b"")
        outcome = request.head_received(
            line,
            length,
            max_request_body=self.max_request_body,
            body_timeout=self.body_timeout,
        )
        if isinstance(outcome, Deferred):
            self._pending.add(stream_id)
            stream.pauseProducing()  # its body waits; flow control holds it
            if self.head_timeout:
                self._timers[stream_id] = self.clock.callLater(
                    self.head_timeout,
                    self.refuse_stream,
                    stream_id,
                    503,
                    "the request's resource was not decided in time",
                )
            outcome.addCallbacks(
                self._decided,
                self._decision_failed,
                callbackArgs=(stream_id, request),
                errbackArgs=(stream_id,),
            )
            return
        self._head_done(stream_id, request, outcome)

    def _decision_failed(self, failure: Failure, stream_id: int) -> None:
        _log.failure("deciding the resource of an HTTP/2 request failed", failure)
        self._decided((500, "the request could not be dispatched"), stream_id, None)

    def _decided(self, refusal: Any, stream_id: int, request: Any) -> None:
        if stream_id not in self._pending:
            return  # refused meanwhile (timeout), or the stream is gone
        self._pending.discard(stream_id)
        self._cancel_timer(stream_id)
        self._head_done(stream_id, request, refusal)
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.resumeProducing()  # the body held meanwhile, in order

    def _head_done(self, stream_id: int, request: Any, refusal: Any) -> None:
        if refusal is not None:
            self.refuse_stream(stream_id, *refusal)
            return
        if stream_id in self._continue:
            self._continue.discard(stream_id)
            super()._send100Continue(stream_id)
        timeout = request.body_timeout
        if timeout and stream_id in self._bodies and stream_id in self.streams:
            self._timers[stream_id] = self.clock.callLater(
                timeout, self.refuse_stream, stream_id, 408, "request body too slow"
            )

    def _send100Continue(self, streamID: int) -> None:
        if streamID not in self.streams:  # called while the stream is built
            self._continue.add(streamID)
            return
        super()._send100Continue(streamID)

    # -- refusing one stream ---------------------------------------------------

    def refuse_stream(
        self,
        stream_id: int,
        status: int,
        reason: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer the stream ``status`` (with ``headers``) and an empty body,
        then reset it (``NO_ERROR``): the client stops sending its body, the
        connection and its other streams go on."""
        stream = self.streams.get(stream_id)
        sending = stream_id in self._bodies  # the client's body still comes
        self._pending.discard(stream_id)
        self._continue.discard(stream_id)
        self._bodies.discard(stream_id)
        self._cancel_timer(stream_id)
        if stream is None or self.transport is None:
            return
        peer = self.transport.getPeer()
        if self.log_limited is not None:
            self.log_limited(
                "refusing an HTTP/2 request from {peer} with {status}: {reason}",
                peer=getattr(peer, "host", peer),
                status=status,
                reason=reason,
            )
        answer = [(b":status", b"%d" % status), (b"content-length", b"0")]
        answer += [(bytes(k).lower(), bytes(v)) for k, v in headers]
        try:
            self.conn.send_headers(stream_id, answer, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass  # its answer had begun: the reset alone ends it
        stream.connectionLost(Failure(ConnectionLost(reason)))
        if sending:
            self.abortRequest(stream_id)  # RST_STREAM(NO_ERROR), state dropped
        else:  # both sides have ended the stream: nothing to reset
            if self._tryToWriteControlData():
                self._requestDone(stream_id)

    def _cancel_timer(self, stream_id: int) -> None:
        call = self._timers.pop(stream_id, None)
        if call is not None and call.active():
            call.cancel()

    # -- events of streams answered early ---------------------------------------

    def _requestDataReceived(self, event: Any) -> None:
        if event.stream_id not in self.streams:
            # refused in this same read: the connection's window still
            # counts these bytes, so give them back
            self.conn.acknowledge_received_data(
                event.flow_controlled_length, event.stream_id
            )
            return
        super()._requestDataReceived(event)

    def _requestEnded(self, event: Any) -> None:
        if event.stream_id not in self.streams:
            return
        self._bodies.discard(event.stream_id)
        if event.stream_id not in self._pending:
            self._cancel_timer(event.stream_id)  # the whole body is in
        super()._requestEnded(event)

    def _requestAborted(self, event: Any) -> None:
        if event.stream_id not in self.streams:
            return
        self._pending.discard(event.stream_id)
        self._cancel_timer(event.stream_id)
        super()._requestAborted(event)

    def _requestDone(self, streamID: int) -> None:
        self._cancel_timer(streamID)
        self._bodies.discard(streamID)
        self._pending.discard(streamID)
        super()._requestDone(streamID)
        if not self.streams:
            self._arm_head()


def start_h2(channel: Any) -> BoundedH2Connection:
    """Move ``channel`` (a :class:`~wsplugin.web.BoundedHTTPChannel` whose
    client negotiated ``h2``) to HTTP/2: returns the connection it passes
    its bytes to. The channel stays the transport's protocol (the
    connection's counted slot is on it); the new connection takes its
    bounds, site and access log, and becomes the transport's producer."""
    channel.setTimeout(None)
    transport = channel.transport
    transport.unregisterProducer()  # the HTTP/1.1 channel was the producer
    h2 = BoundedH2Connection(
        channel.clock,
        head_timeout=channel.head_timeout,
        max_request_body=channel.max_request_body,
        body_timeout=channel.body_timeout,
        log_limited=channel.log_limited,
    )
    h2.requestFactory = channel.requestFactory
    h2.site = channel.site
    h2.factory = channel.factory
    h2.timeOut = channel.timeOut
    h2.callLater = channel.callLater
    h2.makeConnection(transport)
    transport.registerProducer(h2, True)
    return h2
