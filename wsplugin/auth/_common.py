"""What the authenticators share: their logger, the failure log line,
the clock, and a rate-limited log for floods of refusals.

Every module of :mod:`wsplugin.auth` logs under the namespace
``wsplugin.auth``, so log lines (and filters on them) are the same whichever
part wrote them.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["LimitedLog", "avatar_text", "clock_now", "log", "log_failure"]

log = Logger(namespace="wsplugin.auth")
"""The logger of :mod:`wsplugin.auth` (one namespace for all its modules)."""


def log_failure(client: Any, scheme: str, why: str) -> None:
    """Log a refused client: its address, the path without the query (a
    token may be in it), the scheme and the reason; never a credential."""
    log.info(
        "authentication failed for {peer} on {path} ({scheme}: {why})",
        peer=client.request.peer_address,
        path=client.request.path,
        scheme=scheme,
        why=why,
    )


def clock_now(clock: IReactorTime | None) -> float:
    """``clock.seconds()``, or the global reactor's if ``clock`` is None
    (looked up only then, so importing this never installs a reactor)."""
    if clock is None:
        from twisted.internet import reactor

        return float(reactor.seconds())  # type: ignore[attr-defined]
    return float(clock.seconds())


class LimitedLog:
    """At most one line per ``window`` seconds for a recurring event; the
    lines held back are counted into the next one. Under a flood of refused
    attempts the log gets one line a second, not one per attempt."""

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        self._last = -math.inf
        self._held = 0

    def __call__(self, clock: IReactorTime | None, fmt: str, **fields: Any) -> None:
        now = clock_now(clock)
        if now - self._last < self.window:
            self._held += 1
            return
        self._last = now
        if self._held:
            log.info(
                "({held} more like the next line in the last {window:g}s)",
                held=self._held,
                window=self.window,
            )
            self._held = 0
        log.warn(fmt, **fields)


def avatar_text(avatar_id: Any) -> Any:
    """A checker's avatar id as ``str`` (``twisted.cred`` checkers give bytes)."""
    return avatar_id.decode("utf-8") if isinstance(avatar_id, bytes) else avatar_id
