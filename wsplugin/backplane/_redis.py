"""The Redis backplane: pub/sub per channel, history in Streams, on txredisapi.

Two links per node (each a reconnecting txredisapi connection):

- the *command* link runs the Lua scripts below (publish, recover, counts);
- the *subscriber* link is subscribed to ``<p>:all`` (broadcasts to every
  connection, ``disconnect_all``), ``<p>:node:<node_id>`` (commands for this
  node's connections) and ``<p>:ch:<channel>`` for each channel that has a
  local subscriber, and no other (the Centrifugo model).

Keys and topics start with ``<p> = <prefix>:<db>`` (``wsplugin:0`` by
default): Redis pub/sub ignores the database index, so it is part of the
topic names too.

Per channel, ``<p>:meta:<channel>`` is a hash ``{e: epoch, o: last offset}``
and ``<p>:hist:<channel>`` a Stream whose entry ids are ``<offset>-0``. The
publish script assigns the offset, appends to the stream and publishes the
message in one atomic step, so the live message and the history entry carry
the same offset, and live messages reach every subscriber in offset order.
When the meta hash is gone (expired after ``history_ttl`` without a
publication, deleted, ``FLUSHALL``, Redis restarted empty) the next script
creates a new random epoch and deletes any stale stream: offsets restart at
1 in the new epoch, and a subscriber holding the old epoch is told that
recovery is impossible.
"""

from __future__ import annotations

import secrets
import warnings
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from wsplugin.backplane._types import (
    BackplaneReceiver,
    BackplaneStats,
    BackplaneUnavailable,
    Command,
    Publication,
    Recovery,
    RecoveryStatus,
    StreamPosition,
    WireError,
    check_channel,
    check_history,
    check_node_id,
    check_payload,
    coerce_position,
    decode,
    encode_command,
    encode_publication,
    holder_of,
    make_node_id,
    new_connection_id,
    validate_publish_args,
)
from wsplugin.backplane._url import RedisURL, parse_backplane_url
from wsplugin.errors import ConfigError

__all__ = ["RedisBackplane"]

# KEYS: meta, stream. ARGV: topic, epoch if new, history size, ttl ms, message.
PUBLISH_LUA = """
if redis.call('HSETNX', KEYS[1], 'e', ARGV[2]) == 1 then
  redis.call('DEL', KEYS[2])
end
local off = redis.call('HINCRBY', KEYS[1], 'o', 1)
local ep = redis.call('HGET', KEYS[1], 'e')
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', size, off .. '-0', 'm', ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[1], off .. ' ' .. ep .. '\\n' .. ARGV[5])
return {off, ep}
"""

# KEYS: meta, stream. ARGV: epoch if new, ttl ms, since epoch ('' = none),
# since offset. Returns {epoch, top} or {epoch, top, status[, entries]}.
RECOVER_LUA = """
if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'o', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local ep = redis.call('HGET', KEYS[1], 'e')
local top = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
if ARGV[3] == '' then return {ep, top} end
local since = tonumber(ARGV[4])
if ARGV[3] ~= ep or since > top then return {ep, top, 'epoch'} end
if since == top then return {ep, top, 'ok'} end
local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', top .. '-0')
if #entries ~= top - since then return {ep, top, 'old'} end
return {ep, top, 'ok', entries}
"""

# KEYS: this node's counts hash, the nodes zset. ARGV: node id, ttl ms,
# then field/value pairs. The zset scores are expiry times in Redis's clock.
HEARTBEAT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[1])
local i = 3
while i <= #ARGV do
  local j = math.min(i + 399, #ARGV)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: nodes zset. ARGV: counts key prefix, field, this node (left out: the
# caller adds its own exact count). Forgets nodes whose heartbeat expired.
COUNT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local total = 0
for _, n in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if n ~= ARGV[3] then
    local v = redis.call('HGET', ARGV[1] .. n, ARGV[2])
    if v then total = total + tonumber(v) end
  end
end
return total
"""

# KEYS: this node's counts hash, the nodes zset. ARGV: node id.
WITHDRAW_LUA = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


@dataclass(slots=True)
class _Op:
    """A publication or command on its way to Redis (or waiting in the queue)."""

    topic: str
    payload: bytes
    channel: str | None = None  # set: run the publish script for this channel
    size: int = 0
    ttl_ms: int = 0


@dataclass(slots=True)
class _Pending:
    """A recovery in progress: live messages of its channel seen meanwhile.

    ``hold``: a node-level catch-up; live messages of the channel are kept
    back from the receiver until it ends (a subscriber's recovery only
    records them).
    """

    channel: str
    buffer: list[Publication] = field(default_factory=list)
    hold: bool = False


#: Live messages a catch-up holds back per channel, at most. Beyond it the
#: hold is released (the messages are delivered and the gap stays), so a node
#: whose command link stays down cannot grow without bound.
MAX_HOLD = 10_000


class RedisBackplane:
    """A :class:`~wsplugin.backplane.Backplane` over one Redis (or Valkey)
    server, with txredisapi.

    Args:
        url: A ``redis://``, ``rediss://`` or ``unix://`` URL, or a parsed
            :class:`RedisURL`.
        node_id: ``<name>.<worker>``; random by default.
        reactor: The reactor for links and timers (the global one if None).
        history_size: Publications kept per channel by default (0: none;
            offsets and epochs are kept anyway).
        history_ttl: Seconds a channel's history lives after its last
            publication (300 by default).
        max_queue: Publications and commands kept while Redis is
            unreachable (1000); beyond it the oldest are dropped and counted.
        max_queue_bytes: Their total payload bound (1 MiB).
        reconnect_initial: First reconnect delay, seconds (0.5).
        reconnect_max: Backoff cap, seconds (10): a node is back at most
            about 10 s after Redis is.
        reply_timeout: Seconds before an unanswered command drops the link
            (10), so a hung Redis is treated as a lost one.
        connect_timeout: Seconds per connection attempt (5).
        heartbeat_interval: Seconds between count snapshots (5); a dead
            node's counts vanish after 3 intervals.
        counts_delay: A count change is written after at most this many
            seconds (0.5), coalescing bursts of joins and leaves.
    """

    _log = Logger()

    def __init__(
        self,
        url: str | RedisURL,
        *,
        node_id: str | None = None,
        reactor: Any = None,
        history_size: int = 0,
        history_ttl: float = 300.0,
        max_queue: int = 1000,
        max_queue_bytes: int = 1 << 20,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 10.0,
        reply_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        heartbeat_interval: float = 5.0,
        counts_delay: float = 0.5,
    ) -> None:
        if isinstance(url, str):
            parsed = parse_backplane_url(url)
            if parsed is None:
                raise ConfigError("RedisBackplane needs a redis/rediss/unix URL")
            url = parsed
        self.url = url
        self.node_id = check_node_id(node_id) if node_id else make_node_id()
        check_history(history_size, history_ttl)
        for name, count in (
            ("max_queue", max_queue),
            ("max_queue_bytes", max_queue_bytes),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(f"{name} must be an int >= 0, not {count!r}")
        for name, value in (
            ("reconnect_initial", reconnect_initial),
            ("reconnect_max", reconnect_max),
            ("reply_timeout", reply_timeout),
            ("connect_timeout", connect_timeout),
            ("heartbeat_interval", heartbeat_interval),
            ("counts_delay", counts_delay),
        ):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be seconds > 0, not {value!r}")
        if reconnect_max < reconnect_initial:
            raise ConfigError("reconnect_max must be >= reconnect_initial")
        # Fail now, not at start(), when the extra is missing.
        try:
            with warnings.catch_warnings():
                # txredisapi builds a set of str and bytes at import time,
                # a BytesWarning under ``python -b``; harmless there.
                warnings.simplefilter("ignore", BytesWarning)
                from wsplugin.backplane import _txredis
        except ImportError as e:
            raise ConfigError(
                f"the Redis backplane needs txredisapi ({e}); "
                "install it with: pip install 'wsplugin[redis]'"
            ) from None
        self._tx = _txredis
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.history_size = history_size
        self.history_ttl = float(history_ttl)
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.reconnect_initial = float(reconnect_initial)
        self.reconnect_max = float(reconnect_max)
        self.reply_timeout = float(reply_timeout)
        self.connect_timeout = float(connect_timeout)
        self.heartbeat_interval = float(heartbeat_interval)
        self.counts_delay = float(counts_delay)
        self.stats = BackplaneStats()

        p = f"{url.prefix}:{url.db}"
        self._topic_all = f"{p}:all"
        self._topic_node_prefix = f"{p}:node:"
        self._topic_node = self._topic_node_prefix + self.node_id
        self._topic_ch = f"{p}:ch:"
        self._topic_ch_bytes = self._topic_ch.encode()
        self._key_meta = f"{p}:meta:"
        self._key_hist = f"{p}:hist:"
        self._key_counts = f"{p}:counts:"
        self._key_nodes = f"{p}:nodes"

        self._receiver: BackplaneReceiver | None = None
        self._links: list[Any] = []
        self._cmd: Any = None
        self._sub: Any = None
        self._failed: str | None = None
        self._ever_connected = False
        # both links up and this node's own topics confirmed by Redis
        self._connected = False
        self._outage_logged = False
        self._members: dict[str, int] = {}
        self._connections = 0
        self._confirmed: set[str] = set()
        self._sub_gen: dict[str, int] = {}
        self._pending: dict[str, list[_Pending]] = {}
        self._last: dict[str, StreamPosition] = {}
        self._stale: set[str] = set()
        self._holds: list[_Pending] = []
        self._queue: deque[_Op] = deque()
        self._queue_bytes = 0
        self._outage_failures = 0
        self._outage_dropped = 0
        self._heartbeat: LoopingCall | None = None
        self._counts_call: IDelayedCall | None = None
        self._waiting: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return f"<RedisBackplane {self.node_id} {self.url.redacted()} {self.state}>"

    # -- lifecycle ---------------------------------------------------------

    @property
    def state(self) -> str:
        """``stopped``, ``connecting``, ``connected``, ``disconnected`` or
        ``failed`` (Redis refused the password or database: not retried)."""
        if self._receiver is None:
            return "stopped"
        if self._failed is not None:
            return "failed"
        if self._connected:
            return "connected"
        return "disconnected" if self._ever_connected else "connecting"

    def start(self, receiver: BackplaneReceiver) -> Deferred[None]:
        """Start both links (in the background) and the count heartbeat."""
        if self._receiver is not None:
            raise RuntimeError("this backplane is already started")
        self._receiver = receiver
        self._failed = None
        endpoint = self._tx.make_endpoint(self.reactor, self.url, self.connect_timeout)
        for role, protocol in (
            ("cmd", self._tx.CommandProtocol),
            ("sub", self._tx.SubscriberProtocol),
        ):
            factory = self._tx.LinkFactory(
                f"{self.node_id}/{role}",
                self.url,
                protocol,
                select_db=role == "cmd",
                reply_timeout=self.reply_timeout,
                initial_delay=self.reconnect_initial,
                max_delay=self.reconnect_max,
                on_up=partial(self._link_up, role),
                on_down=partial(self._link_down, role),
                on_error=self._link_failed,
                on_message=self._on_message if role == "sub" else None,
            )
            self._links.append(factory)
            factory.startConnecting(endpoint)
        self._heartbeat = LoopingCall(self._push_counts)
        self._heartbeat.clock = self.reactor
        self._heartbeat.start(self.heartbeat_interval, now=False)
        self._log.info(
            "backplane {node} connecting to {url}",
            node=self.node_id,
            url=self.url.redacted(),
        )
        return succeed(None)

    def when_connected(self) -> Deferred[None]:
        """Fires once both links are up (at once if they are)."""
        if self.state == "connected":
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def stop(self) -> Deferred[None]:
        """Withdraw this node's counts, close both links, stop timers."""
        if self._receiver is None:
            return succeed(None)
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        if self._counts_call is not None and self._counts_call.active():
            self._counts_call.cancel()
        self._counts_call = None
        cmd = self._cmd
        if cmd is not None:
            try:
                first: Deferred[Any] = cmd.eval(
                    WITHDRAW_LUA,
                    [self._key_counts + self.node_id, self._key_nodes],
                    [self.node_id],
                )
            except Exception:
                first = succeed(None)
            first.addErrback(lambda _f: None)
        else:
            first = succeed(None)

        def close(_: Any) -> Deferred[Any]:
            links, self._links = self._links, []
            self._receiver = None
            return gatherResults([f.disconnect() for f in links], consumeErrors=True)

        return first.addBoth(close).addBoth(lambda _: None)

    def new_connection_id(self) -> str:
        """A fresh id ``<node_id>.<32 hex>``."""
        return new_connection_id(self.node_id)

    # -- links -------------------------------------------------------------

    def _link_up(self, role: str, conn: Any) -> None:
        if self._receiver is None:
            return
        if role == "cmd":
            self._cmd = conn
            self._flush_queue()
            self._push_counts()
        else:
            self._sub = conn
            self._confirmed.clear()
            for channel in self._members:
                self._subscribe_topic(self._topic_ch + channel)
            self._hold_stale()
            # last: once Redis confirms these, it has the channels' too
            for topic in (self._topic_node, self._topic_all):
                self._subscribe_topic(topic)
        self._maybe_connected()

    def _maybe_connected(self) -> None:
        """Enter the connected state once both links are up and Redis has
        confirmed this node's topics (so broadcasts and commands reach it)."""
        if (
            self._connected
            or self._receiver is None
            or self._cmd is None
            or self._sub is None
            or self._topic_all not in self._confirmed
            or self._topic_node not in self._confirmed
        ):
            return
        self._connected = True
        self._start_catch_ups()
        if self._ever_connected:
            self.stats.reconnects += 1
            self._log.info(
                "backplane {node} reconnected to {url}: {failed} "
                "publications could not be sent during the outage, "
                "{dropped} of them dropped (queue full); "
                "{channels} channels resubscribed",
                node=self.node_id,
                url=self.url.redacted(),
                failed=self._outage_failures,
                dropped=self._outage_dropped,
                channels=len(self._members),
            )
        else:
            self._log.info(
                "backplane {node} connected to {url}",
                node=self.node_id,
                url=self.url.redacted(),
            )
        self._ever_connected = True
        self._outage_logged = False
        self._outage_failures = 0
        self._outage_dropped = 0
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _link_down(self, role: str, conn: Any) -> None:
        was_connected = self.state == "connected"
        if role == "cmd" and self._cmd is conn:
            self._connected = False
            self._cmd = None
        elif role == "sub" and self._sub is conn:
            self._connected = False
            self._sub = None
            self._confirmed.clear()
            self._stale.update(c for c in self._members if c in self._last)
        else:
            return
        if was_connected and self._receiver is not None:
            self._log.warn(
                "backplane {node} lost its {role} link to {url}; reconnecting "
                "(local delivery goes on)",
                node=self.node_id,
                role=role,
                url=self.url.redacted(),
            )

    def _link_failed(self, why: str) -> None:
        if self._receiver is None:
            return
        self._failed = why
        self._log.error(
            "backplane {node} gave up on {url}: {why}",
            node=self.node_id,
            url=self.url.redacted(),
            why=why,
        )

    def _subscribe_topic(self, topic: str) -> None:
        sub = self._sub
        if sub is None:
            return
        gen = self._sub_gen.get(topic, 0) + 1
        self._sub_gen[topic] = gen

        def confirmed(_: Any) -> None:
            if self._sub is sub and self._sub_gen.get(topic) == gen:
                self._confirmed.add(topic)
                self._maybe_connected()

        try:
            d = sub.subscribe(topic)
        except self._tx.RedisConnectionError:
            return  # resubscribed when the link is back
        d.addCallbacks(confirmed, lambda _f: None)

    def _unsubscribe_topic(self, topic: str) -> None:
        self._confirmed.discard(topic)
        self._sub_gen[topic] = self._sub_gen.get(topic, 0) + 1
        sub = self._sub
        if sub is None:
            return
        try:
            d = sub.unsubscribe(topic)
        except self._tx.RedisConnectionError:
            return
        d.addErrback(lambda _f: None)

    # -- receiving ---------------------------------------------------------

    def _on_message(self, topic: bytes, raw: bytes) -> None:
        try:
            if topic.startswith(self._topic_ch_bytes):
                head, _, body = raw.partition(b"\n")
                off, _, epoch = head.partition(b" ")
                msg, local_done = decode(
                    body, offset=int(off), epoch=epoch.decode("ascii")
                )
            else:
                msg, local_done = decode(raw)
        except (WireError, ValueError, UnicodeDecodeError) as e:
            self._log.warn(
                "backplane: ignored a malformed message on {topic}: {error}",
                topic=topic.decode("utf-8", "replace"),
                error=str(e),
            )
            return
        if isinstance(msg, Publication) and msg.channel is not None:
            channel = msg.channel
            held = False
            own = local_done and msg.origin == self.node_id
            for pending in list(self._pending.get(channel, ())):
                if own and pending.hold:
                    continue  # delivered here already, when it was made
                pending.buffer.append(msg)
                if pending.hold:
                    held = len(pending.buffer) <= MAX_HOLD or self._release(pending)
            if held or not self._members.get(channel):
                return
            if msg.position is not None:
                self._last[channel] = msg.position
        if local_done and msg.origin == self.node_id:
            return
        self.stats.received += 1
        self._hand_over(msg)

    def _hand_over(self, msg: Publication | Command) -> None:
        receiver = self._receiver
        if receiver is None:
            return
        try:
            if isinstance(msg, Publication):
                receiver.deliver(msg)
            else:
                receiver.command(msg)
        except Exception:
            self._log.failure("the backplane receiver failed")

    # -- sending -----------------------------------------------------------

    def publish(
        self,
        channel: str | None,
        data: bytes,
        is_binary: bool = False,
        *,
        protocol: str | None = None,
        ids: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        history_size: int | None = None,
        history_ttl: float | None = None,
    ) -> None:
        """Publish once to Redis; local subscribers get it from Redis (in
        offset order with every other node's publications) or, when Redis
        cannot echo it now, at once, without an offset."""
        pub = validate_publish_args(
            channel, data, is_binary, protocol, ids, exclude, self.node_id
        )
        size = self.history_size if history_size is None else history_size
        ttl = self.history_ttl if history_ttl is None else history_ttl
        check_history(size, ttl)
        self.stats.published += 1
        topic = self._topic_all if channel is None else self._topic_ch + channel
        has_local = channel is None or bool(self._members.get(channel))
        echo = self._cmd is not None and topic in self._confirmed
        local_done = has_local and not echo
        if local_done:
            self._hand_over(pub)
        op = _Op(topic, encode_publication(pub, local_done=local_done))
        if channel is not None:
            op.channel = channel
            op.size = size
            op.ttl_ms = max(1, int(ttl * 1000))
        self._send(op)

    def send(self, conn_id: str, data: bytes, is_binary: bool = False) -> None:
        """Send to ``conn_id`` on the node that holds it."""
        data = check_payload(data, is_binary)
        self._command(Command("send", conn_id, data, bool(is_binary)))

    def disconnect(self, conn_id: str, code: int = 1000, reason: str = "") -> None:
        """Close ``conn_id`` on the node that holds it."""
        self._command(Command("close", conn_id, code=code, reason=reason))

    def disconnect_all(self, code: int = 1001, reason: str = "") -> None:
        """Close every connection of every node (this one at once)."""
        self._command(Command("close_all", None, code=code, reason=reason))

    def _command(self, cmd: Command) -> None:
        if cmd.conn_id is not None and not isinstance(cmd.conn_id, str):
            raise TypeError("a connection id is a str")
        cmd = Command(
            cmd.kind,
            cmd.conn_id,
            cmd.data,
            cmd.is_binary,
            cmd.code,
            cmd.reason,
            origin=self.node_id,
        )
        self.stats.published += 1
        holder = holder_of(cmd.conn_id) if cmd.conn_id is not None else None
        if cmd.kind != "close_all" and holder == self.node_id:
            self._hand_over(cmd)
            return
        if cmd.kind == "close_all" or holder is None:
            # every node (an id the application chose may be anywhere)
            self._hand_over(cmd)
            self._send(_Op(self._topic_all, encode_command(cmd, local_done=True)))
            return
        self._send(_Op(self._topic_node_prefix + holder, encode_command(cmd)))

    def _send(self, op: _Op) -> None:
        cmd = self._cmd
        if cmd is None:
            self._enqueue(op)
            return
        try:
            if op.channel is None:
                d = cmd.execute_command("PUBLISH", op.topic, op.payload)
            else:
                d = cmd.eval(
                    PUBLISH_LUA,
                    [self._key_meta + op.channel, self._key_hist + op.channel],
                    [op.topic, secrets.token_hex(6), op.size, op.ttl_ms, op.payload],
                )
        except self._tx.RedisConnectionError:
            self._enqueue(op)
            return
        d.addErrback(self._send_failed, op)

    def _send_failed(self, failure: Any, op: _Op) -> None:
        # Sent, but no reply: Redis may or may not have it. Not re-sent
        # (live delivery is at-most-once); counted and logged.
        self.stats.publish_failures += 1
        self._outage_failures += 1
        if not self._outage_logged:
            self._outage_logged = True
            self._log.warn(
                "backplane {node}: a publication to {topic} may be lost: {error}",
                node=self.node_id,
                topic=op.topic,
                error=failure.getErrorMessage(),
            )

    def _enqueue(self, op: _Op) -> None:
        self.stats.publish_failures += 1
        self._outage_failures += 1
        if not self._outage_logged:
            self._outage_logged = True
            self._log.warn(
                "backplane {node}: Redis at {url} is unreachable; queueing "
                "publications (at most {count} / {size} bytes, oldest dropped "
                "first)",
                node=self.node_id,
                url=self.url.redacted(),
                count=self.max_queue,
                size=self.max_queue_bytes,
            )
        self._queue.append(op)
        self._queue_bytes += len(op.payload)
        while self._queue and (
            len(self._queue) > self.max_queue
            or self._queue_bytes > self.max_queue_bytes
        ):
            dropped = self._queue.popleft()
            self._queue_bytes -= len(dropped.payload)
            self.stats.queue_dropped += 1
            self._outage_dropped += 1
            if self._outage_dropped == 1:
                self._log.warn(
                    "backplane {node}: publication queue full; dropping the oldest",
                    node=self.node_id,
                )
        self.stats.queued = len(self._queue)

    def _flush_queue(self) -> None:
        ops = list(self._queue)
        self._queue.clear()
        self._queue_bytes = 0
        self.stats.queued = 0
        self.stats.queue_flushed += len(ops)
        for op in ops:
            self._send(op)

    # -- subscriptions -----------------------------------------------------

    def subscribe(
        self,
        channel: str,
        since: StreamPosition | tuple[str, int] | None = None,
    ) -> Deferred[Recovery]:
        """One more local subscriber; recover from ``since``.

        The order of steps closes the race between history and live
        messages: (1) the channel's topic is subscribed and a PING on the
        subscriber link returns, so Redis now sends us every later
        publication; live messages of the channel are recorded from this
        point; (2) one script reads the epoch, the top offset and the missed
        entries atomically; (3) a second PING on the subscriber link returns,
        so every publication up to that top offset that Redis sent us live
        has arrived. The result is the history, then the recorded live
        messages newer than the top offset: no gap, no duplicate.
        """
        check_channel(channel)
        position = coerce_position(since)
        count = self._members.get(channel, 0)
        self._members[channel] = count + 1
        if count == 0:
            self._subscribe_topic(self._topic_ch + channel)
        self._counts_changed()
        if self._cmd is None or self._sub is None:
            status = (
                RecoveryStatus.NOT_REQUESTED
                if position is None
                else RecoveryStatus.UNAVAILABLE
            )
            self.stats.count_recovery(status)
            return succeed(Recovery(status, (), None))
        pending = _Pending(channel)
        self._pending.setdefault(channel, []).append(pending)
        d = Deferred.fromCoroutine(self._recover(pending, position))
        return d.addCallback(self._counted)

    def _counted(self, result: Recovery) -> Recovery:
        self.stats.count_recovery(result.status)
        return result

    # -- catching up after the subscriber link was lost -------------------

    def _hold_stale(self) -> None:
        """The subscriber link is back: hold live messages of each channel
        that may have missed some, until its catch-up runs."""
        stale, self._stale = self._stale, set()
        for channel in stale:
            if self._members.get(channel) and channel in self._last:
                pending = _Pending(channel, hold=True)
                self._pending.setdefault(channel, []).append(pending)
                self._holds.append(pending)

    def _start_catch_ups(self) -> None:
        """Both links are up: recover each held channel from the last
        publication this node delivered, into the receiver."""
        holds, self._holds = self._holds, []
        for pending in holds:
            if not pending.hold:
                continue  # released meanwhile
            since = self._last.get(pending.channel)
            d = Deferred.fromCoroutine(self._recover(pending, since))
            d.addCallback(self._caught_up, pending)

    def _caught_up(self, result: Recovery, pending: _Pending) -> None:
        channel = pending.channel
        self.stats.count_catch_up(result.status)
        if result.status is RecoveryStatus.UNAVAILABLE:
            pubs: Iterable[Publication] = pending.buffer
        else:
            pubs = result.publications
        if result.status in (RecoveryStatus.EPOCH_CHANGED, RecoveryStatus.TOO_OLD):
            self._log.warn(
                "backplane {node}: local subscribers of {channel!r} missed "
                "publications no longer in history ({status})",
                node=self.node_id,
                channel=channel,
                status=result.status.value,
            )
        if pending.hold:
            pending.hold = False
            self._deliver_new(channel, pubs)

    def _release(self, pending: _Pending) -> bool:
        """A hold grew past MAX_HOLD: deliver what it kept; stop holding."""
        self._log.warn(
            "backplane {node}: catch-up of {channel!r} waited too long; "
            "delivering live messages without it",
            node=self.node_id,
            channel=pending.channel,
        )
        pending.hold = False
        waiting = self._pending.get(pending.channel, [])
        if pending in waiting:
            waiting.remove(pending)
        if not waiting:
            self._pending.pop(pending.channel, None)
        held, pending.buffer = pending.buffer[:-1], []
        self._deliver_new(pending.channel, held)
        return False

    def _deliver_new(self, channel: str, pubs: Iterable[Publication]) -> None:
        """Deliver the publications newer than the last one delivered."""
        for pub in pubs:
            if not self._members.get(channel):
                return
            last = self._last.get(channel)
            if (
                last is not None
                and pub.offset is not None
                and pub.epoch == last.epoch
                and pub.offset <= last.offset
            ):
                continue
            if pub.position is not None:
                self._last[channel] = pub.position
            self.stats.received += 1
            self._hand_over(pub)

    async def _recover(
        self, pending: _Pending, since: StreamPosition | None
    ) -> Recovery:
        channel = pending.channel
        sub, cmd = self._sub, self._cmd
        try:
            await sub.ping()
            reply = await cmd.eval(
                RECOVER_LUA,
                [self._key_meta + channel, self._key_hist + channel],
                [
                    secrets.token_hex(6),
                    max(1, int(self.history_ttl * 1000)),
                    since.epoch if since else "",
                    since.offset if since else 0,
                ],
            )
            await sub.ping()
            if self._sub is not sub:
                raise self._tx.RedisConnectionError("subscriber link replaced")
            result = self._assemble(reply, pending, since)
        except Exception as e:
            self._log.warn(
                "backplane {node}: could not recover {channel!r}: {error}",
                node=self.node_id,
                channel=channel,
                error=str(e) or type(e).__name__,
            )
            result = Recovery(
                RecoveryStatus.NOT_REQUESTED
                if since is None
                else RecoveryStatus.UNAVAILABLE
            )
        finally:
            waiting = self._pending.get(channel, [])
            if pending in waiting:
                waiting.remove(pending)
            if not waiting:
                self._pending.pop(channel, None)
        return result

    def _assemble(
        self, reply: list[Any], pending: _Pending, since: StreamPosition | None
    ) -> Recovery:
        epoch = reply[0].decode("ascii")
        top = int(reply[1])
        missed: list[Publication] = []
        if since is None:
            status = RecoveryStatus.NOT_REQUESTED
        elif reply[2] == b"epoch":
            status = RecoveryStatus.EPOCH_CHANGED
        elif reply[2] == b"old":
            status = RecoveryStatus.TOO_OLD
        else:
            status = RecoveryStatus.RECOVERED
            for entry_id, fields in reply[3] if len(reply) > 3 else ():
                offset = int(entry_id.split(b"-", 1)[0])
                raw = dict(zip(fields[::2], fields[1::2], strict=True))[b"m"]
                msg, done = decode(raw, offset=offset, epoch=epoch)
                assert isinstance(msg, Publication)
                if pending.hold and done and msg.origin == self.node_id:
                    continue  # a catch-up skips what this node delivered
                missed.append(msg)
        live = [
            p
            for p in pending.buffer
            if p.epoch != epoch or (p.offset is not None and p.offset > top)
        ]
        position = StreamPosition(epoch, top)
        last = live[-1].position if live else None
        return Recovery(status, tuple(missed + live), last or position)

    def unsubscribe(self, channel: str) -> None:
        """One local subscriber less; the last one unsubscribes the topic."""
        count = self._members.get(channel, 0)
        if count <= 0:
            return
        if count > 1:
            self._members[channel] = count - 1
        else:
            del self._members[channel]
            self._last.pop(channel, None)
            self._unsubscribe_topic(self._topic_ch + channel)
        self._counts_changed()

    def local_channels(self) -> dict[str, int]:
        """Channels with local subscribers, and how many each has."""
        return dict(self._members)

    # -- counts ------------------------------------------------------------

    def connection_opened(self) -> None:
        """One more local connection."""
        self._connections += 1
        self._counts_changed()

    def connection_closed(self) -> None:
        """One local connection less."""
        self._connections = max(0, self._connections - 1)
        self._counts_changed()

    def _counts_changed(self) -> None:
        if self._receiver is None or self._counts_call is not None:
            return
        self._counts_call = self.reactor.callLater(self.counts_delay, self._push_counts)

    def _push_counts(self) -> None:
        if self._counts_call is not None and self._counts_call.active():
            self._counts_call.cancel()
        self._counts_call = None
        cmd = self._cmd
        if cmd is None:
            return
        ttl_ms = max(1000, int(self.heartbeat_interval * 3000))
        args: list[Any] = [self.node_id, ttl_ms, "c", self._connections]
        for channel, n in self._members.items():
            args += ["ch:" + channel, n]
        try:
            d = cmd.eval(
                HEARTBEAT_LUA,
                [self._key_counts + self.node_id, self._key_nodes],
                args,
            )
        except self._tx.RedisConnectionError:
            return
        d.addErrback(
            lambda f: self._log.warn(
                "backplane {node}: counts not written: {error}",
                node=self.node_id,
                error=f.getErrorMessage(),
            )
        )

    def _count(self, field_name: str, local: int) -> Deferred[int]:
        cmd = self._cmd
        if cmd is None:
            return fail(BackplaneUnavailable(f"Redis at {self.url.redacted()} is down"))
        try:
            d: Deferred[Any] = cmd.eval(
                COUNT_LUA,
                [self._key_nodes],
                [self._key_counts, field_name, self.node_id],
            )
        except self._tx.RedisConnectionError:
            return fail(BackplaneUnavailable(f"Redis at {self.url.redacted()} is down"))

        def unavailable(f: Any) -> Any:
            raise BackplaneUnavailable(f.getErrorMessage())

        return d.addCallbacks(lambda n: int(n) + local, unavailable)

    def connection_count(self) -> Deferred[int]:
        """Open connections of every live node: this node's exact count plus
        the others' last snapshots (at most ``counts_delay`` old)."""
        return self._count("c", self._connections)

    def channel_count(self, channel: str) -> Deferred[int]:
        """Subscribers of ``channel`` on every live node."""
        check_channel(channel)
        return self._count("ch:" + channel, self._members.get(channel, 0))
