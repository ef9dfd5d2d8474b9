"""Credentials in the request: HTTP Basic (:class:`BasicAuth`), a token in
the query (:class:`QueryTokenAuth`) and an API key in a header
(:class:`ApiKeyAuth`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from wsplugin._events import as_deferred
from wsplugin.auth._common import avatar_text, log_failure
from wsplugin.auth._http import HTTPClient
from wsplugin.auth._probe import still_waiting
from wsplugin.auth._throttle import LoginThrottle
from wsplugin.connection import Connection
from wsplugin.errors import ConfigError, Reject

__all__ = ["ApiKeyAuth", "BasicAuth", "QueryTokenAuth"]


class BasicAuth:
    """HTTP Basic credentials checked by a ``twisted.cred`` checker.

    Args:
        checker: Any ``ICredentialsChecker`` accepting ``IUsernamePassword``
            (e.g. :class:`HtpasswdChecker`, Twisted's ``FilePasswordDB`` or
            ``InMemoryUsernamePasswordDatabaseDontUse``).
        realm: The realm named in ``WWW-Authenticate``.
        throttle: The :class:`LoginThrottle` the checks go through; a new one
            (default limits, the global reactor's clock) if None.

    Missing or wrong credentials answer 401 with
    ``WWW-Authenticate: Basic realm="..."`` and an empty body; the throttle
    answers 429 or 503 (with ``Retry-After``). The identity is the checker's
    avatar id, as ``str``.
    """

    def __init__(
        self,
        checker: ICredentialsChecker,
        realm: str = "wsplugin",
        *,
        throttle: LoginThrottle | None = None,
    ) -> None:
        if '"' in realm or not realm.isprintable():
            raise ConfigError("the realm must be printable and without quotes")
        self.checker = checker
        self.realm = realm
        self.throttle = throttle if throttle is not None else LoginThrottle()

    def _reject(self) -> Reject:
        return Reject(
            401, "Unauthorized", [("WWW-Authenticate", f'Basic realm="{self.realm}"')]
        )

    def authenticate(self, conn: Connection | HTTPClient) -> Deferred[Any]:
        """The checker's avatar id for the request's Basic credentials."""
        header = conn.request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            log_failure(conn, "basic", "no credentials")
            return fail(self._reject())
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            log_failure(conn, "basic", "malformed credentials")
            return fail(self._reject())
        username, sep, password = decoded.partition(":")
        if not sep:
            log_failure(conn, "basic", "malformed credentials")
            return fail(self._reject())
        credentials = UsernamePassword(username.encode(), password.encode())
        d = self.throttle.submit(
            conn.request.peer_address,
            lambda: self.checker.requestAvatarId(credentials),
            lambda: still_waiting(conn),
        )

        def denied(failure: Failure) -> Failure:
            if failure.check(UnauthorizedLogin):
                log_failure(conn, "basic", "wrong user name or password")
                return Failure(self._reject())
            return failure  # the throttle's 429/503/499, or the checker's error

        d.addCallbacks(avatar_text, denied)
        return d


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

    def authenticate(self, conn: Connection | HTTPClient) -> Deferred[Any]:
        """The identity ``check`` returns for the request's token."""
        token = conn.request.param(self.param)
        if not token:
            log_failure(conn, "token", "no token")
            return fail(Reject(401, "Unauthorized"))
        d = as_deferred(self.check(token))

        def decide(identity: Any) -> Any:
            if identity is None or identity is False:
                log_failure(conn, "token", "invalid token")
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

    def authenticate(self, conn: Connection | HTTPClient) -> Deferred[Any]:
        """The identity of the request's API key."""
        key = conn.request.headers.get(self.header)
        if not key:
            log_failure(conn, "api key", "no key")
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
                log_failure(conn, "api key", "unknown key")
                raise Reject(403, "Forbidden")
            return identity

        return d.addCallback(decide)
