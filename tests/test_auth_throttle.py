"""``wsplugin.auth._throttle``: LoginThrottle on a ``task.Clock`` with
checks that answer when the test says."""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tests.auth_support import HeldChecker, capture_logs, check_of, quiet
from wsplugin import Reject
from wsplugin.auth import LoginThrottle
from wsplugin.auth._throttle import peer_key
from wsplugin.errors import ConfigError


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
        self.assertEqual(throttle.pending_for("10.0.0.1"), 0)

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
        self.assertEqual(throttle.remembered, 3)

    def test_ipv6_counts_by_64(self) -> None:
        """IPv6 addresses count by /64; v4-mapped ones as IPv4."""
        self.assertEqual(peer_key("2001:db8::1"), peer_key("2001:db8::ffff:2"))
        self.assertNotEqual(peer_key("2001:db8::1"), peer_key("2001:db8:0:1::1"))
        self.assertEqual(peer_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(peer_key("unix"), "unix")

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
