"""The client's options: :class:`ClientConfig` (pure, validated when built).

As :class:`~wsplugin.config.ServerConfig` on the server side: frozen,
keyword-only, every value checked in ``__post_init__`` so a bad option raises
:class:`~wsplugin.errors.ConfigError` at once, before anything connects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsplugin._version import __version__
from wsplugin.client._http import TOKEN
from wsplugin.errors import ConfigError

__all__ = ["ClientConfig", "make_config"]

MiB = 1024 * 1024

_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# headers the opening handshake sets itself; Origin and User-Agent are allowed
# and replace the defaults
_RESERVED_REQUEST_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "content-length",
        "transfer-encoding",
    }
)


def _header_pairs(headers: Any) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        items: Iterable[Any] = headers.items()
    elif isinstance(headers, (str, bytes)):
        raise ConfigError("headers must be a mapping or (name, value) pairs")
    else:
        items = headers
    pairs = []
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise ConfigError(
                f"headers must be a mapping or (name, value) pairs, not {item!r}"
            ) from None
        if not isinstance(name, str) or not TOKEN.match(name):
            raise ConfigError(f"invalid request header name {name!r}")
        if not isinstance(value, str) or _BAD_VALUE.search(value):
            raise ConfigError(
                f"request header {name!r} must be a str without control characters"
            )
        if name.lower() in _RESERVED_REQUEST_HEADERS:
            raise ConfigError(
                f"request header {name!r} is set by the handshake itself; use "
                "subprotocols= or compression= for the WebSocket headers"
            )
        pairs.append((name, value))
    return tuple(pairs)


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Options of a client connection; :func:`connect` takes them as keywords.

    Attributes:
        headers: Extra handshake request headers (FPC ``CustomHeaders``): a
            mapping or ``(name, value)`` pairs. ``Origin`` and ``User-Agent``
            replace the defaults; a repeated name is sent once with the values
            joined (``"; "`` for ``Cookie``, ``", "`` otherwise).
        subprotocols: Subprotocols to offer, in order of preference.
        origin: The ``Origin`` header (none by default).
        user_agent: The ``User-Agent`` header.
        compression: Offer permessage-deflate (RFC 7692).
        ca_file: PEM file of the CA certificates to trust for ``wss://``
            instead of the system's.
        trust: A CA to trust for ``wss://``: PEM bytes or text, a Twisted
            ``Certificate``, an ``IOpenSSLTrustRoot``, or an object with a
            ``cert_pem`` (a ``trustme.CA``).
        tls: An ``IOpenSSLClientConnectionCreator`` (e.g. from Twisted's
            ``optionsForClientTLS``) for full control; excludes the two above.
        open_timeout: Seconds for TCP, TLS and the opening handshake together.
        close_timeout: Seconds to wait for the server's close reply.
        max_message_size: Largest message accepted, in bytes (1009 beyond);
            0 turns the limit off.
        max_frame_size: Largest frame accepted, in bytes; 0 turns it off.
        max_queue: Messages queued for ``receive()`` before reading pauses.
        max_pongs: Pongs kept for ``wait_for_message``; older ones are dropped.
        max_error_body: Bytes of an error response's body kept in
            :class:`HandshakeFailed`.
        utf8_validation: Check that text messages are valid UTF-8 (1007).
    """

    headers: Any = ()
    subprotocols: Any = ()
    origin: str | None = None
    user_agent: str = f"wsplugin/{__version__}"
    compression: bool = False
    ca_file: str | Path | None = None
    trust: Any = None
    tls: Any = None
    open_timeout: float = 10.0
    close_timeout: float = 5.0
    max_message_size: int = 16 * MiB
    max_frame_size: int = 16 * MiB
    max_queue: int = 32
    max_pongs: int = 16
    max_error_body: int = 64 * 1024
    utf8_validation: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _header_pairs(self.headers))
        protocols = self.subprotocols
        if isinstance(protocols, str):
            protocols = (protocols,)
        protocols = tuple(protocols or ())
        for p in protocols:
            if not isinstance(p, str) or not TOKEN.match(p):
                raise ConfigError(f"invalid subprotocol name {p!r}")
        object.__setattr__(self, "subprotocols", protocols)
        for name in ("origin", "user_agent"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, str) or _BAD_VALUE.search(value)
            ):
                raise ConfigError(f"{name} must be a str without control characters")
        for name in ("open_timeout", "close_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number of seconds")
            if not value > 0:
                raise ConfigError(f"{name} must be positive, not {value!r}")
        for name in ("max_message_size", "max_frame_size", "max_error_body"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an int >= 0, not {value!r}")
        for name in ("max_queue", "max_pongs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, not {value!r}")
        if self.tls is not None and (
            self.ca_file is not None or self.trust is not None
        ):
            raise ConfigError(
                "tls= is a complete TLS configuration: give ca_file= or trust= "
                "to it (optionsForClientTLS(host, trustRoot=...)), not besides it"
            )
        if self.ca_file is not None and self.trust is not None:
            raise ConfigError("give ca_file= or trust=, not both")

    def request_headers(self) -> tuple[dict[str, str], str | None, str]:
        """Headers for Autobahn (one value per name), origin and user agent."""
        origin, agent = self.origin, self.user_agent
        merged: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        for name, value in self.headers:
            key = name.lower()
            if key == "origin":
                origin = value
            elif key == "user-agent":
                agent = value
            else:
                names.setdefault(key, name)
                merged.setdefault(key, []).append(value)
        headers = {
            names[key]: ("; " if key == "cookie" else ", ").join(values)
            for key, values in merged.items()
        }
        return headers, origin, agent


def make_config(config: ClientConfig | None, options: dict[str, Any]) -> ClientConfig:
    """``config=`` or the keyword options of :func:`connect`, as one config.

    Raises:
        ConfigError: both were given, or an option is unknown or invalid.
    """
    if config is not None:
        if options:
            raise ConfigError(
                "give either config= or keyword options, not both "
                f"(got {', '.join(sorted(options))})"
            )
        return config
    try:
        return ClientConfig(**options)
    except TypeError as e:
        raise ConfigError(f"unknown client option: {e}") from None
