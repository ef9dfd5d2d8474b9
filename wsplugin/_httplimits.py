"""What the same-port site answers from a request head: the body limits of
the resource found (:func:`resource_limit`) and the empty answers it gives
before any body byte (:data:`Refusal`, :func:`head_answer`)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from twisted.logger import Logger

from wsplugin._static import EmptyPage

__all__ = ["Refusal", "head_answer", "resource_limit", "status_phrase"]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.web")


def resource_limit(resource: Any, name: str, default: float) -> float:
    """A resource's own ``max_request_body`` / ``request_body_timeout``, or
    the server's. Only the resource that answers the request is consulted."""
    value = getattr(resource, name, None)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        _log.error(
            "{resource!r}.{name} must be a number >= 0, not {value!r}; "
            "using the server's {default}",
            resource=resource,
            name=name,
            value=value,
            default=default,
        )
        return default
    return value


Refusal = tuple[Any, ...]
"""``(status, reason)`` or ``(status, reason, headers)``: an answer with an
empty body, given from the request head (``headers``: ``(name, value)``
bytes pairs)."""


def status_phrase(status: int) -> bytes:
    """The reason phrase of ``status`` (RFC 9110's names)."""
    if status == 413:  # Python before 3.13 has the old names
        return b"Content Too Large"
    if status == 414:
        return b"URI Too Long"
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Error" if status >= 400 else b"OK"


def head_answer(resource: Any) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
    """The refusal to send from the head for ``resource``, or None.

    An :class:`~wsplugin.web.EmptyPage` with an error status (what
    ``guard()``, ``http_auth`` and a ``before_request`` hook refuse with) has
    nothing to read a body for: its status and headers are answered before
    any body byte, and the connection is closed (HTTP/1.1) or the stream
    reset (HTTP/2), so a refused client cannot make the server read, store
    or count its upload.
    """
    if not isinstance(resource, EmptyPage) or resource.code < 400:
        return None
    headers = [
        (bytes(name), bytes(value))
        for name, value in resource.headers.items()
        if not any(c in bytes(name) + bytes(value) for c in b"\r\n\x00")
    ]
    return resource.code, "refused from its head", headers
