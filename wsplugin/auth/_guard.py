"""Authenticators in front of ``twisted.web``: :func:`guard` wraps a
resource tree, :func:`site_guard` a whole same-port site.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import fail
from twisted.python.failure import Failure
from twisted.web.http import unquote as unquote_bytes
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as WebRequest

from wsplugin._events import as_deferred
from wsplugin.auth._common import log
from wsplugin.auth._http import HTTPClient, answer
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


class _Checking(Resource):
    """Answers a request once its authenticator has decided: the refusal
    (its status and headers, no body), or ``proceed(request)``."""

    isLeaf = True

    def __init__(
        self,
        authenticator: Any,
        proceed: Callable[[WebRequest], None],
        trusted_proxies: int = 0,
    ) -> None:
        super().__init__()
        self.authenticator = authenticator
        self.proceed = proceed
        self.trusted_proxies = trusted_proxies

    def render(self, request: WebRequest) -> Any:
        client = HTTPClient(request, self.trusted_proxies)
        try:
            d = as_deferred(self.authenticator.authenticate(client))
        except Exception:
            d = fail()

        def ok(identity: Any) -> None:
            if client.gone:
                return
            request.wsplugin_user = identity  # type: ignore[attr-defined]
            try:
                self.proceed(request)
            except Exception:
                request.processingFailed(Failure())

        def refused(failure: Failure) -> None:
            if client.gone:
                return
            if failure.check(HandshakeRejected):
                rejected: HandshakeRejected = failure.value  # type: ignore[assignment]
                answer(request, rejected.status, rejected.headers)
            else:
                log.failure(
                    "the authenticator of {path} failed",
                    failure,
                    path=request.path.decode("latin-1"),
                )
                answer(request, 500)

        d.addCallbacks(ok, refused)
        return NOT_DONE_YET


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
        if _is_public(request.path, self.public):
            return self.wrapped.getChildWithDefault(path, request)
        # the segment goes back: the wrapped tree looks it up once allowed
        request.postpath.insert(0, request.prepath.pop())
        wrapped = self.wrapped
        return _Checking(
            self.authenticator,
            lambda r: r.render(getChildForRequest(wrapped, r)),
            self.trusted_proxies,
        )

    def render(self, request: WebRequest) -> Any:
        if _is_public(request.path, self.public):
            return self.wrapped.render(request)
        wrapped = self.wrapped
        checking = _Checking(
            self.authenticator, lambda r: r.render(wrapped), self.trusted_proxies
        )
        return checking.render(request)


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
    passed: weakref.WeakKeyDictionary[WebRequest, bool] = weakref.WeakKeyDictionary()

    def dispatch_again(request: WebRequest) -> None:
        passed[request] = True
        request.prepath = []
        request.postpath = [unquote_bytes(p) for p in request.path[1:].split(b"/")]
        request.render(request.site.getResourceFor(request))

    checking = _Checking(authenticator, dispatch_again, trusted_proxies)

    def before_request(request: WebRequest) -> Any:
        if not passed.get(request) and not _is_public(request.path, public):
            if skip is None or not skip(request):
                return checking
        return then(request) if then is not None else None

    return before_request
