"""Sessions: :class:`SessionStore` (bounded, sliding expiry, closing the
connections of a session that ends) and :class:`SessionAuth`.
"""

from __future__ import annotations

import secrets
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime

from wsplugin.auth._common import LimitedLog, log, log_failure
from wsplugin.auth._http import HTTPClient
from wsplugin.connection import Connection, ConnectionState
from wsplugin.errors import ConfigError, Reject

__all__ = ["SessionAuth", "SessionStore"]


@dataclass
class _Session:
    identity: Any
    expires: float
    conns: weakref.WeakSet[Connection] = field(default_factory=weakref.WeakSet)


class SessionStore:
    """Session tokens with a sliding expiry (sgc ``SessionTimeout``).

    A session lives ``timeout`` seconds after its last use (:meth:`get`).
    When it ends, by :meth:`end` (logout), by expiring, or by being evicted,
    the WebSocket connections opened with it (:meth:`attach`, which
    :class:`SessionAuth` calls) are closed with 1008: a logged-out user's
    open sockets do not outlive the login. An open connection does not
    extend its session; ``store.get(token)`` does.

    Sessions are bounded: logging in again and again (2,000 logins made
    2,001 sessions in 1.7 s before the bound) ends the identity's least
    recently used session beyond ``max_per_identity``, and the store's
    least recently used session beyond ``max_sessions``.

    Args:
        clock: The reactor (or ``task.Clock`` in tests).
        timeout: Seconds a session lives after its last use.
        max_sessions: Most sessions in the store (at least 1).
        max_per_identity: Most sessions of one identity (at least 1); the
            identity must be hashable (checkers give user names).
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float = 900.0,
        *,
        max_sessions: int = 10_000,
        max_per_identity: int = 16,
    ) -> None:
        for name, value in [
            ("max_sessions", max_sessions),
            ("max_per_identity", max_per_identity),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, not {value!r}")
        self.clock = clock
        self.timeout = timeout
        self.max_sessions = max_sessions
        self.max_per_identity = max_per_identity
        # least recently used first: with one timeout for all, also the
        # order in which they expire
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._by_identity: dict[Any, OrderedDict[str, None]] = {}
        self._attached: set[str] = set()
        self._timer: Any = None
        self._evict_log = LimitedLog()

    def create(self, identity: Any) -> str:
        """Start a session for ``identity``; returns its token."""
        self._purge()
        mine = self._by_identity.get(identity)
        while mine is not None and len(mine) >= self.max_per_identity:
            self._evict(next(iter(mine)), "max_per_identity")
            mine = self._by_identity.get(identity)
        while len(self._sessions) >= self.max_sessions:
            self._evict(next(iter(self._sessions)), "max_sessions")
        token = secrets.token_urlsafe(32)
        self._sessions[token] = _Session(identity, self.clock.seconds() + self.timeout)
        self._by_identity.setdefault(identity, OrderedDict())[token] = None
        return token

    def get(self, token: str) -> Any:
        """The identity of a live session (extending it), or None."""
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self.clock.seconds()
        if now >= session.expires:
            self._end(token, "session expired")
            return None
        session.expires = now + self.timeout
        self._sessions.move_to_end(token)
        self._by_identity[session.identity].move_to_end(token)
        return session.identity

    def attach(self, token: str, conn: Connection) -> None:
        """Close ``conn`` with 1008 when the session ``token`` ends.

        :class:`SessionAuth` calls it for every connection it lets in; call
        it from your own authenticator to get the same.
        """
        session = self._sessions.get(token)
        if session is None:
            return
        session.conns.add(conn)
        self._attached.add(token)
        conn.wait_closed().addCallback(lambda _: self._detach(token, conn))
        self._arm()

    def end(self, token: str) -> None:
        """End a session (logout): its connections are closed with 1008."""
        if token in self._sessions:
            self._end(token, "session ended")

    def __len__(self) -> int:
        self._purge()
        return len(self._sessions)

    def connections(self, token: str) -> list[Connection]:
        """The open connections attached to session ``token``."""
        session = self._sessions.get(token)
        return list(session.conns) if session is not None else []

    def stop(self) -> None:
        """Cancel the expiry timer (sessions stay; expiry is then checked
        on use only). For tests and for a store that is thrown away."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # -- internals ---------------------------------------------------------

    def _detach(self, token: str, conn: Connection) -> None:
        session = self._sessions.get(token)
        if session is not None:
            session.conns.discard(conn)
            if not session.conns:
                self._attached.discard(token)

    def _evict(self, token: str, limit: str) -> None:
        self._evict_log(
            self.clock,
            "ended the least recently used session ({limit} reached)",
            limit=limit,
        )
        self._end(token, "session ended")

    def _end(self, token: str, why: str) -> None:
        session = self._sessions.pop(token)
        mine = self._by_identity.get(session.identity)
        if mine is not None:
            mine.pop(token, None)
            if not mine:
                del self._by_identity[session.identity]
        self._attached.discard(token)
        conns = list(session.conns)
        session.conns = weakref.WeakSet()
        if conns:
            log.info(
                "{why}: closing its {count} connection(s) with 1008",
                why=why,
                count=len(conns),
            )
        for conn in conns:
            state = conn.state
            if state is ConnectionState.OPEN:
                conn.close(1008, why)
            elif state is ConnectionState.CONNECTING:
                conn.abort()  # authenticated, not yet open: it never opens

    def _purge(self) -> None:
        now = self.clock.seconds()
        while self._sessions:
            token, session = next(iter(self._sessions.items()))
            if now < session.expires:
                break
            self._end(token, "session expired")

    def _arm(self) -> None:
        """Keep a timer on the next expiry while connections are attached,
        so an expiring session closes them on time."""
        if self._timer is not None or not self._attached or not self._sessions:
            return
        first = next(iter(self._sessions.values()))
        delay = max(0.0, first.expires - self.clock.seconds())
        self._timer = self.clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._purge()
        for token in [t for t in self._attached if not self._sessions[t].conns]:
            self._attached.discard(token)
        self._arm()


class SessionAuth:
    """A session cookie issued by :class:`LoginResource` (sgc session auth).

    A missing, unknown or expired session answers 401. A WebSocket
    connection it lets in is attached to the session, so logging out or
    expiry closes it with 1008.
    """

    def __init__(self, store: SessionStore, cookie: str = "wsplugin_session") -> None:
        self.store = store
        self.cookie = cookie

    def authenticate(self, conn: Connection | HTTPClient) -> Deferred[Any]:
        """The identity of the request's session."""
        token = conn.request.cookies.get(self.cookie)
        identity = self.store.get(token) if token else None
        if identity is None:
            log_failure(
                conn, "session", "no session" if not token else "unknown or expired"
            )
            return fail(Reject(401, "Unauthorized"))
        if isinstance(conn, Connection) and token:
            self.store.attach(token, conn)
        return succeed(identity)
