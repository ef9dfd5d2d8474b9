"""``wsplugin.auth._sessions``: SessionStore on a ``task.Clock``, and
SessionAuth on the StringTransport harness."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tests.auth_support import capture_logs, make_server, web_request
from wsplugin.auth import HTTPClient, SessionAuth, SessionStore
from wsplugin.errors import ConfigError, Reject
from wsplugin.testing import ServerHarness


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
        """A connection that ends is forgotten by its session; when the
        session expires, the store's timer stops for good."""
        clock = task.Clock()
        store = SessionStore(clock, timeout=60)
        token = store.create("ada")
        harness, client = self._open(store, token)
        client.drop()
        self.assertEqual(store.connections(token), [])
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(60)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(store), 0)

    def test_stop_cancels_the_timer(self) -> None:
        """stop() cancels the expiry timer; sessions stay, and expire on
        use."""
        clock = task.Clock()
        store = SessionStore(clock, timeout=60)
        token = store.create("ada")
        self._open(store, token)
        store.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(61)
        self.assertIsNone(store.get(token))


class SessionAuthTests(SynchronousTestCase):
    """SessionAuth reads the session cookie."""

    def test_plain_http(self) -> None:
        """No cookie, or an unknown or expired session, gets 401 (the token
        is not logged); a live session gives its identity and extends it;
        a plain HTTP client is not attached to the session."""
        clock = task.Clock()
        store = SessionStore(clock, timeout=10)
        token = store.create("ada")
        auth = SessionAuth(store, cookie="sid")
        lines = capture_logs(self)

        def check(cookie: bytes) -> object:
            headers = {b"cookie": cookie} if cookie else {}
            return auth.authenticate(HTTPClient(web_request(b"GET", b"/", headers)[0]))

        for cookie in (b"", b"sid=nope", b"wsplugin_session=" + token.encode()):
            failure = self.failureResultOf(check(cookie), Reject)
            self.assertEqual(failure.value.status, 401)
        clock.advance(9)
        self.assertEqual(self.successResultOf(check(b"sid=" + token.encode())), "ada")
        clock.advance(9)
        self.assertEqual(self.successResultOf(check(b"sid=" + token.encode())), "ada")
        self.assertEqual(store.connections(token), [])
        clock.advance(10)
        self.assertEqual(
            self.failureResultOf(check(b"sid=" + token.encode())).value.status, 401
        )
        self.assertEqual(len(lines), 4)
        self.assertFalse([line for line in lines if token in line])
        self.assertIn("(session: unknown or expired)", lines[-1])


class Events:
    """A session handler recording every event."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def create_session(self, identity: Any) -> dict[str, Any]:
        self.seen.append(("create", identity))
        return {"cart": [], "who": identity}

    def on_session_start(self, session: Any) -> None:
        self.seen.append(("start", session.identity))

    def on_session_end(self, session: Any, reason: str) -> None:
        self.seen.append(("end", session.identity, reason))

    def on_invalid_session(self, request: Any) -> None:
        self.seen.append(("invalid", request.path))


class SessionEventTests(SynchronousTestCase):
    """The session events (sgc OnCreateSession, OnSessionStart,
    OnSessionEnd, OnInvalidSession) and the Session object."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.events = Events()
        self.store = SessionStore(self.clock, timeout=60, handler=self.events)

    def test_create_and_start(self) -> None:
        """create() asks create_session for the data, then fires
        on_session_start; the Session carries identity, data and times and
        its repr never shows the id."""
        token = self.store.create("ada")
        self.assertEqual(self.events.seen, [("create", "ada"), ("start", "ada")])
        session = self.store.session(token)
        assert session is not None
        self.assertEqual(
            (session.id, session.identity, session.data, session.created),
            (token, "ada", {"cart": [], "who": "ada"}, 0.0),
        )
        self.assertEqual(session.expires, 60.0)
        self.assertNotIn(token, repr(session))

    def test_default_data_is_a_dict(self) -> None:
        """Without create_session, each session gets its own dict."""
        store = SessionStore(self.clock)
        one, two = store.session(store.create("a")), store.session(store.create("b"))
        assert one is not None and two is not None
        one.data["x"] = 1
        self.assertEqual((one.data, two.data), ({"x": 1}, {}))

    def test_end_reasons(self) -> None:
        """on_session_end gets "logout", "evicted" and "expired", the last
        on time by the store's timer (no use needed)."""
        store = SessionStore(
            self.clock, timeout=60, max_per_identity=1, handler=self.events
        )
        first = store.create("ada")
        store.create("ada")  # evicts the first
        bob = store.create("bob")
        store.end(bob)
        self.events.seen.clear()
        self.clock.advance(60)
        self.assertEqual(self.events.seen, [("end", "ada", "expired")])
        self.assertIsNone(store.session(first))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_evicted_and_logout(self) -> None:
        """Evicted by max_per_identity, then logged out."""
        store = SessionStore(self.clock, max_per_identity=1, handler=self.events)
        store.create("ada")
        second = store.create("ada")
        store.end(second)
        ends = [e for e in self.events.seen if e[0] == "end"]
        self.assertEqual(ends, [("end", "ada", "evicted"), ("end", "ada", "logout")])

    def test_invalid_session_presented(self) -> None:
        """An unknown or expired id presented to SessionAuth fires
        on_invalid_session with the request (no cookie at all does not)."""
        auth = SessionAuth(self.store)
        token = self.store.create("ada")
        self.clock.advance(61)

        def check(cookie: bytes) -> None:
            headers = {b"cookie": cookie} if cookie else {}
            request = web_request(b"GET", b"/members", headers)[0]
            self.failureResultOf(auth.authenticate(HTTPClient(request)), Reject)

        check(b"")
        check(b"wsplugin_session=" + token.encode())
        check(b"wsplugin_session=made-up")
        invalid = [e for e in self.events.seen if e[0] == "invalid"]
        self.assertEqual(invalid, [("invalid", "/members")] * 2)

    def test_handler_errors_are_logged(self) -> None:
        """A handler method that raises is logged; the store goes on."""

        class Broken:
            def on_session_start(self, session: Any) -> None:
                raise RuntimeError("boom")

        store = SessionStore(self.clock, handler=Broken())
        token = store.create("ada")
        self.assertEqual(store.get(token), "ada")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_rotate(self) -> None:
        """rotate() gives the same session a new id (the old one is
        invalid) and keeps its data and connections; another identity ends
        it instead ("replaced")."""
        token = self.store.create("ada")
        session = self.store.session(token)
        assert session is not None
        session.data["cart"].append("book")
        _, harness = make_server(auth=SessionAuth(self.store))
        self.harness = harness
        client = harness.open(headers=[("Cookie", f"wsplugin_session={token}")])
        new = self.store.rotate(token, "ada")
        assert new is not None
        self.assertNotEqual(new, token)
        self.assertIsNone(self.store.session(token))
        self.assertIs(self.store.session(new), session)
        self.assertEqual(session.data["cart"], ["book"])
        self.assertEqual(len(self.store.connections(new)), 1)
        self.assertIsNone(self.store.rotate(new, "mallory"))
        self.assertEqual(self.events.seen[-1], ("end", "ada", "replaced"))
        self.assertEqual(
            [f.close_code for f in client.frames() if f.close_code], [1008]
        )
        self.assertIsNone(self.store.rotate("unknown"))

    def test_conn_session_and_session_of(self) -> None:
        """SessionAuth sets conn.session; session_of() finds the session of
        a connection, of a twisted.web request, and fires
        on_invalid_session for a stale cookie."""
        token = self.store.create("ada")
        server, harness = make_server(auth=SessionAuth(self.store))
        self.harness = harness
        harness.open(headers=[("Cookie", f"wsplugin_session={token}")])
        (conn,) = server.connections
        session = self.store.session(token)
        self.assertIs(conn.session, session)
        self.assertIs(self.store.session_of(conn), session)
        request = web_request(
            b"GET", b"/cart", {b"cookie": b"wsplugin_session=" + token.encode()}
        )[0]
        self.assertIs(self.store.session_of(request), session)
        stale = web_request(b"GET", b"/cart", {b"cookie": b"wsplugin_session=old"})[0]
        self.assertIsNone(self.store.session_of(stale))
        self.assertIsNone(self.store.session_of(web_request(b"GET", b"/")[0]))
        self.assertEqual(self.events.seen[-1], ("invalid", "/cart"))

    def test_guard_sets_the_request_session(self) -> None:
        """Through guard(SessionAuth), the resource sees
        request.wsplugin_session."""
        token = self.store.create("ada")
        client = HTTPClient(
            web_request(
                b"GET", b"/", {b"cookie": b"wsplugin_session=" + token.encode()}
            )[0]
        )
        self.assertEqual(
            self.successResultOf(SessionAuth(self.store).authenticate(client)), "ada"
        )
        self.assertIs(client.web_request.wsplugin_session, self.store.session(token))  # type: ignore[attr-defined]
