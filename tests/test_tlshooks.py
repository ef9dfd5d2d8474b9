"""wsplugin._tlshooks: a route handler's ``verify_peer`` before its
authenticator, and the SIGHUP hook that reloads certificates."""

from __future__ import annotations

import signal
import threading
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._tlshooks import PeerCheck, on_hangup, with_peer_check
from wsplugin.errors import Reject


class Auth:
    """A route authenticator that records who it was asked about."""

    def __init__(self) -> None:
        self.asked: list[Any] = []

    def authenticate(self, conn: Any) -> str:
        self.asked.append(conn)
        return "alice"


def connection(certificate: Any = None) -> Any:
    request = SimpleNamespace(peer_certificate=certificate, peer_address="192.0.2.1")
    return SimpleNamespace(request=request)


def outcome(d: Deferred[Any]) -> Any:
    """The result (or Failure) a fired Deferred holds."""
    results: list[Any] = []
    d.addBoth(results.append)
    return results[0]


class PeerCheckTests(SynchronousTestCase):
    """verify_peer's verdict decides whether the authenticator runs."""

    def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "wsplugin.tls":
                self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def check(self, verdict: Any, auth: Any = None, certificate: Any = None) -> Any:
        seen: list[tuple[Any, Any]] = []

        def verify(conn: Any, cert: Any) -> Any:
            seen.append((conn, cert))
            return verdict

        conn = connection(certificate)
        result = outcome(PeerCheck(verify, auth).authenticate(conn))
        self.assertEqual(seen, [(conn, certificate)])
        return result

    def test_go_on(self) -> None:
        """True or None goes on to the authenticator (its answer is the
        result), or to nothing without one."""
        for verdict in (True, None):
            auth = Auth()
            self.assertEqual(self.check(verdict, auth, certificate="cert"), "alice")
            self.assertEqual(len(auth.asked), 1)
            self.assertIsNone(self.check(verdict))
        self.assertEqual(self.logged, [])

    def test_refused(self) -> None:
        """False refuses with 403, before the authenticator, and is logged
        with the peer and the certificate's subject."""
        auth = Auth()
        failure = self.check(False, auth, SimpleNamespace(subject="CN=mallory"))
        self.assertIsInstance(failure, Failure)
        self.assertEqual(
            (failure.value.status, failure.value.reason), (403, "Forbidden")
        )
        self.assertEqual(auth.asked, [])
        self.assertEqual(self.logged, ["verify_peer refused 192.0.2.1 (CN=mallory)"])
        self.check(False)
        self.assertEqual(
            self.logged[1], "verify_peer refused 192.0.2.1 (no certificate)"
        )

    def test_reject_returned_or_raised(self) -> None:
        """A returned Reject is the refusal as it is; a raised one leaves
        authenticate() as it came (as an authenticator's own would), and
        the authenticator is not asked."""
        reject = Reject(495, "Bad certificate")
        auth = Auth()
        self.assertIs(self.check(reject, auth).value, reject)

        def verify(conn: Any, cert: Any) -> Any:
            raise reject

        check = PeerCheck(verify, auth)
        self.assertIs(
            self.assertRaises(Reject, check.authenticate, connection()), reject
        )
        self.assertEqual(auth.asked, [])

    def test_deferred_verdict(self) -> None:
        """A verdict may come later, through a Deferred."""
        later: Deferred[Any] = Deferred()
        auth = Auth()
        d = PeerCheck(lambda conn, cert: later, auth).authenticate(connection())
        self.assertFalse(d.called)
        self.assertEqual(auth.asked, [])
        later.callback(True)
        self.assertEqual(outcome(d), "alice")

    def test_coroutine_verdict(self) -> None:
        """verify_peer may be a coroutine."""

        async def verify(conn: Any, cert: Any) -> bool:
            return False

        failure = outcome(PeerCheck(verify, None).authenticate(connection()))
        self.assertEqual(failure.value.status, 403)

    def test_nonsense_verdict(self) -> None:
        """Anything else is a TypeError naming what came back."""
        failure = self.check("yes", Auth())
        self.assertIsInstance(failure.value, TypeError)
        self.assertIn("not 'yes'", str(failure.value))


class WithPeerCheckTests(SynchronousTestCase):
    """The route's authenticator, wrapped only when needed."""

    def test_without_verify_peer(self) -> None:
        """A handler without verify_peer keeps its authenticator as it is."""
        auth = Auth()
        self.assertIs(with_peer_check(object(), auth), auth)
        self.assertIsNone(with_peer_check(object(), None))

    def test_with_verify_peer(self) -> None:
        """A handler with verify_peer gets a PeerCheck in front of it."""

        class Handler:
            """A route handler with verify_peer."""

            def verify_peer(self, conn: Any, cert: Any) -> bool:
                return True

        handler, auth = Handler(), Auth()
        check = with_peer_check(handler, auth)
        self.assertIsInstance(check, PeerCheck)
        self.assertEqual(check.verify, handler.verify_peer)
        self.assertIs(check.auth, auth)


class Reactor:
    """callFromThread, recorded."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.append(f)


class HangupTests(SynchronousTestCase):
    """Certificate reload on SIGHUP."""

    if not hasattr(signal, "SIGHUP"):
        skip = "no SIGHUP on this platform"

    def test_signal_schedules_the_callback(self) -> None:
        """A SIGHUP schedules the callback in the reactor thread (not
        called from the handler); restore puts the old handler back."""
        before = signal.getsignal(signal.SIGHUP)
        reactor = Reactor()
        called: list[int] = []

        def reload() -> None:
            called.append(1)

        restore = on_hangup(reload, reactor)
        assert restore is not None
        self.addCleanup(signal.signal, signal.SIGHUP, before)
        self.assertIsNot(signal.getsignal(signal.SIGHUP), before)
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(reactor.calls, [reload])
        self.assertEqual(called, [])
        restore()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)

    def test_not_from_another_thread(self) -> None:
        """Outside the main thread no handler is set: None."""
        before = signal.getsignal(signal.SIGHUP)
        got: list[Any] = []
        thread = threading.Thread(
            target=lambda: got.append(on_hangup(print, Reactor()))
        )
        thread.start()
        thread.join()
        self.assertEqual(got, [None])
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
