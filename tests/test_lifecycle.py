"""wsplugin._lifecycle: one Phase, changed only along the transition table."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsplugin._lifecycle import TRANSITIONS, Event, Lifecycle, LifecycleError, Phase


def at(phase: Phase) -> Lifecycle:
    return Lifecycle(phase)


class TransitionTests(SynchronousTestCase):
    """Every transition the table lists works; every other one raises."""

    def test_happy_path(self) -> None:
        """A connection goes AWAITING_REQUEST -> HANDSHAKE -> OPEN -> CLOSING
        -> ENDED; advance() returns the phase before each step."""
        life = Lifecycle()
        self.assertIs(life.phase, Phase.AWAITING_REQUEST)
        self.assertIs(life.advance(Event.HEAD_READ), Phase.AWAITING_REQUEST)
        self.assertIs(life.advance(Event.OPEN), Phase.HANDSHAKE)
        self.assertIs(life.advance(Event.CLOSE), Phase.OPEN)
        self.assertIs(life.phase, Phase.CLOSING)
        self.assertIs(life.advance(Event.END), Phase.CLOSING)
        self.assertIs(life.phase, Phase.ENDED)

    def test_every_listed_transition(self) -> None:
        """Each (phase, event) pair of the table leads where it says."""
        for phase, moves in TRANSITIONS.items():
            for event, target in moves.items():
                life = at(phase)
                life.advance(event)
                self.assertIs(life.phase, target, (phase, event))

    def test_every_other_transition_raises(self) -> None:
        """A pair the table does not list raises and leaves the phase alone."""
        for phase in Phase:
            for event in Event:
                if event in TRANSITIONS[phase]:
                    continue
                life = at(phase)
                with self.assertRaises(LifecycleError):
                    life.advance(event)
                self.assertIs(life.phase, phase)

    def test_impossible_states_unreachable(self) -> None:
        """Nothing opens without a handshake, nothing comes back after the
        end, and a refused connection never opens."""
        for phase, event in [
            (Phase.AWAITING_REQUEST, Event.OPEN),
            (Phase.REFUSED, Event.OPEN),
            (Phase.ENDED, Event.CLOSE),
            (Phase.ENDED, Event.END),
            (Phase.PEER_CLOSED, Event.OPEN),
            (Phase.HANDSHAKE, Event.PEER_CLOSE),
        ]:
            with self.assertRaises(LifecycleError):
                at(phase).advance(event)

    def test_every_phase_can_end_once(self) -> None:
        """connectionLost may come in any phase but ENDED."""
        for phase in Phase:
            if phase is Phase.ENDED:
                continue
            life = at(phase)
            life.advance(Event.END)
            self.assertIs(life.phase, Phase.ENDED)


class PropertyTests(SynchronousTestCase):
    """What the adapter asks of a lifecycle."""

    def test_opened(self) -> None:
        """Open, peer-closed and closing connections were opened; the others
        were not (an ended one says so through advance's return value)."""
        opened = {p for p in Phase if at(p).opened}
        self.assertEqual(opened, {Phase.OPEN, Phase.PEER_CLOSED, Phase.CLOSING})

    def test_head_read(self) -> None:
        """Only a connection awaiting its request head has not read it."""
        self.assertFalse(Lifecycle().head_read)
        self.assertTrue(at(Phase.REFUSED).head_read)

    def test_repr_and_slots(self) -> None:
        """One slot, no instance dict (one per connection); a readable repr."""
        life = Lifecycle()
        self.assertFalse(hasattr(life, "__dict__"))
        self.assertEqual(repr(life), "<Lifecycle awaiting request>")
