"""wsplugin.channels: ChannelHandler over in-memory clients (the chat demo
built on it: tests/test_apps_chat.py)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin import WebSocketServer
from wsplugin.channels import SUBPROTOCOL, ChannelHandler
from wsplugin.testing import FakeClient, ServerHarness

OFFER = [("Sec-WebSocket-Protocol", SUBPROTOCOL)]


class Rooms(ChannelHandler):
    history_size = 10
    max_channels = 2

    def __init__(self) -> None:
        self.plain: list[Any] = []

    def channel_allowed(self, conn: Any, channel: str) -> bool:
        return channel != "secret"

    def on_plain_open(self, conn: Any) -> None:
        self.plain.append("open")

    def on_plain_message(self, conn: Any, text: str) -> None:
        self.plain.append(text)

    def on_plain_binary(self, conn: Any, data: bytes) -> None:
        self.plain.append(data)


def send(client: FakeClient, **obj: Any) -> None:
    client.send_text(json.dumps(obj))


def received(client: FakeClient) -> list[Any]:
    return [json.loads(m) for m in client.messages()]


class HandlerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.handler = Rooms()
        clock = MemoryReactorClock()
        self.server = WebSocketServer(self.handler, reactor=clock)
        self.server.startService()
        self.harness = ServerHarness(self.server)

    def open(self) -> FakeClient:
        return self.harness.open(headers=OFFER)

    def test_subprotocol_chosen_without_configuration(self) -> None:
        """A client offering wsplugin.channels.v1 gets it (no subprotocols
        option needed) and envelopes; the others are plain."""
        client = self.open()
        self.assertEqual(client.connection.subprotocol, SUBPROTOCOL)
        self.assertTrue(client.connection.envelope)
        plain = self.harness.open()
        self.assertFalse(plain.connection.envelope)
        plain.send_text("hi")
        plain.send_binary(b"\x01")
        self.assertEqual(self.handler.plain, ["open", "hi", b"\x01"])

    def test_subscribe_publish_unsubscribe(self) -> None:
        """subscribe is answered with subscribed; publish reaches every
        subscriber as a numbered publication; unsubscribe is answered."""
        a, b = self.open(), self.open()
        send(a, type="subscribe", channel="room")
        send(b, type="subscribe", channel="room")
        send(a, type="publish", channel="room", data="hello")
        send(b, type="unsubscribe", channel="room")
        send(a, type="publish", channel="room", data="again")
        got_a, got_b = received(a), received(b)
        self.assertEqual(got_a[0]["type"], "subscribed")
        self.assertEqual(got_a[0]["status"], "not_requested")
        epoch = got_a[0]["epoch"]
        self.assertEqual(
            [(m["data"], m["offset"], m["epoch"]) for m in got_a[1:]],
            [("hello", 1, epoch), ("again", 2, epoch)],
        )
        self.assertEqual(
            [m["type"] for m in got_b], ["subscribed", "publication", "unsubscribed"]
        )

    def test_recovery_through_the_format(self) -> None:
        """A client that comes back with since gets the missed publications,
        then subscribed(recovered, missed=N)."""
        a = self.open()
        send(a, type="subscribe", channel="room")
        for i in range(4):
            send(a, type="publish", channel="room", data=f"m{i}")
        first = received(a)
        epoch, seen = first[0]["epoch"], first[2]["offset"]  # saw m0, m1
        late = self.open()
        send(
            late,
            type="subscribe",
            channel="room",
            since={"epoch": epoch, "offset": seen},
        )
        got = received(late)
        self.assertEqual([m["data"] for m in got[:2]], ["m2", "m3"])
        self.assertEqual(
            (got[2]["type"], got[2]["status"], got[2]["offset"], got[2]["missed"]),
            ("subscribed", "recovered", 4, 2),
        )

    def test_refusals_keep_the_connection(self) -> None:
        """A channel not allowed, too many channels, publishing where not
        subscribed: an error naming the channel; the connection stays."""
        a = self.open()
        send(a, type="subscribe", channel="secret")
        send(a, type="publish", channel="room", data="x")
        for c in ("one", "two", "three"):
            send(a, type="subscribe", channel=c)
        errors = [m for m in received(a) if m["type"] == "error"]
        self.assertEqual([e["channel"] for e in errors], ["secret", "room", "three"])
        self.assertIn("at most 2 channels", errors[2]["error"])
        self.assertTrue(a.connection.is_open)

    def test_malformed_closes_1008(self) -> None:
        """A request that is not the format closes with 1008 and a reason."""
        for bad in ("nope", json.dumps({"type": "subscribe", "channel": "x" * 1025})):
            a = self.open()
            a.send_text(bad)
            frame = a.frames()[-1]
            self.assertEqual(frame.close_code, 1008)
            self.assertTrue(frame.close_reason.startswith("bad request"))
        self.flushLoggedErrors()

    def test_binary_closes_1003(self) -> None:
        a = self.open()
        a.send_binary(b"x")
        self.assertEqual(a.frames()[-1].close_code, 1003)
