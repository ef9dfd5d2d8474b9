"""``wsplugin.auth._common``: the failure log line, the clock, the
rate-limited log and the avatar id as text."""

from __future__ import annotations

from types import SimpleNamespace

import twisted.internet
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tests.auth_support import capture_logs
from wsplugin.auth._common import LimitedLog, avatar_text, clock_now, log_failure


class LimitedLogTests(SynchronousTestCase):
    def test_one_line_per_window(self) -> None:
        """A flood gets one line per window; the next line says how many
        were held back."""
        clock = task.Clock()
        limited = LimitedLog(window=1.0)
        lines = capture_logs(self)
        for n in range(5):
            limited(clock, "refused {n}", n=n)
        self.assertEqual(lines, ["refused 0"])
        clock.advance(1)
        limited(clock, "refused {n}", n=5)
        self.assertEqual(
            lines[1:], ["(4 more like the next line in the last 1s)", "refused 5"]
        )
        clock.advance(1)
        limited(clock, "refused {n}", n=6)
        self.assertEqual(lines[3:], ["refused 6"])


class HelperTests(SynchronousTestCase):
    def test_failure_line(self) -> None:
        """A failure names the peer, the path, the scheme and the reason."""
        lines = capture_logs(self)
        client = SimpleNamespace(
            request=SimpleNamespace(peer_address="203.0.113.7", path="/chat")
        )
        log_failure(client, "basic", "no credentials")
        self.assertEqual(
            lines,
            ["authentication failed for 203.0.113.7 on /chat (basic: no credentials)"],
        )

    def test_clock_now(self) -> None:
        """The given clock's time, or the global reactor's without one."""
        clock = task.Clock()
        clock.advance(12.5)
        self.assertEqual(clock_now(clock), 12.5)
        other = task.Clock()
        other.advance(3)
        self.patch(twisted.internet, "reactor", other)
        self.assertEqual(clock_now(None), 3.0)

    def test_avatar_text(self) -> None:
        """twisted.cred gives bytes; identities are str; others pass."""
        self.assertEqual(avatar_text(b"ada"), "ada")
        self.assertEqual(avatar_text("ada"), "ada")
        self.assertEqual(avatar_text(7), 7)
