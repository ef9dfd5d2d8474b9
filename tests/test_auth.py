"""wsplugin.auth in memory: throttle, checkers, sessions, login form, guards.

No sockets and no real time: connections run on ``wsplugin.testing``'s
``StringTransport``-based harness over a ``MemoryReactorClock``, HTTP requests
are ``twisted.web`` requests on a ``DummyChannel`` or ``DummyRequest``s, and
the throttle and the session store run on a ``task.Clock``. The same attacks
over real sockets are in ``tests/integration/test_auth_attacks.py``.
"""

from __future__ import annotations

import base64
import hashlib
import socket
from io import BytesIO
from pathlib import Path
from typing import Any

import bcrypt
from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from tests.helpers import Recorder
from wsplugin import Reject, WebSocketServer
from wsplugin.auth import (
    ApiKeyAuth,
    BasicAuth,
    HtpasswdChecker,
    LoginResource,
    LoginThrottle,
    SessionAuth,
    SessionStore,
    _peer_gone,
    _peer_key,
    guard,
)
from wsplugin.errors import ConfigError
from wsplugin.testing import ServerHarness, handshake_request


class Data(Resource):
    """A leaf answering ``body`` (twisted.web.static warns at import)."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self.body, self.content_type = body, content_type.encode()

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        return self.body


def capture_logs(test: SynchronousTestCase) -> list[str]:
    """Every log line (formatted) emitted until the test ends."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


def basic(user: str, password: str) -> list[tuple[str, str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [("Authorization", f"Basic {token}")]


class HeldChecker:
    """A twisted.cred checker whose answers wait for the test.

    Users in ``hold`` wait in ``pending`` until :meth:`release`; others are
    answered at once. ``seen`` lists every user name checked, in order.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[str, str], hold: set[str] | None = None) -> None:
        self.users = users
        self.hold = hold
        self.seen: list[str] = []
        self.pending: list[tuple[Any, Deferred[bytes]]] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        name = credentials.username.decode()
        self.seen.append(name)
        if self.hold is None or name in self.hold:
            d: Deferred[bytes] = Deferred()
            self.pending.append((credentials, d))
            return d
        return self._answer(credentials)

    def _answer(self, credentials: Any) -> Deferred[bytes]:
        name = credentials.username.decode()
        if self.users.get(name) == credentials.password.decode():
            return succeed(credentials.username)
        return fail(UnauthorizedLogin())

    def release(self, index: int = 0) -> None:
        credentials, d = self.pending.pop(index)
        self._answer(credentials).chainDeferred(d)


def quiet(d: Deferred[Any]) -> Deferred[Any]:
    """Consume a Deferred's failure (the test does not look at it)."""
    return d.addErrback(lambda _: None)


def check_of(checker: Any, user: str, password: str) -> Any:
    return lambda: checker.requestAvatarId(
        UsernamePassword(user.encode(), password.encode())
    )


class TransportDouble:
    """A transport whose handle is a real socket (one end of a socketpair)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


class PeerGoneTests(SynchronousTestCase):
    """The probe that tells a waiting check its client has left, without
    reading from the socket (reading is paused during the handshake)."""

    def test_probe(self) -> None:
        """An open peer is there; a closed one is gone, even with unread data
        queued before its FIN; the data is not consumed; through a wrapper
        transport (TLS) the TCP socket below is asked."""
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        transport = TransportDouble(ours)
        self.assertFalse(_peer_gone(transport))
        theirs.sendall(b"early frame")
        self.assertFalse(_peer_gone(transport))
        theirs.close()
        self.assertTrue(_peer_gone(transport))
        self.assertEqual(ours.recv(100), b"early frame")

        class TLS:
            transport = TransportDouble(ours)

            def getHandle(self) -> object:
                return object()  # an OpenSSL connection, say

        self.assertTrue(_peer_gone(TLS()))
        self.assertFalse(_peer_gone(object()))  # no socket to ask: present
        self.assertTrue(_peer_gone(None))


class ThrottleTests(SynchronousTestCase):
    """LoginThrottle bounds running and waiting checks, skips gone clients,
    and blocks addresses after repeated failures."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.checker = HeldChecker({"ada": "lovelace"})

    def test_bounded_queue_answers_503(self) -> None:
        """concurrency checks run, max_queued wait, the next gets 503 with
        Retry-After at once; a finished check starts the next in order."""
        throttle = LoginThrottle(
            self.clock, concurrency=2, max_queued=3, max_pending_per_peer=0
        )
        results = [
            throttle.submit(f"10.0.0.{i}", check_of(self.checker, f"u{i}", "x"))
            for i in range(6)
        ]
        self.assertEqual((throttle.running, throttle.queued), (2, 3))
        self.assertEqual(self.checker.seen, ["u0", "u1"])
        refused = self.failureResultOf(results[5], Reject).value
        self.assertEqual(refused.status, 503)
        self.assertEqual(refused.headers, [("Retry-After", "1")])
        self.assertEqual(throttle.stats.busy, 1)
        self.checker.release(0)
        self.failureResultOf(results[0], UnauthorizedLogin)
        self.assertEqual(self.checker.seen, ["u0", "u1", "u2"])

    def test_gone_clients_are_skipped(self) -> None:
        """A waiting check whose client left never runs: the next one that
        still waits does, and the skipped one fails with 499."""
        throttle = LoginThrottle(
            self.clock, concurrency=1, max_queued=10, max_pending_per_peer=0
        )
        first = throttle.submit("10.0.0.1", check_of(self.checker, "bogus0", "x"))
        gone = [
            throttle.submit(
                "10.0.0.2", check_of(self.checker, f"bogus{i}", "x"), lambda: False
            )
            for i in range(1, 6)
        ]
        legit = throttle.submit("10.0.0.3", check_of(self.checker, "ada", "lovelace"))
        self.checker.release(0)
        self.failureResultOf(first, UnauthorizedLogin)
        self.assertEqual(self.checker.seen, ["bogus0", "ada"])
        self.checker.release(0)
        self.assertEqual(self.successResultOf(legit), b"ada")
        for d in gone:
            self.assertEqual(self.failureResultOf(d, Reject).value.status, 499)
        self.assertEqual(throttle.stats.dropped, 5)

    def test_gone_before_start(self) -> None:
        """A client that left before its check could even start (a free slot)
        is not checked at all."""
        throttle = LoginThrottle(self.clock)
        d = throttle.submit("10.0.0.1", check_of(self.checker, "x", "y"), lambda: False)
        self.assertEqual(self.failureResultOf(d, Reject).value.status, 499)
        self.assertEqual((self.checker.seen, throttle.running), ([], 0))
        self.assertEqual(throttle._pending, {})

    def test_full_queue_sweeps_gone_clients(self) -> None:
        """When the queue is full, the checks of clients that left are swept
        out before an attempt is refused: a new client gets their place."""
        throttle = LoginThrottle(
            self.clock, concurrency=1, max_queued=4, max_pending_per_peer=0
        )
        here = {"still": True}
        quiet(throttle.submit("10.0.0.1", check_of(self.checker, "bogus", "x")))
        for i in range(4):
            quiet(
                throttle.submit(
                    "10.0.0.2",
                    check_of(self.checker, f"b{i}", "x"),
                    lambda: here["still"],
                )
            )
        here["still"] = False  # those four clients close their sockets
        legit = throttle.submit("10.0.0.3", check_of(self.checker, "ada", "lovelace"))
        self.assertEqual((throttle.queued, throttle.stats.dropped), (1, 4))
        self.checker.release(0)
        self.checker.release(0)
        self.assertEqual(self.successResultOf(legit), b"ada")

    def test_per_peer_pending_limit(self) -> None:
        """One address may have max_pending_per_peer checks at once; more get
        429 and leave room for others."""
        throttle = LoginThrottle(self.clock, concurrency=1, max_pending_per_peer=2)
        throttle.submit("10.0.0.1", check_of(self.checker, "a", "x"))
        throttle.submit("10.0.0.1", check_of(self.checker, "b", "x"))
        third = throttle.submit("10.0.0.1", check_of(self.checker, "c", "x"))
        self.assertEqual(self.failureResultOf(third, Reject).value.status, 429)
        other = throttle.submit("10.0.0.2", check_of(self.checker, "d", "x"))
        self.assertNoResult(other)

    def test_failures_block_with_doubling_backoff(self) -> None:
        """After max_failures failures an address gets 429 with Retry-After,
        for backoff seconds, doubling per further failure up to max_backoff;
        a log line says so; other addresses are unaffected."""
        logs = capture_logs(self)
        checker = HeldChecker({"ada": "lovelace"}, hold=set())
        throttle = LoginThrottle(
            self.clock, max_failures=3, backoff=2.0, max_backoff=5.0
        )

        def attempt(password: str, peer: str = "10.0.0.1") -> Any:
            d = throttle.submit(peer, check_of(checker, "ada", password))
            return self.failureResultOf(d).value if password != "lovelace" else d

        for _ in range(2):
            self.assertIsInstance(attempt("wrong"), UnauthorizedLogin)
        self.assertIsInstance(attempt("wrong"), UnauthorizedLogin)  # third: blocked
        self.assertTrue(
            any(
                "3 failed password checks in a row from 10.0.0.1" in line
                for line in logs
            ),
            logs,
        )
        blocked = self.failureResultOf(
            throttle.submit("10.0.0.1", check_of(checker, "ada", "lovelace")), Reject
        ).value
        self.assertEqual(
            (blocked.status, blocked.headers), (429, [("Retry-After", "2")])
        )
        self.assertEqual(checker.seen.count("ada"), 3)  # the blocked one never ran
        self.successResultOf(
            throttle.submit("10.0.0.9", check_of(checker, "ada", "lovelace"))
        )
        self.clock.advance(2)
        self.assertIsInstance(attempt("wrong"), UnauthorizedLogin)  # 4th: 4 s
        blocked = self.failureResultOf(throttle.submit("10.0.0.1", lambda: None)).value
        self.assertEqual(blocked.headers, [("Retry-After", "4")])
        self.clock.advance(4)
        attempt("wrong")  # 5th: 8 s, capped at 5
        blocked = self.failureResultOf(throttle.submit("10.0.0.1", lambda: None)).value
        self.assertEqual(blocked.headers, [("Retry-After", "5")])
        self.assertEqual(throttle.stats.blocks, 3)

    def test_failures_are_forgotten(self) -> None:
        """max_backoff seconds without a failure clear an address's count; a
        success does not."""
        checker = HeldChecker({"eve": "mine"}, hold=set())
        throttle = LoginThrottle(
            self.clock, max_failures=3, backoff=1.0, max_backoff=10.0
        )
        for password in ("a", "b", "mine"):
            quiet(throttle.submit("10.0.0.1", check_of(checker, "eve", password)))
        d = throttle.submit("10.0.0.1", check_of(checker, "eve", "c"))
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(throttle.stats.blocks, 1)  # the success did not reset
        self.clock.advance(11)
        for password in ("d", "e"):
            quiet(throttle.submit("10.0.0.1", check_of(checker, "eve", password)))
        self.assertEqual(throttle.stats.blocks, 1)

    def test_peer_table_is_bounded(self) -> None:
        """Failures of at most max_peers addresses are remembered."""
        checker = HeldChecker({}, hold=set())
        throttle = LoginThrottle(self.clock, max_peers=3)
        for i in range(10):
            quiet(throttle.submit(f"10.0.0.{i}", check_of(checker, "x", "y")))
        self.assertEqual(len(throttle._peers), 3)

    def test_ipv6_counts_by_64(self) -> None:
        """IPv6 addresses count by /64; v4-mapped ones as IPv4."""
        self.assertEqual(_peer_key("2001:db8::1"), _peer_key("2001:db8::ffff:2"))
        self.assertNotEqual(_peer_key("2001:db8::1"), _peer_key("2001:db8:0:1::1"))
        self.assertEqual(_peer_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(_peer_key("unix"), "unix")

    def test_cancel_queued(self) -> None:
        """Cancelling a waiting check removes it from the queue."""
        throttle = LoginThrottle(self.clock, concurrency=1)
        throttle.submit("10.0.0.1", check_of(self.checker, "a", "x"))
        waiting = throttle.submit("10.0.0.2", check_of(self.checker, "b", "x"))
        waiting.cancel()
        self.assertEqual(throttle.queued, 0)
        self.failureResultOf(waiting)

    def test_bad_settings(self) -> None:
        """Bad limits are ConfigErrors."""
        for kw in (
            {"concurrency": 0},
            {"max_queued": -1},
            {"max_failures": 1.5},
            {"backoff": 0},
            {"backoff": 10, "max_backoff": 5},
            {"max_peers": True},
        ):
            self.assertRaises(ConfigError, LoginThrottle, self.clock, **kw)


def sha(password: str) -> str:
    return "{SHA}" + base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()


class ThreadPoolDouble:
    """Runs nothing until told: records what would run in a thread."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *a: Any) -> None:
        self.calls.append((on_result, f, a))

    def run_all(self) -> None:
        calls, self.calls = self.calls, []
        for on_result, f, a in calls:
            try:
                on_result(True, f(*a))
            except Exception:
                on_result(False, Failure())


class ReactorDouble(MemoryReactorClock):
    def callFromThread(self, f: Any, *a: Any, **kw: Any) -> None:
        f(*a, **kw)


class HtpasswdTests(SynchronousTestCase):
    """HtpasswdChecker: schemes, uniform timing, its thread pool."""

    def write(self, text: str) -> Path:
        path = Path(self.mktemp())
        path.write_text(text)
        return path

    def test_mixed_schemes_refused(self) -> None:
        """{SHA} beside bcrypt, or two bcrypt costs, are refused at load with
        the users named; allow_mixed accepts with a warning."""
        b4 = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
        b5 = bcrypt.hashpw(b"pw", bcrypt.gensalt(5)).decode()
        for text, kinds in [
            (f"ada:{b4}\nbob:{sha('builder')}\n", "bcrypt cost 4: ada; {SHA}: bob"),
            (f"ada:{b4}\ncy:{b5}\n", "bcrypt cost 4: ada; bcrypt cost 5: cy"),
        ]:
            path = self.write(text)
            error = self.assertRaises(ConfigError, HtpasswdChecker, path)
            self.assertIn(f"mixes password hashes ({kinds})", str(error))
            logs = capture_logs(self)
            HtpasswdChecker(path, allow_mixed=True)
            self.assertTrue(any("mixes password hashes" in line for line in logs))

    def test_uniform_files_accepted(self) -> None:
        """All-bcrypt (one cost, any of $2a$/$2b$/$2y$) and all-{SHA} files load."""
        b4 = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
        HtpasswdChecker(self.write(f"a:{b4}\nb:{b4.replace('$2b$', '$2y$', 1)}\n"))
        HtpasswdChecker(self.write(f"a:{sha('x')}\nb:{sha('y')}\n"))

    def test_reload_keeps_entries_when_refused(self) -> None:
        """A reload that would mix schemes raises and keeps the old entries."""
        path = self.write(f"bob:{sha('builder')}\n")
        checker = HtpasswdChecker(path)
        b4 = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
        path.write_text(f"bob:{sha('builder')}\nada:{b4}\n")
        self.assertRaises(ConfigError, checker.reload)
        creds = UsernamePassword(b"bob", b"builder")
        self.assertEqual(self.successResultOf(checker.requestAvatarId(creds)), b"bob")

    def test_bcrypt_in_injected_pool(self) -> None:
        """bcrypt runs in the injected thread pool, results on the reactor;
        an unknown user costs a check against a dummy of the same cost."""
        b4 = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
        pool = ThreadPoolDouble()
        checker = HtpasswdChecker(
            self.write(f"ada:{b4}\n"), threadpool=pool, reactor=ReactorDouble()
        )
        right = checker.requestAvatarId(UsernamePassword(b"ada", b"pw"))
        unknown = checker.requestAvatarId(UsernamePassword(b"eve", b"pw"))
        self.assertNoResult(right)
        self.assertEqual(len(pool.calls), 2)
        self.assertEqual(pool.calls[1][2][1][:7], "$2b$04$")  # the dummy's cost
        pool.run_all()
        self.assertEqual(self.successResultOf(right), b"ada")
        self.failureResultOf(unknown, UnauthorizedLogin)

    def test_sha_unknown_user(self) -> None:
        """In a {SHA} file, an unknown user is refused (the dummy is {SHA})."""
        checker = HtpasswdChecker(self.write(f"bob:{sha('builder')}\n"))
        d = checker.requestAvatarId(UsernamePassword(b"eve", b"builder"))
        self.failureResultOf(d, UnauthorizedLogin)


class Greeter(Recorder):
    def on_open(self, conn: Any) -> None:
        super().on_open(conn)
        conn.send_text(f"hello {conn.user}")


def make_server(**options: Any) -> tuple[WebSocketServer, ServerHarness]:
    clock = MemoryReactorClock()
    server = WebSocketServer(Greeter(), reactor=clock, **options)
    return server, ServerHarness(server)


class BasicAuthTests(SynchronousTestCase):
    """BasicAuth on the WebSocket handshake, through the throttle."""

    def setUp(self) -> None:
        self.checker = HeldChecker({"ada": "lovelace"}, hold=set())

    def test_answers(self) -> None:
        """Right credentials open with conn.user; wrong or none get 401 with
        WWW-Authenticate; malformed ones 401 too."""
        auth = BasicAuth(
            self.checker, realm="chat", throttle=LoginThrottle(task.Clock())
        )
        _, harness = make_server(auth=auth)
        client = harness.open(headers=basic("ada", "lovelace"))
        self.assertEqual(client.messages(), ["hello ada"])
        for headers in (
            basic("ada", "nope"),
            [],
            [("Authorization", "Basic !!!")],
            [("Authorization", "Basic " + base64.b64encode(b"nocolon").decode())],
        ):
            response = harness.connect().handshake(headers=headers)
            self.assertEqual(response.status, 401)
            self.assertEqual(response.header("WWW-Authenticate"), 'Basic realm="chat"')

    def test_429_after_failures(self) -> None:
        """An address with max_failures failures gets 429 with Retry-After,
        even with the right password; the check does not run."""
        throttle = LoginThrottle(task.Clock(), max_failures=2, backoff=30)
        _, harness = make_server(auth=BasicAuth(self.checker, throttle=throttle))
        for _ in range(2):
            self.assertEqual(
                harness.connect().handshake(headers=basic("ada", "x")).status, 401
            )
        response = harness.connect().handshake(headers=basic("ada", "lovelace"))
        self.assertEqual((response.status, response.header("Retry-After")), (429, "30"))
        self.assertEqual(len(self.checker.seen), 2)

    def test_503_when_queue_full_and_gone_clients_skipped(self) -> None:
        """With the queue full the next upgrade gets 503; a client that left
        while waiting is skipped, and the legit one behind it is served."""
        checker = HeldChecker({"ada": "lovelace"}, hold={"bogus"})
        throttle = LoginThrottle(
            task.Clock(), concurrency=1, max_queued=2, max_pending_per_peer=0
        )
        _, harness = make_server(auth=BasicAuth(checker, throttle=throttle))
        bogus = [harness.connect() for _ in range(4)]
        for client in bogus:
            client.send_raw(handshake_request(headers=basic("bogus", "x")))
        self.assertEqual(bogus[3].read_response().status, 503)
        self.assertEqual(bogus[3].response.header("Retry-After"), "1")
        bogus[1].drop()
        bogus[2].drop()
        legit = harness.connect()
        legit.send_raw(handshake_request(headers=basic("ada", "lovelace")))
        self.assertEqual(throttle.stats.dropped, 2)
        checker.release(0)
        harness.flush()
        self.assertEqual(bogus[0].read_response().status, 401)
        self.assertEqual(legit.read_response().status, 101)
        self.assertEqual(checker.seen, ["bogus", "ada"])


class SessionStoreTests(SynchronousTestCase):
    """Sessions are capped, expire, and close their connections when they end."""

    def test_caps_evict_least_recently_used(self) -> None:
        """Past max_per_identity an identity's least recently used session
        ends; past max_sessions the store's does."""
        store = SessionStore(task.Clock(), max_sessions=5, max_per_identity=3)
        ada = [store.create("ada") for _ in range(3)]
        store.get(ada[0])  # ada[1] is now her least recently used
        store.create("ada")
        self.assertIsNone(store.get(ada[1]))
        self.assertEqual(store.get(ada[0]), "ada")
        bob = [store.create("bob") for _ in range(2)]
        self.assertEqual(len(store), 5)
        store.create("cy")  # the store's least recently used: ada[2]
        self.assertEqual(len(store), 5)
        self.assertIsNone(store.get(ada[2]))
        self.assertEqual(store.get(bob[0]), "bob")

    def test_two_thousand_logins(self) -> None:
        """2,000 logins of one user leave max_per_identity sessions."""
        store = SessionStore(task.Clock())
        for _ in range(2000):
            store.create("ada")
        self.assertEqual(len(store), 16)

    def test_sliding_expiry(self) -> None:
        """A session lives timeout seconds after its last use."""
        clock = task.Clock()
        store = SessionStore(clock, timeout=10)
        token = store.create("ada")
        clock.advance(9)
        self.assertEqual(store.get(token), "ada")
        clock.advance(9)
        self.assertEqual(store.get(token), "ada")
        clock.advance(10)
        self.assertIsNone(store.get(token))

    def test_bad_limits(self) -> None:
        """Limits below 1 are ConfigErrors."""
        self.assertRaises(ConfigError, SessionStore, task.Clock(), max_sessions=0)
        self.assertRaises(ConfigError, SessionStore, task.Clock(), max_per_identity=0)

    def _open(self, store: SessionStore, token: str) -> tuple[ServerHarness, Any]:
        _, harness = make_server(auth=SessionAuth(store))
        self.harness = harness
        client = harness.open(headers=[("Cookie", f"wsplugin_session={token}")])
        self.assertEqual(client.messages(), ["hello ada"])
        return harness, client

    def test_logout_closes_connections(self) -> None:
        """end() closes the session's open connections with 1008."""
        clock = task.Clock()
        store = SessionStore(clock)
        token = store.create("ada")
        _, client = self._open(store, token)
        other = store.create("ada")
        self.assertEqual(len(store.connections(token)), 1)
        store.end(token)
        frames = client.frames()
        self.assertEqual(
            [(f.close_code, f.close_reason) for f in frames], [(1008, "session ended")]
        )
        self.assertEqual(store.connections(other), [])

    def test_expiry_closes_connections(self) -> None:
        """An attached session that expires closes its connections with 1008
        on time, by the store's timer; the timer stops with the last one."""
        clock = task.Clock()
        store = SessionStore(clock, timeout=60)
        token = store.create("ada")
        _, client = self._open(store, token)
        clock.advance(59)
        self.assertEqual(client.frames(), [])
        clock.advance(1)
        self.assertEqual(
            [(f.close_code, f.close_reason) for f in client.frames()],
            [(1008, "session expired")],
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_eviction_closes_connections(self) -> None:
        """A session evicted by the cap closes its connections too."""
        store = SessionStore(task.Clock(), max_per_identity=1)
        token = store.create("ada")
        _, client = self._open(store, token)
        store.create("ada")
        self.assertEqual([f.close_code for f in client.frames()], [1008])

    def test_closed_connection_detaches(self) -> None:
        """A connection that ends is forgotten by its session."""
        store = SessionStore(task.Clock())
        token = store.create("ada")
        harness, client = self._open(store, token)
        client.drop()
        self.assertEqual(store.connections(token), [])
        self.assertEqual(store._attached, set())


def web_request(
    method: bytes,
    path: bytes = b"/login",
    headers: dict[bytes, bytes] | None = None,
    body: bytes = b"",
    *,
    secure: bool = False,
) -> tuple[Request, DummyChannel]:
    """A real twisted.web request on a DummyChannel (unprocessed)."""
    channel = DummyChannel()
    channel.transport = DummyChannel.TCP(IPv4Address("TCP", "192.0.2.7", 5555))
    if secure:
        channel.isSecure = lambda: True  # type: ignore[method-assign]
    request = Request(channel)
    request.requestHeaders.setRawHeaders(b"host", [b"app.example:8080"])
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    request.content = BytesIO(body)
    request.parseCookies()
    request.method, request.uri, request.path = method, path, path.split(b"?")[0]
    request.clientproto = b"HTTP/1.1"
    request.client = channel.transport.getPeer()
    return request, channel


FORM = {b"content-type": b"application/x-www-form-urlencoded"}


class LoginResourceTests(SynchronousTestCase):
    """LoginResource: cookies, form parsing, throttle, cross-site refusal."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.store = SessionStore(self.clock)
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        self.throttle = LoginThrottle(self.clock, max_failures=2, backoff=10)
        self.login = LoginResource(checker, self.store, throttle=self.throttle)

    def post(
        self, body: bytes, headers: dict[bytes, bytes] | None = None, **kw: Any
    ) -> Request:
        request, _ = web_request(
            b"POST", headers={**FORM, **(headers or {})}, body=body, **kw
        )
        request.render(self.login)
        return request

    def test_login_sets_session_cookie(self) -> None:
        """Form credentials from the body: 204 and a browser-session cookie
        (HttpOnly, SameSite=Strict, no Max-Age); Secure over TLS."""
        request = self.post(b"username=ada&password=lovelace")
        self.assertEqual(request.code, 204)
        cookie = request.responseHeaders.getRawHeaders(b"set-cookie")[0].decode()
        name_value, *attributes = cookie.split("; ")
        self.assertEqual(attributes, ["Path=/", "HttpOnly", "SameSite=Strict"])
        self.assertEqual(self.store.get(name_value.split("=", 1)[1]), "ada")
        secure = self.post(b"username=ada&password=lovelace", secure=True)
        self.assertTrue(
            secure.responseHeaders.getRawHeaders(b"set-cookie")[0].endswith(b"; Secure")
        )

    def test_basic_credentials_and_query_ignored(self) -> None:
        """Without a username field, HTTP Basic credentials count; the query
        string is never read."""
        auth = b"Basic " + base64.b64encode(b"ada:lovelace")
        self.assertEqual(self.post(b"", {b"authorization": auth}).code, 204)
        request, _ = web_request(b"POST", b"/login?username=ada&password=lovelace")
        request.render(self.login)
        self.assertEqual(request.code, 401)

    def test_wrong_password_then_429(self) -> None:
        """Wrong credentials: empty 401 and a log line; after max_failures,
        429 with Retry-After."""
        logs = capture_logs(self)
        self.assertEqual(self.post(b"username=ada&password=x").code, 401)
        self.assertIn("login failed from 192.0.2.7", logs)
        self.post(b"username=ada&password=y")
        request = self.post(b"username=ada&password=lovelace")
        self.assertEqual(request.code, 429)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"10"])

    def test_behind_a_proxy(self) -> None:
        """With trusted_proxies, failures count by the X-Forwarded-For
        address: one guesser behind the proxy does not block the others."""
        login = LoginResource(
            InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace"),
            self.store,
            throttle=self.throttle,
            trusted_proxies=1,
        )

        def post(address: str, password: bytes) -> int:
            headers = {**FORM, b"x-forwarded-for": b"198.51.100.1, " + address.encode()}
            request, _ = web_request(
                b"POST", headers=headers, body=b"username=ada&password=" + password
            )
            request.render(login)
            return int(request.code)

        self.assertEqual([post("203.0.113.1", b"x") for _ in range(3)], [401, 401, 429])
        self.assertEqual(post("203.0.113.2", b"lovelace"), 204)

    def test_large_body(self) -> None:
        """A form body over 4096 bytes gets 413 without a check."""
        self.assertEqual(self.post(b"username=ada&password=" + b"x" * 5000).code, 413)
        self.assertEqual(self.throttle.stats.started, 0)

    def test_cross_site_refused(self) -> None:
        """A POST from another site's page (Origin, or Sec-Fetch-Site without
        Origin) gets 403 and no session; the same origin, allowed_origins,
        Sec-Fetch-Site same-origin/none and clients without either pass."""
        body = b"username=ada&password=lovelace"
        for headers, status in [
            ({b"origin": b"https://evil.example"}, 403),
            ({b"origin": b"null"}, 403),
            ({b"origin": b"http://app.example:9999"}, 403),
            ({b"sec-fetch-site": b"cross-site"}, 403),
            ({b"sec-fetch-site": b"same-site"}, 403),
            ({b"origin": b"http://app.example:8080"}, 204),
            ({b"origin": b"https://app.example:8080"}, 204),
            ({b"sec-fetch-site": b"same-origin"}, 204),
            ({b"sec-fetch-site": b"none"}, 204),
            ({}, 204),
        ]:
            request = self.post(body, headers)
            self.assertEqual(request.code, status, headers)
        self.assertEqual(len(self.store), 5)
        self.login.allowed_origins = ("https://*.example.org",)
        self.assertEqual(
            self.post(body, {b"origin": b"https://a.example.org"}).code, 204
        )

    def test_logout(self) -> None:
        """DELETE ends the session and clears the cookie (Max-Age=0); a
        cross-site DELETE gets 403 and ends nothing."""
        token = self.store.create("ada")
        cookie = {b"cookie": b"wsplugin_session=" + token.encode()}
        request, _ = web_request(
            b"DELETE", headers={**cookie, b"origin": b"https://evil.example"}
        )
        request.render(self.login)
        self.assertEqual((request.code, self.store.get(token)), (403, "ada"))
        request, _ = web_request(b"DELETE", headers=cookie)
        request.render(self.login)
        self.assertEqual(request.code, 204)
        self.assertIsNone(self.store.get(token))
        self.assertIn(
            b"Max-Age=0", request.responseHeaders.getRawHeaders(b"set-cookie")[0]
        )

    def test_client_gone_before_answer(self) -> None:
        """A login whose client disconnects while the check waits is skipped
        and nothing is written."""
        checker = HeldChecker({"ada": "lovelace"}, hold={"bogus"})
        throttle = LoginThrottle(self.clock, concurrency=1)
        login = LoginResource(checker, self.store, throttle=throttle)
        first, _ = web_request(b"POST", headers=FORM, body=b"username=bogus&password=x")
        first.render(login)
        second, _ = web_request(b"POST", headers=FORM, body=b"username=ada&password=x")
        second.render(login)
        second.connectionLost(Failure(ConnectionError("gone")))
        checker.release(0)
        self.assertEqual(checker.seen, ["bogus"])
        self.assertEqual(throttle.stats.dropped, 1)


class GuardRequest(DummyRequest):
    """DummyRequest with the attributes a guarded request reads."""

    def __init__(self, path: bytes, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(path[1:].split(b"/"))
        self.path = self.uri = path
        self.client = IPv4Address("TCP", "192.0.2.7", 5555)
        for name, value in (headers or {}).items():
            self.requestHeaders.setRawHeaders(name, [value])

    def render_tree(self, root: Any) -> None:
        resource = root
        while self.postpath and not resource.isLeaf:
            name = self.postpath.pop(0)
            self.prepath.append(name)
            resource = resource.getChildWithDefault(name, self)
        self.render(resource)


class GuardTests(SynchronousTestCase):
    """guard() answers 401/403 before a resource is looked up."""

    def setUp(self) -> None:
        tree = Resource()
        tree.putChild(b"secret", Data(b"s3cret", "text/plain"))
        tree.putChild(b"login", Data(b"form", "text/plain"))
        tree.putChild(b"assets", Resource())
        tree.children[b"assets"].putChild(b"app.js", Data(b"js", "text/plain"))
        self.tree = tree
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        self.auth = BasicAuth(
            checker, realm="site", throttle=LoginThrottle(task.Clock())
        )
        self.root = guard(tree, self.auth, public_paths=["/login", "/assets/"])

    def fetch(
        self, path: bytes, headers: dict[bytes, bytes] | None = None
    ) -> GuardRequest:
        request = GuardRequest(path, headers)
        request.render_tree(self.root)
        return request

    def test_refused_without_credentials(self) -> None:
        """Existing and missing paths alike: 401, WWW-Authenticate, no body."""
        for path in (b"/secret", b"/.env", b"/", b"/assets/../secret", b"/login/x"):
            request = self.fetch(path)
            self.assertEqual(request.responseCode, 401, path)
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"www-authenticate"),
                [b'Basic realm="site"'],
            )
            self.assertEqual(b"".join(request.written), b"")

    def test_allowed_with_credentials(self) -> None:
        """With credentials the resource renders, with the identity set."""
        auth = {b"authorization": b"Basic " + base64.b64encode(b"ada:lovelace")}
        request = self.fetch(b"/secret", auth)
        self.assertEqual(b"".join(request.written), b"s3cret")
        self.assertEqual(request.wsplugin_user, "ada")

    def test_forwarded_address(self) -> None:
        """guard(trusted_proxies=1) gives authenticators the forwarded address."""
        seen = []

        class Peer:
            def authenticate(self, client: Any) -> Any:
                seen.append(client.request.peer_address)
                return "someone"

        root = guard(self.tree, Peer(), trusted_proxies=1)
        GuardRequest(b"/secret", {b"x-forwarded-for": b"203.0.113.5"}).render_tree(root)
        GuardRequest(b"/secret").render_tree(root)
        self.assertEqual(seen, ["203.0.113.5", "192.0.2.7"])

    def test_public_paths(self) -> None:
        """public_paths are served without a check: exact, or a subtree."""
        self.assertEqual(b"".join(self.fetch(b"/login").written), b"form")
        self.assertEqual(b"".join(self.fetch(b"/assets/app.js").written), b"js")

    def test_other_authenticators(self) -> None:
        """Any authenticator works: an API key's 403 for a wrong key."""
        root = guard(self.tree, ApiKeyAuth({"k1": "ops"}))
        request = GuardRequest(b"/secret", {b"x-api-key": b"k2"})
        request.render_tree(root)
        self.assertEqual(request.responseCode, 403)
        request = GuardRequest(b"/secret", {b"x-api-key": b"k1"})
        request.render_tree(root)
        self.assertEqual(b"".join(request.written), b"s3cret")

    def test_leaf_and_failing_authenticator(self) -> None:
        """A guarded leaf is checked in render; an authenticator raising
        something other than Reject gives an empty 500 and a logged error."""

        class Broken:
            def authenticate(self, client: Any) -> Any:
                raise RuntimeError("boom")

        request = GuardRequest(b"/")
        request.render_tree(guard(Data(b"leaf", "text/plain"), Broken()))
        self.assertEqual(request.responseCode, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_bad_public_paths(self) -> None:
        """Public paths must start with '/' and come as a list."""
        self.assertRaises(ConfigError, guard, self.tree, self.auth, public_paths="/x")
        self.assertRaises(ConfigError, guard, self.tree, self.auth, public_paths=["x"])


class SiteGuardTests(SynchronousTestCase):
    """WebSocketServer(http_auth=...) guards the whole same-port site."""

    def request(
        self,
        server: WebSocketServer,
        path: bytes,
        headers: dict[bytes, bytes] | None = None,
    ) -> Request:
        site: Site = server.site
        request, channel = web_request(b"GET", path, headers)
        channel.site = site
        request.requestReceived(b"GET", path, b"HTTP/1.1")
        return request

    def test_whole_site(self) -> None:
        """Resources and unknown paths get 401; public paths pass; with
        credentials the resource answers; before_request runs after the check."""
        pages = Resource()
        pages.putChild(b"", Data(b"home", "text/plain"))
        pages.putChild(b"login", Data(b"form", "text/plain"))
        seen: list[bytes] = []
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        auth = BasicAuth(checker, throttle=LoginThrottle(task.Clock()))
        server = WebSocketServer(
            Greeter(),
            path="/ws",
            reactor=MemoryReactorClock(),
            http=pages,
            http_auth=auth,
            public_paths=["/login"],
            before_request=lambda r: seen.append(r.path),
        )
        for path in (b"/", b"/.env", b"/ws"):
            self.assertEqual(self.request(server, path).code, 401, path)
        self.assertEqual(seen, [])
        self.assertEqual(self.request(server, b"/login").code, 200)
        creds = {b"authorization": b"Basic " + base64.b64encode(b"ada:lovelace")}
        request = self.request(server, b"/", creds)
        self.assertEqual(request.code, 200)
        self.assertEqual(seen, [b"/login", b"/"])


class OriginDefaultTests(SynchronousTestCase):
    """On authenticated routes the default Origin policy is same-origin."""

    def test_authenticated_route_same_origin(self) -> None:
        """Cross-origin upgrades to an authenticated route get 403 before the
        authenticator runs; same-origin and Origin-less ones go on."""
        checker = HeldChecker({"ada": "lovelace"}, hold=set())
        _, harness = make_server(
            auth=BasicAuth(checker, throttle=LoginThrottle(task.Clock()))
        )
        creds = basic("ada", "lovelace")
        for origin, status in [
            ("https://evil.example", 403),
            ("null", 403),
            ("http://localhost:8080", 403),
            ("http://localhost", 101),
            ("https://localhost", 101),
        ]:
            response = harness.connect().handshake(
                host="localhost", headers=[("Origin", origin), *creds]
            )
            self.assertEqual(response.status, status, origin)
        self.assertEqual(harness.connect().handshake(headers=creds).status, 101)
        self.assertEqual(checker.seen, ["ada"] * 3)

    def test_public_route_any_origin(self) -> None:
        """Public routes keep accepting any origin by default."""
        _, harness = make_server()
        response = harness.connect().handshake(
            headers=[("Origin", "https://x.example")]
        )
        self.assertEqual(response.status, 101)

    def test_star_is_explicit_and_warned(self) -> None:
        """allowed_origins=["*"] on an authenticated route is obeyed and logs
        a warning when the route is registered."""
        logs = capture_logs(self)
        checker = HeldChecker({"ada": "lovelace"}, hold=set())
        _, harness = make_server(
            auth=BasicAuth(checker, throttle=LoginThrottle(task.Clock())),
            allowed_origins=["*"],
        )
        self.assertTrue(any("accepts any Origin" in line for line in logs), logs)
        response = harness.connect().handshake(
            headers=[("Origin", "https://evil.example"), *basic("ada", "lovelace")]
        )
        self.assertEqual(response.status, 101)
