"""``twisted.web`` requests as authenticators see them: :class:`HTTPClient`,
the client's address behind trusted proxies, and the bodiless refusal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs as parse_query
from urllib.parse import unquote, urlsplit

from twisted.python.failure import Failure
from twisted.web.server import Request as WebRequest

from wsplugin.connection import Headers, Request
from wsplugin.handshake import split_host

__all__ = ["HTTPClient", "answer", "forwarded_for", "peer_of"]


class HTTPClient:
    """A ``twisted.web`` request as an authenticator sees it.

    It has what authenticators read from a :class:`~wsplugin.Connection`:
    ``request`` (a :class:`~wsplugin.Request`: path, query parameters of the
    URL only, headers, cookies, ``peer_address``) and ``user``.
    ``peer_address`` is the TCP peer, or with ``trusted_proxies`` the
    address those proxies put in ``X-Forwarded-For``, as for upgrades.

    Attributes:
        web_request: The ``twisted.web`` request.
        gone: Whether the client disconnected before its answer.
    """

    def __init__(self, web_request: WebRequest, trusted_proxies: int = 0) -> None:
        self.web_request = web_request
        target = web_request.uri.decode("latin-1")
        split = urlsplit(target)
        pairs = tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, values in web_request.requestHeaders.getAllRawHeaders()
            for value in values
        )
        headers = Headers(pairs)
        self.request = Request(
            path=unquote(split.path) or "/",
            params=parse_query(split.query, keep_blank_values=True),
            headers=headers,
            host=split_host(headers.get("host", "")),
            origin=headers.get("origin", ""),
            protocols=(),
            peer=web_request.getClientAddress(),
            target=target,
            forwarded_for=forwarded_for(web_request, trusted_proxies),
        )
        self.user: Any = None
        self.session: Any = None  # set by SessionAuth
        self.gone = False
        web_request.notifyFinish().addErrback(self._lost)

    def _lost(self, failure: Failure) -> None:
        self.gone = True


def forwarded_for(request: WebRequest, trusted_proxies: int) -> str | None:
    """The client address ``trusted_proxies`` proxies put in
    ``X-Forwarded-For`` (as for WebSocket routes), or None."""
    if not trusted_proxies:
        return None
    values = request.requestHeaders.getRawHeaders(b"x-forwarded-for")
    if not values:
        return None
    addresses = [a.strip() for a in b",".join(values).decode("latin-1").split(",")]
    return addresses[-trusted_proxies:][0] or None


def peer_of(request: WebRequest, trusted_proxies: int = 0) -> str:
    """The client's address: from ``X-Forwarded-For`` with
    ``trusted_proxies``, else the TCP peer's host (``unix`` for a Unix
    socket)."""
    forwarded = forwarded_for(request, trusted_proxies)
    if forwarded:
        return forwarded
    return str(getattr(request.getClientAddress(), "host", "unix"))


def answer(
    request: WebRequest, status: int, headers: Iterable[tuple[str, str]] = ()
) -> None:
    """Finish ``request`` with ``status``, ``headers`` and an empty body (a
    refusal tells nothing more than its status)."""
    request.setResponseCode(status)
    for name, value in headers:
        request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
    request.setHeader(b"content-length", b"0")
    request.finish()
