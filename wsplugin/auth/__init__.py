"""Authentication before the upgrade, and for plain HTTP (seeds: sgc
``Authentication``, FPC ``Accept``).

An authenticator is any object with ``authenticate(client)``: it returns the
client's identity (or a Deferred of it), or raises
:class:`~wsplugin.Reject` (401/403/429/503). For a WebSocket route the
server calls it before ``allow``, with the :class:`~wsplugin.Connection`, so
an unauthenticated client never gets a 101, and stores the identity in
``conn.user`` for every later event. Routes choose their own: one route
public, another protected::

    server.register_handler("*", "/public", Public())
    server.register_handler("*", "/admin", Admin(),
                            auth=BasicAuth(HtpasswdChecker("users.htpasswd")))

The same authenticators guard ``twisted.web`` resources: :func:`guard` wraps a
resource, and ``WebSocketServer(http_auth=...)`` guards a whole same-port
site. There the authenticator gets an :class:`HTTPClient`, which has the same
``request`` (path, query, headers, cookies, peer address) as a connection.

Password checks cost CPU on purpose (bcrypt), so an attacker can make the
server spend it. A :class:`LoginThrottle` in front of every check bounds how
many run at once and how many wait (503 beyond that), skips the waiting
checks of clients that have already left, and refuses a client address for a
growing time after repeated failures (429). :class:`SessionStore` bounds the
sessions per identity and in total, fires the session events (start, end,
create, invalid), rotates a session's id at login, and closes the WebSocket
connections of a session when it ends (1008); ``conn.session`` and
:meth:`SessionStore.session_of` give the application the :class:`Session`.

Secrets are compared in constant time and never logged; a failure is logged
with the peer, the path (without its query) and the scheme and reason.
"""

from __future__ import annotations

from wsplugin.auth._guard import GuardedResource, guard, site_guard
from wsplugin.auth._htpasswd import HtpasswdChecker
from wsplugin.auth._http import HTTPClient
from wsplugin.auth._login import LoginResource
from wsplugin.auth._schemes import ApiKeyAuth, BasicAuth, QueryTokenAuth
from wsplugin.auth._sessions import SESSION_EVENTS, Session, SessionAuth, SessionStore
from wsplugin.auth._throttle import LoginThrottle, ThrottleStats

__all__ = [
    "SESSION_EVENTS",
    "ApiKeyAuth",
    "BasicAuth",
    "GuardedResource",
    "HTTPClient",
    "HtpasswdChecker",
    "LoginResource",
    "LoginThrottle",
    "QueryTokenAuth",
    "Session",
    "SessionAuth",
    "SessionStore",
    "ThrottleStats",
    "guard",
    "site_guard",
]
