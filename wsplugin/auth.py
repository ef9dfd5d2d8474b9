"""Authentication before the upgrade (seeds: sgc ``Authentication``, FPC ``Accept``).

An authenticator is any object with ``authenticate(conn)``: it returns the
client's identity (or a Deferred of it), or raises
:class:`~wsplugin.Reject` (401/403). The server calls it for its route before
``allow``, so an unauthenticated client never gets a 101, and stores the
identity in ``conn.user`` for every later event. Routes choose their own:
one route public, another protected::

    server.register_handler("*", "/public", Public())
    server.register_handler("*", "/admin", Admin(),
                            auth=BasicAuth(HtpasswdChecker("users.htpasswd")))

Secrets are compared in constant time and never logged; a failure is logged
with the peer, the path (without its query) and the scheme and reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import parse_qs
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from wsplugin._events import as_deferred
from wsplugin.connection import Connection
from wsplugin.errors import ConfigError, Reject

__all__ = [
    "ApiKeyAuth",
    "BasicAuth",
    "HtpasswdChecker",
    "LoginResource",
    "QueryTokenAuth",
    "SessionAuth",
    "SessionStore",
]

_log = Logger()


def _failed(conn: Connection, scheme: str, why: str) -> None:
    _log.info(
        "authentication failed for {peer} on {path} ({scheme}: {why})",
        peer=conn.request.peer_address,
        path=conn.request.path,
        scheme=scheme,
        why=why,
    )


class BasicAuth:
    """HTTP Basic credentials checked by a ``twisted.cred`` checker.

    Args:
        checker: Any ``ICredentialsChecker`` accepting ``IUsernamePassword``
            (e.g. :class:`HtpasswdChecker`, Twisted's ``FilePasswordDB`` or
            ``InMemoryUsernamePasswordDatabaseDontUse``).
        realm: The realm named in ``WWW-Authenticate``.

    Missing or wrong credentials answer 401 with
    ``WWW-Authenticate: Basic realm="..."`` and an empty body. The identity
    is the checker's avatar id, as ``str``.
    """

    def __init__(self, checker: ICredentialsChecker, realm: str = "wsplugin") -> None:
        if '"' in realm or not realm.isprintable():
            raise ConfigError("the realm must be printable and without quotes")
        self.checker = checker
        self.realm = realm

    def _reject(self) -> Reject:
        return Reject(
            401, "Unauthorized", [("WWW-Authenticate", f'Basic realm="{self.realm}"')]
        )

    def authenticate(self, conn: Connection) -> Deferred[Any]:
        """The checker's avatar id for the request's Basic credentials."""
        header = conn.request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            _failed(conn, "basic", "no credentials")
            return fail(self._reject())
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            _failed(conn, "basic", "malformed credentials")
            return fail(self._reject())
        username, sep, password = decoded.partition(":")
        if not sep:
            _failed(conn, "basic", "malformed credentials")
            return fail(self._reject())
        d = as_deferred(
            self.checker.requestAvatarId(
                UsernamePassword(username.encode(), password.encode())
            )
        )

        def denied(failure: Failure) -> Failure:
            failure.trap(UnauthorizedLogin)
            _failed(conn, "basic", "wrong user name or password")
            return Failure(self._reject())

        d.addCallbacks(_text, denied)
        return d


def _text(avatar_id: Any) -> Any:
    """A checker's avatar id as ``str`` (``twisted.cred`` checkers give bytes)."""
    return avatar_id.decode("utf-8") if isinstance(avatar_id, bytes) else avatar_id


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """Checks user names and passwords against an htpasswd-style file.

    Lines are ``user:hash``; ``#`` starts a comment. Supported hashes:
    bcrypt (``htpasswd -B``: ``$2y$``, ``$2b$``, ``$2a$``) and ``{SHA}``
    (``htpasswd -s``, weak: prefer bcrypt, with ``-C 12``). bcrypt checks run
    in a thread so they never stall the reactor. An unknown user is checked
    against a dummy entry of the file's most common scheme and bcrypt cost, so
    answering it takes as long as answering a typical known user.

    Args:
        path: The file. It is read now and again by :meth:`reload`.

    Raises:
        ConfigError: a missing file or a line with an unsupported hash.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._users: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"cannot read the password file {self.path}: {e.strerror}"
            ) from None
        users = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                raise ConfigError(f"{self.path}:{number}: expected user:hash")
            if not (hashed.startswith(("$2y$", "$2b$", "$2a$", "{SHA}"))):
                raise ConfigError(
                    f"{self.path}:{number}: unsupported hash for {user!r}; use "
                    "bcrypt (htpasswd -B) or {SHA} (htpasswd -s)"
                )
            users[user] = hashed
        self._users = users
        self._dummy = _dummy_entry(list(users.values()))

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes]:
        """The user name, if the password matches; else UnauthorizedLogin."""
        username = credentials.username.decode("utf-8", "replace")
        password = credentials.password
        hashed = self._users.get(username)
        if hashed is None:
            hashed = self._dummy  # same work as for a typical known user
        if hashed.startswith("{SHA}"):
            digest = base64.b64encode(hashlib.sha1(password).digest()).decode()
            ok = hmac.compare_digest(digest, hashed[5:]) and username in self._users
            return succeed(credentials.username) if ok else fail(UnauthorizedLogin())
        d = deferToThread(_bcrypt_check, password, hashed)

        def decide(ok: bool) -> Any:
            if ok and username in self._users:
                return credentials.username
            raise UnauthorizedLogin()

        return d.addCallback(decide)


def _dummy_entry(entries: list[str]) -> str:
    """A hash of a random password in the most common scheme (and bcrypt cost)
    among ``entries``, so unknown users take as long as known ones."""
    import bcrypt

    kinds = ["{SHA}" if e.startswith("{SHA}") else e[:7] for e in entries]
    common = max(set(kinds), key=kinds.count) if kinds else "$2b$12"
    secret = secrets.token_bytes(16)
    if common == "{SHA}":
        return "{SHA}" + base64.b64encode(hashlib.sha1(secret).digest()).decode()
    cost = int(common[4:6]) if common[4:6].isdigit() else 12
    return bcrypt.hashpw(secret, bcrypt.gensalt(cost)).decode()


def _bcrypt_check(password: bytes, hashed: str) -> bool:
    import bcrypt

    try:
        return bool(
            bcrypt.checkpw(password, hashed.replace("$2y$", "$2b$", 1).encode())
        )
    except ValueError:
        return False


class QueryTokenAuth:
    """A token in the URL query (``?token=...``), checked by your callable.

    Args:
        check: Called with the token; returns the identity, or None/False
            for an invalid token (may return a Deferred or be a coroutine).
        param: The query parameter's name.

    A missing token answers 401, an invalid one 403.
    """

    def __init__(self, check: Callable[[str], Any], param: str = "token") -> None:
        self.check = check
        self.param = param

    def authenticate(self, conn: Connection) -> Deferred[Any]:
        """The identity ``check`` returns for the request's token."""
        token = conn.request.param(self.param)
        if not token:
            _failed(conn, "token", "no token")
            return fail(Reject(401, "Unauthorized"))
        d = as_deferred(self.check(token))

        def decide(identity: Any) -> Any:
            if identity is None or identity is False:
                _failed(conn, "token", "invalid token")
                raise Reject(403, "Forbidden")
            return identity

        return d.addCallback(decide)


class ApiKeyAuth:
    """An API key in a request header (``X-API-Key`` by default).

    Args:
        keys: ``{key: identity}``, compared in constant time against every
            key, or a callable returning the identity (or None) for a key.
        header: The header carrying the key.

    A missing key answers 401, an unknown one 403.
    """

    def __init__(
        self, keys: Mapping[str, Any] | Callable[[str], Any], header: str = "X-API-Key"
    ) -> None:
        self.keys = keys
        self.header = header

    def authenticate(self, conn: Connection) -> Deferred[Any]:
        """The identity of the request's API key."""
        key = conn.request.headers.get(self.header)
        if not key:
            _failed(conn, "api key", "no key")
            return fail(Reject(401, "Unauthorized"))
        if callable(self.keys):
            d = as_deferred(self.keys(key))
        else:
            found = None
            for candidate, identity in self.keys.items():
                if hmac.compare_digest(candidate.encode(), key.encode()):
                    found = identity
            d = succeed(found)

        def decide(identity: Any) -> Any:
            if identity is None:
                _failed(conn, "api key", "unknown key")
                raise Reject(403, "Forbidden")
            return identity

        return d.addCallback(decide)


class SessionStore:
    """Session tokens with a sliding expiry (sgc ``SessionTimeout``).

    Args:
        clock: The reactor (or ``task.Clock`` in tests).
        timeout: Seconds a session lives after its last use.
    """

    def __init__(self, clock: IReactorTime, timeout: float = 900.0) -> None:
        self.clock = clock
        self.timeout = timeout
        self._sessions: dict[str, tuple[Any, float]] = {}

    def create(self, identity: Any) -> str:
        """Start a session for ``identity``; returns its token."""
        self._purge()
        token = secrets.token_urlsafe(32)
        self._sessions[token] = (identity, self.clock.seconds() + self.timeout)
        return token

    def get(self, token: str) -> Any:
        """The identity of a live session (extending it), or None."""
        entry = self._sessions.get(token)
        if entry is None:
            return None
        identity, expires = entry
        now = self.clock.seconds()
        if now >= expires:
            del self._sessions[token]
            return None
        self._sessions[token] = (identity, now + self.timeout)
        return identity

    def end(self, token: str) -> None:
        """End a session (logout)."""
        self._sessions.pop(token, None)

    def __len__(self) -> int:
        self._purge()
        return len(self._sessions)

    def _purge(self) -> None:
        now = self.clock.seconds()
        for token in [t for t, (_, e) in self._sessions.items() if now >= e]:
            del self._sessions[token]


class SessionAuth:
    """A session cookie issued by :class:`LoginResource` (sgc session auth).

    A missing, unknown or expired session answers 401.
    """

    def __init__(self, store: SessionStore, cookie: str = "wsplugin_session") -> None:
        self.store = store
        self.cookie = cookie

    def authenticate(self, conn: Connection) -> Deferred[Any]:
        """The identity of the request's session."""
        token = conn.request.cookies.get(self.cookie)
        identity = self.store.get(token) if token else None
        if identity is None:
            _failed(
                conn, "session", "no session" if not token else "unknown or expired"
            )
            return fail(Reject(401, "Unauthorized"))
        return succeed(identity)


class LoginResource(Resource):
    """``POST`` user name and password (form fields ``username``/``password``,
    or HTTP Basic) to get a session cookie for :class:`SessionAuth`.

    Answers 204 with ``Set-Cookie`` (``HttpOnly``, ``SameSite=Strict``, and
    ``Secure`` on TLS) on success, 401 otherwise; ``DELETE`` logs out.
    """

    isLeaf = True

    def __init__(
        self,
        checker: ICredentialsChecker,
        store: SessionStore,
        cookie: str = "wsplugin_session",
        path: str = "/",
    ) -> None:
        super().__init__()
        self.checker = checker
        self.store = store
        self.cookie = cookie
        self.path = path

    def render_POST(self, request: Request) -> Any:
        # credentials from the form body only: a query string would put the
        # password into access logs
        request.content.seek(0)
        form = parse_qs(request.content.read())
        username = (form.get(b"username") or [b""])[0]
        password = (form.get(b"password") or [b""])[0]
        if not username:
            username = request.getUser() or b""
            password = request.getPassword() or b""
        d = as_deferred(
            self.checker.requestAvatarId(UsernamePassword(username, password))
        )

        def ok(avatar_id: Any) -> None:
            token = self.store.create(_text(avatar_id))
            # a browser-session cookie: the server's sliding expiry decides
            # how long it is good for, not a Max-Age fixed at login
            cookie = (
                f"{self.cookie}={token}; Path={self.path}; HttpOnly; SameSite=Strict"
            )
            if request.isSecure():
                cookie += "; Secure"
            request.setHeader(b"set-cookie", cookie.encode())
            request.setResponseCode(204)
            request.finish()

        def denied(failure: Failure) -> None:
            failure.trap(UnauthorizedLogin)
            peer = getattr(request.getClientAddress(), "host", "unix")
            _log.info("login failed from {peer}", peer=peer)
            request.setResponseCode(401)
            request.setHeader(b"content-length", b"0")
            request.finish()

        d.addCallbacks(ok, denied)
        return NOT_DONE_YET

    def render_DELETE(self, request: Request) -> bytes:
        token = request.getCookie(self.cookie.encode())
        if token:
            self.store.end(token.decode("latin-1"))
        request.addCookie(
            self.cookie.encode(), b"", path=self.path.encode(), max_age="0"
        )
        request.setResponseCode(204)
        return b""
