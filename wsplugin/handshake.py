"""The opening handshake's HTTP request head, parsed before Autobahn sees it.

Pure functions. The protocol adapter uses them to bound the request head
(431 instead of buffering megabytes), to route by host and path before the
upgrade is validated, and to apply the ``skip_upgrade_check`` /
``skip_version_check`` options by normalising the head it hands to Autobahn,
which then validates everything else as usual.

The request target is read one way everywhere (:func:`target_problem`,
:attr:`RequestHead.path`): only the origin form (``/path?query``) is
accepted, its path is everything before the first ``?``, taken as sent,
and never parsed as a URL. ``//x/admin`` is the path ``//x/admin``, not
host ``x`` and path ``/admin``. The WebSocket-only server and the same-port
``twisted.web`` site (:mod:`wsplugin.web`) both apply these rules, so a
``before_request`` hook, the router and the handler all see one path.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import parse_qs, unquote, urlsplit

from wsplugin._headers import PROTECTED_RESPONSE_HEADERS, check_header
from wsplugin.errors import HandshakeRejected

__all__ = [
    "PROTECTED_RESPONSE_HEADERS",
    "SAME_ORIGIN",
    "RequestHead",
    "accepts_other_sites",
    "body_problem",
    "check_header",
    "normalize_head",
    "origin_allowed",
    "parse_request_head",
    "same_origin",
    "split_host",
    "target_problem",
    "version_problem",
]

_END = b"\r\n\r\n"
# control characters other than HTAB, and NEL (U+0085, a line break for
# str.splitlines in latin-1 text)
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85]")


@dataclass(frozen=True)
class RequestHead:
    """A parsed HTTP/1.1 request head.

    Attributes:
        method: The request method, e.g. ``"GET"``.
        target: The request target as sent (path and query).
        version: The HTTP version token, e.g. ``"HTTP/1.1"``.
        headers: ``(name, value)`` pairs in the order received; names as sent.
        length: Bytes of the head including the blank line that ends it.
    """

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    length: int

    @property
    def path(self) -> str:
        """The target up to its first ``?``, as sent (``/`` when empty).

        Never parsed as a URL: see :func:`target_problem`."""
        return self.target.partition("?")[0] or "/"

    @property
    def params(self) -> dict[str, list[str]]:
        """Query parameters, each name with all its values."""
        return parse_qs(self.target.partition("?")[2], keep_blank_values=True)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of a header, matched case-insensitively."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    @property
    def host(self) -> str:
        """The ``Host`` header without its port, lowercased (``""`` if absent)."""
        return split_host(self.get("host", "") or "")


def split_host(value: str) -> str:
    """Lowercase host name of a ``Host`` header value, port removed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    host, _, _port = value.partition(":")
    return host


def parse_request_head(
    data: bytes, max_head: int = 0, max_headers: int = 0
) -> RequestHead | None:
    """Parse the request head at the start of ``data``.

    Args:
        data: Bytes received so far.
        max_head: Largest head in bytes (0: unbounded).
        max_headers: Most header lines (0: unbounded).

    Returns:
        The parsed head, or ``None`` when the head is not complete yet and
        still within ``max_head``.

    Raises:
        HandshakeRejected: 431 for a head over the limits, 400 for a
            malformed one.
    """
    end = data.find(_END, 0, max_head + 4 if max_head else None)
    if end < 0:
        if max_head and len(data) > max_head + 3:
            raise HandshakeRejected(431, "Request Header Fields Too Large")
        return None
    try:
        text = data[:end].decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise HandshakeRejected(400, "Bad Request") from None
    lines = text.split("\r\n")
    if _FORBIDDEN.search(text.replace("\r\n", "")):
        # A bare CR/LF or another line separator/control character would make
        # Autobahn's parser (str.splitlines) see other headers than we do.
        raise HandshakeRejected(400, "Bad Request")
    if max_headers and len(lines) - 1 > max_headers:
        raise HandshakeRejected(431, "Request Header Fields Too Large")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not all(parts):
        raise HandshakeRejected(400, "Bad Request")
    method, target, version = parts
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise HandshakeRejected(400, "Bad Request")
        headers.append((name, value.strip()))
    return RequestHead(method, target, version, tuple(headers), end + len(_END))


_DOT_SEGMENTS = frozenset({".", ".."})
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
# RFC 3986, 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~"
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_HTTP_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")


def target_problem(target: str, *, allow_asterisk: bool = False) -> str | None:
    """Why a request target must be refused with 400, or None when it is fine.

    Accepted: the origin form, ``/path`` with an optional ``?query``
    (RFC 9112, 3.2.1), the one form a client sends to a server that is not
    a proxy; and ``*`` when ``allow_asterisk`` (``OPTIONS *``).

    Refused, because two readers of the same target could take it to name
    two different paths (a ``before_request`` check on one, the route or
    resource reached by the other):

    * any other form: the absolute form ``http://x/admin`` (meant for
      proxies), the authority form, a bare query;
    * a fragment (``#``), which a client never sends;
    * a dot segment, ``/./`` or ``/../``, also percent-encoded (``%2e``) or
      followed by ``;params`` (``/..;/``): browsers remove them before
      sending, file servers and proxies resolve them, routers do not;
    * an encoded slash or backslash (``%2F``, ``%5C``), which decodes into
      a separator inside one path segment (Apache refuses it by default);
    * a percent-encoded unreserved character (a letter, a digit, ``-``,
      ``.``, ``_``, ``~``: ``/%61dmin``): RFC 3986 (2.3, 6.2.2.2) makes it
      the same URI as the character itself, no client needs to encode one,
      and ``twisted.web`` decodes it while walking resources, so a
      ``before_request`` check on ``/admin`` would not see ``/%61dmin``
      reach the ``admin`` resource.

    Anything else (``//``, a trailing ``;``, escapes of other characters) is
    kept as sent, and routes only to a route registered with that exact
    spelling.
    """
    if allow_asterisk and target == "*":
        return None
    if not target.startswith("/"):
        return "the request target is not a path (only the origin form is served)"
    path, _, _query = target.partition("?")
    if "#" in target:
        return "the request target has a fragment"
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered:
        return "the request path has an encoded slash"
    for segment in path.split("/"):
        if "." in segment or "%" in segment:
            name = unquote(segment, errors="replace").partition(";")[0]
            if name in _DOT_SEGMENTS:
                return "the request path has a dot segment"
    for match in _ESCAPE.finditer(path):
        if chr(int(match.group(1), 16)) in _UNRESERVED:
            return (
                f"the request path has a percent-encoded unreserved character "
                f"({match.group(0)})"
            )
    return None


def version_problem(version: str) -> str | None:
    """Why a WebSocket handshake's HTTP version must be refused with 400, or
    None: RFC 6455 (4.1) requires HTTP/1.1 or higher, and RFC 9110 (7.8)
    has servers ignore ``Upgrade`` in an HTTP/1.0 request, so an HTTP/1.0
    client asking to switch protocols sent a handshake that cannot be
    honoured (RFC 6455, 4.2.1: 400 Bad Request)."""
    match = _HTTP_VERSION.fullmatch(version)
    if match is None or (int(match.group(1)), int(match.group(2))) < (1, 1):
        return f"a WebSocket handshake needs HTTP/1.1 or higher, not {version[:16]!r}"
    return None


def body_problem(head: RequestHead) -> str | None:
    """Why an upgrade request must be refused for announcing a body, or None.

    A WebSocket handshake is a GET without a body (RFC 6455, 4.1), and the
    bytes after its head are frames. A ``Content-Length`` other than 0 or any
    ``Transfer-Encoding`` would leave it to each reader (a proxy in front, the
    same-port ``twisted.web`` parser, the WebSocket parser) to decide where the
    body ends and the frames begin, so the request is refused with 400, as
    the ``websockets`` library does.
    """
    if head.get("transfer-encoding") is not None:
        return "a WebSocket handshake has no body (Transfer-Encoding)"
    for name, value in head.headers:
        if name.lower() == "content-length" and value.strip("0") != "":
            return "a WebSocket handshake has no body (Content-Length)"
    return None


def normalize_head(
    head: RequestHead, skip_upgrade_check: bool, skip_version_check: bool
) -> bytes | None:
    """Rewrite the head so Autobahn accepts what the skip options allow.

    With ``skip_upgrade_check`` a missing or wrong ``Upgrade``/``Connection``
    pair is replaced by ``Upgrade: websocket`` / ``Connection: Upgrade``; with
    ``skip_version_check`` a missing or unsupported ``Sec-WebSocket-Version``
    becomes ``13``. Every other header is kept as sent.

    Returns:
        The new head bytes, or ``None`` when nothing needs changing.
    """
    drop: set[str] = set()
    add: list[tuple[str, str]] = []
    if skip_upgrade_check:
        upgrade = (head.get("upgrade") or "").lower()
        connection = (head.get("connection") or "").lower()
        if "websocket" not in [t.strip() for t in upgrade.split(",")] or (
            "upgrade" not in [t.strip() for t in connection.split(",")]
        ):
            drop |= {"upgrade", "connection"}
            add += [("Upgrade", "websocket"), ("Connection", "Upgrade")]
    if skip_version_check:
        versions = [v for k, v in head.headers if k.lower() == "sec-websocket-version"]
        if versions != ["13"]:
            drop.add("sec-websocket-version")
            add.append(("Sec-WebSocket-Version", "13"))
    if not add:
        return None
    kept = [(k, v) for k, v in head.headers if k.lower() not in drop]
    lines = [f"{head.method} {head.target} {head.version}"]
    lines += [f"{k}: {v}" for k, v in kept + add]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


SAME_ORIGIN = "same-origin"
"""The ``allowed_origins`` pattern for the server's own origin: the ``Origin``
whose host and port are those of the ``Host`` header."""


def origin_allowed(
    origin: str,
    patterns: tuple[str, ...] | None,
    *,
    host: str = "",
    authenticated: bool = False,
) -> bool:
    """Whether an ``Origin`` header value matches one of ``patterns``.

    Patterns match the whole origin, case-insensitively, with ``*`` as a
    wildcard: ``"https://example.com"``, ``"https://*.example.com"``,
    ``"http://localhost:*"``. ``"*"`` matches any origin. ``"same-origin"``
    matches the origin whose host and port equal those of ``host`` (the
    ``Host`` header; see :func:`same_origin`).

    ``patterns`` None is the default policy: any origin on a public route,
    but only the same origin on a route with an authenticator
    (``authenticated``), since a browser attaches its cached Basic
    credentials and cookies to an upgrade that any site's page starts
    (cross-site WebSocket hijacking).

    ``Origin: null`` (sandboxed frames, ``file:`` pages) matches only ``*``
    (or a literal ``null`` pattern); Autobahn then refuses it with 400 in any
    case, so it never opens a connection.
    """
    if patterns is None:
        patterns = (SAME_ORIGIN,) if authenticated else ("*",)
    value = origin.strip().lower()
    for pattern in patterns:
        if pattern.lower() == SAME_ORIGIN:
            if same_origin(value, host):
                return True
        elif fnmatchcase(value, _glob(pattern)):
            return True
    return False


def same_origin(origin: str, host: str) -> bool:
    """Whether ``origin``'s host and port are those of a ``Host`` header value.

    A ``Host`` without a port matches an origin on its scheme's default port
    (``http://h`` or ``http://h:80``, ``https://h`` or ``https://h:443``).
    The scheme itself is not compared: the server cannot always tell whether
    TLS ended at a proxy in front of it. Only ``http``/``https`` origins
    without a path can match.
    """
    try:
        parts = urlsplit(origin.strip().lower())
        target = urlsplit("//" + host.strip().lower())
        origin_port = parts.port
        host_port = target.port
    except ValueError:
        return False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.username is not None
        or not target.hostname
        or target.path
        or target.username is not None
    ):
        return False
    if parts.hostname != target.hostname:
        return False
    default = 443 if parts.scheme == "https" else 80
    if host_port is None:
        return origin_port in (None, default)
    return (origin_port or default) == host_port


def accepts_other_sites(patterns: tuple[str, ...] | None) -> bool:
    """Whether ``patterns`` accept the origin of an unrelated site (``*``,
    ``https://*`` and the like). The default (None) does not on
    authenticated routes."""
    if patterns is None:
        return False
    return any(
        origin_allowed(probe, patterns)
        for probe in ("https://wsplugin-probe.invalid", "http://wsplugin-probe.invalid")
    )


def _glob(pattern: str) -> str:
    # only "*" is a wildcard: "[" (IPv6 literals) and "?" match themselves
    return pattern.lower().replace("[", "[[]").replace("?", "[?]")
