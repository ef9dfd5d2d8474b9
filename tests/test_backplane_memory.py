"""``wsplugin.backplane._memory``: the in-process engine, on a
``task.Clock``."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.backplane_support import Exploding, Recorder
from wsplugin.backplane import Command, LocalBackplane, RecoveryStatus
from wsplugin.errors import ConfigError


def local(**kwargs: Any) -> tuple[LocalBackplane, Recorder, Clock]:
    clock = Clock()
    bp = LocalBackplane(node_id="n.0", clock=clock, **kwargs)
    rec = Recorder()
    bp.start(rec)
    return bp, rec, clock


class LocalPublishTests(SynchronousTestCase):
    def test_publish_delivers_at_once_with_offsets(self) -> None:
        """Channel publications get offsets 1, 2, ... in one epoch; a
        broadcast to all has none; filters are passed on."""
        bp, rec, _ = local()
        bp.publish("a", b"one")
        bp.publish("a", b"two", protocol="p", ids=["i", "i"], exclude=["x"])
        bp.publish("b", b"\x00", is_binary=True)
        bp.publish(None, b"all")
        self.assertEqual([p.offset for p in rec.pubs], [1, 2, 1, None])
        self.assertEqual(rec.pubs[0].epoch, rec.pubs[1].epoch)
        self.assertNotEqual(rec.pubs[0].epoch, rec.pubs[2].epoch)
        self.assertEqual(rec.pubs[1].ids, ("i",))
        self.assertEqual(rec.pubs[1].exclude, ("x",))
        self.assertEqual(rec.pubs[1].protocol, "p")
        self.assertEqual(rec.pubs[1].origin, "n.0")
        self.assertEqual(bp.stats.published, 4)
        self.assertEqual(bp.state, "connected")

    def test_misuse_raises(self) -> None:
        """Wrong types and invalid text raise at once, naming the problem."""
        bp, rec, _ = local()
        with self.assertRaises(TypeError):
            bp.publish("a", "text")  # type: ignore[arg-type]
        with self.assertRaises(UnicodeDecodeError):
            bp.publish("a", b"\xff")
        with self.assertRaises(ValueError):
            bp.publish("", b"x")
        with self.assertRaises(ValueError):
            bp.publish("x" * 1025, b"x")
        with self.assertRaises(TypeError):
            bp.publish("a", b"x", ids=[1])  # type: ignore[list-item]
        with self.assertRaises(ConfigError):
            bp.publish("a", b"x", history_size=-1)
        with self.assertRaises(ValueError):
            bp.subscribe("a", ("e", -1))
        with self.assertRaises(ValueError):
            bp.subscribe("a", "e1")  # type: ignore[arg-type]
        self.assertEqual(rec.pubs, [])

    def test_stopped_or_failing_receiver_never_raises(self) -> None:
        """A stopped engine drops with a log line; a receiver that raises is
        logged; the publisher never sees an exception."""
        bp = LocalBackplane(clock=Clock())
        bp.publish("a", b"x")
        bp.send("id", b"x")
        bp.start(Exploding())
        bp.publish("a", b"x")
        bp.disconnect_all()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.successResultOf(bp.stop())
        self.assertEqual(bp.state, "stopped")

    def test_commands_go_to_the_receiver(self) -> None:
        """send, disconnect and disconnect_all reach the receiver in order."""
        bp, rec, _ = local()
        cid = bp.new_connection_id()
        bp.send(cid, b"\x01", is_binary=True)
        bp.disconnect(cid, 4000, "bye")
        bp.disconnect_all(1001, "restart")
        self.assertEqual(
            rec.cmds,
            [
                Command("send", cid, b"\x01", True, origin="n.0"),
                Command("close", cid, code=4000, reason="bye", origin="n.0"),
                Command("close_all", None, code=1001, reason="restart", origin="n.0"),
            ],
        )
        with self.assertRaises(UnicodeDecodeError):
            bp.send(cid, b"\xff")


class LocalHistoryTests(SynchronousTestCase):
    def test_recovery(self) -> None:
        """A subscriber recovers exactly the publications after its
        position; an up-to-date one recovers nothing."""
        bp, rec, _ = local(history_size=10)
        start = self.successResultOf(bp.subscribe("c"))
        self.assertEqual(start.status, RecoveryStatus.NOT_REQUESTED)
        self.assertEqual(start.position.offset, 0)  # type: ignore[union-attr]
        for i in range(5):
            bp.publish("c", b"%d" % i)
        got = self.successResultOf(bp.subscribe("c", (start.position.epoch, 2)))  # type: ignore[union-attr]
        self.assertTrue(got.recovered)
        self.assertEqual([p.message for p in got.publications], ["2", "3", "4"])
        self.assertEqual(got.position, (start.position.epoch, 5))  # type: ignore[union-attr]
        same = self.successResultOf(bp.subscribe("c", got.position))
        self.assertEqual(
            (same.status, same.publications), (RecoveryStatus.RECOVERED, ())
        )
        self.assertEqual(bp.stats.recoveries, {"not_requested": 1, "recovered": 2})

    def test_too_old_and_no_history(self) -> None:
        """A position before the kept window is too old; a channel without
        history recovers only an up-to-date position."""
        bp, rec, _ = local(history_size=3)
        for i in range(6):
            bp.publish("c", b"%d" % i)
        epoch = rec.pubs[0].epoch
        assert epoch is not None
        self.assertEqual(
            self.successResultOf(bp.subscribe("c", (epoch, 2))).status,
            RecoveryStatus.TOO_OLD,
        )
        ok = self.successResultOf(bp.subscribe("c", (epoch, 3)))
        self.assertEqual([p.offset for p in ok.publications], [4, 5, 6])
        bp.publish("n", b"x", history_size=0)
        bp.publish("n", b"y", history_size=0)
        n_epoch = rec.pubs[-1].epoch
        assert n_epoch is not None
        self.assertEqual(
            self.successResultOf(bp.subscribe("n", (n_epoch, 1))).status,
            RecoveryStatus.TOO_OLD,
        )
        self.assertTrue(self.successResultOf(bp.subscribe("n", (n_epoch, 2))).recovered)

    def test_epoch_changes_when_history_expires(self) -> None:
        """After history_ttl without a publication the channel starts a new
        epoch at offset 1; old positions get EPOCH_CHANGED, and so do
        positions from the future or an unknown epoch."""
        bp, rec, clock = local(history_size=10, history_ttl=60)
        bp.publish("c", b"1")
        clock.advance(59)
        bp.publish("c", b"2")  # refreshes the TTL
        clock.advance(59)
        old = rec.pubs[-1].position
        assert old is not None
        self.assertTrue(
            self.successResultOf(bp.subscribe("c", (old.epoch, 0))).recovered
        )
        clock.advance(61)
        bp.publish("c", b"3")
        self.assertEqual(rec.pubs[-1].offset, 1)
        self.assertNotEqual(rec.pubs[-1].epoch, old.epoch)
        for since in (old, ("other", 0), (rec.pubs[-1].epoch, 5)):
            got = self.successResultOf(bp.subscribe("c", since))  # type: ignore[arg-type]
            self.assertEqual(got.status, RecoveryStatus.EPOCH_CHANGED)
            self.assertEqual(got.position, rec.pubs[-1].position)

    def test_history_is_bounded_and_swept(self) -> None:
        """History keeps the newest entries when its size changes, and
        expired channels are forgotten (memory is bounded)."""
        bp, rec, clock = local(history_size=4, history_ttl=10)
        for i in range(4):
            bp.publish("c", b"%d" % i)
        bp.publish("c", b"4", history_size=2)
        epoch = rec.pubs[0].epoch
        assert epoch is not None
        got = self.successResultOf(bp.subscribe("c", (epoch, 3)))
        self.assertEqual([p.message for p in got.publications], ["3", "4"])
        self.assertEqual(
            self.successResultOf(bp.subscribe("c", (epoch, 2))).status,
            RecoveryStatus.TOO_OLD,
        )
        for i in range(100):
            bp.publish(f"tmp{i}", b"x")
        self.assertEqual(len(bp.history_channels()), 101)
        clock.advance(11)
        bp.publish("c", b"again")
        self.assertEqual(bp.history_channels(), ["c"])

    def test_history_options_stick_to_the_channel(self) -> None:
        """A size or TTL given by one publish stays the channel's own for
        publishes that give none (a publisher without options does not
        wipe the history another asked for), until the history expires."""
        bp, rec, clock = local(history_size=0, history_ttl=10)
        bp.publish("c", b"0", history_size=3, history_ttl=100)
        for i in range(1, 5):
            bp.publish("c", b"%d" % i)
        epoch = rec.pubs[0].epoch
        assert epoch is not None
        got = self.successResultOf(bp.subscribe("c", (epoch, 2)))
        self.assertEqual([p.message for p in got.publications], ["2", "3", "4"])
        clock.advance(50)  # within the channel's own TTL (100), not the default
        bp.publish("c", b"5")
        self.assertEqual(rec.pubs[-1].epoch, epoch)
        clock.advance(101)
        bp.publish("c", b"6")  # expired: a new history, with the defaults
        self.assertNotEqual(rec.pubs[-1].epoch, epoch)
        got = self.successResultOf(bp.subscribe("c", (rec.pubs[-1].epoch, 0)))
        self.assertEqual(got.status, RecoveryStatus.TOO_OLD)


class LocalCountTests(SynchronousTestCase):
    def test_counts(self) -> None:
        """Connection and channel counts follow opened/closed and
        subscribe/unsubscribe, never below zero."""
        bp, _, _ = local()
        bp.connection_opened()
        bp.connection_opened()
        bp.connection_closed()
        bp.subscribe("c")
        bp.subscribe("c")
        bp.subscribe("d")
        bp.unsubscribe("c")
        bp.unsubscribe("d")
        bp.unsubscribe("d")
        bp.unsubscribe("never")
        self.assertEqual(self.successResultOf(bp.connection_count()), 1)
        self.assertEqual(self.successResultOf(bp.channel_count("c")), 1)
        self.assertEqual(self.successResultOf(bp.channel_count("d")), 0)
        self.assertEqual(bp.local_channels(), {"c": 1})
        bp.connection_closed()
        bp.connection_closed()
        self.assertEqual(self.successResultOf(bp.connection_count()), 0)
