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
