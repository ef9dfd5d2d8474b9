"""The parts of the Redis backplane that touch txredisapi.

Imported only when a :class:`~wsplugin.backplane.RedisBackplane` is built:
txredisapi imports ``twisted.internet.reactor`` at import time, which would
install the default reactor in applications that choose another one after
importing wsplugin.

We use txredisapi's documented pieces: ``RedisFactory.startConnecting`` with
our own endpoint (so TLS verifies the host name and the reactor is the one
the server uses), its ``initialDelay``/``maxDelay`` backoff attributes, and
the ``addConnection``/``delConnection``/``connectionError`` hooks to learn
when a link comes and goes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import txredisapi
from OpenSSL.crypto import Error as OpenSSLError
from twisted.internet.endpoints import (
    HostnameEndpoint,
    UNIXClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS

from wsplugin.backplane._url import RedisURL
from wsplugin.errors import ConfigError

__all__ = [
    "HIREDIS",
    "CommandProtocol",
    "LinkFactory",
    "RedisConnectionError",
    "SubscriberProtocol",
    "make_endpoint",
    "open_links",
]

RedisConnectionError = txredisapi.ConnectionError
CommandProtocol = txredisapi.RedisProtocol

HIREDIS = getattr(txredisapi, "hiredis", None) is not None
"""txredisapi parses replies with hiredis (the ``redis`` extra installs it).
Without it, its pure-Python parser gives the reactor a turn after every
bulk string of a reply: a recovery of 10,000 publications takes about 6 s
instead of 0.5 s, and a subscriber link handles a few thousand messages
per second."""


class SubscriberProtocol(txredisapi.SubscriberProtocol):
    """A subscriber link that hands every message to its factory.

    Replies are sorted here rather than by txredisapi's ``replyReceived``,
    which compares them with both ``str`` and ``bytes`` (a BytesWarning under
    ``python -b``); our links never decode (``charset=None``). Every command
    we send on this link (one topic per SUBSCRIBE/UNSUBSCRIBE, PING) waits
    for exactly one reply, in order.
    """

    def replyReceived(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3:
            kind = reply[0]
            if kind == b"message":
                self.factory.on_message(reply[1], reply[2])
                return
            if kind in _CONFIRMATIONS and not self.replyQueue.waiting:
                return
        self.replyQueue.put(reply)


_CONFIRMATIONS = frozenset({b"subscribe", b"unsubscribe"})


class LinkFactory(txredisapi.RedisFactory):
    """One reconnecting link (a pool of one) to Redis, reporting up/down.

    Args:
        name: A label for txredisapi's bookkeeping (no secret in it).
        url: Where Redis is; its password and user authenticate each link.
        protocol: :data:`CommandProtocol` or :class:`SubscriberProtocol`.
        select_db: Send ``SELECT db`` after connecting (commands link only;
            pub/sub ignores databases).
        reply_timeout: Seconds to wait for a reply before the link is
            dropped and re-established (a hung Redis looks like a lost one).
        initial_delay: First reconnect delay, in seconds.
        max_delay: Cap of the exponential backoff (factor e, with jitter).
        on_up: Called with the protocol once a link is usable.
        on_down: Called with the protocol once a usable link is lost.
        on_error: Called with a message when txredisapi gives up (e.g. the
            password was refused).
        on_message: Called with ``(topic, payload)`` for pub/sub messages.
    """

    noisy = False

    def __init__(
        self,
        name: str,
        url: RedisURL,
        protocol: type,
        *,
        select_db: bool,
        reply_timeout: float,
        initial_delay: float,
        max_delay: float,
        on_up: Callable[[Any], None],
        on_down: Callable[[Any], None],
        on_error: Callable[[str], None],
        on_message: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        super().__init__(
            name,
            url.db if select_db else None,
            1,
            isLazy=True,
            charset=None,  # payloads are bytes; no decoding, no number guessing
            password=url.password,
            replyTimeout=reply_timeout,
            convertNumbers=False,
            username=url.username,
        )
        self.protocol = protocol
        self.initialDelay = initial_delay
        self.maxDelay = max_delay
        self._on_up = on_up
        self._on_down = on_down
        self._on_error = on_error
        self._on_message = on_message
        # txredisapi fires this once (handler or error); nobody waits on it
        self.deferred.addErrback(lambda _f: None)

    def retryDelay(self, attempt: int) -> float:
        """Seconds before reconnection attempt ``attempt`` (1, 2, ...):
        ``initial_delay`` times e per failed attempt, jittered by about 12 %
        so that nodes cut off together do not all come back in the same
        instant, and never more than ``max_delay`` (txredisapi applies its
        jitter after its own cap, which lets a delay overshoot it: 11.3 s for
        a 10 s cap was seen)."""
        return float(min(super().retryDelay(attempt), self.maxDelay))

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self._on_up(conn)

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self._on_down(conn)

    def connectionError(self, why: str) -> None:
        super().connectionError(why)
        self._on_error(why)

    def on_message(self, channel: bytes, message: bytes) -> None:
        """A pub/sub message arrived on this link."""
        if self._on_message is not None:
            self._on_message(channel, message)


def make_endpoint(
    reactor: Any, url: RedisURL, connect_timeout: float
) -> IStreamClientEndpoint:
    """A client endpoint for ``url``: TCP, TLS with host name verification
    (against ``url.ca_file`` or the platform's CAs), or a Unix socket."""
    if url.scheme == "unix":
        assert url.path is not None
        return UNIXClientEndpoint(reactor, url.path, timeout=connect_timeout)
    assert url.host is not None and url.port is not None
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, url.host, url.port, timeout=connect_timeout
    )
    if url.tls:
        trust: Any = None
        if url.ca_file:
            try:
                with open(url.ca_file, "rb") as f:
                    trust = Certificate.loadPEM(f.read())
            except (OSError, ValueError, OpenSSLError) as e:
                raise ConfigError(
                    f"backplane URL: cannot read the CA file {url.ca_file!r}: {e}"
                ) from None
        options = optionsForClientTLS(url.host, trustRoot=trust)
        endpoint = wrapClientTLS(options, endpoint)
    return endpoint


def open_links(
    reactor: Any,
    url: RedisURL,
    node_id: str,
    *,
    connect_timeout: float,
    reply_timeout: float,
    initial_delay: float,
    max_delay: float,
    on_up: Callable[[str, Any], None],
    on_down: Callable[[str, Any], None],
    on_error: Callable[[str], None],
    on_message: Callable[[bytes, bytes], None],
) -> list[LinkFactory]:
    """Start a node's two reconnecting links to ``url``: the command link
    (role ``"cmd"``, with ``SELECT db``) and the subscriber link (``"sub"``,
    handing pub/sub messages to ``on_message``).

    ``on_up`` and ``on_down`` get the role and the protocol. One endpoint
    serves both links, so a TLS CA file is read once.

    Raises:
        ConfigError: the URL's CA file cannot be read.
    """
    endpoint = make_endpoint(reactor, url, connect_timeout)
    factories = []
    for role, protocol in (("cmd", CommandProtocol), ("sub", SubscriberProtocol)):
        factory = LinkFactory(
            f"{node_id}/{role}",
            url,
            protocol,
            select_db=role == "cmd",
            reply_timeout=reply_timeout,
            initial_delay=initial_delay,
            max_delay=max_delay,
            on_up=partial(on_up, role),
            on_down=partial(on_down, role),
            on_error=on_error,
            on_message=on_message if role == "sub" else None,
        )
        factories.append(factory)
        factory.startConnecting(endpoint)
    return factories
