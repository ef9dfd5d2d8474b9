"""Sessions: :class:`SessionStore` (bounded, sliding expiry, events, closing
the connections of a session that ends), :class:`Session` and
:class:`SessionAuth`.
"""

from __future__ import annotations

import secrets
import weakref
from collections import OrderedDict
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from wsplugin._events import bind_events
from wsplugin.auth._common import LimitedLog, log, log_failure
from wsplugin.auth._http import HTTPClient
from wsplugin.connection import Connection, ConnectionState, Request
from wsplugin.errors import ConfigError, Reject

__all__ = ["SESSION_EVENTS", "Session", "SessionAuth", "SessionStore"]

SESSION_EVENTS = (
    "create_session",
    "on_session_start",
    "on_session_end",
    "on_invalid_session",
)
"""The methods a session handler may have (sgc ``OnCreateSession``,
``OnSessionStart``, ``OnSessionEnd``, ``OnInvalidSession``)."""

_CLOSE_REASONS = {
    "logout": "session ended",
    "expired": "session expired",
    "evicted": "session ended",
    "replaced": "session ended",
}
"""The close reason (1008) a session's WebSockets get, by why it ended."""


class Session:
    """One session, as the application sees it (``conn.session``,
    :meth:`SessionStore.session_of`, the session events).

    Attributes:
        id: The session id: the cookie's value. It is a credential, like a
            password: never log it or send it anywhere but in the cookie.
            It changes when :meth:`SessionStore.rotate` is called (at each
            login), so keep the :class:`Session` object, not the id.
        identity: Who logged in (the checker's avatar id, as ``str``).
        data: The application's object for this session: what the
            handler's ``create_session(identity)`` returned (sgc
            ``OnCreateSession``), or a new ``dict``.
        created: When the session started (the store's clock, seconds).
        expires: When it ends unless used again (sliding: every use moves
            it ``timeout`` seconds ahead).
        ended: Why it ended (``"logout"``, ``"expired"``, ``"evicted"``,
            ``"replaced"``), or None while it lives.
    """

    __slots__ = (
        "__weakref__",
        "conns",
        "created",
        "data",
        "ended",
        "expires",
        "id",
        "identity",
    )

    def __init__(self, id: str, identity: Any, data: Any, now: float, expires: float):
        self.id = id
        self.identity = identity
        self.data = data
        self.created = now
        self.expires = expires
        self.ended: str | None = None
        self.conns: weakref.WeakSet[Connection] = weakref.WeakSet()

    def __repr__(self) -> str:  # never the id: it is a credential
        state = f"ended: {self.ended}" if self.ended else "live"
        return f"<Session of {self.identity!r}, {state}>"


class SessionStore:
    """Session ids with a sliding expiry (sgc ``SessionTimeout``) and
    session events.

    A session lives ``timeout`` seconds after its last use (:meth:`get`,
    :meth:`session_of`, :class:`SessionAuth`). When it ends, by :meth:`end`
    (logout), by expiring, or by being evicted, the WebSocket connections
    opened with it (:meth:`attach`, which :class:`SessionAuth` calls) are
    closed with 1008: a logged-out user's open sockets do not outlive the
    login. An open connection does not extend its session;
    ``store.get(token)`` does.

    Sessions are bounded: logging in again and again (2,000 logins made
    2,001 sessions in 1.7 s before the bound) ends the identity's least
    recently used session beyond ``max_per_identity``, and the store's
    least recently used session beyond ``max_sessions``.

    The handler's methods, all optional (sgc's session events):

    * ``create_session(identity)``: the application's object for a new
      session (``session.data``; a ``dict`` without it). It must return at
      once.
    * ``on_session_start(session)``: a session started (a login).
    * ``on_session_end(session, reason)``: a session ended; ``reason`` is
      ``"logout"``, ``"expired"`` (on time: the store keeps a timer on the
      next expiry while it has this handler or attached connections),
      ``"evicted"`` (a bound above) or ``"replaced"`` (a login presenting
      this session's cookie ended it; see :meth:`rotate`).
    * ``on_invalid_session(request)``: a request presented a session id that
      is unknown or expired (``request`` is a :class:`~wsplugin.Request`:
      path, headers, ``peer_address``; never the id).

    They are notifications: what they return is ignored (but for
    ``create_session``), and one that raises is logged, never passed on.

    Args:
        clock: The reactor (or ``task.Clock`` in tests).
        timeout: Seconds a session lives after its last use.
        max_sessions: Most sessions in the store (at least 1).
        max_per_identity: Most sessions of one identity (at least 1); the
            identity must be hashable (checkers give user names).
        handler: An object with any of the session events above.
        cookie: The session cookie's name; :class:`SessionAuth`,
            :class:`LoginResource` and :meth:`session_of` use it unless
            given another.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float = 900.0,
        *,
        max_sessions: int = 10_000,
        max_per_identity: int = 16,
        handler: Any = None,
        cookie: str = "wsplugin_session",
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
        self.cookie = cookie
        self.handler = handler
        self._events = bind_events(handler, SESSION_EVENTS)
        # least recently used first: with one timeout for all, also the
        # order in which they expire
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._by_identity: dict[Any, OrderedDict[str, None]] = {}
        self._attached: set[str] = set()
        self._timer: Any = None
        self._evict_log = LimitedLog()

    def create(self, identity: Any) -> str:
        """Start a session for ``identity``; returns its id (the cookie's
        value). Fires ``create_session`` and ``on_session_start``."""
        self._purge()
        mine = self._by_identity.get(identity)
        while mine is not None and len(mine) >= self.max_per_identity:
            self._evict(next(iter(mine)), "max_per_identity")
            mine = self._by_identity.get(identity)
        while len(self._sessions) >= self.max_sessions:
            self._evict(next(iter(self._sessions)), "max_sessions")
        make = self._events.get("create_session")
        data = make(identity) if make is not None else {}
        if isinstance(data, Deferred):
            raise TypeError("create_session must return the session's data at once")
        now = self.clock.seconds()
        session = Session(secrets.token_urlsafe(32), identity, data, now, now)
        self._add(session)
        self._notify("on_session_start", session)
        self._arm()
        return session.id

    def session(self, token: str | None) -> Session | None:
        """The live session with id ``token`` (extending it), or None."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self.clock.seconds()
        if now >= session.expires:
            self._end(token, "expired")
            return None
        session.expires = now + self.timeout
        self._sessions.move_to_end(token)
        self._by_identity[session.identity].move_to_end(token)
        return session

    def get(self, token: str) -> Any:
        """The identity of a live session (extending it), or None."""
        session = self.session(token)
        return session.identity if session is not None else None

    def check(self, token: str | None, request: Request) -> Session | None:
        """:meth:`session`, and ``on_invalid_session(request)`` when a
        ``token`` was presented but names no live session."""
        session = self.session(token)
        if session is None and token:
            self._notify("on_invalid_session", request)
        return session

    def session_of(self, request: Any, cookie: str | None = None) -> Session | None:
        """The live session whose cookie ``request`` carries (extending it),
        or None.

        ``request`` is a ``twisted.web`` request (in a resource's
        ``render``), a :class:`~wsplugin.Connection` or an
        :class:`HTTPClient`. A cookie naming no live session fires
        ``on_invalid_session``.
        """
        name = cookie or self.cookie
        if isinstance(request, (Connection, HTTPClient)):
            return self.check(request.request.cookies.get(name), request.request)
        raw = request.getCookie(name.encode("latin-1"))
        token = raw.decode("latin-1") if raw else None
        if token is None:
            return None
        session = self.session(token)
        if session is None:
            self._notify("on_invalid_session", HTTPClient(request).request)
        return session

    def rotate(self, token: str, identity: Any = None) -> str | None:
        """Give the live session ``token`` a new id (the old one is invalid
        from now on) and return it; None when ``token`` names no live
        session.

        With an ``identity`` other than the session's, the session ends
        instead (``on_session_end(session, "replaced")``) and None is
        returned: a login must not inherit someone else's session data.
        :class:`LoginResource` calls this with the cookie a login request
        carries (session fixation: an id planted in the browser before the
        login is never the id after it).
        """
        session = self.session(token)
        if session is None:
            return None
        if identity is not None and identity != session.identity:
            self._end(token, "replaced")
            return None
        self._remove(token)
        session.id = secrets.token_urlsafe(32)
        self._add(session)
        if session.conns:
            self._attached.add(session.id)
        return session.id

    def attach(self, token: str, conn: Connection) -> None:
        """Close ``conn`` with 1008 when the session ``token`` ends, and make
        it ``conn.session``.

        :class:`SessionAuth` calls it for every connection it lets in; call
        it from your own authenticator to get the same.
        """
        session = self._sessions.get(token)
        if session is None:
            return
        session.conns.add(conn)
        conn.session = session
        self._attached.add(token)
        conn.wait_closed().addCallback(lambda _: self._detach(session, conn))
        self._arm()

    def end(self, token: str, reason: str = "logout") -> None:
        """End a session (logout): its connections are closed with 1008."""
        if token in self._sessions:
            self._end(token, reason)

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

    def _add(self, session: Session) -> None:
        session.expires = self.clock.seconds() + self.timeout
        self._sessions[session.id] = session
        self._by_identity.setdefault(session.identity, OrderedDict())[session.id] = None

    def _remove(self, token: str) -> Session:
        session = self._sessions.pop(token)
        mine = self._by_identity.get(session.identity)
        if mine is not None:
            mine.pop(token, None)
            if not mine:
                del self._by_identity[session.identity]
        self._attached.discard(token)
        return session

    def _detach(self, session: Session, conn: Connection) -> None:
        session.conns.discard(conn)
        if not session.conns:
            self._attached.discard(session.id)

    def _evict(self, token: str, limit: str) -> None:
        self._evict_log(
            self.clock,
            "ended the least recently used session ({limit} reached)",
            limit=limit,
        )
        self._end(token, "evicted")

    def _end(self, token: str, why: str) -> None:
        session = self._remove(token)
        session.ended = why
        conns = list(session.conns)
        session.conns = weakref.WeakSet()
        close_reason = _CLOSE_REASONS.get(why, "session ended")
        if conns:
            log.info(
                "{why}: closing its {count} connection(s) with 1008",
                why=close_reason,
                count=len(conns),
            )
        for conn in conns:
            state = conn.state
            if state is ConnectionState.OPEN:
                conn.close(1008, close_reason)
            elif state is ConnectionState.CONNECTING:
                conn.abort()  # authenticated, not yet open: it never opens
        self._notify("on_session_end", session, why)

    def _notify(self, name: str, *args: Any) -> None:
        method = self._events.get(name)
        if method is None:
            return
        try:
            result = method(*args)
        except Exception:
            log.failure("the session handler's {name} raised", Failure(), name=name)
            return
        if isinstance(result, Deferred):
            result.addErrback(_handler_failed, name)

    def _purge(self) -> None:
        now = self.clock.seconds()
        while self._sessions:
            token, session = next(iter(self._sessions.items()))
            if now < session.expires:
                break
            self._end(token, "expired")

    def _arm(self) -> None:
        """Keep a timer on the next expiry while connections are attached
        (so an expiring session closes them on time) or the handler wants
        ``on_session_end`` on time."""
        if self._timer is not None or not self._sessions:
            return
        if not self._attached and "on_session_end" not in self._events:
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


def _handler_failed(failure: Failure, name: str) -> None:
    log.failure("the session handler's {name} failed", failure, name=name)


class SessionAuth:
    """A session cookie issued by :class:`LoginResource` (sgc session auth).

    A missing, unknown or expired session answers 401. A WebSocket
    connection it lets in is attached to the session (``conn.session``), so
    logging out or expiry closes it with 1008; a ``twisted.web`` request it
    lets in (:func:`guard`) has it as ``request.wsplugin_session``.

    Args:
        store: The sessions.
        cookie: The cookie's name (default: the store's).
    """

    def __init__(self, store: SessionStore, cookie: str | None = None) -> None:
        self.store = store
        self.cookie = cookie or store.cookie

    def authenticate(self, conn: Connection | HTTPClient) -> Deferred[Any]:
        """The identity of the request's session."""
        token = conn.request.cookies.get(self.cookie)
        session = self.store.check(token, conn.request)
        if session is None:
            log_failure(
                conn, "session", "no session" if not token else "unknown or expired"
            )
            return fail(Reject(401, "Unauthorized"))
        if isinstance(conn, Connection):
            self.store.attach(session.id, conn)
        else:
            conn.session = session
            conn.web_request.wsplugin_session = session  # type: ignore[attr-defined]
        return succeed(session.identity)
