"""Whether a connection may open: the decisions of the opening handshake.

Three steps, in the order a connection meets them:

1. :func:`screen_connection`: the server handler's ``on_connect(peer)``,
   when TCP is accepted and before any byte is read (also used by the
   same-port HTTP channel, so both refuse alike);
2. :func:`check_head`: the request head, once complete: size limits, the
   request target, a body, the route, the ``Origin``
   (:class:`HeadCheck` or a :class:`Refusal` with its HTTP status);
3. :class:`HandshakeDecision`: after Autobahn validated the upgrade, the
   route's authenticator (``verify_peer`` first), then ``allow``; it
   accepts with the subprotocol and the response headers, or refuses with
   Autobahn's ``ConnectionDeny`` (status, reason, and a ``Reject``'s headers).

Each step returns a value or a Deferred; none touches a transport. The
protocol carries the outcome out (pausing reading while a Deferred is
pending, writing the HTTP answer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autobahn.websocket.types import ConnectionDeny
from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._events import as_deferred
from wsplugin.errors import HandshakeRejected, Reject, RouteNotFound
from wsplugin.handshake import (
    RequestHead,
    body_problem,
    check_header,
    normalize_head,
    origin_allowed,
    parse_request_head,
    target_problem,
    version_problem,
)
from wsplugin.tls import with_peer_check

if TYPE_CHECKING:
    from wsplugin._dispatch import Dispatch
    from wsplugin._routing import Route, Router
    from wsplugin.config import ServerConfig
    from wsplugin.connection import Connection

__all__ = [
    "HandshakeDecision",
    "HeadCheck",
    "Refusal",
    "check_head",
    "screen_connection",
]

# the namespace of the public class whose connections these are: operators
# filter logs on it (docs/web.md shows it)
_log = Logger(namespace="wsplugin.protocol.WebSocketServerProtocol")


def screen_connection(
    hook: Callable[[Any], Any],
    peer: Any,
    *,
    log: Logger,
    log_peer: Any,
    refuse: Callable[[], None],
    drop: Callable[[], None],
    pause: Callable[[], None],
    resume: Callable[[], None],
) -> None:
    """Ask ``on_connect(peer)`` whether a TCP connection may go on.

    ``False`` (or a Deferred firing False) calls ``refuse`` (close
    gracefully); an exception or a failed Deferred is logged and calls
    ``drop`` (abort). While a Deferred is pending, ``pause`` stops reading;
    ``resume`` is called when it allows the connection.

    Args:
        hook: The server handler's ``on_connect``.
        peer: The peer's Twisted address, handed to ``hook``.
        log: Where refusals and failures are logged.
        log_peer: The peer as the log names it.
    """
    try:
        result = hook(peer)
    except Exception:
        log.failure("on_connect raised; dropping {peer}", peer=log_peer)
        drop()
        return
    if isinstance(result, bool) or result is None:
        if result is False:
            log.info("on_connect refused {peer}", peer=log_peer)
            refuse()
        return
    d = as_deferred(result)
    if not d.called:
        pause()

    def decided(allowed: Any) -> None:
        if allowed is False:
            log.info("on_connect refused {peer}", peer=log_peer)
            refuse()
        else:
            resume()

    def failed(failure: Failure) -> None:
        log.failure("on_connect failed; dropping {peer}", failure, peer=log_peer)
        drop()

    d.addCallbacks(decided, failed)


@dataclass(frozen=True)
class Refusal:
    """A handshake answered with an HTTP error before any upgrade.

    Attributes:
        status: The HTTP status.
        reason: Why (for the log and Autobahn's ``wasNotCleanReason``; the
            status line carries the standard phrase).
        log_format: The log line (PEP 3101; ``{peer}`` is filled in).
        log_fields: Its other fields.
    """

    status: int
    reason: str
    log_format: str
    log_fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadCheck:
    """A complete request head that passed :func:`check_head`.

    Attributes:
        head: The parsed head.
        route: The route that serves it.
        data: The bytes for Autobahn's own validation: the head (normalized
            for ``skip_upgrade_check`` / ``skip_version_check``) and what
            followed it.
    """

    head: RequestHead
    route: Route
    data: bytes


def check_head(
    data: bytes,
    config: ServerConfig,
    router: Router,
    fixed_route: Route | None = None,
) -> HeadCheck | Refusal | None:
    """Check the request head at the start of ``data``.

    Returns None while the head is incomplete; a :class:`Refusal` for a head
    over ``max_request_head`` / ``max_headers`` (431/400...), an HTTP
    version below 1.1, a bad request target or a body (400), no route
    (404), an ``Origin`` the route does not allow (403); otherwise a
    :class:`HeadCheck`.

    Args:
        data: The bytes received so far.
        config: The server's options (the head limits are server-wide).
        router: Resolves the route from the head's host and path.
        fixed_route: The route to use instead: a request taken over from
            ``twisted.web`` comes with its route resolved there, from the
            very path its ``before_request`` hook saw.
    """
    try:
        head = parse_request_head(data, config.max_request_head, config.max_headers)
    except HandshakeRejected as e:
        return Refusal(
            e.status,
            e.reason,
            "rejecting handshake from {peer}: {status}",
            {"status": e.status},
        )
    if head is None:
        return None
    problem = (
        version_problem(head.version)
        or target_problem(head.target)
        or body_problem(head)
    )
    if problem is not None:
        return Refusal(
            400,
            problem,
            "bad request version, target or body from {peer}: {problem}: 400",
            {"problem": problem},
        )
    route = fixed_route or router.resolve(head.get("host") or "", head.path)
    if route is None:
        e = RouteNotFound(head.host, head.path)
        return Refusal(
            e.status,
            e.reason,
            "no route for host {host!r} path {path!r} from {peer}: 404",
            {"host": head.host, "path": head.path},
        )
    cfg = route.config
    origin = head.get("origin")
    if origin is not None and not origin_allowed(
        origin,
        cfg.allowed_origins,
        host=head.get("host") or "",
        authenticated=route.auth is not None,
    ):
        return Refusal(
            403,
            "Forbidden",
            "origin {origin!r} not allowed from {peer}: 403",
            {"origin": origin},
        )
    normalized = normalize_head(head, cfg.skip_upgrade_check, cfg.skip_version_check)
    if normalized is not None:
        data = normalized + data[head.length :]
    return HeadCheck(head, route, data)


class HandshakeDecision:
    """Authentication and ``allow`` for one handshake.

    :meth:`decide` runs the route's authenticator (after the handler's
    ``verify_peer``, :func:`wsplugin.tls.with_peer_check`), sets
    ``conn.user``, then asks ``allow``. It returns (or fires its Deferred
    with) Autobahn's accept value ``(subprotocol, headers)``, or raises
    ``ConnectionDeny``: a ``Reject`` or ``False`` with its status (the
    headers and reason phrase are kept in :attr:`reject_headers` and
    :attr:`reject_reason` for the HTTP answer); anything else with 500,
    reported to ``on_error``.

    Args:
        route: The connection's route.
        conn: The connection being decided (state ``connecting``).
        dispatch: Its event dispatch (``allow``, ``on_error``).
        peer: The peer as the log names it.
    """

    __slots__ = ("route", "conn", "dispatch", "peer", "reject_headers", "reject_reason")

    def __init__(
        self, route: Route, conn: Connection, dispatch: Dispatch, peer: str
    ) -> None:
        self.route = route
        self.conn = conn
        self.dispatch = dispatch
        self.peer = peer
        self.reject_headers: list[tuple[str, str]] | None = None
        self.reject_reason: str | None = None

    def decide(self) -> Any:
        """The verdict: ``(subprotocol, headers)``, a Deferred of it, or
        ``ConnectionDeny`` raised (directly or through the Deferred)."""
        auth = with_peer_check(self.route.handler, self.route.auth)
        if auth is None:
            return self._ask_allow()
        try:
            identity = auth.authenticate(self.conn)
        except Exception:
            return self._failed(Failure())
        d = as_deferred(identity)
        d.addCallback(self._authenticated)
        d.addErrback(self._failed)
        return d

    def _authenticated(self, identity: Any) -> Any:
        self.conn.user = identity
        return self._ask_allow()

    def _ask_allow(self) -> Any:
        allow = self.dispatch.events.get("allow")
        if allow is None:
            return self._accepted(None)
        try:
            result = allow(self.conn)
        except Exception:
            return self._failed(Failure())
        d = as_deferred(result)
        d.addCallback(self._accepted)
        d.addErrback(self._failed)
        return d

    def _accepted(self, verdict: Any) -> Any:
        conn = self.conn
        if isinstance(verdict, HandshakeRejected):
            raise verdict
        if verdict is False:
            raise Reject(403, "Forbidden")
        if verdict not in (True, None):
            raise TypeError(
                f"allow() must return True, False, None or a Reject, not {verdict!r}"
            )
        chosen = conn.subprotocol
        if chosen is not None and chosen not in conn.request.protocols:
            raise ValueError(
                f"allow() chose subprotocol {chosen!r}, which the client "
                f"did not offer ({list(conn.request.protocols)!r})"
            )
        headers: dict[str, list[str]] = {}
        for name, value in conn.response_headers:
            check_header(name, value)
            headers.setdefault(name, []).append(value)
        return (chosen, headers)

    def _failed(self, failure: Failure) -> None:
        if failure.check(HandshakeRejected):
            rejected: HandshakeRejected = failure.value  # type: ignore[assignment]
            _log.info(
                "handshake refused for {peer} on {path}: {status} {reason}",
                peer=self.peer,
                path=self.conn.request.path,
                status=rejected.status,
                reason=rejected.reason,
            )
            self.reject_headers = rejected.headers
            self.reject_reason = rejected.reason
            raise ConnectionDeny(rejected.status, rejected.reason)
        self.dispatch.report(failure, "allow() raised")
        raise ConnectionDeny(500, "Internal Server Error")
