"""Channels with recovery over real loopback sockets: a ``ChannelHandler``
server, the client library's ``ReconnectingClient`` with
``ChannelSubscriptions``, and an independent client (``websockets``)
speaking ``wsplugin.channels.v1`` by hand."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from websockets.sync.client import connect as ws_connect

from tests.integration.support import ServerTestCase, in_thread
from wsplugin.apps.chat import Chat
from wsplugin.backplane import LocalBackplane
from wsplugin.channels import SUBPROTOCOL, ChannelHandler
from wsplugin.client import ChannelSubscriptions, ReconnectingClient


class Rooms(ChannelHandler):
    history_size = 50


class ReconnectingClientTests(ServerTestCase):
    """A client that drops and comes back misses nothing."""

    @inlineCallbacks
    def test_drop_and_recover(self) -> Any:
        """Publications made while the client was away arrive after it
        reconnects, in order, once, then the live ones; positions follow."""
        bp = LocalBackplane(history_size=50)
        server = yield self.start_server(Rooms(), backplane=bp)
        got: list[tuple[Any, ...]] = []
        subs = ChannelSubscriptions(
            lambda p: got.append((p.channel, p.data, p.offset)), channels=["room"]
        )
        client = ReconnectingClient(
            self.url, channels=subs, initial_delay=0.05, max_delay=0.2, factor=1.0
        )
        client.start()
        self.addCleanup(client.stop)
        yield client.when_connected()
        yield self.when(lambda: server.registry.snapshot()[0].channels == {"room"})
        for i in range(1, 4):
            server.broadcast(f"m{i}", channel="room")
        yield self.when(lambda: len(got) == 3)
        conn = server.registry.snapshot()[0]
        conn.abort()
        yield self.when(lambda: not server.registry.snapshot())
        for i in range(4, 7):
            server.broadcast(f"m{i}", channel="room")
        server.broadcast(b"\x00bin", channel="room")
        yield self.when(lambda: len(got) == 7, timeout=10)
        server.broadcast("m8", channel="room")
        yield self.when(lambda: len(got) == 8)
        self.assertEqual(
            got,
            [("room", f"m{i}", i) for i in range(1, 7)]
            + [("room", b"\x00bin", 7), ("room", "m8", 8)],
        )
        self.assertEqual(subs.positions["room"][1], 8)
        self.assertEqual(client.connections_made, 2)

    @inlineCallbacks
    def test_history_lost_resets(self) -> Any:
        """When the history is gone (the server restarted empty), the client
        is told to reload (on_reset) instead of silently missing messages."""
        bp = LocalBackplane(node_id="a.0", history_size=10)
        server = yield self.start_server(Rooms(), backplane=bp)
        resets: list[tuple[str, str]] = []
        got: list[Any] = []
        subs = ChannelSubscriptions(
            lambda p: got.append(p.data),
            channels=["room"],
            on_reset=lambda c, s: resets.append((c, s)),
            positions={"room": ("not-this-epoch", 5)},
        )
        client = ReconnectingClient(self.url, channels=subs, initial_delay=0.05)
        client.start()
        self.addCleanup(client.stop)
        yield client.when_connected()
        self.assertEqual(resets, [("room", "epoch_changed")])
        server.broadcast("new", channel="room")
        yield self.when(lambda: got == ["new"])

    @inlineCallbacks
    def test_publish_through_subscriptions(self) -> Any:
        """ChannelSubscriptions.publish reaches every subscriber, itself too."""
        yield self.start_server(Chat())
        got: list[Any] = []
        subs = ChannelSubscriptions(lambda p: got.append(p.data), channels=["chat"])
        client = ReconnectingClient(self.url, channels=subs)
        client.start()
        self.addCleanup(client.stop)
        yield client.when_connected()
        subs.publish("chat", "hello")
        yield self.when(lambda: got == ["hello"])


def _speak(url: str) -> list[Any]:
    """An independent client: subscribe, publish, then a malformed request."""
    out: list[Any] = []
    with ws_connect(url, subprotocols=[SUBPROTOCOL]) as ws:
        out.append(ws.subprotocol)
        ws.send(json.dumps({"type": "subscribe", "channel": "chat"}))
        out.append(json.loads(ws.recv(timeout=5)))
        ws.send(json.dumps({"type": "publish", "channel": "chat", "data": "hi"}))
        out.append(json.loads(ws.recv(timeout=5)))
        ws.send(json.dumps({"type": "subscribe", "channel": "other"}))
        out.append(json.loads(ws.recv(timeout=5)))
        ws.send("not json")
        try:
            ws.recv(timeout=5)
        except Exception as e:  # ConnectionClosedError
            out.append(getattr(e, "rcvd", None) and e.rcvd.code)
    with ws_connect(url) as plain:
        plain.send("plain hello")
        out.append(plain.recv(timeout=5))
    return out


class IndependentClientTests(ServerTestCase):
    """The format as another library's client speaks it."""

    @inlineCallbacks
    def test_websockets_client(self) -> Any:
        """Subscribe, publish, a refused channel (error, still open), a
        malformed request (1008); a plain client on the same route."""
        yield self.start_server(Chat())
        out = yield in_thread(_speak, self.url)
        self.assertEqual(out[0], SUBPROTOCOL)
        self.assertEqual(out[1]["type"], "subscribed")
        self.assertEqual(out[1]["status"], "not_requested")
        self.assertEqual(
            (out[2]["type"], out[2]["data"], out[2]["offset"]),
            ("publication", "hi", 1),
        )
        self.assertEqual(out[3]["type"], "error")
        self.assertEqual(out[3]["channel"], "other")
        self.assertEqual(out[4], 1008)
        self.assertEqual(out[5], "plain hello")
        self.flushLoggedErrors()


del reactor  # imported for the side effect of installing the default reactor
