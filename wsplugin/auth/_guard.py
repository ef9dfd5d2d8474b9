"""Authenticators in front of ``twisted.web``: :func:`guard` wraps a
resource tree, :func:`site_guard` a whole same-port site.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request as WebRequest

from wsplugin._events import as_deferred
from wsplugin._pending import PendingResource
from wsplugin._static import EmptyPage
from wsplugin.auth._common import log
from wsplugin.auth._http import HTTPClient
from wsplugin.errors import ConfigError, HandshakeRejected

__all__ = ["GuardedResource", "guard", "site_guard"]


def _segments(path: bytes) -> list[str] | None:
    """The decoded segments of a request path, or None for one with ``.``,
    ``..`` or an encoded ``/`` in a segment (never public)."""
    parts = [unquote(p.decode("latin-1")) for p in path.split(b"/")[1:]]
    if any(p in (".", "..") or "/" in p for p in parts):
        return None
    return parts


def _is_public(path: bytes, public: Sequence[tuple[list[str], bool]]) -> bool:
    segments = _segments(path)
    if segments is None:
        return False
    for prefix, subtree in public:
        if segments == prefix or (subtree and segments[: len(prefix)] == prefix):
            return True
    return False


def _public_paths(paths: Iterable[str]) -> list[tuple[list[str], bool]]:
    """``/login`` (that path) and ``/assets/`` (everything under it)."""
    if isinstance(paths, str):
        raise ConfigError(f"public_paths takes a list of paths, not {paths!r}")
    parsed = []
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"a public path must start with '/', not {path!r}")
        if path.endswith("/") and path != "/":
            parsed.append((path.strip("/").split("/"), True))
        else:
            parsed.append((path[1:].split("/"), False))
    return parsed


def _check(
    authenticator: Any,
    request: WebRequest,
    trusted_proxies: int,
    then: Callable[[], Any],
) -> Deferred[Any]:
    """Ask ``authenticator`` about ``request``; fires with ``then()`` (the
    identity is ``request.wsplugin_user`` by then) or with the refusal: the
    authenticator's status and headers and an empty body."""
    client = HTTPClient(request, trusted_proxies)
    try:
        d = as_deferred(authenticator.authenticate(client))
    except Exception:
        d = fail()

    def ok(identity: Any) -> Any:
        request.wsplugin_user = identity  # type: ignore[attr-defined]
        return then()

    return d.addCallbacks(ok, _refusal, errbackArgs=(request,))


def _refusal(failure: Failure, request: WebRequest) -> Resource:
    if failure.check(HandshakeRejected):
        rejected: HandshakeRejected = failure.value  # type: ignore[assignment]
        headers = {
            name.encode("latin-1"): value.encode("latin-1")
            for name, value in rejected.headers
        }
        return EmptyPage(rejected.status, headers)
    log.failure(
        "the authenticator of {path} failed",
        failure,
        path=request.path.decode("latin-1"),
    )
    return EmptyPage(500)


class GuardedResource(Resource):
    """A ``twisted.web`` resource (and everything under it) behind an
    authenticator; see :func:`guard`."""

    def __init__(
        self,
        wrapped: IResource,
        authenticator: Any,
        public_paths: Iterable[str] = (),
        trusted_proxies: int = 0,
    ) -> None:
        super().__init__()
        self.trusted_proxies = trusted_proxies
        self.wrapped = wrapped
        self.authenticator = authenticator
        self.public = _public_paths(public_paths)
        self.isLeaf = bool(getattr(wrapped, "isLeaf", False))

    def putChild(self, path: bytes, child: IResource) -> None:
        """Add a child to the guarded resource (it is guarded too)."""
        self.wrapped.putChild(path, child)

    def getChild(self, path: bytes, request: WebRequest) -> Any:
        return self.getChildWithDefault(path, request)

    def getChildWithDefault(self, path: bytes, request: WebRequest) -> Any:
        wrapped = self.wrapped
        if _is_public(request.path, self.public):
            return wrapped.getChildWithDefault(path, request)
        # the walk goes on into the wrapped tree once the client is accepted
        return PendingResource(
            _check(
                self.authenticator,
                request,
                self.trusted_proxies,
                lambda: wrapped.getChildWithDefault(path, request),
            )
        )

    def head_resource(self, request: WebRequest) -> Any:
        """The resource that answers when the walk ends here: the wrapped
        one, once the client is accepted (on wsplugin's site this is asked
        at the request head, before any body byte is read)."""
        wrapped = self.wrapped
        if _is_public(request.path, self.public):
            return wrapped
        return PendingResource(
            _check(self.authenticator, request, self.trusted_proxies, lambda: wrapped)
        )

    def render(self, request: WebRequest) -> Any:
        return self.head_resource(request).render(request)


def guard(
    resource: IResource,
    authenticator: Any,
    *,
    public_paths: Iterable[str] = (),
    trusted_proxies: int = 0,
) -> GuardedResource:
    """``resource`` and its children, answered only for authenticated clients.

    Each request is checked by ``authenticator`` (the same objects as for
    WebSocket routes: :class:`BasicAuth`, :class:`SessionAuth`,
    :class:`ApiKeyAuth`, :class:`QueryTokenAuth` or your own) before the
    resource is even looked up, so a missing file and a present one both
    answer 401 to a stranger. A refusal is the authenticator's status and
    headers with an empty body (401 + ``WWW-Authenticate`` for Basic, 403,
    429, 503). The identity is ``request.wsplugin_user`` while rendering.

    Args:
        resource: The resource to guard.
        authenticator: Checks each request (it gets an :class:`HTTPClient`).
        public_paths: Full request paths answered without a check:
            ``"/login"`` is that path only, ``"/assets/"`` everything under
            it. Matched on the decoded path; a path with ``.``/``..``
            segments is never public.
        trusted_proxies: Proxies whose ``X-Forwarded-For`` gives the
            client's address (for the throttle and the log), as the server
            option of that name.
    """
    return GuardedResource(resource, authenticator, public_paths, trusted_proxies)


def site_guard(
    authenticator: Any,
    *,
    public_paths: Iterable[str] = (),
    skip: Callable[[WebRequest], bool] | None = None,
    then: Callable[[WebRequest], Any] | None = None,
    trusted_proxies: int = 0,
) -> Callable[[WebRequest], Any]:
    """A ``before_request`` hook guarding a whole site with ``authenticator``.

    ``WebSocketServer(http_auth=...)`` uses it, so static files, the app's
    page and your resources all need credentials. A request it lets through
    is dispatched again from the site's root, and ``then`` (your own
    ``before_request``) runs after the check.

    Args:
        authenticator: Checks each request.
        public_paths: Paths answered without a check (as for :func:`guard`).
        skip: Requests not checked here (the server passes WebSocket
            upgrades that a route takes: the route's own ``auth`` checks
            them).
        then: The next ``before_request`` hook, if any.
        trusted_proxies: As for :func:`guard`.
    """
    public = _public_paths(public_paths)

    def before_request(request: WebRequest) -> Any:
        if _is_public(request.path, public) or (skip is not None and skip(request)):
            return then(request) if then is not None else None
        return _check(
            authenticator,
            request,
            trusted_proxies,
            lambda: then(request) if then is not None else None,
        )

    return before_request
