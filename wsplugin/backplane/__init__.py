"""Backplanes: one logical server over many processes and machines.

A backplane carries what one node cannot do alone: broadcasts (published once
per channel, filtered by each receiving node), messages and disconnects for a
connection another node holds, cluster-wide counts, and per-channel history
with offsets and an epoch, so a reconnecting subscriber gets what it missed or
learns that it cannot. See docs/scaling.md.

Engines:

- :class:`LocalBackplane`: one process, history in memory (the default);
- :class:`RedisBackplane`: Redis pub/sub and Streams, through txredisapi
  (``pip install 'wsplugin[redis]'``).

Both implement the :class:`Backplane` protocol; :func:`make_backplane` picks
one from a URL.
"""

from __future__ import annotations

from typing import Any

from wsplugin.backplane._memory import LocalBackplane
from wsplugin.backplane._redis import RedisBackplane
from wsplugin.backplane._types import (
    Backplane,
    BackplaneReceiver,
    BackplaneStats,
    BackplaneUnavailable,
    Command,
    Publication,
    Recovery,
    RecoveryStatus,
    StreamPosition,
    holder_of,
    make_node_id,
    new_connection_id,
)
from wsplugin.backplane._url import RedisURL, parse_backplane_url

__all__ = [
    "Backplane",
    "BackplaneReceiver",
    "BackplaneStats",
    "BackplaneUnavailable",
    "Command",
    "LocalBackplane",
    "Publication",
    "Recovery",
    "RecoveryStatus",
    "RedisBackplane",
    "RedisURL",
    "StreamPosition",
    "holder_of",
    "make_backplane",
    "make_node_id",
    "new_connection_id",
    "parse_backplane_url",
]


def make_backplane(
    url: str | Backplane | None = None,
    *,
    node_id: str | None = None,
    reactor: Any = None,
    **options: Any,
) -> Backplane:
    """The backplane a URL names.

    Args:
        url: None or ``"local"`` for :class:`LocalBackplane`; a
            ``redis://``, ``rediss://`` or ``unix://`` URL for
            :class:`RedisBackplane`; a backplane is returned as it is
            (so a server's ``backplane=`` takes either).
        node_id: ``<name>.<worker>`` (see :func:`make_node_id`).
        reactor: The reactor (used as the clock by the local engine).
        options: Keyword options of the engine's constructor
            (``history_size``, ``history_ttl``, ...).

    Raises:
        ConfigError: a malformed URL, a bad option value, or the Redis
            extra not installed.
    """
    if url is not None and not isinstance(url, str):
        if not isinstance(url, Backplane):
            raise TypeError(
                f"a backplane is a URL or a Backplane, not {type(url).__name__}"
            )
        return url
    parsed = None if url is None else parse_backplane_url(url)
    if parsed is None:
        return LocalBackplane(node_id=node_id, clock=reactor, **options)
    return RedisBackplane(parsed, node_id=node_id, reactor=reactor, **options)
