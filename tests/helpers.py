"""Shared test helpers: a handler that records every event it gets."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock

from wsplugin import WebSocketServer
from wsplugin.testing import ServerHarness


class Recorder:
    """A handler recording ``(event, args...)`` tuples in ``self.events``."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def names(self) -> list[str]:
        """Event names in the order they fired."""
        return [e[0] for e in self.events]

    def allow(self, conn: Any) -> Any:
        self.events.append(("allow", conn.request.path))
        return True

    def on_handshake_response_sent(self, conn: Any) -> None:
        self.events.append(("on_handshake_response_sent",))

    def on_open(self, conn: Any) -> None:
        self.events.append(("on_open",))

    def on_message(self, conn: Any, text: str) -> None:
        self.events.append(("on_message", text))

    def on_binary(self, conn: Any, data: bytes) -> None:
        self.events.append(("on_binary", data))

    def on_fragment(self, conn: Any, data: bytes, is_binary: bool, fin: bool) -> None:
        self.events.append(("on_fragment", data, is_binary, fin))

    def on_ping(self, conn: Any, payload: bytes) -> None:
        self.events.append(("on_ping", payload))

    def on_pong(self, conn: Any, payload: bytes) -> None:
        self.events.append(("on_pong", payload))

    def on_close(self, conn: Any, code: int | None, reason: str) -> None:
        self.events.append(("on_close", code, reason))

    def on_disconnect(
        self, conn: Any, was_clean: bool, code: int | None, reason: str
    ) -> None:
        self.events.append(("on_disconnect", was_clean, code))

    def on_error(self, conn: Any, failure: Any) -> None:
        self.events.append(("on_error", failure.type.__name__))


def make(handler: Any = None, **options: Any) -> tuple[WebSocketServer, ServerHarness]:
    """A server on a MemoryReactorClock, and a harness to connect to it."""
    clock = MemoryReactorClock()
    server = WebSocketServer(handler, reactor=clock, **options)
    return server, ServerHarness(server)
