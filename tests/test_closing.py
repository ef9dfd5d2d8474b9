"""wsplugin._closing: close frames checked and answered, failures reported,
the end reached once; the lifecycle follows."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin._closing import close_frame_problem
from wsplugin._lifecycle import Phase
from wsplugin.testing import client_frame


class CloseFrameProblemTests(SynchronousTestCase):
    """Which close frames are invalid, and with what code."""

    def test_codes_and_reasons(self) -> None:
        """Receivable codes pass; reserved ones are 1002; a bad reason 1007."""
        self.assertIsNone(close_frame_problem(1000, b"bye"))
        self.assertIsNone(close_frame_problem(None, None))
        self.assertIsNone(close_frame_problem(4999, None))
        for code in (0, 999, 1004, 1005, 1006, 1015, 2999, 5000):
            self.assertEqual(close_frame_problem(code, None)[0], 1002, code)
        self.assertEqual(close_frame_problem(1000, b"\xff")[0], 1007)


class LifecycleTests(SynchronousTestCase):
    """The phase follows close frames and TCP closes."""

    def test_our_close(self) -> None:
        """Our close frame: CLOSING at once, ENDED when TCP is gone;
        on_disconnect once."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        life = client.protocol.lifecycle
        self.assertIs(life.phase, Phase.OPEN)
        client.connection.close(1000)
        self.assertIs(life.phase, Phase.CLOSING)
        client.send_close(1000)
        self.assertIs(life.phase, Phase.ENDED)
        self.assertEqual(rec.names().count("on_disconnect"), 1)

    def test_refused_handshake(self) -> None:
        """A refused handshake ends REFUSED, then ENDED, never OPEN."""
        rec = Recorder()
        _, harness = make(rec, path="/only")
        client = harness.connect()
        self.assertEqual(client.handshake("/other").status, 404)
        self.assertIn(client.protocol.lifecycle.phase, (Phase.REFUSED, Phase.ENDED))
        harness.flush()
        self.assertIs(client.protocol.lifecycle.phase, Phase.ENDED)
        self.assertNotIn("on_disconnect", rec.names())

    def test_manual_close(self) -> None:
        """manual_close: PEER_CLOSED until the end; the application's
        answer goes out and the TCP connection closes."""
        rec = Recorder()
        _, harness = make(rec, manual_close=True)
        client = harness.open()
        client.send_close(4001, "why")
        life = client.protocol.lifecycle
        self.assertIs(life.phase, Phase.PEER_CLOSED)
        self.assertEqual(client.connection.state.value, "closing")
        client.connection.close(4002, "ok")
        self.assertEqual([f.close_code for f in client.frames()], [4002])
        harness.flush()
        self.assertIs(life.phase, Phase.ENDED)
        self.assertIn(("on_disconnect", True, 4001), rec.events)


class InvalidCloseTests(SynchronousTestCase):
    """An invalid close frame gets a close frame back, then TCP closes."""

    def test_answered_1002(self) -> None:
        """A reserved code: our 1002 close frame is sent (not a bare drop),
        on_error gets a ProtocolError, on_close does not fire."""
        rec = Recorder()
        _, harness = make(rec)
        client = harness.open()
        client.send_raw(client_frame(8, b"\x03\xed"))  # 1005: not receivable
        self.assertEqual([f.close_code for f in client.frames()], [1002])
        self.assertIn(("on_error", "ProtocolError"), rec.events)
        self.assertNotIn("on_close", rec.names())
        self.assertTrue(client.closed)


class AbortTests(SynchronousTestCase):
    """A graceful close waits for a slow reader, but not for ever."""

    def _lingering(self) -> tuple[object, object]:
        _, harness = make(Recorder(), heartbeat_interval=0, close_handshake_timeout=2)
        client = harness.open()
        # a peer that reads nothing: the TCP close never completes
        client.transport.loseConnection = lambda: None  # type: ignore[method-assign]
        client.connection.close()
        client.send_close(1000)
        self.assertFalse(client.transport.aborted)
        self.assertIs(client.protocol.lifecycle.phase, Phase.CLOSING)
        return harness, client

    def test_linger_bounded(self) -> None:
        """After close_handshake_timeout the connection is aborted."""
        harness, client = self._lingering()
        harness.advance(2)
        self.assertTrue(client.transport.aborted)
        harness.flush()
        self.assertIs(client.protocol.lifecycle.phase, Phase.ENDED)

    def test_abort_cuts_linger_short(self) -> None:
        """abort() during the graceful close aborts at once."""
        _, client = self._lingering()
        client.connection.abort()
        self.assertTrue(client.transport.aborted)
