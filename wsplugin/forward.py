"""Forwarding HTTP requests to an upstream server (sgc ``OnBeforeForwardHTTP``
/ ``OnAfterForwardHTTP``).

:class:`ForwardResource` is a ``twisted.web`` resource that passes every
request reaching it, or anything under it, to another HTTP server and
relays the answer, so that a WebSocket server can sit in front of an
application server on one port::

    from wsplugin.forward import ForwardResource

    api = ForwardResource("http://127.0.0.1:9000/v1")
    root.putChild(b"api", api)   # /api/users?x=1 -> http://127.0.0.1:9000/v1/users?x=1
    server = WebSocketServer(Chat(), http=root)

It is built on ``twisted.web.client.Agent`` rather than Twisted's
``ReverseProxyResource``, which speaks HTTP/1.0 to the upstream, has no
timeouts and no TLS, answers a refused connection with 501, and reads the
request body whole into memory. Here:

* the upstream may be ``http://`` or ``https://`` (certificates checked;
  ``tls_policy`` to trust a private CA), connections are kept alive and
  reused (:meth:`ForwardResource.close` closes them);
* no connection within ``connect_timeout``, or no response head within
  ``timeout``, answers **504**; a refused connection, a failed TLS
  handshake, or an invalid or cut response answers **502**; each with a
  log line naming the upstream and the reason;
* hop-by-hop headers are dropped both ways (RFC 9110 section 7.6.1),
  ``X-Forwarded-For``/``-Proto``/``-Host`` and ``Via`` are added;
* the request body is bounded by ``max_request_body`` from the request head
  (413) and sent from where it was stored (memory under 100 kB, a temporary
  file above), never parsed as a form; the response body is relayed piece by
  piece as it arrives, with the client's pace applied to the upstream
  (a client that reads slowly slows the upstream; nothing piles up);
* a handler can rewrite the request (``before_forward``) and inspect or
  change the response or the error (``after_forward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    FileBodyProducer,
    HTTPConnectionPool,
    ResponseDone,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from wsplugin._events import as_deferred, bind_events
from wsplugin._forwarding import (
    downstream_headers,
    join_path,
    split_upstream,
    upstream_headers,
)
from wsplugin._relaying import (
    MESSAGES,
    BodySpool,
    Call,
    Drop,
    Relay,
    describe,
    is_timeout,
    plain,
    render_instead,
    stop_producer,
)
from wsplugin.errors import ConfigError
from wsplugin.handshake import target_problem

__all__ = ["ForwardResource", "ForwardedResponse", "UpstreamRequest"]

_log = Logger()

_EVENTS = ("before_forward", "after_forward")


@dataclass
class UpstreamRequest:
    """The request about to be sent upstream; ``before_forward`` may change
    any attribute.

    Attributes:
        method: The method, e.g. ``b"GET"``.
        url: The full upstream URL, e.g. ``b"http://127.0.0.1:9000/v1/users?x=1"``.
        headers: The headers to send (``twisted.web.http_headers.Headers``),
            hop-by-hop ones already removed, ``X-Forwarded-*`` and ``Via``
            added. ``Host`` is taken from ``url`` unless set here.
        body: The body: a readable binary file (the stored request body,
            by default), ``bytes``, any ``IBodyProducer``, or None for none.
    """

    method: bytes
    url: bytes
    headers: Headers
    body: Any = None


@dataclass
class ForwardedResponse:
    """The answer about to be relayed; ``after_forward`` may change any
    attribute.

    Attributes:
        code: The status code (the upstream's, or 502/504 on an error).
        phrase: The reason phrase.
        headers: The response headers, hop-by-hop ones removed.
        error: Why forwarding failed (a ``Failure``), or None.
        body: None to relay the upstream's body as it arrives; ``bytes`` to
            answer with those instead (the upstream's body is then dropped
            unread). On an error it holds the short text answer.
        upstream: The request that was sent.
    """

    code: int
    phrase: bytes
    headers: Headers
    upstream: UpstreamRequest
    error: Failure | None = None
    body: bytes | None = None


class ForwardResource(Resource):
    """Forward requests for this resource and everything under it upstream.

    Mounted at ``/api`` with upstream ``http://h:9000/v1``, a request for
    ``/api/a/b?q=1`` goes to ``http://h:9000/v1/a/b?q=1`` (path and query as
    the client sent them); as the site's ``http=`` resource, every path
    that no WebSocket route takes is forwarded. Children added with
    ``putChild`` are served locally instead. Every method is forwarded;
    WebSocket upgrades are not (``Upgrade`` is hop-by-hop: the upstream sees
    a plain request).

    Args:
        upstream: The upstream's base URL (``http://`` or ``https://``, with
            an optional base path; no query).
        handler: An object with either or both of:

            * ``before_forward(request, upstream)``: may change the
              :class:`UpstreamRequest` (method, URL, headers, body), or
              return a ``twisted.web`` resource to answer with instead of
              forwarding (sgc ``OnBeforeForwardHTTP``);
            * ``after_forward(request, response)``: may change the
              :class:`ForwardedResponse` (status, headers, or a body of its
              own), the error case included (sgc ``OnAfterForwardHTTP``).

            Both may return a Deferred or a coroutine.
        timeout: Seconds from the start of forwarding to the upstream's
            response head (connecting and sending the body included; 30),
            and the longest silence of the upstream while its body is
            relayed. 504 when it runs out before the head; after the head,
            the client's connection is closed. 0 for none.
        connect_timeout: Seconds to connect (10); 504 after it.
        max_request_body: Largest request body, in bytes; None for the
            server's ``max_request_body`` (1 MiB by default), 0 for none.
        request_body_timeout: Seconds for the request body; None for the
            server's.
        preserve_host: Send the client's ``Host`` header upstream (the
            upstream's own host by default).
        trusted_proxies: Proxies in front of this server: with 0, the
            client's ``X-Forwarded-Proto``/``-Host`` are replaced, with more
            they are kept (``X-Forwarded-For`` is always appended to).
        tls_policy: The ``IPolicyForHTTPS`` for ``https://`` upstreams; by
            default the system's trusted CAs
            (``BrowserLikePolicyForHTTPS()``); pass
            ``BrowserLikePolicyForHTTPS(trustRoot=...)`` for a private CA.
        via: This hop's name in the ``Via`` header.
        agent: An ``IAgent`` to use instead of the built-in one (then
            ``connect_timeout`` and ``tls_policy`` are the agent's business).
        reactor: The reactor (timers, connections); the global one if None.
    """

    def __init__(
        self,
        upstream: str,
        handler: Any = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_request_body: int | None = None,
        request_body_timeout: float | None = None,
        preserve_host: bool = False,
        trusted_proxies: int = 0,
        tls_policy: Any = None,
        via: str = "wsplugin",
        agent: Any = None,
        reactor: Any = None,
    ) -> None:
        super().__init__()
        try:
            self.origin, self.base_path = split_upstream(upstream)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if timeout < 0 or connect_timeout < 0:
            raise ConfigError("timeout and connect_timeout must be >= 0")
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.upstream = upstream
        self.handler = handler
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_request_body = max_request_body
        self.request_body_timeout = request_body_timeout
        self.preserve_host = preserve_host
        self.trusted_proxies = trusted_proxies
        self.via = b"1.1 " + via.encode("ascii")
        self._reactor = reactor
        self._events = bind_events(handler, _EVENTS)
        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            agent = Agent(
                reactor,
                contextFactory=tls_policy or BrowserLikePolicyForHTTPS(),
                connectTimeout=connect_timeout or None,
                pool=self._pool,
            )
        self.agent = agent
        self._cooperator = Cooperator(
            scheduler=lambda work: reactor.callLater(0, work), started=True
        )

    def close(self) -> Deferred[None]:
        """Close the kept-alive upstream connections (at shutdown)."""
        if self._pool is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed

    # -- wiring into the site -------------------------------------------------

    def getChild(self, path: bytes, request: Any) -> Resource:
        return _Below(self, len(request.prepath) - 1)

    def render(self, request: Any) -> Any:
        return self.forward(request, len(request.prepath))

    def open_request_body(self, request: Any, length: int | None) -> BodySpool:
        """Called by wsplugin's site once the head is complete: the body is
        kept for the upstream request, never parsed (see :class:`BodySpool`)."""
        return BodySpool(length)

    # -- forwarding -----------------------------------------------------------

    def forward(self, request: Any, start: int) -> Any:
        """Forward ``request``; the path segments from ``start`` on follow the
        base path. Returns ``NOT_DONE_YET``."""
        d = Deferred.fromCoroutine(self._forward(request, start))
        d.addErrback(_crashed, request)
        return NOT_DONE_YET

    def upstream_request(self, request: Any, start: int) -> UpstreamRequest:
        """The :class:`UpstreamRequest` for ``request`` before any hook."""
        raw_path, sep, query = request.uri.partition(b"?")
        rest = raw_path[1:].split(b"/")[start:] if raw_path != b"*" else []
        url = (
            self.origin
            + join_path(self.base_path, rest)
            + (b"?" + query if sep else b"")
        )
        peer = request.getClientAddress()
        headers = upstream_headers(
            request.requestHeaders,
            client=str(getattr(peer, "host", peer)),
            secure=request.isSecure(),
            host=request.getHeader(b"host"),
            trusted_proxies=self.trusted_proxies,
            via=self.via,
            preserve_host=self.preserve_host,
        )
        content = request.content
        body: Any = None
        if isinstance(content, BodySpool):
            if content.size:
                content.file.seek(0)
                body = content.file
        elif content is not None:
            content.seek(0, 2)
            if content.tell():
                content.seek(0)
                body = content
        return UpstreamRequest(request.method, url, headers, body)

    async def _forward(self, request: Any, start: int) -> None:
        call = Call(request)
        problem = target_problem(
            request.uri.decode("latin-1"), allow_asterisk=request.method == b"OPTIONS"
        )
        if problem is not None:
            _log.info(
                "not forwarding {method} from {peer}: {problem}: 400",
                method=request.method.decode("latin-1"),
                peer=call.peer,
                problem=problem,
            )
            plain(request, 400)
            return
        upstream = self.upstream_request(request, start)
        before = self._events.get("before_forward")
        if before is not None:
            try:
                answer = await as_deferred(before(request, upstream))
            except Exception:
                _log.failure("before_forward failed", Failure())
                if not call.gone:
                    plain(request, 500)
                return
            if answer is not None:
                if not call.gone:
                    render_instead(request, IResource(answer))
                return
        if call.gone:
            return
        producer = self._producer(upstream.body)
        timed_out: list[bool] = []
        d = self.agent.request(
            upstream.method, upstream.url, upstream.headers, producer
        )
        timer = None
        if self.timeout:

            def expire() -> None:
                timed_out.append(True)
                d.cancel()

            timer = self._reactor.callLater(self.timeout, expire)
        call.pending = d
        response: Any = None
        failure: Failure | None = None
        try:
            response = await d
        except Exception:
            failure = Failure()
        finally:
            call.pending = None
            if timer is not None and timer.active():
                timer.cancel()
        if call.gone:
            stop_producer(producer)
            if response is not None:
                response.deliverBody(Drop())
            return
        if failure is not None:
            stop_producer(producer)
            status = 504 if timed_out or is_timeout(failure) else 502
            reason = (
                f"no response within {self.timeout:g} s"
                if timed_out
                else describe(failure)
            )
            _log.warn(
                "forwarding {method} {path} from {peer} to {upstream} failed: "
                "{reason}; answering {status}",
                method=upstream.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
                peer=call.peer,
                upstream=self.upstream,
                reason=reason,
                status=status,
            )
            result = ForwardedResponse(
                code=status,
                phrase=HTTPStatus(status).phrase.encode("ascii"),
                headers=Headers({b"content-type": [b"text/plain; charset=utf-8"]}),
                upstream=upstream,
                error=failure,
                body=MESSAGES[status],
            )
        else:
            result = ForwardedResponse(
                code=response.code,
                phrase=response.phrase,
                headers=downstream_headers(response.headers),
                upstream=upstream,
            )
        after = self._events.get("after_forward")
        if after is not None:
            try:
                await as_deferred(after(request, result))
            except Exception:
                _log.failure("after_forward failed", Failure())
                if response is not None:
                    response.deliverBody(Drop())
                stop_producer(producer)
                if not call.gone:
                    plain(request, 500)
                return
        if call.gone:
            if response is not None:
                response.deliverBody(Drop())
            stop_producer(producer)
            return
        request.defaultContentType = None  # the upstream's type, or none
        request.setResponseCode(result.code, result.phrase)
        for name, values in result.headers.getAllRawHeaders():
            request.responseHeaders.setRawHeaders(name, list(values))
        if result.body is not None or response is None:
            if response is not None:
                response.deliverBody(Drop())
            stop_producer(producer)
            body = result.body or b""
            request.responseHeaders.removeHeader(b"transfer-encoding")
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()
            return
        if (
            response.length is not UNKNOWN_LENGTH
            and request.method != b"HEAD"
            and result.code not in (204, 304)
            and result.code >= 200
        ):
            # Twisted's client keeps the framing headers to itself
            request.setHeader(b"content-length", b"%d" % response.length)
        await self._relay(request, call, response, upstream)
        stop_producer(producer)

    async def _relay(
        self, request: Any, call: Call, response: Any, upstream: UpstreamRequest
    ) -> None:
        relay = Relay(request, self._reactor, self.timeout)
        call.relay = relay
        response.deliverBody(relay)
        (reason,) = await relay.done
        call.relay = None
        if call.gone:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
            return
        why = f"silent for {self.timeout:g} s" if relay.stalled else describe(reason)
        _log.warn(
            "forwarding {method} {path} from {peer} to {upstream}: the response "
            "was cut short ({reason}); closing the client's connection",
            method=upstream.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            peer=call.peer,
            upstream=self.upstream,
            reason=why,
        )
        request.loseConnection()

    def _producer(self, body: Any) -> Any:
        if body is None:
            return None
        if isinstance(body, (bytes, bytearray, memoryview)):
            body = BytesIO(bytes(body))
        if IBodyProducer.providedBy(body):
            return body
        if hasattr(body, "read"):
            return FileBodyProducer(body, cooperator=self._cooperator)
        raise TypeError(
            f"UpstreamRequest.body must be bytes, a file or an IBodyProducer, "
            f"not {type(body).__name__}"
        )


class _Below(Resource):
    """Anything under a :class:`ForwardResource`: remembers where the
    forwarded part of the path starts."""

    isLeaf = True

    def __init__(self, forward: ForwardResource, start: int) -> None:
        super().__init__()
        self._forward = forward
        self._start = start

    @property
    def max_request_body(self) -> int | None:
        return self._forward.max_request_body

    @property
    def request_body_timeout(self) -> float | None:
        return self._forward.request_body_timeout

    def open_request_body(self, request: Any, length: int | None) -> BodySpool:
        return self._forward.open_request_body(request, length)

    def render(self, request: Any) -> Any:
        return self._forward.forward(request, self._start)


def _crashed(failure: Failure, request: Any) -> None:
    """A bug on the way: logged; the client gets 500, or its connection is
    closed when the answer had already begun."""
    _log.failure("forwarding failed", failure)
    if request.channel is None or request.finished:
        return
    if request.startedWriting:
        request.loseConnection()
    else:
        plain(request, 500)
