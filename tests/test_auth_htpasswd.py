"""``wsplugin.auth._htpasswd``: HtpasswdChecker with an injected thread
pool and reactor."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import bcrypt
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.auth_support import capture_logs
from wsplugin.auth import HtpasswdChecker
from wsplugin.errors import ConfigError


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
