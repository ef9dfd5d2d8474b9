"""wsplugin.client._channels: ChannelSubscriptions against a scripted
connection (a real server: tests/integration/test_channels.py)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._envelope import SUBPROTOCOL, encode_publication, encode_subscribed
from wsplugin.client import ChannelPublication, ChannelSubscriptions
from wsplugin.errors import ConnectionClosed, WSPluginError


class Conn:
    """Enough of a ClientConnection: sent texts, and messages the test
    pushes for ``receive()``."""

    def __init__(self, subprotocol: str | None = SUBPROTOCOL) -> None:
        self.subprotocol = subprotocol
        self.sent: list[Any] = []
        self.closed: tuple[int, str] | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.inbox: list[Any] = []
        self.waiting: Deferred[Any] | None = None

    @property
    def is_open(self) -> bool:
        return self.closed is None

    def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def receive(self) -> Deferred[Any]:
        if self.inbox:
            return succeed(self.inbox.pop(0))
        if self.closed is not None:
            return fail(ConnectionClosed(1000, ""))
        self.waiting = Deferred()
        return self.waiting

    def __aiter__(self) -> Conn:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def push(self, message: Any) -> None:
        if isinstance(message, bytes) and message.startswith(b"{"):
            message = message.decode()
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.callback(message)
        else:
            self.inbox.append(message)

    def end(self) -> None:
        self.closed = (1006, "")
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.errback(ConnectionClosed(1006, ""))


def pub(channel: str, data: str, offset: int, epoch: str = "e") -> bytes:
    return encode_publication(channel, data.encode(), False, epoch, offset)


class SubscriptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.got: list[ChannelPublication] = []
        self.hold: Deferred[None] | None = None

        def on_pub(p: ChannelPublication) -> Any:
            self.got.append(p)
            return self.hold

        self.subs = ChannelSubscriptions(
            on_pub, channels=["a"], positions={"b": ("e", 4)}
        )
        self.conn = Conn()

    def attach(self, subs: ChannelSubscriptions | None = None) -> Deferred[Any]:
        """``subs.attach(self.conn)``, its reader ended at cleanup: a test
        that leaves it waiting would otherwise have it fail (connection
        closed, unhandled) when the garbage collector closes the coroutine,
        in whichever later test is running then."""
        d = (subs or self.subs).attach(self.conn)  # type: ignore[arg-type]

        def end() -> None:
            if self.conn.waiting is not None:
                self.conn.end()
            d.addErrback(lambda f: f.trap(ConnectionClosed))

        self.addCleanup(end)
        return d

    def test_attach_subscribes_from_positions(self) -> None:
        """Every channel is subscribed, from its position; the Deferred
        fires with the statuses once every subscribed answer is in."""
        d = self.subs.attach(self.conn)  # type: ignore[arg-type]
        self.assertEqual(
            self.conn.sent,
            [
                {"type": "subscribe", "channel": "a"},
                {
                    "type": "subscribe",
                    "channel": "b",
                    "since": {"epoch": "e", "offset": 4},
                },
            ],
        )
        self.conn.push(pub("b", "five", 5))
        self.conn.push(encode_subscribed("b", "recovered", ("e", 5), 1))
        self.assertNoResult(d)
        self.conn.push(encode_subscribed("a", "not_requested", ("x", 0), 0))
        self.assertEqual(
            self.successResultOf(d), {"a": "not_requested", "b": "recovered"}
        )
        self.assertEqual(self.subs.positions, {"a": ("x", 0), "b": ("e", 5)})
        self.assertEqual([p.data for p in self.got], ["five"])

    def test_position_moves_after_processing(self) -> None:
        """The position passes a publication only once on_publication's
        Deferred fired; the next one waits for it (in order)."""
        self.attach()
        self.hold = Deferred()
        self.conn.push(pub("a", "one", 1))
        self.conn.push(pub("a", "two", 2))
        self.assertEqual(self.subs.positions["a"], None)
        self.assertEqual([p.data for p in self.got], ["one"])
        hold, self.hold = self.hold, None
        hold.callback(None)
        self.assertEqual([p.data for p in self.got], ["one", "two"])
        self.assertEqual(self.subs.positions["a"], ("e", 2))

    def test_reset_before_anything_newer(self) -> None:
        """A lost history calls on_reset(channel, status) before later
        publications are processed."""
        calls: list[Any] = []
        subs = ChannelSubscriptions(
            lambda p: calls.append(p.data),
            channels=["a"],
            on_reset=lambda c, s: calls.append((c, s)),
        )
        self.attach(subs)
        self.conn.push(encode_subscribed("a", "epoch_changed", ("n", 3), 0))
        self.conn.push(pub("a", "new", 4, "n"))
        self.assertEqual(calls, [("a", "epoch_changed"), "new"])

    def test_wrong_subprotocol(self) -> None:
        """A server that did not pick the format: closed 1002, and attach
        fails saying so."""
        conn = Conn(subprotocol=None)
        f = self.failureResultOf(self.subs.attach(conn), WSPluginError)  # type: ignore[arg-type]
        self.assertIn("did not pick wsplugin.channels.v1", str(f.value))
        self.assertEqual(conn.closed[0], 1002)

    def test_refused_and_lost(self) -> None:
        """A refusal fails that channel's wait; a connection that ends
        fails the others; the subscriptions detach."""
        d = self.subs.attach(self.conn)  # type: ignore[arg-type]
        self.conn.push(json.dumps({"type": "error", "error": "no", "channel": "a"}))
        self.assertNoResult(d)  # b is not answered yet
        wait = self.subs.subscribe("c")
        self.conn.end()
        self.assertIn("refused: no", str(self.failureResultOf(d, WSPluginError).value))
        self.failureResultOf(wait, ConnectionClosed)
        self.assertIsNone(self.subs.connection)
        self.assertEqual(self.successResultOf(self.subs.subscribe("d")), "pending")
        self.assertRaises(ConnectionClosed, self.subs.publish, "a", "x")

    def test_other_messages_and_requests(self) -> None:
        """Messages outside the format go to on_message; publish and
        unsubscribe send their requests."""
        others: list[Any] = []
        subs = ChannelSubscriptions(lambda p: None, on_message=others.append)
        self.attach(subs)
        self.conn.push("plain text")
        self.conn.push(b"\x00")
        subs.publish("a", b"\x01")
        subs.unsubscribe("a")
        self.assertEqual(others, ["plain text", b"\x00"])
        self.assertEqual(
            self.conn.sent,
            [
                {"type": "publish", "channel": "a", "data": "AQ==", "binary": True},
                {"type": "unsubscribe", "channel": "a"},
            ],
        )
        self.assertRaises(ValueError, subs.subscribe, "")
