"""Response header checks, shared by the exception tree and the handshake.

A leaf module (no wsplugin imports): :mod:`wsplugin.errors` checks the
headers of a :class:`~wsplugin.Reject` with it, and :mod:`wsplugin.handshake`
(which raises those errors) re-exports it, so neither imports the other.
"""

from __future__ import annotations

import re

__all__ = ["PROTECTED_RESPONSE_HEADERS", "check_header"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
PROTECTED_RESPONSE_HEADERS = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
    }
)
"""Headers the server writes itself; an application may not set them."""


def check_header(name: str, value: str, *, protected: bool = True) -> None:
    """Raise ValueError unless ``name: value`` is a safe response header.

    The name must be an HTTP token, the value must hold no control characters
    (no CR/LF: no header injection), and with ``protected`` the name must not
    be one the handshake itself sets (:data:`PROTECTED_RESPONSE_HEADERS`).
    """
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise ValueError(f"invalid response header name {name!r}")
    if not isinstance(value, str) or _BAD_VALUE.search(value):
        raise ValueError(
            f"response header {name!r} has a control character in its value"
        )
    if protected and name.lower() in PROTECTED_RESPONSE_HEADERS:
        raise ValueError(f"response header {name!r} is set by the server itself")
