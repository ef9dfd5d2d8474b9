"""A rate-limited log for per-connection problems (pure: an injected clock).

A server under attack sees thousands of bad handshakes, over-limit clients
and protocol errors a second; logging each would fill the disk faster than
the attack fills memory. :class:`RateLimitedLog` writes at most ``burst``
lines per ``window`` seconds and then counts, and says how many it left out
when the next window starts.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["LOG_BURST", "LOG_WINDOW", "RateLimitedLog"]

LOG_BURST = 20
"""Lines written per window."""

LOG_WINDOW = 10.0
"""Seconds of a window."""


class RateLimitedLog:
    """Log a per-connection problem at ``info`` level, at most ``burst`` per
    ``window`` seconds; the rest are counted and reported (one ``warn`` line)
    when the next window begins.

    Call it like ``Logger.info``: ``log("{peer} sent junk", peer=peer)``.
    One per server: its factory, the connection gate and the HTTP channels
    share it, so a flood of any kind writes a bounded log.

    Args:
        clock: Where the time comes from (``IReactorTime``).
        log: The logger the lines go to (its namespace names the source).
        burst: Lines per window.
        window: Seconds of a window.
    """

    __slots__ = ("_clock", "_log", "burst", "window", "_start", "_count", "suppressed")

    def __init__(
        self,
        clock: IReactorTime,
        log: Logger,
        *,
        burst: int = LOG_BURST,
        window: float = LOG_WINDOW,
    ) -> None:
        self._clock = clock
        self._log = log
        self.burst = burst
        self.window = window
        self._start = float("-inf")
        self._count = 0
        self.suppressed = 0

    def __call__(self, fmt: str, **fields: Any) -> None:
        """Log ``fmt`` with ``fields`` (PEP 3101), unless the window is full."""
        now = self._clock.seconds()
        if now - self._start >= self.window:
            if self.suppressed:
                self._log.warn(
                    "{count} similar connection problems were not logged",
                    count=self.suppressed,
                )
            self._start = now
            self._count = 0
            self.suppressed = 0
        if self._count < self.burst:
            self._count += 1
            self._log.info(fmt, **fields)
        else:
            self.suppressed += 1
