"""The route handler's events, and calling user event methods that may
return a value, a Deferred or a coroutine (pure: no reactor, no I/O)."""

from __future__ import annotations

from collections.abc import Callable
from inspect import isawaitable, iscoroutine
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed

__all__ = ["ROUTE_EVENTS", "as_deferred", "bind_events"]

ROUTE_EVENTS = (
    "allow",
    "before_heartbeat",
    "on_handshake_response_sent",
    "on_open",
    "on_message",
    "on_binary",
    "on_fragment",
    "on_ping",
    "on_pong",
    "on_close",
    "on_disconnect",
    "on_error",
)
"""The event methods a route handler may have (all optional)."""


def as_deferred(result: Any) -> Deferred[Any]:
    """Wrap a handler's return value (value, Deferred or coroutine) in a Deferred."""
    if isinstance(result, Deferred):
        return result
    if iscoroutine(result) or isawaitable(result):
        return ensureDeferred(result)
    return succeed(result)


def bind_events(
    handler: Any, names: tuple[str, ...] = ROUTE_EVENTS
) -> dict[str, Callable[..., Any]]:
    """Look up each event method of ``handler`` once; absent ones are left out.

    Raises:
        TypeError: an event name is an attribute that is not callable.
    """
    if handler is None:
        return {}
    bound = {}
    for name in names:
        method = getattr(handler, name, None)
        if method is not None:
            if not callable(method):
                raise TypeError(f"{type(handler).__name__}.{name} is not callable")
            bound[name] = method
    return bound
