"""The Redis backplane's two links, their reconnects and its connected state.

A node keeps two reconnecting links to Redis (txredisapi connections, opened
by :func:`wsplugin.backplane._txredis.open_links`):

- the *command* link runs the Lua scripts (publish, recover, counts);
- the *subscriber* link is subscribed to the node's topics (``<p>:all``,
  ``<p>:node:<node_id>``) and to the topic of each channel that has a local
  subscriber.

:class:`RedisLinks` follows them as they come and go, subscribes topics on
the subscriber link (confirmations of an older link or of a topic
unsubscribed meanwhile are ignored), and says when the node is *connected*:
both links up and Redis has confirmed the node's own topics, so broadcasts
and commands reach it. It calls its owner back at each step; it never sends
a publication itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from wsplugin.backplane._layout import RedisLayout
from wsplugin.backplane._url import RedisURL

__all__ = ["LinkOpener", "RedisLinks"]

#: Opens both links: called with the keyword hooks ``on_up(role, protocol)``,
#: ``on_down(role, protocol)``, ``on_error(why)`` and ``on_message(topic,
#: payload)``; returns the link factories (each has ``disconnect()``).
LinkOpener = Callable[..., list[Any]]


class RedisLinks:
    """The command and subscriber links of one node.

    Args:
        layout: The node's key and topic names.
        url: Where Redis is (for log lines; shown redacted).
        log: The logger to write to (the backplane's).
        link_error: The exception a link raises when a command cannot be
            sent because it is not connected.
        opener: Opens both links (see :data:`LinkOpener`); replaced by
            tests with one that hands out fake links.
        on_command_up: Called once the command link is usable.
        on_subscriber_up: Called once the subscriber link is usable, before
            the node's own topics are subscribed on it (so Redis confirms
            the channels' topics first).
        on_subscriber_down: Called once the subscriber link is lost.
        on_connected: Called with ``reconnected`` (whether the node was
            connected before) on entering the connected state.

    Attributes:
        command: The usable command link, or None.
        subscriber: The usable subscriber link, or None.
        running: From :meth:`start` until :meth:`close`.
        failure: Why txredisapi gave up (a refused password or database),
            or None.
    """

    def __init__(
        self,
        *,
        layout: RedisLayout,
        url: RedisURL,
        log: Logger,
        link_error: type[Exception],
        opener: LinkOpener,
        on_command_up: Callable[[], None],
        on_subscriber_up: Callable[[], None],
        on_subscriber_down: Callable[[], None],
        on_connected: Callable[[bool], None],
    ) -> None:
        self.layout = layout
        self.url = url
        self.log = log
        self.link_error = link_error
        self.opener = opener
        self._on_command_up = on_command_up
        self._on_subscriber_up = on_subscriber_up
        self._on_subscriber_down = on_subscriber_down
        self._on_connected = on_connected
        self.command: Any = None
        self.subscriber: Any = None
        self.running = False
        self.failure: str | None = None
        self._factories: list[Any] = []
        self._ever_connected = False
        # both links up and this node's own topics confirmed by Redis
        self._connected = False
        self._confirmed: set[str] = set()
        self._generation: dict[str, int] = {}
        self._waiting: list[Deferred[None]] = []

    @property
    def state(self) -> str:
        """``stopped``, ``connecting``, ``connected``, ``disconnected`` or
        ``failed`` (Redis refused the password or database: not retried)."""
        if not self.running:
            return "stopped"
        if self.failure is not None:
            return "failed"
        if self._connected:
            return "connected"
        return "disconnected" if self._ever_connected else "connecting"

    def start(self, on_message: Callable[[bytes, bytes], None]) -> None:
        """Open both links (they connect in the background); pub/sub
        messages of the subscriber link go to ``on_message``."""
        self.running = True
        self.failure = None
        self._factories.extend(
            self.opener(
                on_up=self.link_up,
                on_down=self.link_down,
                on_error=self.link_failed,
                on_message=on_message,
            )
        )

    def close(self) -> Deferred[Any]:
        """Stop following the links and disconnect both; fires when done."""
        factories, self._factories = self._factories, []
        self.running = False
        return gatherResults([f.disconnect() for f in factories], consumeErrors=True)

    def when_connected(self) -> Deferred[None]:
        """Fires once the node is connected (at once if it is)."""
        if self.state == "connected":
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def is_confirmed(self, topic: str) -> bool:
        """Whether Redis confirmed ``topic`` on the current subscriber link
        (so a publication to it comes back to this node)."""
        return topic in self._confirmed

    # -- the links' hooks (txredisapi calls them through LinkFactory) -------

    def link_up(self, role: str, conn: Any) -> None:
        """The link ``role`` (``"cmd"`` or ``"sub"``) is usable as ``conn``."""
        if not self.running:
            return
        if role == "cmd":
            self.command = conn
            self._on_command_up()
        else:
            self.subscriber = conn
            self._confirmed.clear()
            self._on_subscriber_up()
            # last: once Redis confirms these, it has the channels' too
            for topic in (self.layout.topic_node, self.layout.topic_all):
                self.subscribe_topic(topic)
        self._maybe_connected()

    def link_down(self, role: str, conn: Any) -> None:
        """The link ``role`` was lost (``conn`` is the protocol that was)."""
        was_connected = self.state == "connected"
        if role == "cmd" and self.command is conn:
            self._connected = False
            self.command = None
        elif role == "sub" and self.subscriber is conn:
            self._connected = False
            self.subscriber = None
            self._confirmed.clear()
            self._on_subscriber_down()
        else:
            return
        if was_connected and self.running:
            self.log.warn(
                "backplane {node} lost its {role} link to {url}; reconnecting "
                "(local delivery goes on)",
                node=self.layout.node_id,
                role=role,
                url=self.url.redacted(),
            )

    def link_failed(self, why: str) -> None:
        """txredisapi gave up (the password or database was refused)."""
        if not self.running:
            return
        self.failure = why
        self.log.error(
            "backplane {node} gave up on {url}: {why}",
            node=self.layout.node_id,
            url=self.url.redacted(),
            why=why,
        )

    # -- topics on the subscriber link ---------------------------------------

    def subscribe_topic(self, topic: str) -> None:
        """Subscribe ``topic`` on the subscriber link, if it is up (it is
        subscribed again when the link comes back)."""
        sub = self.subscriber
        if sub is None:
            return
        gen = self._generation.get(topic, 0) + 1
        self._generation[topic] = gen

        def confirmed(_: Any) -> None:
            if self.subscriber is sub and self._generation.get(topic) == gen:
                self._confirmed.add(topic)
                self._maybe_connected()

        try:
            d = sub.subscribe(topic)
        except self.link_error:
            return  # resubscribed when the link is back
        d.addCallbacks(confirmed, lambda _f: None)

    def unsubscribe_topic(self, topic: str) -> None:
        """Unsubscribe ``topic``; a confirmation still on its way for an
        earlier subscribe of it no longer counts."""
        self._confirmed.discard(topic)
        self._generation[topic] = self._generation.get(topic, 0) + 1
        sub = self.subscriber
        if sub is None:
            return
        try:
            d = sub.unsubscribe(topic)
        except self.link_error:
            return
        d.addErrback(lambda _f: None)

    def _maybe_connected(self) -> None:
        """Enter the connected state once both links are up and Redis has
        confirmed this node's topics (so broadcasts and commands reach it)."""
        if (
            self._connected
            or not self.running
            or self.command is None
            or self.subscriber is None
            or self.layout.topic_all not in self._confirmed
            or self.layout.topic_node not in self._confirmed
        ):
            return
        self._connected = True
        self._on_connected(self._ever_connected)
        self._ever_connected = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)
