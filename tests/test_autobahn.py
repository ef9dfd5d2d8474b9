"""wsplugin._autobahn: Autobahn's options copied cheaply; its timers on our clock."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._autobahn import ReactorTimer, copy_options


class CopyOptionsTests(SynchronousTestCase):
    """copy_options follows Autobahn's rule: a value already set wins."""

    def test_copies_missing_only(self) -> None:
        """Names missing on the protocol come from the factory."""
        factory = SimpleNamespace(a=1, b=2)
        protocol = SimpleNamespace(factory=factory, b=20)
        copy_options(protocol, ("a", "b"))
        self.assertEqual((protocol.a, protocol.b), (1, 20))


class ReactorTimerTests(SynchronousTestCase):
    """Autobahn's call_later on an injected clock."""

    def test_runs_on_the_clock(self) -> None:
        """The call runs when the clock says, with its arguments."""
        clock = Clock()
        seen: list[tuple[int, int]] = []
        timer = ReactorTimer(clock)
        call = timer.call_later(3, lambda a, b: seen.append((a, b)), 1, b=2)
        self.assertTrue(call.active())
        clock.advance(3)
        self.assertEqual(seen, [(1, 2)])
        self.assertFalse(call.active())

    def test_cancel_after_run_is_harmless(self) -> None:
        """Autobahn cancels without asking: after the call ran, or twice."""
        clock = Clock()
        call = ReactorTimer(clock).call_later(1, lambda: None)
        call.cancel()
        call.cancel()
        self.assertEqual(clock.getDelayedCalls(), [])
        ran = ReactorTimer(clock).call_later(1, lambda: None)
        clock.advance(1)
        ran.cancel()
