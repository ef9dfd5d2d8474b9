"""Tests for ``wsplugin.cli``: the chat client's logic against the chat app
in memory (``iosim``, ``MemoryReactorClock``), its exit statuses, argument
errors, and the ``--help`` text that docs/client.md shows."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path
from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.client_support import URL, Harness
from tests.helpers import Recorder
from wsplugin.apps.chat import Chat
from wsplugin.cli import ChatClient, build_parser, exit_status, format_message, main
from wsplugin.client import (
    ConnectFailed,
    HandshakeFailed,
    Message,
    OpenTimeout,
    TLSFailed,
)
from wsplugin.errors import Reject

DOCS = Path(__file__).resolve().parent.parent / "docs" / "client.md"

HELP_SKIP = (
    "argparse formats repeated option names differently from Python 3.13 on"
    if sys.version_info >= (3, 13)
    else None
)


def documented_help() -> str:
    """The ``--help`` block of docs/client.md."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(
        r"`python -m wsplugin\.client --help`:\n\n```text\n(.*?)```", text, re.DOTALL
    )
    assert found is not None, "docs/client.md has no --help block"
    return found.group(1)


class FakeStdio:
    """Stands in for StandardIO: collects output, closes at once."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.output = b""
        self.closed = False
        self.disconnecting = False
        protocol.makeConnection(self)

    def write(self, data: bytes) -> None:
        self.output += data

    def loseConnection(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(ConnectionDone()))

    def lines(self) -> list[str]:
        return self.output.decode().splitlines()

    def type(self, *lines: str) -> None:
        for line in lines:
            self.protocol.dataReceived(line.encode() + b"\n")


class ChatTests(SynchronousTestCase):
    """The chat client's logic, against the chat app in memory."""

    def chat(
        self, handler: Any = None, url: str = URL
    ) -> tuple[ChatClient, Harness, list[FakeStdio], io.StringIO]:
        harness = Harness(handler if handler is not None else Chat())
        stdios: list[FakeStdio] = []
        stderr = io.StringIO()

        def stdio_factory(protocol: Any) -> FakeStdio:
            stdios.append(FakeStdio(protocol))
            return stdios[-1]

        chat = ChatClient(
            harness.clock, url, {"endpoint": harness.endpoint}, stderr, stdio_factory
        )
        chat.start()
        harness.flush()
        return chat, harness, stdios, stderr

    def test_session(self) -> None:
        """Lines are sent, messages printed, ``ping TEXT`` prints the pong,
        ``exit`` closes with 1000 and exits 0."""
        chat, harness, stdios, stderr = self.chat()
        stdio = stdios[0]
        stdio.type("hello", "ping are you there", "")
        harness.flush()
        stdio.type("exit")
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(
            stdio.lines(),
            [
                "connected to ws://127.0.0.1:8888/chat; type a message, "
                '"ping TEXT" to ping, "exit" to quit',
                "< hello",
                "< [pong] are you there",
                "closed (code 1000)",
            ],
        )
        self.assertEqual(self.successResultOf(chat.done), 0)
        self.assertTrue(stdio.closed)
        self.assertEqual(stderr.getvalue(), "")

    def test_end_of_input_closes(self) -> None:
        """The end of standard input closes like ``exit``."""
        chat, harness, stdios, _ = self.chat()
        stdios[0].protocol.readConnectionLost()
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(self.successResultOf(chat.done), 0)

    def test_interrupt_closes_gracefully(self) -> None:
        """Ctrl-C (reactor shutdown) closes with 1000 and waits for it."""
        recorder = Recorder()
        chat, harness, stdios, _ = self.chat(recorder)
        stopping = chat.shutdown()
        assert stopping is not None
        self.assertNoResult(stopping)
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.successResultOf(stopping)
        self.assertIn(("on_close", 1000, ""), recorder.events)
        self.assertEqual(stdios[0].lines()[-1], "closed (code 1000)")
        self.assertEqual(self.successResultOf(chat.done), 0)
        self.assertIsNone(chat.shutdown())

    def test_server_closes(self) -> None:
        """A close by the server exits 1 with one line on stderr."""
        chat, harness, _, stderr = self.chat()
        harness.server_conn().close(1001, "going away")
        harness.flush()
        harness.clock.advance(2)
        harness.flush()
        self.assertEqual(self.successResultOf(chat.done), 1)
        self.assertEqual(
            stderr.getvalue(),
            "wsplugin-client: the server closed the connection "
            "(code 1001: going away)\n",
        )

    def test_connect_failures(self) -> None:
        """Refused: 2; rejected handshake: 4 with the status; one line each."""

        class Locked:
            def allow(self, conn: Any) -> Any:
                return Reject(401, "Unauthorized")

        chat, harness, stdios, stderr = self.chat(Locked())
        self.assertEqual(self.successResultOf(chat.done), 4)
        self.assertEqual(
            stderr.getvalue(),
            f"wsplugin-client: handshake with {URL} failed: 401 Unauthorized\n",
        )
        self.assertEqual(stdios, [])

    def test_ping_too_long(self) -> None:
        """A ping over 125 bytes is an error line, not an exit."""
        chat, harness, stdios, stderr = self.chat()
        stdios[0].type("ping " + "x" * 130)
        self.assertIn("at most 125 bytes", stderr.getvalue())
        self.assertIsNone(chat.status)

    def test_long_line_dropped(self) -> None:
        """A line over the limit is dropped with an error, in any number of
        reads, without holding it in memory; the next line is sent."""
        chat, harness, stdios, stderr = self.chat()
        protocol = stdios[0].protocol
        protocol.MAX_LENGTH = 10
        protocol.dataReceived(b"x" * 8)
        protocol.dataReceived(b"x" * 8)
        self.assertLessEqual(protocol.buffered, 10)
        protocol.dataReceived(b"x" * 8 + b"\nshort\n" + b"y" * 20 + b"\nlast\n")
        harness.flush()
        self.assertEqual(stdios[0].lines()[1:], ["< short", "< last"])
        self.assertEqual(stderr.getvalue().count("ignored"), 2)

    def test_exit_status_and_format(self) -> None:
        """Errors map to the documented exit codes; messages print by kind."""
        self.assertEqual(exit_status(TLSFailed("h", 1, "x")), 3)
        self.assertEqual(exit_status(OpenTimeout("h", 1, "x")), 2)
        self.assertEqual(exit_status(ConnectFailed("h", 1, "x")), 2)
        self.assertEqual(exit_status(HandshakeFailed("u", 404)), 4)
        self.assertEqual(format_message(Message("text", "hi")), "< hi")
        self.assertEqual(format_message(Message("pong", b"p")), "< [pong] p")
        self.assertEqual(
            format_message(Message("binary", b"\x01\x02")),
            "< [binary, 2 bytes] 0102",
        )

    def test_usage_errors(self) -> None:
        """Bad arguments exit 64 with a one-line error before any connecting."""
        for argv in (["http://x/"], ["-H", "no-colon", "ws://x/"], []):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            self.assertEqual(main(argv), 64)
            self.assertTrue(stderr.getvalue().startswith("wsplugin-client: "))


class HelpTests(SynchronousTestCase):
    """The documented ``--help`` is the real one."""

    def test_docs_show_the_real_help(self) -> None:
        """docs/client.md's ``--help`` block is ``--help`` at 80 columns."""
        self.patch(os, "environ", {**os.environ, "COLUMNS": "80"})
        self.assertEqual(documented_help(), build_parser().format_help())

    test_docs_show_the_real_help.skip = HELP_SKIP  # type: ignore[attr-defined]
