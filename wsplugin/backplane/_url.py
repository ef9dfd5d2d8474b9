"""Backplane URLs: parsing, validation, and the engine they name.

Accepted forms::

    redis://[[user]:password@]host[:port][/db][?prefix=P]
    rediss://[[user]:password@]host[:port][/db][?ca=/path/ca.pem][&prefix=P]
    unix:///path/to/redis.sock[?db=N][&password=PW][&user=U][&prefix=P]
    unix://[[user]:password@]/path/to/redis.sock[?db=N]
    local                          the in-process engine (the default)

Everything else is a :class:`~wsplugin.errors.ConfigError` naming what is
wrong, raised when the server is built, never on the first publish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from wsplugin.errors import ConfigError

__all__ = ["RedisURL", "parse_backplane_url"]

_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_QUERY_KEYS = {
    "redis": {"db", "prefix", "password", "user"},
    "rediss": {"db", "prefix", "password", "user", "ca"},
    "unix": {"db", "prefix", "password", "user"},
}


@dataclass(frozen=True, slots=True)
class RedisURL:
    """Where and how to reach Redis, from a backplane URL.

    Attributes:
        scheme: ``redis``, ``rediss`` (TLS) or ``unix``.
        host: Host name or address (None for ``unix``).
        port: TCP port (None for ``unix``).
        path: Socket path (``unix`` only).
        db: Database index for keys (history, counts). Pub/sub topics ignore
            it in Redis, so it is also part of the topic prefix.
        username: ACL user name (Redis 6+), or None.
        password: Password, or None. Never shown by ``repr`` or logs.
        ca_file: PEM file of the CA that signed the server's certificate
            (``rediss`` only); None trusts the platform's CAs.
        prefix: First part of every key and topic (default ``wsplugin``), so
            several applications can share one Redis.
    """

    scheme: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    prefix: str = "wsplugin"

    @property
    def tls(self) -> bool:
        """True for ``rediss://``."""
        return self.scheme == "rediss"

    def redacted(self) -> str:
        """The URL with any password replaced by ``***``, for logs."""
        auth = ""
        if self.username or self.password:
            auth = (self.username or "") + (":***" if self.password else "") + "@"
        if self.scheme == "unix":
            return f"unix://{auth}{self.path}?db={self.db}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}"


def _db(value: str, url: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise ConfigError(
            f"backplane URL {url}: the database index must be a number, not {value!r}"
        )
    return int(value)


def parse_backplane_url(url: str) -> RedisURL | None:
    """Parse a backplane URL.

    Returns:
        None for ``local`` (the in-process engine), else a :class:`RedisURL`.

    Raises:
        ConfigError: the URL has another form; the message says which part is
            wrong but never repeats a password.
    """
    if not isinstance(url, str):
        raise ConfigError(f"a backplane URL is a str, not {type(url).__name__}")
    if url.strip() in ("local", "local:", "local://"):
        return None
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    # The password must not appear in an error message: show the URL redacted.
    shown = f"{scheme}://...{parts.path}" if "@" in parts.netloc else url.strip()
    if scheme not in _QUERY_KEYS:
        raise ConfigError(
            f"backplane URL {shown!r}: the scheme must be redis://, rediss:// or "
            "unix:// (or 'local' for one process)"
        )
    if parts.fragment:
        raise ConfigError(f"backplane URL {shown!r}: a '#' fragment is not allowed")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        if parts.query:
            raise ConfigError(
                f"backplane URL {shown!r}: the query must be key=value pairs"
            ) from None
        pairs = []
    query: dict[str, str] = {}
    for key, value in pairs:
        if key not in _QUERY_KEYS[scheme]:
            allowed = ", ".join(sorted(_QUERY_KEYS[scheme]))
            raise ConfigError(
                f"backplane URL {shown!r}: unknown option {key!r} (allowed: {allowed})"
            )
        if key in query:
            raise ConfigError(f"backplane URL {shown!r}: {key!r} is given twice")
        query[key] = value

    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if "password" in query:
        if password is not None:
            raise ConfigError(f"backplane URL {shown!r}: the password is given twice")
        password = query["password"]
    if "user" in query:
        if username is not None:
            raise ConfigError(f"backplane URL {shown!r}: the user is given twice")
        username = query["user"] or None
    if password == "":
        password = None
    prefix = query.get("prefix", "wsplugin")
    if not _PREFIX.match(prefix):
        raise ConfigError(
            f"backplane URL {shown!r}: prefix must be 1-64 letters, digits or '_.:-'"
        )
    options: dict[str, Any] = {
        "username": username,
        "password": password,
        "prefix": prefix,
    }

    if scheme == "unix":
        host_part = parts.netloc.rpartition("@")[2]
        if host_part:
            raise ConfigError(
                f"backplane URL {shown!r}: write unix:///path/to/redis.sock "
                "(three slashes: no host)"
            )
        if not parts.path.startswith("/") or parts.path == "/":
            raise ConfigError(
                f"backplane URL {shown!r}: the socket path must be absolute"
            )
        return RedisURL(
            "unix",
            path=unquote(parts.path),
            db=_db(query["db"], shown) if "db" in query else 0,
            **options,
        )

    try:
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"backplane URL {shown!r}: the port must be a number from 1 to 65535"
        ) from None
    if not host:
        raise ConfigError(f"backplane URL {shown!r}: a host is required")
    if port == 0:
        raise ConfigError(
            f"backplane URL {shown!r}: the port must be a number from 1 to 65535"
        )
    path = parts.path
    if path in ("", "/"):
        db = _db(query["db"], shown) if "db" in query else 0
    else:
        if "db" in query:
            raise ConfigError(
                f"backplane URL {shown!r}: give the database in the path or "
                "as ?db=, not both"
            )
        db = _db(path[1:], shown)
    ca_file = query.get("ca") or None
    return RedisURL(
        scheme,
        host=host,
        port=port or 6379,
        db=db,
        ca_file=ca_file,
        **options,
    )
