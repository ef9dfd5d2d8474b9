"""Event dispatch for one connection: the route handler's methods, called in
order, their failures reported.

* :meth:`Dispatch.fire` calls an event (``on_open``, ``on_close``...) with
  the connection; whatever it returns (a value, a Deferred, a coroutine) is
  awaited only for its failure.
* :meth:`Dispatch.message` and :meth:`Dispatch.fragment` hand received data
  to ``on_message`` / ``on_binary`` / ``on_fragment``, or to the
  connection's receive queue when the handler takes none. Message handlers
  that return an unfired Deferred or a coroutine run one at a time, in
  order: while one is pending, later messages wait here and reading from the
  socket pauses, so a slow async handler is backpressure, not an unbounded
  pile of concurrent calls.
* a handler that raises (or whose Deferred fails) is reported to
  ``on_error`` and the connection is closed with 1011 (:meth:`Dispatch.failed`).

The bound event methods come from the :class:`~wsplugin._routing.Route`
(looked up once per route). Reading, failing and closing are the host's
(:class:`EventHost`): no reactor here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure

from wsplugin._connbase import Fragment
from wsplugin._events import as_deferred

if TYPE_CHECKING:
    from wsplugin.connection import Connection

__all__ = ["Dispatch", "EventHost"]

# the namespace of the public class whose connections these are: operators
# filter logs on it (docs/web.md shows it)
_log = Logger(namespace="wsplugin.protocol.WebSocketServerProtocol")


class EventHost(Protocol):
    """What dispatch needs from the connection's protocol."""

    peer: str

    def pause_reading(self, reason: str) -> None:
        """Stop reading from the socket for ``reason``."""

    def resume_reading(self, reason: str) -> None:
        """Read again once no reason to pause is left."""

    def fail_connection(self, code: int, reason: str) -> None:
        """Fail the connection with a close code (a protocol error)."""

    def close_after_error(self) -> None:
        """A handler failed: close with 1011 (or answer the peer's close)."""


class Dispatch:
    """Calls the route handler's events for one connection.

    Args:
        host: The protocol (:class:`EventHost`).
        conn: The connection handed to every event.
        events: The route's bound event methods
            (:attr:`~wsplugin._routing.Route.events`).
    """

    __slots__ = ("host", "conn", "events", "_pending", "_stopped")

    def __init__(
        self,
        host: EventHost,
        conn: Connection,
        events: Mapping[str, Callable[..., Any]],
    ) -> None:
        self.host = host
        self.conn = conn
        self.events = events
        # None while no async message handler is pending; otherwise the
        # calls waiting behind it
        self._pending: deque[tuple[Callable[..., Any], tuple[Any, ...]]] | None = None
        self._stopped = False

    @property
    def busy(self) -> bool:
        """Whether an async message handler is pending."""
        return self._pending is not None

    @property
    def waiting(self) -> int:
        """Message handler calls waiting behind the pending one."""
        return len(self._pending or ())

    # -- events ----------------------------------------------------------------

    def fire(self, name: str, *args: Any) -> None:
        """Call event ``name`` with the connection and ``args``, if the
        handler has it; a failure goes to :meth:`failed`."""
        handler = self.events.get(name)
        if handler is None:
            return
        try:
            result = handler(self.conn, *args)
        except Exception:
            self.failed(Failure())
            return
        if result is not None and not isinstance(result, bool):
            as_deferred(result).addErrback(self.failed)

    def before_heartbeat(self) -> bool | None:
        """Run ``before_heartbeat``: True if it sent its own keep-alive (it
        returned a true value, a Deferred or a coroutine), False if there is
        none or it returned a false value, None if it raised (reported)."""
        hook = self.events.get("before_heartbeat")
        if hook is None:
            return False
        try:
            result = hook(self.conn)
        except Exception:
            self.failed(Failure())
            return None
        if isinstance(result, bool) or result is None:
            return bool(result)
        # a Deferred or coroutine sends the app's own keep-alive
        as_deferred(result).addErrback(self.failed)
        return True

    # -- messages --------------------------------------------------------------

    def message(self, payload: bytes | bytearray | str, is_binary: bool) -> None:
        """A whole data message arrived (text as ``str`` from the frame
        codec, as UTF-8 bytes from Autobahn's parser)."""
        conn = self.conn
        message: str | bytes
        if is_binary:
            message = payload if type(payload) is bytes else bytes(payload)
        elif type(payload) is str:
            message = payload  # the frame codec decodes (and validates) text
        else:
            message = payload.decode("utf-8", "replace")
        if conn.queues_messages:
            conn.enqueue(message)
            return
        handler = self.events.get("on_binary" if is_binary else "on_message")
        if handler is None:
            kind = "binary" if is_binary else "text"
            self.host.fail_connection(1003, f"this endpoint takes no {kind} messages")
            return
        if self._pending is not None:
            self._pending.append((handler, (conn, message)))
            return
        self._run(handler, (conn, message))

    def fragment(self, data: bytes, is_binary: bool, fin: bool) -> None:
        """One data frame arrived (``frame_by_frame`` mode)."""
        conn = self.conn
        if conn.queues_messages:
            conn.enqueue(Fragment(data, is_binary, fin))
            return
        args = (conn, data, is_binary, fin)
        handler = self.events["on_fragment"]
        if self._pending is not None:
            self._pending.append((handler, args))
            return
        self._run(handler, args)

    def stop(self) -> None:
        """No more message handlers run (the peer closed, or the connection
        ended): those waiting are dropped."""
        self._stopped = True
        if self._pending:
            self._pending.clear()

    def _run(self, handler: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = handler(*args)
        except Exception:
            self.failed(Failure())
            return
        if result is None or isinstance(result, bool):
            return
        d = as_deferred(result)
        if d.called:
            d.addErrback(self.failed)
            return
        self._pending = deque()
        self.host.pause_reading("handler")
        d.addErrback(self.failed)
        d.addBoth(self._done)

    def _done(self, _: Any) -> None:
        waiting, self._pending = self._pending, None
        while waiting and self._pending is None:
            if self._stopped:
                waiting.clear()
                break
            handler, args = waiting.popleft()
            self._run(handler, args)
        if self._pending is not None:
            # another async handler is pending: the rest wait behind it
            self._pending.extend(waiting or ())
        else:
            self.host.resume_reading("handler")

    # -- failures --------------------------------------------------------------

    def failed(self, failure: Failure) -> None:
        """A handler raised (or its Deferred failed): ``on_error``, then the
        connection closes with 1011."""
        self.report(failure, "an event handler raised")
        self.host.close_after_error()

    def report(self, failure: Failure, what: str | None) -> None:
        """Log ``failure`` (when ``what`` says what failed) and pass it to
        ``on_error``; a failing ``on_error`` is only logged."""
        if what is not None:
            _log.failure(
                "{what} on connection from {peer}",
                failure,
                what=what,
                peer=self.host.peer,
            )
        on_error = self.events.get("on_error")
        if on_error is None:
            return
        try:
            result = on_error(self.conn, failure)
            if result is not None:
                as_deferred(result).addErrback(
                    lambda f: _log.failure("on_error failed", f)
                )
        except Exception:
            _log.failure("on_error raised")
