"""An incremental ``multipart/form-data`` parser (RFC 7578 on RFC 2046).

Sans-I/O, in the manner of h11 and websockets: :meth:`MultipartParser.feed`
takes the body in pieces of any size, as they come off the socket, and
returns the events those bytes complete; :meth:`MultipartParser.close` says
the body has ended. Nothing here reads a file or a socket, so the parser is
tested with values (and with Hypothesis, cut at every point).

Memory is bounded whatever the body: part data is handed out as it arrives
and only the last ``len(delimiter) - 1`` bytes (at most 73) are held back, in
case a delimiter straddles two pieces; a part's header block is held until it
is complete, up to ``max_header_size`` bytes. A 1 GiB file goes through in
pieces of the size the socket delivers (64 KiB with Twisted's reactors).

Strict where parsers disagreeing would be a risk: a part needs exactly one
``Content-Disposition: form-data`` header with a ``name``; duplicate
parameters (two ``filename=``), obsolete header folding, a boundary line
followed by anything but padding and CRLF, and a body that ends before the
closing delimiter are errors (:class:`MultipartError`, 400).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = [
    "Done",
    "MultipartError",
    "MultipartParser",
    "PartData",
    "PartEnd",
    "PartStart",
    "boundary_of",
    "parse_header_params",
]

# RFC 2046 section 5.1.1: a boundary is 1 to 70 of these, not ending in space
_BCHARS = frozenset(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
)
# RFC 9110 section 5.6.2
_TCHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_PADDING_LIMIT = 256  # transport padding after a boundary (RFC 2046: LWSP)


class MultipartError(ValueError):
    """The body is not valid ``multipart/form-data``; the message says where.

    ``status`` is the HTTP status to answer with (400).
    """

    status = 400


@dataclass(frozen=True)
class PartStart:
    """A part's header block is complete.

    Attributes:
        name: The form field name (``Content-Disposition``'s ``name``).
        filename: The client's file name, exactly as sent (decoded as UTF-8,
            undecodable bytes replaced), or None for a plain field. It is
            untrusted text: never use it as a path.
        content_type: The part's ``Content-Type``, or None.
        headers: Every header of the part, names lower-cased, in order.
    """

    name: str
    filename: str | None
    content_type: str | None
    headers: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class PartData:
    """A piece of the current part's content (any size, possibly empty)."""

    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """The current part's content is complete."""


@dataclass(frozen=True)
class Done:
    """The closing delimiter was seen; whatever follows is ignored."""


Event = PartStart | PartData | PartEnd | Done

_PREAMBLE, _BOUNDARY_LINE, _HEADERS, _BODY, _DONE = range(5)


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``form-data; name="a"; filename="b.txt"`` into the lower-cased
    first token and its parameters (names lower-cased).

    Values are tokens or quoted strings; inside quotes only ``\\"`` and
    ``\\\\`` are escapes (curl writes them), other backslashes stay as they
    are (old browsers send ``C:\\dir\\file``). ``name*=utf-8''...`` values
    (RFC 8187) are decoded. A repeated parameter is an error: two parsers
    picking different ``filename=`` values is a classic way past a check.

    Raises:
        MultipartError: the value is malformed.
    """
    parts: dict[str, str] = {}
    i, n = 0, len(value)

    def skip_ows(i: int) -> int:
        while i < n and value[i] in " \t":
            i += 1
        return i

    def token(i: int) -> tuple[str, int]:
        start = i
        while i < n and ord(value[i]) < 128 and ord(value[i]) in _TCHARS:
            i += 1
        return value[start:i], i

    i = skip_ows(i)
    kind, i = token(i)
    if not kind:
        raise MultipartError(f"malformed header value {value!r}")
    i = skip_ows(i)
    while i < n:
        if value[i] != ";":
            raise MultipartError(f"malformed header parameters in {value!r}")
        i = skip_ows(i + 1)
        if i == n:
            break  # a trailing ";" is tolerated
        name, i = token(i)
        if not name or i >= n or value[i] != "=":
            raise MultipartError(f"malformed header parameter in {value!r}")
        i += 1
        if i < n and value[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise MultipartError(f"unterminated quoted string in {value!r}")
                c = value[i]
                if c == "\\" and i + 1 < n and value[i + 1] in '"\\':
                    chars.append(value[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                else:
                    chars.append(c)
                    i += 1
            text = "".join(chars)
        else:
            text, i = token(i)
            if not text:
                raise MultipartError(f"empty header parameter value in {value!r}")
        key = name.lower()
        if key.endswith("*"):
            charset, _, rest = text.partition("'")
            _language, _, encoded = rest.partition("'")
            if charset.lower() != "utf-8":
                raise MultipartError(f"unsupported charset in parameter {name}")
            text = unquote(encoded, encoding="utf-8", errors="replace")
        if key in parts:
            raise MultipartError(f"parameter {key!r} appears twice")
        parts[key] = text
        i = skip_ows(i)
    return kind.lower(), parts


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type value.

    Raises:
        MultipartError: another media type (``status`` 415), or no valid
            boundary parameter (400).
    """
    media, _, rest = content_type.partition(";")
    media = media.strip().lower()
    if media != "multipart/form-data":
        wrong = MultipartError(
            f"the body must be multipart/form-data, not {media or 'untyped'}"
        )
        wrong.status = 415
        raise wrong
    _kind, params = parse_header_params("x;" + rest)
    raw = params.get("boundary", "").encode("latin-1", errors="replace")
    if not 1 <= len(raw) <= 70 or raw.endswith(b" ") or not set(raw) <= _BCHARS:
        raise MultipartError("multipart/form-data needs a valid boundary parameter")
    return raw


class MultipartParser:
    """Parses one ``multipart/form-data`` body, fed in pieces.

    Args:
        boundary: The boundary from the Content-Type (:func:`boundary_of`).
        max_header_size: Largest header block of one part, in bytes (16 KiB
            by default; browsers send well under 1 KiB).

    Example::

        parser = MultipartParser(boundary)
        for piece in body_pieces:
            for event in parser.feed(piece):
                ...
        parser.close()  # raises MultipartError if the body was cut short
    """

    def __init__(self, boundary: bytes, *, max_header_size: int = 16384) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._keep = len(self._delimiter) - 1
        self._max_header_size = max_header_size
        # the first delimiter has no CRLF before it when there is no
        # preamble: start as if a CRLF had been received
        self._buffer = b"\r\n"
        self._state = _PREAMBLE

    @property
    def done(self) -> bool:
        """Whether the closing delimiter has been seen."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[Event]:
        """Take the next piece of the body; return the events it completes.

        Raises:
            MultipartError: the body is malformed (the parser is then unusable).
        """
        if self._state == _DONE:
            return []  # the epilogue: ignored
        buffer = self._buffer + data if self._buffer else data
        events: list[Event] = []
        while True:
            state = self._state
            if state == _BODY:
                at = buffer.find(self._delimiter)
                if at < 0:
                    cut = len(buffer) - self._keep
                    if cut > 0:
                        events.append(PartData(buffer[:cut]))
                        buffer = buffer[cut:]
                    break
                if at:
                    events.append(PartData(buffer[:at]))
                events.append(PartEnd())
                buffer = buffer[at + len(self._delimiter) :]
                self._state = _BOUNDARY_LINE
            elif state == _PREAMBLE:
                at = buffer.find(self._delimiter)
                if at < 0:
                    buffer = buffer[-self._keep :]  # the preamble is dropped
                    break
                buffer = buffer[at + len(self._delimiter) :]
                self._state = _BOUNDARY_LINE
            elif state == _BOUNDARY_LINE:
                if len(buffer) < 2:
                    break
                if buffer.startswith(b"--"):
                    events.append(Done())
                    self._state = _DONE
                    buffer = b""
                    break
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > _PADDING_LIMIT or buffer.strip(b" \t"):
                        raise MultipartError("malformed boundary line")
                    break
                if buffer[:end].strip(b" \t"):
                    raise MultipartError("malformed boundary line")
                buffer = buffer[end + 2 :]
                self._state = _HEADERS
            else:  # _HEADERS
                if buffer.startswith(b"\r\n"):
                    block, buffer = b"", buffer[2:]
                else:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buffer) > self._max_header_size:
                            raise MultipartError(
                                f"part headers over {self._max_header_size} bytes"
                            )
                        break
                    if end > self._max_header_size:
                        raise MultipartError(
                            f"part headers over {self._max_header_size} bytes"
                        )
                    block, buffer = buffer[:end], buffer[end + 4 :]
                events.append(_part_start(block))
                self._state = _BODY
        self._buffer = buffer
        return events

    def close(self) -> None:
        """The body has ended.

        Raises:
            MultipartError: it ended before the closing delimiter.
        """
        if self._state != _DONE:
            raise MultipartError("the body ended before the closing boundary")


def _part_start(block: bytes) -> PartStart:
    headers: list[tuple[str, str]] = []
    for line in block.split(b"\r\n") if block else ():
        if line[:1] in (b" ", b"\t"):
            raise MultipartError("obsolete header line folding in a part")
        raw_name, colon, value = line.partition(b":")
        if not colon or not raw_name or not set(raw_name) <= _TCHARS:
            raise MultipartError("malformed part header line")
        text = value.strip(b" \t").decode("utf-8", errors="replace")
        if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in text):
            raise MultipartError("control character in a part header")
        headers.append((raw_name.decode("ascii").lower(), text))
    dispositions = [v for k, v in headers if k == "content-disposition"]
    if len(dispositions) != 1:
        raise MultipartError("a part needs exactly one Content-Disposition header")
    kind, params = parse_header_params(dispositions[0])
    if kind != "form-data":
        raise MultipartError("a part's Content-Disposition must be form-data")
    name = params.get("name*", params.get("name"))
    if name is None:
        raise MultipartError("a part without a name")
    filename = params.get("filename*", params.get("filename"))
    types = [v for k, v in headers if k == "content-type"]
    if len(types) > 1:
        raise MultipartError("a part with two Content-Type headers")
    return PartStart(
        name=name,
        filename=filename,
        content_type=types[0] if types else None,
        headers=tuple(headers),
    )
