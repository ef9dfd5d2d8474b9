"""What both Autobahn adapters (server and client protocol) share.

* :func:`copy_options`: Autobahn's per-connection copy of its options,
  without the cost of logging them.
* :class:`ReactorTimer`: Autobahn's timer interface on an injected reactor.
  Autobahn schedules its close-handshake and server-drop timers through
``factory._batched_timer.call_later(...)``, which by default runs on txaio's
global event loop. Both factories put a :class:`ReactorTimer` there, so the
  timers run on the reactor the factory was given, and tests drive them with
  ``task.Clock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["Cancellable", "ReactorTimer", "copy_options"]


def copy_options(protocol: Any, names: tuple[str, ...]) -> None:
    """Autobahn's per-connection copy of its options, without the rest.

    Autobahn's ``_connectionMade`` copies every name in ``CONFIG_ATTRS`` from
    the factory and then pretty-prints them all for a debug line that is
    never shown (``pformat`` was ~40% of a handshake's CPU). The server and
    client protocols call this instead, with the same rule (a value already
    on the protocol wins), and give Autobahn an empty ``CONFIG_ATTRS``.
    """
    factory = protocol.factory
    for name in names:
        if not hasattr(protocol, name):
            setattr(protocol, name, getattr(factory, name))


class ReactorTimer:
    """Autobahn's timer interface (``call_later``) on the given clock."""

    __slots__ = ("clock",)

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def call_later(
        self, delay: float, func: Callable[..., Any], *a: Any, **kw: Any
    ) -> Cancellable:
        """Call ``func(*a, **kw)`` after ``delay`` seconds."""
        return Cancellable(self.clock.callLater(delay, func, *a, **kw))


class Cancellable:
    """A delayed call whose ``cancel()`` is harmless after it ran (Autobahn
    cancels its timers without asking whether they still wait)."""

    __slots__ = ("call",)

    def __init__(self, call: IDelayedCall) -> None:
        self.call = call

    def active(self) -> bool:
        """Whether the call still waits."""
        return bool(self.call.active())

    def cancel(self) -> None:
        """Cancel the call, if it still waits."""
        if self.call.active():
            self.call.cancel()
