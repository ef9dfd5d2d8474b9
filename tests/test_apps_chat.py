"""wsplugin.apps.chat: the chat demo, one room with history, over in-memory
clients."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.static import File

from tests.test_channels import OFFER, received, send
from wsplugin import WebSocketServer
from wsplugin.apps.chat import MAX_CHAT_MESSAGE, PAGE, ROOM, Chat
from wsplugin.testing import ServerHarness


class ChatTests(SynchronousTestCase):
    """The room, as its clients see it."""

    def setUp(self) -> None:
        clock = MemoryReactorClock()
        self.server = WebSocketServer(Chat(), reactor=clock)
        self.server.startService()
        self.harness = ServerHarness(self.server)

    def test_plain_and_envelope_clients_share_the_room(self) -> None:
        """Plain clients join the room at open and get messages as sent;
        page clients get them numbered; both can speak."""
        plain = self.harness.open()
        page = self.harness.open(headers=OFFER)
        send(page, type="subscribe", channel="chat")
        plain.send_text("from plain")
        send(page, type="publish", channel="chat", data="from page")
        self.assertEqual(plain.messages(), ["from plain", "from page"])
        got = received(page)
        self.assertEqual([m.get("data") for m in got[1:]], ["from plain", "from page"])
        self.assertEqual([m["offset"] for m in got[1:]], [1, 2])

    def test_history_of_100(self) -> None:
        """The room keeps 100 messages: a page that saw offset 10 of 150
        recovers nothing (too old); one that saw 60 gets 61..150."""
        plain = self.harness.open()
        for i in range(150):
            plain.send_text(f"m{i}")
        page = self.harness.open(headers=OFFER)
        send(page, type="subscribe", channel="chat")
        epoch = received(page)[0]["epoch"]
        old = self.harness.open(headers=OFFER)
        send(old, type="subscribe", channel="chat", since=[epoch, 10])
        self.assertEqual(received(old)[-1]["status"], "too_old")
        recent = self.harness.open(headers=OFFER)
        send(recent, type="subscribe", channel="chat", since=[epoch, 60])
        got = received(recent)
        self.assertEqual(len(got), 91)
        self.assertEqual(got[0]["data"], "m60")

    def test_only_the_room_and_bounded_messages(self) -> None:
        """Other channels are refused; a message over MAX_CHAT_MESSAGE
        closes its sender with 1009 and is not published."""
        page = self.harness.open(headers=OFFER)
        send(page, type="subscribe", channel="other")
        self.assertEqual(received(page)[-1]["type"], "error")
        plain, other = self.harness.open(), self.harness.open()
        plain.send_text("x" * (MAX_CHAT_MESSAGE + 1))
        self.assertEqual(plain.frames()[-1].close_code, 1009)
        self.assertEqual(other.messages(), [])

    def test_binary_shared(self) -> None:
        """Binary messages go to the room as binary."""
        a, b = self.harness.open(), self.harness.open()
        a.send_binary(b"\x00\xff")
        self.assertEqual(b.messages(), [b"\x00\xff"])
        self.assertEqual(a.messages(), [b"\x00\xff"])

    def test_size_counted_in_bytes(self) -> None:
        """A message of exactly MAX_CHAT_MESSAGE bytes passes; text is
        measured in UTF-8 bytes, not characters."""
        a, b = self.harness.open(), self.harness.open()
        a.send_binary(b"x" * MAX_CHAT_MESSAGE)
        self.assertEqual(len(b.messages()), 1)
        self.assertFalse(a.closed)
        a.send_text("é" * (MAX_CHAT_MESSAGE // 2 + 1))  # 2 bytes each
        close = a.frames()[-1]
        self.assertEqual(close.close_code, 1009)
        self.assertEqual(
            close.close_reason, f"chat messages are at most {MAX_CHAT_MESSAGE} bytes"
        )
        self.assertEqual(b.messages(), [])


class ChatHandlerTests(SynchronousTestCase):
    """The handler's own answers."""

    def test_only_the_room(self) -> None:
        """channel_allowed allows the room and nothing else."""
        chat = Chat()
        self.assertTrue(chat.channel_allowed(None, ROOM))
        self.assertFalse(chat.channel_allowed(None, "Chat"))
        self.assertFalse(chat.channel_allowed(None, ""))
        self.assertEqual(
            (chat.history_size, chat.history_ttl, chat.max_channels), (100, 300.0, 1)
        )

    def test_page(self) -> None:
        """The test page is served at / as HTML, from the app's static file."""
        root = Chat().resource()
        page = root.children[b""]
        self.assertIsInstance(page, File)
        self.assertEqual(Path(page.path), PAGE)
        self.assertEqual(page.defaultType, "text/html")
        self.assertIn("<html", PAGE.read_text().lower())
