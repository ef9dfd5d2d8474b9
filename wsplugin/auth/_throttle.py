"""Admission control for password checks: :class:`LoginThrottle`.

Pure bookkeeping on a clock: the check and the client's presence are
callables, so the throttle runs on a ``task.Clock`` with plain functions.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from wsplugin.auth._common import LimitedLog, clock_now, log
from wsplugin.errors import ConfigError, Reject

__all__ = ["LoginThrottle", "ThrottleStats", "peer_key"]


def peer_key(address: str) -> str:
    """The unit failures are counted by: the address, or its /64 for IPv6
    (one host usually holds a whole /64, so per-address counting would not
    slow it down)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ip.ipv4_mapped)  # ::ffff:a.b.c.d counts as a.b.c.d
    return str(ip)


@dataclass
class _Job:
    peer: str
    check: Callable[[], Any]
    waiting: Callable[[], bool]
    result: Deferred[Any]


@dataclass
class _PeerRecord:
    failures: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


@dataclass
class ThrottleStats:
    """Counters of a :class:`LoginThrottle` since it was made.

    Attributes:
        started: Checks that ran.
        dropped: Waiting checks skipped because their client had left.
        busy: Attempts refused with 503 because the queue was full.
        throttled: Attempts refused with 429 (a blocked address, or too many
            checks of one address at once).
        blocks: Times an address was blocked after repeated failures.
    """

    started: int = 0
    dropped: int = 0
    busy: int = 0
    throttled: int = 0
    blocks: int = 0


class LoginThrottle:
    """Admission control for password checks (bcrypt costs about 70 ms of
    CPU at cost 10 and 300 ms at cost 12 here, so unbounded checks are a
    denial of service: 8 bogus attempts a second kept two cores busy).

    Every check of :class:`BasicAuth` and :class:`LoginResource` goes through
    one. It

    * runs at most ``concurrency`` checks at once, and keeps at most
      ``max_queued`` more waiting, first come first served; an attempt beyond
      that gets ``503 Service Unavailable`` with ``Retry-After: 1`` at once;
    * skips a waiting check whose client has gone (closed, reset, or timed
      out by ``open_handshake_timeout``): the CPU goes to clients that still
      wait. When the queue is full, such checks are swept out before an
      attempt is refused;
    * lets one client address (an IPv6 address counts by its /64) have at
      most ``max_pending_per_peer`` checks running or waiting (429 beyond);
    * counts failed checks per address: after ``max_failures`` in a row the
      address gets ``429 Too Many Requests`` with ``Retry-After`` for
      ``backoff`` seconds, doubling with every further failure up to
      ``max_backoff``, and a log line. ``max_backoff`` seconds without a
      failure clear the count; a success does not (logging in to an account
      of one's own must not reset the count of guesses at another).

    The defaults keep the worst wait within ``open_handshake_timeout`` (10
    s): 32 waiting checks of bcrypt cost 12 (about 300 ms each) on 2 slots
    take about 4.8 s. With a slower hash, lower ``max_queued``.

    Share one throttle between the authenticators that check the same
    passwords (``BasicAuth(..., throttle=t)``, ``LoginResource(...,
    throttle=t)``), so the bounds hold for the process.

    Args:
        clock: The reactor (or a ``task.Clock`` in tests); the global reactor
            if None.
        concurrency: Checks running at once (at least 1). 2 by default: one
            per core of a small server, and the number of threads
            :class:`HtpasswdChecker` needs.
        max_queued: Checks waiting for a free slot (0: none wait).
        max_pending_per_peer: Checks one address may have running or
            waiting (0: no per-address limit).
        max_failures: Failures in a row before an address is blocked (0:
            never blocked).
        backoff: Seconds of the first block.
        max_backoff: Longest block, in seconds.
        max_peers: Addresses whose failures are remembered; the least
            recently failing are forgotten first, so memory stays bounded
            under attack from many addresses.
    """

    def __init__(
        self,
        clock: IReactorTime | None = None,
        *,
        concurrency: int = 2,
        max_queued: int = 32,
        max_pending_per_peer: int = 8,
        max_failures: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        max_peers: int = 10_000,
    ) -> None:
        for name, value, least in [
            ("concurrency", concurrency, 1),
            ("max_queued", max_queued, 0),
            ("max_pending_per_peer", max_pending_per_peer, 0),
            ("max_failures", max_failures, 0),
            ("max_peers", max_peers, 1),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(
                    f"{name} must be an integer >= {least}, not {value!r}"
                )
        if not 0 < backoff <= max_backoff:
            raise ConfigError("backoff must be > 0 and at most max_backoff")
        self.clock = clock
        self.concurrency = concurrency
        self.max_queued = max_queued
        self.max_pending_per_peer = max_pending_per_peer
        self.max_failures = max_failures
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_peers = max_peers
        self.stats = ThrottleStats()
        self._running = 0
        self._queue: deque[_Job] = deque()
        self._pending: dict[str, int] = {}
        self._peers: OrderedDict[str, _PeerRecord] = OrderedDict()
        self._busy_log = LimitedLog()
        self._throttled_log = LimitedLog()
        self._dropped_log = LimitedLog()

    @property
    def running(self) -> int:
        """Checks running now."""
        return self._running

    @property
    def queued(self) -> int:
        """Checks waiting for a slot now."""
        return len(self._queue)

    @property
    def remembered(self) -> int:
        """Addresses whose failures are remembered now (at most
        ``max_peers``)."""
        return len(self._peers)

    def pending_for(self, address: str) -> int:
        """Checks of ``address`` (its /64 for IPv6) running or waiting now."""
        return self._pending.get(peer_key(address), 0)

    def submit(
        self,
        address: str,
        check: Callable[[], Any],
        waiting: Callable[[], bool] = lambda: True,
    ) -> Deferred[Any]:
        """Run ``check()`` when a slot is free; a Deferred of its result.

        Args:
            address: The client's address (failures are counted by it).
            check: Starts the check; returns the avatar id or a Deferred of
                it, or fails with ``UnauthorizedLogin`` (counted as a failure).
            waiting: Whether the client still waits; a check whose client has
                left is skipped when its turn comes.

        Returns:
            A Deferred of the check's result, or failing with a
            :class:`~wsplugin.Reject`: 429 (address blocked, or too many of
            its checks at once), 503 (queue full) or 499 (the client left).
        """
        peer = peer_key(address)
        now = clock_now(self.clock)
        record = self._peers.get(peer)
        if record is not None and record.blocked_until > now:
            self.stats.throttled += 1
            self._throttled_log(
                self.clock,
                "password checks of {peer} refused (429): blocked after "
                "{failures} failures",
                peer=peer,
                failures=record.failures,
            )
            return fail(_too_many(record.blocked_until - now))
        pending = self._pending.get(peer, 0)
        if self.max_pending_per_peer and pending >= self.max_pending_per_peer:
            self.stats.throttled += 1
            self._throttled_log(
                self.clock,
                "password checks of {peer} refused (429): {pending} already pending",
                peer=peer,
                pending=pending,
            )
            return fail(_too_many(1.0))
        job = _Job(peer, check, waiting, Deferred(lambda d: self._cancel(job)))
        self._pending[peer] = pending + 1
        if self._running < self.concurrency:
            if waiting():
                self._start(job)
            else:
                self._drop(job)  # sent its request and left at once
            return job.result
        if len(self._queue) >= self.max_queued:
            self._sweep()
        if len(self._queue) >= self.max_queued:
            self._release(peer)
            self.stats.busy += 1
            self._busy_log(
                self.clock,
                "password check queue full ({queued} waiting, {running} running): "
                "503 for {peer}",
                queued=len(self._queue),
                running=self._running,
                peer=peer,
            )
            return fail(Reject(503, "Service Unavailable", [("Retry-After", "1")]))
        self._queue.append(job)
        return job.result

    def _cancel(self, job: _Job) -> None:
        try:
            self._queue.remove(job)
        except ValueError:
            return  # running: a thread cannot be stopped; its result is dropped
        self._release(job.peer)

    def _release(self, peer: str) -> None:
        left = self._pending.get(peer, 0) - 1
        if left > 0:
            self._pending[peer] = left
        else:
            self._pending.pop(peer, None)

    def _start(self, job: _Job) -> None:
        self._running += 1
        self.stats.started += 1
        d = maybeDeferred(job.check)
        d.addBoth(self._finished, job)

    def _finished(self, result: Any, job: _Job) -> None:
        self._running -= 1
        self._release(job.peer)
        if isinstance(result, Failure) and result.check(UnauthorizedLogin):
            self._record_failure(job.peer)
        self._next()
        if job.result.called:
            return  # cancelled meanwhile
        if isinstance(result, Failure):
            job.result.errback(result)
        else:
            job.result.callback(result)

    def _next(self) -> None:
        while self._running < self.concurrency and self._queue:
            job = self._queue.popleft()
            if job.waiting():
                self._start(job)
            else:
                self._drop(job)

    def _sweep(self) -> None:
        """Drop the waiting checks of clients that have left."""
        keep: deque[_Job] = deque()
        gone = []
        for job in self._queue:
            (keep if job.waiting() else gone).append(job)
        self._queue = keep
        for job in gone:
            self._drop(job)

    def _drop(self, job: _Job) -> None:
        self._release(job.peer)
        self.stats.dropped += 1
        self._dropped_log(
            self.clock,
            "skipped the password check of {peer}: the client left before its turn",
            peer=job.peer,
        )
        job.result.errback(Reject(499, "Client Closed Request"))

    def _record_failure(self, peer: str) -> None:
        if not self.max_failures:
            return
        now = clock_now(self.clock)
        record = self._peers.pop(peer, None)
        if record is None or now - record.last > self.max_backoff:
            record = _PeerRecord()
        record.failures += 1
        record.last = now
        self._peers[peer] = record  # most recently failing last
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        over = record.failures - self.max_failures
        if over >= 0:
            delay = min(self.max_backoff, self.backoff * 2 ** min(over, 62))
            record.blocked_until = now + delay
            self.stats.blocks += 1
            log.warn(
                "{failures} failed password checks in a row from {peer}: its "
                "attempts get 429 for {delay:g}s",
                failures=record.failures,
                peer=peer,
                delay=delay,
            )


def _too_many(retry_after: float) -> Reject:
    return Reject(
        429,
        "Too Many Requests",
        [("Retry-After", str(max(1, math.ceil(retry_after))))],
    )
