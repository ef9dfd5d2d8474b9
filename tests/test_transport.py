"""wsplugin._transport: what a transport holds unwritten."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.trial.unittest import SynchronousTestCase

from wsplugin._transport import transport_buffered, writes_now


def transport(**kw: object) -> SimpleNamespace:
    base = {
        "connected": True,
        "disconnecting": False,
        "dataBuffer": b"",
        "_tempDataLen": 0,
    }
    base.update(kw)
    return SimpleNamespace(**base)


class WritesNowTests(SynchronousTestCase):
    """A write may go straight to the socket only on an idle open transport."""

    def test_idle_open(self) -> None:
        """Connected, not closing, nothing held: yes."""
        self.assertTrue(writes_now(transport()))

    def test_every_reason_not_to(self) -> None:
        """Not connected, closing, or holding bytes (either buffer): no."""
        for kw in (
            {"connected": False},
            {"disconnecting": True},
            {"dataBuffer": b"x"},
            {"_tempDataLen": 1},
        ):
            self.assertFalse(writes_now(transport(**kw)), kw)


class BufferedTests(SynchronousTestCase):
    """transport_buffered adds up the layers (TLS over TCP)."""

    def test_layers(self) -> None:
        """Both buffers of every layer count; a layer without them is 0."""
        tcp = transport(dataBuffer=b"abc", _tempDataLen=2)
        tls = SimpleNamespace(transport=tcp)
        self.assertEqual(transport_buffered(tls), 5)
        self.assertEqual(transport_buffered(None), 0)
