"""The Redis backplane: pub/sub per channel, history in Streams, on txredisapi.

Two links per node (each a reconnecting txredisapi connection):

- the *command* link runs the Lua scripts (publish, recover, counts);
- the *subscriber* link is subscribed to ``<p>:all`` (broadcasts to every
  connection, ``disconnect_all``), ``<p>:node:<node_id>`` (commands for this
  node's connections) and ``<p>:ch:<channel>`` for each channel that has a
  local subscriber, and no other (the Centrifugo model).

Keys and topics start with ``<p> = <prefix>:<db>`` (``wsplugin:0`` by
default): Redis pub/sub ignores the database index, so it is part of the
topic names too (:mod:`._layout` names them all).

Per channel, ``<p>:meta:<channel>`` is a hash ``{e: epoch, o: last offset}``
and ``<p>:hist:<channel>`` a Stream whose entry ids are ``<offset>-0``. The
publish script assigns the offset, appends to the stream and publishes the
message in one atomic step, so the live message and the history entry carry
the same offset, and live messages reach every subscriber in offset order.
When the meta hash is gone (expired after ``history_ttl`` without a
publication, deleted, ``FLUSHALL``, Redis restarted empty) the next script
creates a new random epoch and deletes any stale stream: offsets restart at
1 in the new epoch, and a subscriber holding the old epoch is told that
recovery is impossible. The same happens when Redis comes back from older
data with the same epoch and a top offset below one a node saw (its
high-water marks, :mod:`._marks`): the scripts replace the epoch.

:class:`RedisBackplane` is the facade. Its work is done by four
collaborators, each testable alone with fake links:

- :class:`~._links.RedisLinks`: the two links, reconnects, the connected
  state;
- :class:`~._outbox.Outbox`: the publish path and its bounded outage queue;
- :class:`~._channels.Subscriptions`: channel topics, recovery, catch-up,
  and the node's high-water marks (:class:`~._marks.HighMarks`);
- :class:`~._presence.Presence`: the counts heartbeat and cluster counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from functools import partial
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from wsplugin.backplane._channels import Subscriptions
from wsplugin.backplane._layout import RedisLayout
from wsplugin.backplane._links import LinkOpener, RedisLinks
from wsplugin.backplane._outbox import Op, Outbox
from wsplugin.backplane._presence import Presence
from wsplugin.backplane._types import (
    BackplaneReceiver,
    BackplaneStats,
    Command,
    Publication,
    Recovery,
    StreamPosition,
    WireError,
    check_channel,
    check_history,
    check_node_id,
    check_payload,
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

    Attributes:
        stats: Counters for metrics (:class:`BackplaneStats`).
        layout: The node's key and topic names (:class:`RedisLayout`).
        links: The two links and the connected state (:class:`RedisLinks`).
        outbox: The publish path and its outage queue (:class:`Outbox`).
        channels: Channel topics, recovery and catch-up
            (:class:`Subscriptions`).
        presence: The counts heartbeat (:class:`Presence`).

    The options are also attributes of the same names; the collaborators
    take their values when the backplane is built.
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
        _check_options(
            history_size,
            history_ttl,
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
            reconnect_initial=reconnect_initial,
            reconnect_max=reconnect_max,
            reply_timeout=reply_timeout,
            connect_timeout=connect_timeout,
            heartbeat_interval=heartbeat_interval,
            counts_delay=counts_delay,
        )
        # Fail now, not at start(), when the extra is missing.
        link_error, open_links = _load_txredis()
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
        self._receiver: BackplaneReceiver | None = None

        layout = RedisLayout(url.prefix, url.db, self.node_id)
        self.layout = layout
        self.links = RedisLinks(
            layout=layout,
            url=url,
            log=self._log,
            link_error=link_error,
            opener=partial(
                open_links,
                reactor,
                url,
                self.node_id,
                connect_timeout=self.connect_timeout,
                reply_timeout=self.reply_timeout,
                initial_delay=self.reconnect_initial,
                max_delay=self.reconnect_max,
            ),
            on_command_up=self._command_up,
            on_subscriber_up=self._subscriber_up,
            on_subscriber_down=self._subscriber_down,
            on_connected=self._connected,
        )
        self.channels = Subscriptions(
            layout=layout,
            links=self.links,
            stats=self.stats,
            log=self._log,
            history_ttl=self.history_ttl,
            deliver=self._hand_over,
            on_change=self._counts_changed,
        )
        self.outbox = Outbox(
            layout=layout,
            links=self.links,
            stats=self.stats,
            log=self._log,
            url=url,
            max_queue=max_queue,
            max_queue_bytes=max_queue_bytes,
            marks=self.channels,  # the node's marks, subscribed channels' too
        )
        self.presence = Presence(
            reactor=reactor,
            layout=layout,
            links=self.links,
            log=self._log,
            url=url,
            channel_counts=lambda: self.channels.members,
            heartbeat_interval=self.heartbeat_interval,
            counts_delay=self.counts_delay,
        )

    def __repr__(self) -> str:
        return f"<RedisBackplane {self.node_id} {self.url.redacted()} {self.state}>"

    # -- lifecycle ---------------------------------------------------------

    @property
    def state(self) -> str:
        """``stopped``, ``connecting``, ``connected``, ``disconnected`` or
        ``failed`` (Redis refused the password or database: not retried)."""
        return self.links.state

    def start(self, receiver: BackplaneReceiver) -> Deferred[None]:
        """Start both links (in the background) and the count heartbeat."""
        if self._receiver is not None:
            raise RuntimeError("this backplane is already started")
        self._receiver = receiver
        self.links.start(self._on_message)
        self.presence.start()
        self._log.info(
            "backplane {node} connecting to {url}",
            node=self.node_id,
            url=self.url.redacted(),
        )
        return succeed(None)

    def when_connected(self) -> Deferred[None]:
        """Fires once both links are up (at once if they are)."""
        return self.links.when_connected()

    def stop(self) -> Deferred[None]:
        """Withdraw this node's counts, close both links, stop timers."""
        if self._receiver is None:
            return succeed(None)

        def close(_: Any) -> Deferred[Any]:
            self._receiver = None
            return self.links.close()

        return self.presence.stop().addBoth(close).addBoth(lambda _: None)

    def new_connection_id(self) -> str:
        """A fresh id ``<node_id>.<32 hex>``."""
        return new_connection_id(self.node_id)

    # -- what the links report -----------------------------------------------

    def _command_up(self) -> None:
        self.outbox.flush()
        self.presence.push()

    def _subscriber_up(self) -> None:
        self.channels.subscriber_up()

    def _subscriber_down(self) -> None:
        self.channels.subscriber_down()

    def _connected(self, reconnected: bool) -> None:
        self.channels.start_catch_ups()
        if reconnected:
            self.stats.reconnects += 1
            self._log.info(
                "backplane {node} reconnected to {url}: {failed} "
                "publications could not be sent during the outage, "
                "{dropped} of them dropped (queue full); "
                "{channels} channels resubscribed",
                node=self.node_id,
                url=self.url.redacted(),
                failed=self.outbox.outage_failures,
                dropped=self.outbox.outage_dropped,
                channels=len(self.channels.members),
            )
        else:
            self._log.info(
                "backplane {node} connected to {url}",
                node=self.node_id,
                url=self.url.redacted(),
            )
        self.outbox.end_outage()

    # -- receiving ---------------------------------------------------------

    def _on_message(self, topic: bytes, raw: bytes) -> None:
        try:
            msg, local_done = _parse(topic, raw, self.layout.channel_prefix)
        except (WireError, ValueError, UnicodeDecodeError) as e:
            self._log.warn(
                "backplane: ignored a malformed message on {topic}: {error}",
                topic=topic.decode("utf-8", "replace"),
                error=str(e),
            )
            return
        if isinstance(msg, Publication) and msg.channel is not None:
            if not self.channels.observe(msg, local_done):
                return
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
        cannot echo it now, at once, without an offset.

        ``history_size`` and ``history_ttl``, when given, become the
        channel's own (kept in its meta hash, for every node, until its
        history expires); when not, the channel keeps its own, or gets
        the defaults of this engine."""
        pub = validate_publish_args(
            channel, data, is_binary, protocol, ids, exclude, self.node_id
        )
        check_history(
            self.history_size if history_size is None else history_size,
            self.history_ttl if history_ttl is None else history_ttl,
        )
        self.stats.published += 1
        layout = self.layout
        topic = layout.topic_all if channel is None else layout.channel_topic(channel)
        has_local = channel is None or bool(self.channels.members.get(channel))
        echo = self.links.command is not None and self.links.is_confirmed(topic)
        local_done = has_local and not echo
        if local_done:
            self._hand_over(pub)
        op = Op(topic, encode_publication(pub, local_done=local_done))
        if channel is not None:
            op.channel = channel
            op.size = history_size
            op.ttl_ms = None if history_ttl is None else _ms(history_ttl)
            op.default_size = self.history_size
            op.default_ttl_ms = _ms(self.history_ttl)
        self.outbox.send(op)

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
            topic = self.layout.topic_all
            self.outbox.send(Op(topic, encode_command(cmd, local_done=True)))
            return
        topic = self.layout.node_topic(holder)
        self.outbox.send(Op(topic, encode_command(cmd)))

    # -- subscriptions -----------------------------------------------------

    def subscribe(
        self,
        channel: str,
        since: StreamPosition | tuple[str, int] | None = None,
    ) -> Deferred[Recovery]:
        """One more local subscriber; recover from ``since`` (see
        ``Subscriptions.subscribe`` for how history and live messages
        are merged without a gap or a duplicate)."""
        return self.channels.subscribe(channel, since)

    def unsubscribe(self, channel: str) -> None:
        """One local subscriber less; the last one unsubscribes the topic."""
        self.channels.unsubscribe(channel)

    def local_channels(self) -> dict[str, int]:
        """Channels with local subscribers, and how many each has."""
        return dict(self.channels.members)

    # -- counts ------------------------------------------------------------

    def connection_opened(self) -> None:
        """One more local connection."""
        self.presence.opened()

    def connection_closed(self) -> None:
        """One local connection less."""
        self.presence.closed()

    def _counts_changed(self) -> None:
        self.presence.changed()

    def connection_count(self) -> Deferred[int]:
        """Open connections of every live node: this node's exact count plus
        the others' last snapshots (at most ``counts_delay`` old)."""
        return self.presence.count("c", self.presence.connections)

    def channel_count(self, channel: str) -> Deferred[int]:
        """Subscribers of ``channel`` on every live node."""
        check_channel(channel)
        return self.presence.count(
            "ch:" + channel, self.channels.members.get(channel, 0)
        )


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _parse(
    topic: bytes, raw: bytes, channel_prefix: bytes
) -> tuple[Publication | Command, bool]:
    """A message of the subscriber link, and whether its origin delivered it
    locally already. A channel's message starts with ``<offset> <epoch>``
    and a newline (the publish script puts them there).

    Raises:
        WireError, ValueError, UnicodeDecodeError: not one of our messages.
    """
    if not topic.startswith(channel_prefix):
        return decode(raw)
    head, _, body = raw.partition(b"\n")
    off, _, epoch = head.partition(b" ")
    return decode(body, offset=int(off), epoch=epoch.decode("ascii"))


def _check_options(
    history_size: int,
    history_ttl: float,
    *,
    max_queue: int,
    max_queue_bytes: int,
    reconnect_initial: float,
    reconnect_max: float,
    **seconds: float,
) -> None:
    """Raise ConfigError for an option value :class:`RedisBackplane` cannot
    take; ``seconds`` are the other durations, each > 0."""
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
        *seconds.items(),
    ):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be seconds > 0, not {value!r}")
    if reconnect_max < reconnect_initial:
        raise ConfigError("reconnect_max must be >= reconnect_initial")


def _load_txredis() -> tuple[type[Exception], LinkOpener]:
    """txredisapi's not-connected error, and the function opening a node's
    links; imported only now (see :mod:`._txredis` for why).

    Raises:
        ConfigError: txredisapi is not installed.
    """
    try:
        with warnings.catch_warnings():
            # txredisapi builds a set of str and bytes at import time,
            # a BytesWarning under ``python -b``; harmless there.
            warnings.simplefilter("ignore", BytesWarning)
            from wsplugin.backplane._txredis import (
                HIREDIS,
                RedisConnectionError,
                open_links,
            )
    except ImportError as e:
        raise ConfigError(
            f"the Redis backplane needs txredisapi ({e}); "
            "install it with: pip install 'wsplugin[redis]'"
        ) from None
    if not HIREDIS:
        # under the engine's namespace, where its other lines are
        Logger(namespace="wsplugin.backplane._redis.RedisBackplane").warn(
            "hiredis is not installed: txredisapi parses Redis replies in pure "
            "Python, one reactor turn per element (history recovery about 10 "
            "times slower); pip install 'wsplugin[redis]' installs it"
        )
    return RedisConnectionError, open_links
