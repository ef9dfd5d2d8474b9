"""Keep-alive for one connection: the heartbeat and the idle timeout.

* **Heartbeat** (sgc HeartBeat): a peer silent for a whole
  ``heartbeat_interval`` gets a ping (or the application's own keep-alive,
  from ``before_heartbeat``) and ``heartbeat_timeout`` seconds to answer with
  anything; a peer that sent anything during the interval is plainly alive
  and is not pinged.
* **Idle timeout**: a connection that sent no data message for
  ``idle_timeout`` seconds is closed (checked every ``idle_timeout``
  seconds, so it acts within one to two periods).

The host (the protocol) counts reads and messages on :attr:`KeepAlive.reads`
and :attr:`KeepAlive.messages`, and calls :meth:`KeepAlive.answered` when
data arrives while a heartbeat waits for an answer. What to send and how to
close stays the host's (:class:`KeepAliveHost`). Plain Python on an
injected clock: tests drive it with ``task.Clock``.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["HEARTBEAT_PREFIX", "KeepAlive", "KeepAliveHost"]

HEARTBEAT_PREFIX = b"wsplugin-hb-"
"""The payload prefix of the server's heartbeat pings (their pongs are not
queued for ``wait_for_message``)."""


class KeepAliveHost(Protocol):
    """What keep-alive needs from its connection."""

    def keepalive_wanted(self) -> bool:
        """Whether the connection is open and the peer has not closed."""

    def before_heartbeat(self) -> bool | None:
        """Run the application's ``before_heartbeat``: True if it sent its
        own keep-alive, False to send a ping, None if it failed (the host
        handled the failure; no answer is awaited)."""

    def send_ping(self, payload: bytes) -> None:
        """Send a ping ahead of queued data."""

    def heartbeat_expired(self) -> None:
        """No answer within ``heartbeat_timeout``: close (1011)."""

    def idle_expired(self) -> None:
        """No data message within ``idle_timeout``: close (1001)."""


class KeepAlive:
    """The heartbeat and idle timers of one connection.

    Created when the connection opens, and only if ``heartbeat_interval`` or
    ``idle_timeout`` is set. The object itself is the heartbeat timer's
    callable (no bound method per connection).

    Args:
        clock: The reactor's clock.
        host: The connection (:class:`KeepAliveHost`).
        config: The route's options (``heartbeat_interval``,
            ``heartbeat_timeout``, ``idle_timeout``).

    Attributes:
        reads: Reads from the peer (the host adds one per read).
        messages: Data messages (or frames) from the peer.
        seq: Heartbeat pings sent.
        expiry: The pending heartbeat timeout, or None.
    """

    __slots__ = (
        "_clock",
        "_host",
        "_config",
        "reads",
        "messages",
        "seq",
        "_seen",
        "_idle_seen",
        "_call",
        "expiry",
        "_idle_call",
    )

    def __init__(self, clock: IReactorTime, host: KeepAliveHost, config: Any) -> None:
        self._clock = clock
        self._host = host
        self._config = config
        self.reads = 0
        self.messages = 0
        self.seq = 0
        self._seen = 0
        self._idle_seen = 0
        self._call: IDelayedCall | None = None
        self.expiry: IDelayedCall | None = None
        self._idle_call: IDelayedCall | None = None
        if config.heartbeat_interval:
            self._call = clock.callLater(config.heartbeat_interval, self)
        if config.idle_timeout:
            self._idle_call = clock.callLater(config.idle_timeout, self._idle_check)

    def answered(self) -> None:
        """Data arrived: a pending heartbeat is answered."""
        expiry, self.expiry = self.expiry, None
        if expiry is not None:
            expiry.cancel()

    def __call__(self) -> None:
        """The heartbeat interval passed."""
        self._call = None
        host = self._host
        if not host.keepalive_wanted():
            return
        cfg = self._config
        self._call = self._clock.callLater(cfg.heartbeat_interval, self)
        if self.reads != self._seen:
            self._seen = self.reads
            return
        handled = host.before_heartbeat()
        if handled is None:
            return
        if not handled:
            self.seq += 1
            host.send_ping(HEARTBEAT_PREFIX + b"%d" % self.seq)
        if cfg.heartbeat_timeout and self.expiry is None:
            self.expiry = self._clock.callLater(cfg.heartbeat_timeout, self._expired)

    def _expired(self) -> None:
        self.expiry = None
        self._host.heartbeat_expired()

    def _idle_check(self) -> None:
        self._idle_call = None
        if not self._host.keepalive_wanted():
            return
        if self.messages != self._idle_seen:
            self._idle_seen = self.messages
            self._idle_call = self._clock.callLater(
                self._config.idle_timeout, self._idle_check
            )
            return
        self._host.idle_expired()

    def stop(self) -> None:
        """The connection ended: cancel every timer."""
        for name in ("_call", "expiry", "_idle_call"):
            call = getattr(self, name)
            if call is not None:
                if call.active():
                    call.cancel()
                setattr(self, name, None)
