"""WebSocket URLs: :func:`parse_url` and :class:`URL` (pure).

RFC 6455, section 3: ``ws://`` and ``wss://`` only, a host, no fragment.
Credentials in the URL (``ws://user:pw@host/``) are refused, with a message
naming the ``headers=`` option to send them with instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from wsplugin.errors import ConfigError

__all__ = ["URL", "netloc", "parse_url"]

# RFC 3986 pchar plus "/" (path) and "?" (query): kept as they are, every
# other character is percent-encoded
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def netloc(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:80``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class URL:
    """A parsed ``ws://`` or ``wss://`` URL (see :func:`parse_url`).

    Attributes:
        secure: True for ``wss://``.
        host: The host name or IP address (IPv6 without brackets).
        port: The port (80 or 443 when the URL has none).
        path: The path, e.g. ``"/chat"``.
        query: The query string without ``?`` (may be empty).
        text: The URL as given.
    """

    secure: bool
    host: str
    port: int
    path: str
    query: str
    text: str

    @property
    def resource(self) -> str:
        """The request target: path and query, as sent on the request line."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def params(self) -> dict[str, list[str]]:
        """Query parameters, each with all its values."""
        return parse_qs(self.query, keep_blank_values=True)

    @property
    def host_header(self) -> str:
        """The host as it appears in a ``Host`` header (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return self.text


def parse_url(url: str | URL) -> URL:
    """Parse a WebSocket URL (RFC 6455, section 3).

    Raises:
        ConfigError: not a ``ws://`` or ``wss://`` URL with a host, or it has
            a fragment, credentials, or an invalid port.
    """
    if isinstance(url, URL):
        return url
    if not isinstance(url, str):
        raise ConfigError(f"the URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"invalid WebSocket URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ConfigError(
            f"invalid WebSocket URL {url!r}: it must start with ws:// or wss://"
        )
    if not parts.hostname:
        raise ConfigError(f"invalid WebSocket URL {url!r}: no host")
    if parts.fragment or url.rstrip().endswith("#"):
        raise ConfigError(
            f"invalid WebSocket URL {url!r}: a WebSocket URL has no #fragment"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"invalid WebSocket URL {url!r}: send credentials in a header, "
            "e.g. headers={'Authorization': ...}, not in the URL"
        )
    host = parts.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    if port is None:
        port = 443 if scheme == "wss" else 80
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    query = quote(parts.query, safe=_QUERY_SAFE)
    return URL(scheme == "wss", host, port, path, query, url.strip())
