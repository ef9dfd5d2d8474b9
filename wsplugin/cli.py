"""``wsplugin-client URL`` / ``python -m wsplugin.client URL``: an interactive
chat client on :mod:`wsplugin.client` (FPC ``chatClient``).

Lines typed are sent as text messages; messages received are printed after
``< ``; ``ping TEXT`` pings; ``exit`` or the end of input closes with 1000.
The exit status tells the failures apart (see :func:`main`). The logic is
:class:`ChatClient`, which takes its reactor, standard error and standard
I/O as arguments, so tests run it in memory.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from wsplugin._version import __version__
from wsplugin.client._config import ClientConfig
from wsplugin.client._connect import connect
from wsplugin.client._connection import ClientConnection, Message
from wsplugin.client._url import parse_url
from wsplugin.errors import (
    ConfigError,
    ConnectFailed,
    ConnectionClosed,
    HandshakeFailed,
    TLSFailed,
)

__all__ = [
    "EXIT_CLOSED",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_TLS",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "PROG",
    "ChatClient",
    "ChatInput",
    "build_parser",
    "exit_status",
    "format_message",
    "main",
]

PROG = "wsplugin-client"
EXIT_OK = 0
"""Closed by the user: ``exit``, the end of input, Ctrl-C."""
EXIT_CLOSED = 1
"""The server closed the connection, or it dropped."""
EXIT_UNREACHABLE = 2
"""No connection: DNS, refused, unreachable, not open in time."""
EXIT_TLS = 3
"""The TLS handshake failed."""
EXIT_REJECTED = 4
"""The server refused the upgrade."""
EXIT_USAGE = 64
"""A bad argument (``EX_USAGE`` of sysexits.h)."""

ABNORMAL_CLOSE = 1006
"""The close code of a connection that ended without a close frame."""

_EPILOG = """\
Lines typed are sent as text messages; messages received are printed with a
"< " prefix. "ping TEXT" sends a ping and prints the pong; "exit" (or the end
of input) closes the connection with 1000 and exits.

exit status:
  0   closed by you ("exit", end of input, Ctrl-C)
  1   the server closed the connection, or it dropped
  2   cannot connect (DNS, refused, unreachable, timeout)
  3   TLS handshake failed
  4   handshake rejected (the HTTP status is printed)
  64  usage error
"""


class _UsageError(Exception):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    # one line and exit status 64 (main prints it), not argparse's usage
    # block and status 2, which means "cannot connect" here
    def error(self, message: str) -> Any:
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (its ``format_help()`` is ``--help``)."""
    parser = _ArgumentParser(
        prog=PROG,
        description="Interactive WebSocket chat client (wsplugin.client).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("url", metavar="URL", help="ws:// or wss:// URL")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra handshake header (repeatable)",
    )
    parser.add_argument(
        "-s",
        "--subprotocol",
        action="append",
        default=[],
        metavar="NAME",
        help="subprotocol to offer (repeatable)",
    )
    parser.add_argument("--origin", help="Origin header to send")
    parser.add_argument(
        "--compression", action="store_true", help="offer permessage-deflate"
    )
    parser.add_argument(
        "--ca-file", metavar="PEM", help="trust these CA certificates for wss://"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="limit for connecting and the handshake (default: 10)",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    return parser


def _connect_options(args: argparse.Namespace) -> dict[str, Any]:
    headers = []
    for text in args.header:
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            raise _UsageError(f"a header is 'NAME: VALUE', not {text!r}")
        headers.append((name.strip(), value.strip()))
    options: dict[str, Any] = {
        "headers": headers,
        "subprotocols": args.subprotocol,
        "compression": args.compression,
        "open_timeout": args.timeout,
    }
    if args.origin:
        options["origin"] = args.origin
    if args.ca_file:
        options["ca_file"] = args.ca_file
    return options


def exit_status(error: BaseException) -> int:
    """The exit status for why a connection could not be made."""
    if isinstance(error, TLSFailed):
        return EXIT_TLS
    if isinstance(error, ConnectFailed):
        return EXIT_UNREACHABLE
    if isinstance(error, HandshakeFailed):
        return EXIT_REJECTED
    return EXIT_CLOSED


def format_message(message: Message) -> str:
    """How a received message is printed: ``< text``, ``< [pong] ...``,
    ``< [binary, N bytes] HEX`` (the first 64 bytes)."""
    if message.kind == "text":
        return f"< {message.data}"
    data = message.data if isinstance(message.data, bytes) else b""
    if message.kind == "pong":
        return f"< [pong] {message.text}"
    preview = data[:64].hex() + ("..." if len(data) > 64 else "")
    return f"< [binary, {len(data)} bytes] {preview}"


def _close_text(code: int | None, reason: str) -> str:
    text = f"code {code}" if code is not None else "no code"
    return f"{text}: {reason}" if reason else text


@implementer(IHalfCloseableProtocol)
class ChatInput(Protocol):
    """Lines from standard input, through ``StandardIO``; a line over
    ``MAX_LENGTH`` bytes is dropped with an error, never held whole."""

    MAX_LENGTH = 1024 * 1024

    def __init__(self, chat: ChatClient) -> None:
        self.chat = chat
        self._buffer = b""
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held (at most ``MAX_LENGTH``)."""
        return len(self._buffer)

    def dataReceived(self, data: bytes) -> None:
        """Send each complete line."""
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
            if self._discarding:  # the end of a line that was too long
                self._discarding = False
            elif len(line) > self.MAX_LENGTH:
                self._too_long()
            else:
                self.chat.line(line.rstrip(b"\r").decode("utf-8", "replace"))
        if len(self._buffer) > self.MAX_LENGTH:
            if not self._discarding:
                self._too_long()
            self._buffer = b""
            self._discarding = True

    def _too_long(self) -> None:
        self.chat.error(f"line over {self.MAX_LENGTH} bytes ignored")

    def readConnectionLost(self) -> None:
        """The end of input: close, as ``exit`` does."""
        self.chat.quit()

    def writeConnectionLost(self) -> None:
        """Standard output is gone: close."""
        self.chat.quit()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Standard I/O is closed."""
        self.chat.stdio_closed()


class ChatClient:
    """The chat client's logic: connect, print, send lines, exit status.

    Args:
        reactor: The reactor to connect and time with.
        url: The URL to connect to.
        options: Keyword options for :func:`~wsplugin.client.connect`.
        stderr: Where error lines go.
        stdio_factory: Called with a :class:`ChatInput` once connected, to
            connect it to standard I/O (``StandardIO``); without one, output
            lines are collected in ``printed``.

    Attributes:
        done: Fires with the exit status.
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        options: dict[str, Any],
        stderr: Any,
        stdio_factory: Callable[[Protocol], Any] | None = None,
    ) -> None:
        self.reactor = reactor
        self.url = url
        self.options = options
        self.stderr = stderr
        self.stdio_factory = stdio_factory
        self.status: int | None = None
        self.conn: ClientConnection | None = None
        self.stdio: Any = None
        self.quitting = False
        self.shutting_down = False
        self.done: Deferred[int] = Deferred()
        self.printed: list[str] = []
        self._fallback: Any = None

    def start(self) -> Deferred[int]:
        """Connect; returns :attr:`done`."""
        try:
            d = connect(self.url, reactor=self.reactor, **self.options)
        except ConfigError as e:
            self._finish(EXIT_USAGE, str(e))
            return self.done
        d.addCallbacks(self._connected, self._connect_failed)
        return self.done

    def _connect_failed(self, failure: Failure) -> None:
        self._finish(exit_status(failure.value), str(failure.value))

    def _connected(self, conn: ClientConnection) -> None:
        self.conn = conn
        if self.stdio_factory is not None:
            self.stdio = self.stdio_factory(ChatInput(self))
        details = f" (subprotocol {conn.subprotocol})" if conn.subprotocol else ""
        self.output(
            f"connected to {conn.url}{details}; type a message, "
            '"ping TEXT" to ping, "exit" to quit'
        )
        self._read()
        conn.wait_closed().addCallback(self._closed)

    def _read(self) -> None:
        assert self.conn is not None
        d = self.conn.wait_for_message()
        d.addCallbacks(self._print_and_read, lambda f: f.trap(ConnectionClosed))

    def _print_and_read(self, message: Message) -> None:
        self.output(format_message(message))
        self._read()

    def output(self, line: str) -> None:
        """Print a line on standard output."""
        if self.stdio is not None:
            self.stdio.write(line.encode("utf-8", "replace") + b"\n")
        else:
            self.printed.append(line)

    def error(self, text: str) -> None:
        """Print ``wsplugin-client: text`` on standard error."""
        self.stderr.write(f"{PROG}: {text}\n")
        self.stderr.flush()

    def line(self, text: str) -> None:
        """A line typed: ``exit``, ``ping TEXT``, or a message to send."""
        conn = self.conn
        if conn is None or self.quitting:
            return
        command = text.strip()
        try:
            if command == "exit":
                self.quit()
            elif command == "ping" or command.startswith("ping "):
                conn.ping(command[5:].encode("utf-8"))
            elif text:
                conn.send_text(text)
        except ConnectionClosed:
            pass
        except ValueError as e:
            self.error(str(e))

    def quit(self) -> None:
        """Close the connection with 1000 (once)."""
        if self.quitting:
            return
        self.quitting = True
        if self.conn is not None and self.conn.is_open:
            self.conn.close(1000, "")

    def _closed(self, conn: ClientConnection) -> None:
        code, reason = conn.close_code, conn.close_reason
        if self.quitting:
            self.output(f"closed ({_close_text(code, reason)})")
            self._finish(EXIT_OK, None)
        elif code == ABNORMAL_CLOSE:
            self._finish(EXIT_CLOSED, f"connection to {conn.url} lost")
        else:
            self._finish(
                EXIT_CLOSED,
                f"the server closed the connection ({_close_text(code, reason)})",
            )

    def _finish(self, status: int, message: str | None) -> None:
        if self.status is not None:
            return
        self.status = status
        if message:
            self.error(message)
        if self.stdio is not None:
            # stdio_closed() fires done once the output is written; in case
            # standard output never drains, give up after a while
            self._fallback = self.reactor.callLater(2.0, self._fire_done)
            self.stdio.loseConnection()
        else:
            self._fire_done()

    def stdio_closed(self) -> None:
        """Standard I/O closed: quit, or finish if already done."""
        if self.status is None:
            self.quit()
        else:
            self._fire_done()

    def _fire_done(self) -> None:
        fallback, self._fallback = self._fallback, None
        if fallback is not None and fallback.active():
            fallback.cancel()
        if not self.done.called:
            self.done.callback(self.status if self.status is not None else EXIT_OK)

    def shutdown(self) -> Deferred[None] | None:
        """Before the reactor stops (Ctrl-C): close gracefully, bounded."""
        self.shutting_down = True
        conn = self.conn
        if conn is None or not conn.is_open:
            return None
        self.quit()
        # wait for the closing handshake and the last output line (bounded)
        finished: Deferred[None] = Deferred()

        def fire(result: Any) -> Any:
            if not finished.called:
                finished.callback(None)
            return result

        self.done.addBoth(fire)
        finished.addTimeout(conn.options.close_timeout + 3, self.reactor)
        return finished.addErrback(lambda _: None)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m wsplugin.client URL`` / ``wsplugin-client URL``: chat.

    Returns the exit status (see ``--help``): 0 closed by the user, 1 closed
    by the server or dropped, 2 cannot connect, 3 TLS failure, 4 handshake
    rejected, 64 usage error. Errors are one line on standard error.
    """
    try:
        args = build_parser().parse_args(argv)
        options = _connect_options(args)
        parse_url(args.url)
        ClientConfig(**options)
    except (_UsageError, ConfigError) as e:
        sys.stderr.write(f"{PROG}: {e} (see {PROG} --help)\n")
        return EXIT_USAGE

    from twisted.internet import reactor
    from twisted.internet.stdio import StandardIO

    chat = ChatClient(reactor, args.url, options, sys.stderr, StandardIO)
    result: list[int] = []

    def run() -> None:
        d = chat.start()
        d.addCallback(result.append)
        d.addBoth(lambda _: None if chat.shutting_down else reactor.stop())

    reactor.callWhenRunning(run)
    reactor.addSystemEventTrigger("before", "shutdown", chat.shutdown)
    reactor.run()
    if result:
        return result[0]
    return chat.status if chat.status is not None else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
