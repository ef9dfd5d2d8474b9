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
sessions per identity and in total, and closes the WebSocket connections of a
session when it ends (1008).

Secrets are compared in constant time and never logged; a failure is logged
with the peer, the path (without its query) and the scheme and reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import secrets
import select
import socket
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs as parse_query
from urllib.parse import unquote, urlsplit

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import parse_qs
from twisted.web.http import unquote as unquote_bytes
from twisted.web.resource import IResource, Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import Request as WebRequest
from zope.interface import implementer

from wsplugin._events import as_deferred
from wsplugin.connection import Connection, ConnectionState, Headers, Request
from wsplugin.errors import ConfigError, HandshakeRejected, Reject
from wsplugin.handshake import origin_allowed, split_host

__all__ = [
    "ApiKeyAuth",
    "BasicAuth",
    "GuardedResource",
    "HTTPClient",
    "HtpasswdChecker",
    "LoginResource",
    "LoginThrottle",
    "QueryTokenAuth",
    "SessionAuth",
    "SessionStore",
    "ThrottleStats",
    "guard",
    "site_guard",
]

_log = Logger()


def _failed(client: Any, scheme: str, why: str) -> None:
    _log.info(
        "authentication failed for {peer} on {path} ({scheme}: {why})",
        peer=client.request.peer_address,
        path=client.request.path,
        scheme=scheme,
        why=why,
    )


def _now(clock: IReactorTime | None) -> float:
    if clock is None:
        from twisted.internet import reactor

        return float(reactor.seconds())  # type: ignore[attr-defined]
    return float(clock.seconds())


class _LimitedLog:
    """At most one line per ``window`` seconds for a recurring event; the
    lines held back are counted into the next one. Under a flood of refused
    attempts the log gets one line a second, not one per attempt."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._last = -math.inf
        self._held = 0

    def __call__(self, clock: IReactorTime | None, fmt: str, **fields: Any) -> None:
        now = _now(clock)
        if now - self._last < self.window:
            self._held += 1
            return
        self._last = now
        if self._held:
            _log.info(
                "({held} more like the next line in the last {window:g}s)",
                held=self._held,
                window=self.window,
            )
            self._held = 0
        _log.warn(fmt, **fields)


# -- is the client still there? ----------------------------------------------


def _socket_of(transport: Any) -> socket.socket | None:
    """The TCP socket under a transport (through TLS and wrappers), if any."""
    for _ in range(4):
        if transport is None:
            return None
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if callable(get_handle) else None
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
    return None


def _peer_gone(transport: Any) -> bool:
    """Whether the peer has closed or reset the TCP connection.

    While a password check is pending, the handshake stops reading from the
    socket (backpressure), so Twisted does not notice a client that closed:
    the socket is asked directly, without reading from it. ``POLLRDHUP``
    (Linux) sees the peer's FIN even behind unread data; elsewhere a peek
    sees it when nothing else is queued. A transport without a socket
    (tests, pipes) counts as present.
    """
    if transport is None:
        return True
    sock = _socket_of(transport)
    if sock is None:
        return False
    if sock.fileno() < 0:
        return True  # closed on our side already
    rdhup = getattr(select, "POLLRDHUP", 0)
    if rdhup and hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock.fileno(), rdhup | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b""


def _still_waiting(client: Any) -> bool:
    """Whether ``client`` (a Connection or an HTTPClient) still waits for
    its answer; a check for one that left is skipped."""
    if isinstance(client, HTTPClient):
        return not client.gone
    if isinstance(client, Connection):
        if client.state is not ConnectionState.CONNECTING:
            return False
        # the socket probe needs the transport under the connection's engine
        return not _peer_gone(getattr(client.engine, "transport", None))
    return True


# -- throttling password checks ----------------------------------------------


def _peer_key(address: str) -> str:
    """The unit failures are counted by: the address, or its /64 for IPv6
    (one host usually holds a whole /64, so per-address counting would not
    slow it down)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ip.ipv4_mapped)  # ::ffff:a.b.c.d counts as a.b.c.d
    return str(ip)


@dataclass
class _Job:
    peer: str
    check: Callable[[], Any]
    waiting: Callable[[], bool]
    result: Deferred[Any]


@dataclass
class _PeerRecord:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


@dataclass
class ThrottleStats:
    """Counters of a :class:`LoginThrottle` since it was made.

    Attributes:
        started: Checks that ran.
        dropped: Waiting checks skipped because their client had left.
        busy: Attempts refused with 503 because the queue was full.
        throttled: Attempts refused with 429 (a blocked address, or too many
            checks of one address at once).
        blocks: Times an address was blocked after repeated failures.
    """

    started: int = 0
    dropped: int = 0
    busy: int = 0
    throttled: int = 0
    blocks: int = 0


class LoginThrottle:
    """Admission control for password checks (bcrypt costs about 70 ms of
    CPU at cost 10 and 300 ms at cost 12 here, so unbounded checks are a
    denial of service: 8 bogus attempts a second kept two cores busy).

    Every check of :class:`BasicAuth` and :class:`LoginResource` goes through
    one. It

    * runs at most ``concurrency`` checks at once, and keeps at most
      ``max_queued`` more waiting, first come first served; an attempt beyond
      that gets ``503 Service Unavailable`` with ``Retry-After: 1`` at once;
    * skips a waiting check whose client has gone (closed, reset, or timed
      out by ``open_handshake_timeout``): the CPU goes to clients that still
      wait. When the queue is full, such checks are swept out before an
      attempt is refused;
    * lets one client address (an IPv6 address counts by its /64) have at
      most ``max_pending_per_peer`` checks running or waiting (429 beyond);
    * counts failed checks per address: after ``max_failures`` in a row the
      address gets ``429 Too Many Requests`` with ``Retry-After`` for
      ``backoff`` seconds, doubling with every further failure up to
      ``max_backoff``, and a log line. ``max_backoff`` seconds without a
      failure clear the count; a success does not (logging in to an account
      of one's own must not reset the count of guesses at another).

    The defaults keep the worst wait within ``open_handshake_timeout`` (10
    s): 32 waiting checks of bcrypt cost 12 (about 300 ms each) on 2 slots
    take about 4.8 s. With a slower hash, lower ``max_queued``.

    Share one throttle between the authenticators that check the same
    passwords (``BasicAuth(..., throttle=t)``, ``LoginResource(...,
    throttle=t)``), so the bounds hold for the process.

    Args:
        clock: The reactor (or a ``task.Clock`` in tests); the global reactor
            if None.
        concurrency: Checks running at once (at least 1). 2 by default: one
            per core of a small server, and the number of threads
            :class:`HtpasswdChecker` needs.
        max_queued: Checks waiting for a free slot (0: none wait).
        max_pending_per_peer: Checks one address may have running or
            waiting (0: no per-address limit).
        max_failures: Failures in a row before an address is blocked (0:
            never blocked).
        backoff: Seconds of the first block.
        max_backoff: Longest block, in seconds.
        max_peers: Addresses whose failures are remembered; the least
            recently failing are forgotten first, so memory stays bounded
            under attack from many addresses.
    """

    def __init__(
        self,
        clock: IReactorTime | None = None,
        *,
        concurrency: int = 2,
        max_queued: int = 32,
        max_pending_per_peer: int = 8,
        max_failures: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        max_peers: int = 10_000,
    ) -> None:
        for name, value, least in [
            ("concurrency", concurrency, 1),
            ("max_queued", max_queued, 0),
            ("max_pending_per_peer", max_pending_per_peer, 0),
            ("max_failures", max_failures, 0),
            ("max_peers", max_peers, 1),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(
                    f"{name} must be an integer >= {least}, not {value!r}"
                )
        if not 0 < backoff <= max_backoff:
            raise ConfigError("backoff must be > 0 and at most max_backoff")
        self.clock = clock
        self.concurrency = concurrency
        self.max_queued = max_queued
        self.max_pending_per_peer = max_pending_per_peer
        self.max_failures = max_failures
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_peers = max_peers
        self.stats = ThrottleStats()
        self._running = 0
        self._queue: deque[_Job] = deque()
        self._pending: dict[str, int] = {}
        self._peers: OrderedDict[str, _PeerRecord] = OrderedDict()
        self._busy_log = _LimitedLog()
        self._throttled_log = _LimitedLog()
        self._dropped_log = _LimitedLog()

    @property
    def running(self) -> int:
        """Checks running now."""
        return self._running

    @property
    def queued(self) -> int:
        """Checks waiting for a slot now."""
        return len(self._queue)

    def submit(
        self,
        address: str,
        check: Callable[[], Any],
        waiting: Callable[[], bool] = lambda: True,
    ) -> Deferred[Any]:
        """Run ``check()`` when a slot is free; a Deferred of its result.

        Args:
            address: The client's address (failures are counted by it).
            check: Starts the check; returns the avatar id or a Deferred of
                it, or fails with ``UnauthorizedLogin`` (counted as a failure).
            waiting: Whether the client still waits; a check whose client has
                left is skipped when its turn comes.

        Returns:
            A Deferred of the check's result, or failing with a
            :class:`~wsplugin.Reject`: 429 (address blocked, or too many of
            its checks at once), 503 (queue full) or 499 (the client left).
        """
        peer = _peer_key(address)
        now = _now(self.clock)
        record = self._peers.get(peer)
        if record is not None and record.blocked_until > now:
            self.stats.throttled += 1
            self._throttled_log(
                self.clock,
                "password checks of {peer} refused (429): blocked after "
                "{failures} failures",
                peer=peer,
                failures=record.failures,
            )
            return fail(_too_many(record.blocked_until - now))
        pending = self._pending.get(peer, 0)
        if self.max_pending_per_peer and pending >= self.max_pending_per_peer:
            self.stats.throttled += 1
            self._throttled_log(
                self.clock,
                "password checks of {peer} refused (429): {pending} already pending",
                peer=peer,
                pending=pending,
            )
            return fail(_too_many(1.0))
        job = _Job(peer, check, waiting, Deferred(lambda d: self._cancel(job)))
        self._pending[peer] = pending + 1
        if self._running < self.concurrency:
            if waiting():
                self._start(job)
            else:
                self._drop(job)  # sent its request and left at once
            return job.result
        if len(self._queue) >= self.max_queued:
            self._sweep()
        if len(self._queue) >= self.max_queued:
            self._release(peer)
            self.stats.busy += 1
            self._busy_log(
                self.clock,
                "password check queue full ({queued} waiting, {running} running): "
                "503 for {peer}",
                queued=len(self._queue),
                running=self._running,
                peer=peer,
            )
            return fail(Reject(503, "Service Unavailable", [("Retry-After", "1")]))
        self._queue.append(job)
        return job.result

    def _cancel(self, job: _Job) -> None:
        try:
            self._queue.remove(job)
        except ValueError:
            return  # running: a thread cannot be stopped; its result is dropped
        self._release(job.peer)

    def _release(self, peer: str) -> None:
        left = self._pending.get(peer, 0) - 1
        if left > 0:
            self._pending[peer] = left
        else:
            self._pending.pop(peer, None)

    def _start(self, job: _Job) -> None:
        self._running += 1
        self.stats.started += 1
        d = maybeDeferred(job.check)
        d.addBoth(self._finished, job)

    def _finished(self, result: Any, job: _Job) -> None:
        self._running -= 1
        self._release(job.peer)
        if isinstance(result, Failure) and result.check(UnauthorizedLogin):
            self._record_failure(job.peer)
        self._next()
        if job.result.called:
            return  # cancelled meanwhile
        if isinstance(result, Failure):
            job.result.errback(result)
        else:
            job.result.callback(result)

    def _next(self) -> None:
        while self._running < self.concurrency and self._queue:
            job = self._queue.popleft()
            if job.waiting():
                self._start(job)
            else:
                self._drop(job)

    def _sweep(self) -> None:
        """Drop the waiting checks of clients that have left."""
        keep: deque[_Job] = deque()
        gone = []
        for job in self._queue:
            (keep if job.waiting() else gone).append(job)
        self._queue = keep
        for job in gone:
            self._drop(job)

    def _drop(self, job: _Job) -> None:
        self._release(job.peer)
        self.stats.dropped += 1
        self._dropped_log(
            self.clock,
            "skipped the password check of {peer}: the client left before its turn",
            peer=job.peer,
        )
        job.result.errback(Reject(499, "Client Closed Request"))

    def _record_failure(self, peer: str) -> None:
        if not self.max_failures:
            return
        now = _now(self.clock)
        record = self._peers.pop(peer, None)
        if record is None or now - record.last > self.max_backoff:
            record = _PeerRecord()
        record.failures += 1
        record.last = now
        self._peers[peer] = record  # most recently failing last
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        over = record.failures - self.max_failures
        if over >= 0:
            delay = min(self.max_backoff, self.backoff * 2 ** min(over, 62))
            record.blocked_until = now + delay
            self.stats.blocks += 1
            _log.warn(
                "{failures} failed password checks in a row from {peer}: its "
                "attempts get 429 for {delay:g}s",
                failures=record.failures,
                peer=peer,
                delay=delay,
            )


def _too_many(retry_after: float) -> Reject:
    return Reject(
        429,
        "Too Many Requests",
        [("Retry-After", str(max(1, math.ceil(retry_after))))],
    )


# -- HTTP Basic ----------------------------------------------------------------


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
        credentials = UsernamePassword(username.encode(), password.encode())
        d = self.throttle.submit(
            conn.request.peer_address,
            lambda: self.checker.requestAvatarId(credentials),
            lambda: _still_waiting(conn),
        )

        def denied(failure: Failure) -> Failure:
            if failure.check(UnauthorizedLogin):
                _failed(conn, "basic", "wrong user name or password")
                return Failure(self._reject())
            return failure  # the throttle's 429/503/499, or the checker's error

        d.addCallbacks(_text, denied)
        return d


def _text(avatar_id: Any) -> Any:
    """A checker's avatar id as ``str`` (``twisted.cred`` checkers give bytes)."""
    return avatar_id.decode("utf-8") if isinstance(avatar_id, bytes) else avatar_id


# -- htpasswd files ------------------------------------------------------------


def _hash_kind(hashed: str) -> str:
    """``{SHA}`` or ``bcrypt cost N``: entries of one kind take equally long."""
    if hashed.startswith("{SHA}"):
        return "{SHA}"
    cost = hashed[4:6]
    return f"bcrypt cost {int(cost)}" if cost.isdigit() else "bcrypt"


@implementer(ICredentialsChecker)
class HtpasswdChecker:
    """Checks user names and passwords against an htpasswd-style file.

    Lines are ``user:hash``; ``#`` starts a comment. Supported hashes:
    bcrypt (``htpasswd -B``: ``$2y$``, ``$2b$``, ``$2a$``) and ``{SHA}``
    (``htpasswd -s``, weak: prefer bcrypt, with ``-C 12``).

    Every entry must use the same scheme and bcrypt cost: how long a 401
    takes would otherwise tell users apart (here a ``{SHA}`` user is
    answered in about 1 ms, a bcrypt cost-12 user in about 300 ms, a cost-5
    user in about 3 ms). A file that mixes them is refused, or, with
    ``allow_mixed=True``, accepted with a warning. An unknown user is
    checked against a dummy entry of the file's scheme and cost, so a wrong
    user name takes as long as a wrong password.

    bcrypt checks run in a thread pool so they never stall the reactor; put
    a :class:`LoginThrottle` in front (``BasicAuth`` and ``LoginResource``
    do) to bound how many run and wait.

    Args:
        path: The file. It is read now and again by :meth:`reload`.
        allow_mixed: Accept a file that mixes schemes or costs (warning).
        threadpool: The ``twisted.python.threadpool.ThreadPool`` bcrypt runs
            in; the reactor's shared pool if None.
        reactor: The reactor delivering the results; the global one if None.

    Raises:
        ConfigError: a missing file, a line with an unsupported hash, or
            (without ``allow_mixed``) mixed schemes or costs.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        path: str | Path,
        *,
        allow_mixed: bool = False,
        threadpool: Any = None,
        reactor: Any = None,
    ) -> None:
        self.path = Path(path)
        self.allow_mixed = allow_mixed
        self._threadpool = threadpool
        self._reactor = reactor
        self._users: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again (the old entries stay if it is refused)."""
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
        self._check_uniform(users)
        self._users = users
        self._dummy = _dummy_entry(list(users.values()))

    def _check_uniform(self, users: dict[str, str]) -> None:
        kinds: dict[str, list[str]] = {}
        for user, hashed in users.items():
            kinds.setdefault(_hash_kind(hashed), []).append(user)
        if len(kinds) < 2:
            return
        summary = "; ".join(
            f"{kind}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
            for kind, names in sorted(kinds.items())
        )
        problem = (
            f"{self.path} mixes password hashes ({summary}): how long a wrong "
            "password takes tells these users apart"
        )
        if not self.allow_mixed:
            raise ConfigError(
                problem + "; hash every entry the same way (htpasswd -B -C 12), "
                "or allow it (allow_mixed=True, --allow-mixed-hashes)"
            )
        _log.warn("{problem}; accepted (allow_mixed)", problem=problem)

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes]:
        """The user name, if the password matches; else UnauthorizedLogin."""
        username = credentials.username.decode("utf-8", "replace")
        password = credentials.password
        hashed = self._users.get(username)
        if hashed is None:
            hashed = self._dummy  # same work as for a known user
        if hashed.startswith("{SHA}"):
            digest = base64.b64encode(hashlib.sha1(password).digest()).decode()
            ok = hmac.compare_digest(digest, hashed[5:]) and username in self._users
            return succeed(credentials.username) if ok else fail(UnauthorizedLogin())
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        pool = self._threadpool or reactor.getThreadPool()
        d = deferToThreadPool(reactor, pool, _bcrypt_check, password, hashed)

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
    common = max(sorted(set(kinds)), key=kinds.count) if kinds else "$2b$12"
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


# -- tokens and keys -----------------------------------------------------------


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

    def authenticate(self, conn: Connection | HTTPClient) -> Deferred[Any]:
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


# -- sessions ------------------------------------------------------------------


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
        self._evict_log = _LimitedLog()

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
            _log.info(
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
            _failed(
                conn, "session", "no session" if not token else "unknown or expired"
            )
            return fail(Reject(401, "Unauthorized"))
        if isinstance(conn, Connection) and token:
            self.store.attach(token, conn)
        return succeed(identity)


# -- twisted.web: the login form, and guarded resources -----------------------


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


def _forwarded_for(request: WebRequest, trusted_proxies: int) -> str | None:
    """The client address ``trusted_proxies`` proxies put in
    ``X-Forwarded-For`` (as for WebSocket routes), or None."""
    if not trusted_proxies:
        return None
    values = request.requestHeaders.getRawHeaders(b"x-forwarded-for")
    if not values:
        return None
    addresses = [a.strip() for a in b",".join(values).decode("latin-1").split(",")]
    return addresses[-trusted_proxies:][0] or None


def _peer_of(request: WebRequest, trusted_proxies: int = 0) -> str:
    forwarded = _forwarded_for(request, trusted_proxies)
    if forwarded:
        return forwarded
    return str(getattr(request.getClientAddress(), "host", "unix"))


def _answer(
    request: WebRequest, status: int, headers: Iterable[tuple[str, str]] = ()
) -> None:
    request.setResponseCode(status)
    for name, value in headers:
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    request.setHeader(b"content-length", b"0")
    request.finish()


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
    the session lives. Wrong credentials answer an empty 401.

    Checks go through ``throttle`` (429/503 with ``Retry-After``, as for
    :class:`BasicAuth`); a check whose client has left is skipped. A
    cross-site ``POST`` or ``DELETE`` (an ``Origin`` other than the server's
    own or ``allowed_origins``, or ``Sec-Fetch-Site: cross-site`` /
    ``same-site``) answers 403, so another site cannot log a visitor in to
    an account of its choosing, or out.

    Args:
        checker: A ``twisted.cred`` checker for ``IUsernamePassword``.
        store: Where sessions are kept.
        cookie: The cookie's name.
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
        cookie: str = "wsplugin_session",
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
        self.cookie = cookie
        self.path = path
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self.allowed_origins = tuple(allowed_origins)

    def _refuse_cross_site(self, request: WebRequest) -> bool:
        why = _cross_site(request, self.allowed_origins)
        if why is None:
            return False
        _log.info(
            "login refused for {peer}: cross-site request ({why}): 403",
            peer=_peer_of(request, self.trusted_proxies),
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
        peer = _peer_of(request, self.trusted_proxies)
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
            token = self.store.create(_text(avatar_id))
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
                _log.info("login failed from {peer}", peer=peer)
                status, headers = 401, []
            elif failure.check(HandshakeRejected):
                rejected: HandshakeRejected = failure.value  # type: ignore[assignment]
                status, headers = rejected.status, rejected.headers
            else:
                _log.failure("the login check failed", failure)
                status, headers = 500, []
            if not client.gone:
                _answer(request, status, headers)

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


class HTTPClient:
    """A ``twisted.web`` request as an authenticator sees it.

    It has what authenticators read from a :class:`~wsplugin.Connection`:
    ``request`` (a :class:`~wsplugin.Request`: path, query parameters of the
    URL only, headers, cookies, ``peer_address``) and ``user``.
    ``peer_address`` is the TCP peer, or with ``trusted_proxies`` the
    address those proxies put in ``X-Forwarded-For``, as for upgrades.

    Attributes:
        web_request: The ``twisted.web`` request.
        gone: Whether the client disconnected before its answer.
    """

    def __init__(self, web_request: WebRequest, trusted_proxies: int = 0) -> None:
        self.web_request = web_request
        target = web_request.uri.decode("latin-1")
        split = urlsplit(target)
        pairs = tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, values in web_request.requestHeaders.getAllRawHeaders()
            for value in values
        )
        headers = Headers(pairs)
        self.request = Request(
            path=unquote(split.path) or "/",
            params=parse_query(split.query, keep_blank_values=True),
            headers=headers,
            host=split_host(headers.get("host", "")),
            origin=headers.get("origin", ""),
            protocols=(),
            peer=web_request.getClientAddress(),
            target=target,
            forwarded_for=_forwarded_for(web_request, trusted_proxies),
        )
        self.user: Any = None
        self.gone = False
        web_request.notifyFinish().addErrback(self._lost)

    def _lost(self, failure: Failure) -> None:
        self.gone = True


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
                _answer(request, rejected.status, rejected.headers)
            else:
                _log.failure(
                    "the authenticator of {path} failed",
                    failure,
                    path=request.path.decode("latin-1"),
                )
                _answer(request, 500)

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
