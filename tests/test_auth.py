"""``wsplugin.auth``, the package: its public names, the import paths the
docs use, one log namespace for all its modules, and how an authenticator
changes a route's default Origin policy.

Each module of the package has its own tests (``tests/test_auth_*.py``); the
same attacks over real sockets are in ``tests/integration/test_auth_attacks.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.internet import task
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

import wsplugin.auth
from tests.auth_support import HeldChecker, basic, capture_logs, make_server
from wsplugin.auth import BasicAuth, LoginThrottle

AUTH_ALL = [
    "ApiKeyAuth",
    "BasicAuth",
    "GuardedResource",
    "HTTPClient",
    "HtpasswdChecker",
    "LoginResource",
    "LoginThrottle",
    "QueryTokenAuth",
    "SESSION_EVENTS",
    "Session",
    "SessionAuth",
    "SessionStore",
    "ThrottleStats",
    "guard",
    "site_guard",
]

MODULES = {
    "_common": [],
    "_guard": ["GuardedResource", "guard", "site_guard"],
    "_htpasswd": ["HtpasswdChecker"],
    "_http": ["HTTPClient"],
    "_login": ["LoginResource"],
    "_probe": [],
    "_schemes": ["ApiKeyAuth", "BasicAuth", "QueryTokenAuth"],
    "_sessions": ["SESSION_EVENTS", "Session", "SessionAuth", "SessionStore"],
    "_throttle": ["LoginThrottle", "ThrottleStats"],
}


class ExportTests(SynchronousTestCase):
    """``wsplugin.auth`` exports its public API and nothing private."""

    def test_all_is_pinned(self) -> None:
        """``__all__`` is exactly the documented names; each resolves and
        none is private."""
        self.assertEqual(sorted(wsplugin.auth.__all__), AUTH_ALL)
        for name in wsplugin.auth.__all__:
            self.assertTrue(hasattr(wsplugin.auth, name), name)

    def test_reexports_are_the_module_objects(self) -> None:
        """Every public name is the object its private module defines, and
        every name a module exports is re-exported."""
        exported = []
        for module_name, names in MODULES.items():
            module = importlib.import_module(f"wsplugin.auth.{module_name}")
            for name in names:
                self.assertIs(getattr(wsplugin.auth, name), getattr(module, name))
            exported += names
        self.assertEqual(sorted(exported), AUTH_ALL)

    def test_documented_import_paths(self) -> None:
        """The imports README, docs/, examples/ and the server use keep
        working, each giving a class or function."""
        from wsplugin.auth import (
            ApiKeyAuth,
            BasicAuth,
            HtpasswdChecker,
            LoginResource,
            LoginThrottle,
            QueryTokenAuth,
            SessionAuth,
            SessionStore,
            guard,
            site_guard,
        )

        for imported in (
            ApiKeyAuth,
            BasicAuth,
            HtpasswdChecker,
            LoginResource,
            LoginThrottle,
            QueryTokenAuth,
            SessionAuth,
            SessionStore,
            guard,
            site_guard,
        ):
            self.assertTrue(callable(imported), imported)

    def test_one_log_namespace(self) -> None:
        """Every module logs as ``wsplugin.auth`` (the docs show log lines
        as ``[wsplugin.auth#warn] ...``), whichever part wrote the line."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        throttle = LoginThrottle(task.Clock(), max_failures=1, backoff=5)
        checker = HeldChecker({}, hold=set())
        _, harness = make_server(auth=BasicAuth(checker, throttle=throttle))
        harness.connect().handshake(headers=basic("ada", "x"))
        harness.connect().handshake(headers=basic("ada", "x"))
        mine = [e for e in events if "auth" in e.get("log_namespace", "")]
        self.assertEqual({e["log_namespace"] for e in mine}, {"wsplugin.auth"})
        self.assertGreaterEqual(len(mine), 3)  # failure, block, refusal


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
