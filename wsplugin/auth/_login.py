"""The login form: :class:`LoginResource` issues and ends the session
cookies :class:`~wsplugin.auth.SessionAuth` checks, refusing cross-site
posts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.python.failure import Failure
from twisted.web.http import parse_qs
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as WebRequest

from wsplugin.auth._common import avatar_text, log
from wsplugin.auth._http import HTTPClient, answer, peer_of
from wsplugin.auth._sessions import SessionStore
from wsplugin.auth._throttle import LoginThrottle
from wsplugin.errors import HandshakeRejected
from wsplugin.handshake import origin_allowed

__all__ = ["LoginResource"]


_MAX_FORM = 4096
"""Bytes of a login form body read (user name and password fit easily)."""


def _cross_site(request: WebRequest, allowed_origins: Sequence[str]) -> str | None:
    """Why ``request`` comes from another site, or None.

    ``Origin`` decides when present: it must be the request's own origin
    (host and port of ``Host``) or match ``allowed_origins``. Without it,
    ``Sec-Fetch-Site`` must be ``same-origin`` or ``none`` (typed by the
    user). Requests with neither header (non-browser clients) pass.
    """
    origin = request.getHeader(b"origin")
    if origin is not None:
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        patterns = ("same-origin", *allowed_origins)
        if origin_allowed(origin.decode("latin-1"), patterns, host=host):
            return None
        return "Origin " + repr(origin.decode("latin-1")[:100])
    site = request.getHeader(b"sec-fetch-site")
    if site is not None and site.strip().lower() not in (b"same-origin", b"none"):
        return "Sec-Fetch-Site " + repr(site.decode("latin-1")[:30])
    return None


class LoginResource(Resource):
    """``POST`` user name and password to get a session cookie for
    :class:`SessionAuth`; ``DELETE`` logs out.

    The credentials are the form fields ``username`` and ``password`` of an
    ``application/x-www-form-urlencoded`` body (at most 4096 bytes; the
    query string is never read, so passwords stay out of access logs), or,
    with no ``username`` field, HTTP Basic credentials. Success answers 204
    with ``Set-Cookie: <cookie>=<token>; Path=<path>; HttpOnly;
    SameSite=Strict`` (plus ``Secure`` on TLS): a browser-session cookie
    without ``Max-Age``, since the server's sliding expiry decides how long
    the session lives. Wrong credentials answer an empty 401. A session
    cookie the request already carries is rotated (same identity: same
    session, new id) or ended (another identity): the id a browser had
    before logging in is never valid after it (session fixation).

    Checks go through ``throttle`` (429/503 with ``Retry-After``, as for
    :class:`BasicAuth`); a check whose client has left is skipped. A
    cross-site ``POST`` or ``DELETE`` (an ``Origin`` other than the server's
    own or ``allowed_origins``, or ``Sec-Fetch-Site: cross-site`` /
    ``same-site``) answers 403, so another site cannot log a visitor in to
    an account of its choosing, or out.

    Args:
        checker: A ``twisted.cred`` checker for ``IUsernamePassword``.
        store: Where sessions are kept.
        cookie: The cookie's name (default: the store's).
        path: The cookie's ``Path``.
        throttle: A :class:`LoginThrottle` (share the one of your
            ``BasicAuth``); a new one if None.
        allowed_origins: Other origins allowed to post the form (patterns as
            for ``allowed_origins``, e.g. ``"https://app.example.com"``).
        trusted_proxies: Proxies in front whose ``X-Forwarded-For`` gives
            the client's address (as the server option): behind a proxy,
            without it, every client has the proxy's address, and one
            guesser's failures would block everyone's logins.
    """

    isLeaf = True

    def __init__(
        self,
        checker: ICredentialsChecker,
        store: SessionStore,
        cookie: str | None = None,
        path: str = "/",
        *,
        throttle: LoginThrottle | None = None,
        allowed_origins: Sequence[str] = (),
        trusted_proxies: int = 0,
    ) -> None:
        super().__init__()
        self.trusted_proxies = trusted_proxies
        self.checker = checker
        self.store = store
        self.cookie = cookie or store.cookie
        self.path = path
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self.allowed_origins = tuple(allowed_origins)

    def _refuse_cross_site(self, request: WebRequest) -> bool:
        why = _cross_site(request, self.allowed_origins)
        if why is None:
            return False
        log.info(
            "login refused for {peer}: cross-site request ({why}): 403",
            peer=peer_of(request, self.trusted_proxies),
            why=why,
        )
        request.setResponseCode(403)
        request.setHeader(b"content-length", b"0")
        return True

    def render_POST(self, request: WebRequest) -> Any:
        if self._refuse_cross_site(request):
            return b""
        request.content.seek(0)
        body = request.content.read(_MAX_FORM + 1)
        if len(body) > _MAX_FORM:
            request.setResponseCode(413)
            request.setHeader(b"content-length", b"0")
            return b""
        form = parse_qs(body)
        username = (form.get(b"username") or [b""])[0]
        password = (form.get(b"password") or [b""])[0]
        if not username:
            username = request.getUser() or b""
            password = request.getPassword() or b""
        peer = peer_of(request, self.trusted_proxies)
        client = HTTPClient(request, self.trusted_proxies)
        credentials = UsernamePassword(username, password)
        d = self.throttle.submit(
            peer,
            lambda: self.checker.requestAvatarId(credentials),
            lambda: not client.gone,
        )

        def ok(avatar_id: Any) -> None:
            if client.gone:
                return
            identity = avatar_text(avatar_id)
            # session fixation: a session id the browser already had is
            # never the one it has after logging in (rotated, or ended)
            presented = request.getCookie(self.cookie.encode("latin-1"))
            known = (
                self.store.check(presented.decode("latin-1"), client.request)
                if presented
                else None
            )
            token = self.store.rotate(known.id, identity) if known else None
            if token is None:
                token = self.store.create(identity)
            cookie = (
                f"{self.cookie}={token}; Path={self.path}; HttpOnly; SameSite=Strict"
            )
            if request.isSecure():
                cookie += "; Secure"
            request.setHeader(b"set-cookie", cookie.encode())
            request.setResponseCode(204)
            request.finish()

        def denied(failure: Failure) -> None:
            if failure.check(UnauthorizedLogin):
                log.info("login failed from {peer}", peer=peer)
                status, headers = 401, []
            elif failure.check(HandshakeRejected):
                rejected: HandshakeRejected = failure.value  # type: ignore[assignment]
                status, headers = rejected.status, rejected.headers
            else:
                log.failure("the login check failed", failure)
                status, headers = 500, []
            if not client.gone:
                answer(request, status, headers)

        d.addCallbacks(ok, denied)
        return NOT_DONE_YET

    def render_DELETE(self, request: WebRequest) -> bytes:
        if self._refuse_cross_site(request):
            return b""
        token = request.getCookie(self.cookie.encode())
        if token:
            self.store.end(token.decode("latin-1"))
        request.addCookie(
            self.cookie.encode(), b"", path=self.path.encode(), max_age="0"
        )
        request.setResponseCode(204)
        return b""
