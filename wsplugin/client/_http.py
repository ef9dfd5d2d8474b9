"""The server's answer to the opening handshake: parsing it (pure).

:func:`parse_response_head` reads the status line and headers;
:func:`body_progress` reads (a bounded part of) an error response's body, so
:class:`~wsplugin.errors.HandshakeFailed` can carry what a refusing server
said. Nothing here touches a socket or imports the rest of wsplugin: the
module is a leaf, which lets :mod:`wsplugin.errors` build a :class:`Response`
without an import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsplugin.connection import Headers

__all__ = [
    "MAX_RESPONSE_HEAD",
    "Response",
    "ResponseHead",
    "body_progress",
    "decode_chunked",
    "parse_response_head",
]

MAX_RESPONSE_HEAD = 64 * 1024
"""Bytes of response status line and headers read before giving up."""

TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
"""An HTTP token (RFC 9110, 5.6.2): what a header name may be."""


@dataclass(frozen=True)
class Response:
    """The server's answer to the opening handshake.

    Attributes:
        status: 101 for an accepted handshake.
        reason: The status line's reason phrase.
        headers: Case-insensitive headers; ``headers.get_all("Set-Cookie")``.
        body: The body of an error response (empty for a 101).
    """

    status: int
    reason: str
    headers: Headers
    body: bytes = b""


@dataclass(frozen=True)
class ResponseHead:
    """A parsed HTTP response head (see :func:`parse_response_head`).

    Attributes:
        version: ``"HTTP/1.1"`` (or ``"HTTP/1.0"``).
        status: The status code.
        reason: The reason phrase.
        headers: ``(name, value)`` pairs in the order received.
        length: Bytes of the head, blank line included: the body starts there.
    """

    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    length: int


def parse_response_head(data: bytes) -> ResponseHead | None:
    """Parse an HTTP/1.x response's status line and headers.

    Returns None while ``data`` holds no complete head (no blank line yet).

    Raises:
        ValueError: the head is not a valid HTTP/1.x response head.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not re.fullmatch(r"[0-9]{3}", code):
        raise ValueError(f"not an HTTP response status line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not TOKEN.match(name):
            raise ValueError(f"malformed response header line: {line[:80]!r}")
        headers.append((name, value.strip(" \t")))
    return ResponseHead(version, int(code), reason.strip(), tuple(headers), end + 4)


def decode_chunked(data: bytes, limit: int) -> tuple[bytes, bool]:
    """Decode a ``Transfer-Encoding: chunked`` body, reading at most ``limit``
    bytes of payload. Returns ``(body so far, complete)``; complete once the
    last chunk arrived, the limit is reached, or the encoding is broken."""
    body = bytearray()
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return bytes(body), False
        size_text = data[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return bytes(body), True
        if size == 0:
            return bytes(body), True
        start = eol + 2
        chunk = data[start : start + size]
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            return bytes(body[:limit]), True
        if len(chunk) < size or len(data) < start + size + 2:
            return bytes(body), False
        pos = start + size + 2


def _first(pairs: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), or None."""
    for key, value in pairs:
        if key.lower() == name:
            return value
    return None


def body_progress(head: ResponseHead, data: bytes, limit: int) -> tuple[bytes, bool]:
    """The error response's body read so far (at most ``limit`` bytes), and
    whether it is complete.

    The body is delimited as HTTP/1.1 says (RFC 9112, 6.3): none for 1xx,
    204 and 304; ``chunked``; ``Content-Length``; otherwise until the server
    closes (the caller passes what it has once the connection ended).
    """
    if head.status in (204, 304) or 100 <= head.status < 200:
        return b"", True
    if "chunked" in (_first(head.headers, "transfer-encoding") or "").lower():
        return decode_chunked(data, limit)
    length = _first(head.headers, "content-length")
    if length is not None and length.strip().isdigit():
        need = min(int(length), limit)
        return data[:need], len(data) >= need
    return data[:limit], len(data) >= limit
