"""Header rules of a forwarding gateway (RFC 9110 sections 7.6), pure.

What :mod:`wsplugin.forward` sends upstream and back: hop-by-hop fields
removed in both directions (section 7.6.1), ``X-Forwarded-For``/``-Proto``/
``-Host`` and ``Via`` (section 7.6.3) added to the request. No I/O here;
``twisted.web.http_headers.Headers`` in, ``Headers`` out.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from twisted.web.http_headers import Headers

__all__ = [
    "HOP_BY_HOP",
    "downstream_headers",
    "join_path",
    "split_upstream",
    "upstream_headers",
]

# RFC 9110 section 7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE,
# Transfer-Encoding and Upgrade; Trailer and the Proxy-Authenticate /
# Proxy-Authorization pair are meant for this hop too (RFC 2616's list).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# set again by the client library from the body it sends (or not at all)
_REQUEST_ONLY = frozenset({b"content-length", b"expect", b"host"})


def _connection_tokens(headers: Headers) -> set[bytes]:
    """The field names a ``Connection`` header lists: hop-by-hop as well."""
    tokens = set()
    for value in headers.getRawHeaders(b"connection", []):
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def _end_to_end(headers: Headers, also: Iterable[bytes] = ()) -> Headers:
    drop = HOP_BY_HOP | _connection_tokens(headers) | set(also)
    kept = Headers()
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in drop:
            kept.setRawHeaders(name, list(values))
    return kept


def upstream_headers(
    headers: Headers,
    *,
    client: str,
    secure: bool,
    host: bytes | None,
    trusted_proxies: int = 0,
    via: bytes = b"1.1 wsplugin",
    preserve_host: bool = False,
) -> Headers:
    """The headers to send upstream for a request that arrived with ``headers``.

    Args:
        headers: The request's headers as received.
        client: The address of the peer that sent the request.
        secure: Whether it arrived over TLS.
        host: Its ``Host`` header.
        trusted_proxies: Proxies in front of this server. With none, the
            ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` the client sent are
            replaced (a client could forge them); with some, they are kept
            when present (the proxy in front set them).
        via: This hop's ``Via`` entry (appended to any received one).
        preserve_host: Send the client's ``Host`` upstream instead of the
            upstream's own (for virtual hosts behind the same address).

    ``X-Forwarded-For`` gets the client's address appended, as nginx's
    ``$proxy_add_x_forwarded_for`` does: an upstream trusting this server as
    one proxy reads the last entry.
    """
    out = _end_to_end(headers, _REQUEST_ONLY)
    chain = b", ".join(headers.getRawHeaders(b"x-forwarded-for", []))
    client_bytes = client.encode("ascii", errors="replace")
    out.setRawHeaders(
        b"x-forwarded-for", [chain + b", " + client_bytes if chain else client_bytes]
    )
    keep = trusted_proxies > 0
    if not (keep and out.hasHeader(b"x-forwarded-proto")):
        out.setRawHeaders(b"x-forwarded-proto", [b"https" if secure else b"http"])
    if not (keep and out.hasHeader(b"x-forwarded-host")):
        out.removeHeader(b"x-forwarded-host")
        if host is not None:
            out.setRawHeaders(b"x-forwarded-host", [host])
    out.setRawHeaders(b"via", [*headers.getRawHeaders(b"via", []), via])
    if preserve_host and host is not None:
        out.setRawHeaders(b"host", [host])
    return out


def downstream_headers(headers: Headers) -> Headers:
    """The upstream response's headers minus its hop-by-hop ones (the
    framing toward the client is this server's own)."""
    return _end_to_end(headers, (b"transfer-encoding",))


def split_upstream(url: str) -> tuple[bytes, bytes]:
    """``(origin, base path)`` of an upstream URL: ``http://h:8080/v1`` gives
    ``(b"http://h:8080", b"/v1")``.

    Raises:
        ValueError: not an ``http``/``https`` URL with a host, or with a query
            or fragment.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"the upstream must be an http:// or https:// URL, not {url!r}"
        )
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError(f"the upstream URL {url!r} must not have a query or fragment")
    if parts.username or parts.password:
        raise ValueError("the upstream URL must not hold credentials")
    _port = parts.port  # raises ValueError for a port out of range
    origin = f"{parts.scheme}://{parts.netloc}".encode("ascii")
    return origin, parts.path.encode("ascii")


def join_path(base: bytes, rest: list[bytes]) -> bytes:
    """``base`` with the request's remaining raw path segments after it."""
    if not rest:
        return base or b"/"
    return base.rstrip(b"/") + b"/" + b"/".join(rest)
