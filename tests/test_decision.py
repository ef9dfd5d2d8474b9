"""wsplugin._decision: on_connect, the request head, authentication and allow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._decision import (
    HandshakeDecision,
    HeadCheck,
    Refusal,
    check_head,
    screen_connection,
)
from wsplugin._request import Headers, Request
from wsplugin._routing import Router
from wsplugin.config import ServerConfig
from wsplugin.errors import Reject
from wsplugin.testing import handshake_request

CONFIG = ServerConfig()


class Calls:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return lambda: self.seen.append(name)


def screen(hook: Any) -> list[str]:
    calls = Calls()
    screen_connection(
        hook,
        "peer",
        log=Logger(),
        log_peer="peer",
        refuse=calls.refuse,
        drop=calls.drop,
        pause=calls.pause,
        resume=calls.resume,
    )
    return calls.seen


class ScreenTests(SynchronousTestCase):
    """on_connect's answers."""

    def test_sync_answers(self) -> None:
        """True/None go on, False refuses, a raise drops (and is logged)."""
        self.assertEqual(screen(lambda p: True), [])
        self.assertEqual(screen(lambda p: None), [])
        self.assertEqual(screen(lambda p: False), ["refuse"])

        def boom(peer: Any) -> None:
            raise ValueError()

        self.assertEqual(screen(boom), ["drop"])
        self.flushLoggedErrors(ValueError)

    def test_pending_deferred(self) -> None:
        """A pending Deferred pauses reading; its answer resumes or refuses."""
        d: Deferred[bool] = Deferred()
        seen = screen(lambda p: d)
        self.assertEqual(seen, ["pause"])
        d.callback(True)
        self.assertEqual(seen, ["pause", "resume"])
        d2: Deferred[bool] = Deferred()
        seen = screen(lambda p: d2)
        d2.callback(False)
        self.assertEqual(seen, ["pause", "refuse"])
        d3: Deferred[bool] = Deferred()
        seen = screen(lambda p: d3)
        d3.errback(RuntimeError())
        self.assertEqual(seen, ["pause", "drop"])
        self.flushLoggedErrors(RuntimeError)


def router(**overrides: Any) -> Router:
    r = Router()
    r.register("*", "/chat", object(), CONFIG.replace(**overrides), default_host=True)
    return r


class CheckHeadTests(SynchronousTestCase):
    """The request head, checked before Autobahn sees it."""

    def test_incomplete(self) -> None:
        """Half a head: nothing to decide yet."""
        self.assertIsNone(check_head(b"GET /chat HTTP/1.1\r\nHost:", CONFIG, router()))

    def test_accepted(self) -> None:
        """A valid head: its route, and the bytes for Autobahn."""
        data = handshake_request("/chat") + b"rest"
        checked = check_head(data, CONFIG, router())
        assert isinstance(checked, HeadCheck)
        self.assertEqual(checked.route.path, "/chat")
        self.assertEqual(checked.head.path, "/chat")
        self.assertTrue(checked.data.endswith(b"rest"))

    def test_refusals(self) -> None:
        """404 no route, 403 origin, 400 target (also an escaped letter) or
        HTTP/1.0, 431 a head too large."""
        evil = [("Origin", "https://evil.example")]
        cases = [
            (handshake_request("/other"), 404),
            (handshake_request("/chat", headers=evil), 403),
            (handshake_request("//x/../chat"), 400),
            (handshake_request("/%63hat"), 400),
            (handshake_request("/chat").replace(b"HTTP/1.1", b"HTTP/1.0", 1), 400),
            (handshake_request("/chat", headers=[("X", "y" * 20000)]), 431),
        ]
        r = Router()
        only_ok = CONFIG.replace(allowed_origins=("https://ok.example",))
        r.register("localhost", "/chat", object(), only_ok)
        for data, status in cases:
            refusal = check_head(data, CONFIG, r)
            assert isinstance(refusal, Refusal), data
            self.assertEqual(refusal.status, status, data[:40])
            self.assertIn("{peer}", refusal.log_format)

    def test_fixed_route(self) -> None:
        """A route fixed beforehand (take-over from twisted.web) wins."""
        fixed = router().resolve("", "/chat")
        checked = check_head(handshake_request("/elsewhere"), CONFIG, Router(), fixed)
        assert isinstance(checked, HeadCheck)
        self.assertIs(checked.route, fixed)


@dataclass
class Conn:
    request: Request
    subprotocol: str | None = None
    user: Any = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FakeDispatch:
    events: dict[str, Any]
    reported: list[Any] = field(default_factory=list)

    def report(self, failure: Any, what: str | None) -> None:
        self.reported.append((failure.type, what))


def decide(
    allow: Any = None, auth: Any = None, offered: tuple[str, ...] = ()
) -> tuple[Any, Conn, FakeDispatch]:
    r = Router()
    route = r.register("*", "/", object(), CONFIG, default_host=True, auth=auth)
    conn = Conn(Request("/", {}, Headers(), "h", "", offered, None))
    events = {} if allow is None else {"allow": allow}
    dispatch = FakeDispatch(events)
    decision = HandshakeDecision(route, conn, dispatch, "peer")  # type: ignore[arg-type]
    try:
        return decision.decide(), conn, dispatch
    except ConnectionDeny as e:
        return e, conn, dispatch


class DecisionTests(SynchronousTestCase):
    """allow's answers become Autobahn's accept or ConnectionDeny."""

    def test_accept(self) -> None:
        """No allow, True or None: accept with the subprotocol and headers."""
        result, _, _ = decide()
        self.assertEqual(result, (None, {}))

        def pick(conn: Any) -> bool:
            conn.subprotocol = "b"
            conn.response_headers.append(("Set-Cookie", "x=1"))
            return True

        d, _, _ = decide(pick, offered=("a", "b"))
        self.assertEqual(self.successResultOf(d), ("b", {"Set-Cookie": ["x=1"]}))

    def test_refuse(self) -> None:
        """False is 403; a Reject keeps its status, reason and headers."""
        d, _, _ = decide(lambda c: False)
        self.assertEqual(self.failureResultOf(d, ConnectionDeny).value.code, 403)
        decision_result, _, _ = decide(
            lambda c: Reject(401, "Who", headers=[("WWW-Authenticate", "Basic")])
        )
        failure = self.failureResultOf(decision_result, ConnectionDeny)
        self.assertEqual((failure.value.code, failure.value.reason), (401, "Who"))

    def test_errors_are_500_and_reported(self) -> None:
        """A raise, a bad value or an unoffered subprotocol: 500, on_error."""

        def boom(conn: Any) -> None:
            raise ValueError()

        result, _, dispatch = decide(boom)
        self.assertIsInstance(result, ConnectionDeny)
        self.assertEqual(result.code, 500)
        self.assertEqual(dispatch.reported, [(ValueError, "allow() raised")])
        d, _, dispatch = decide(lambda c: "yes")
        self.assertEqual(self.failureResultOf(d, ConnectionDeny).value.code, 500)

        def unoffered(conn: Any) -> bool:
            conn.subprotocol = "z"
            return True

        d, _, dispatch = decide(unoffered, offered=("a",))
        self.assertEqual(self.failureResultOf(d, ConnectionDeny).value.code, 500)
        self.assertEqual(dispatch.reported[0][0], ValueError)
        self.flushLoggedErrors(ValueError, TypeError)

    def test_authenticated_identity(self) -> None:
        """The authenticator's identity is conn.user before allow runs."""
        seen: list[Any] = []

        class Auth:
            def authenticate(self, conn: Any) -> str:
                return "alice"

        d, conn, _ = decide(lambda c: seen.append(c.user) or True, auth=Auth())
        self.successResultOf(d)
        self.assertEqual((conn.user, seen), ("alice", ["alice"]))
