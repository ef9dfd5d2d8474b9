"""Where each key of a TOML text is: a light line scan for error messages.

:mod:`tomllib` gives line numbers for syntax errors only. A value that is
valid TOML but wrong for wsplugin (``max_queue = 0``) is pointed at by
looking its key up in a :class:`KeyLines` of the same text, so that every
error of ``twistd ws --config`` names its line (:mod:`wsplugin._configfile`).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["KEY_LINE", "KeyLines", "key_parts"]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'[^']*'"
_KEY = rf"(?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*"
_ARRAY_HEADER = re.compile(rf"\[\[\s*({_KEY})\s*\]\]")
_TABLE_HEADER = re.compile(rf"\[\s*({_KEY})\s*\]")
KEY_LINE = re.compile(rf"({_KEY})\s*=")
_PART = re.compile(rf"{_BARE}|{_QUOTED}")


def key_parts(key: str) -> tuple[str, ...]:
    """A (possibly dotted, possibly quoted) TOML key as its parts."""
    out = []
    for part in _PART.findall(key):
        if part[0] in "\"'":
            part = part[1:-1]
        out.append(part)
    return tuple(out)


class KeyLines:
    """Which line each key of a TOML text is on, found by a light scan.

    tomllib gives line numbers for syntax errors only; a value that is
    valid TOML but wrong for wsplugin is pointed at by looking the key up
    here. Keys are tuples of table names, array indexes and key names:
    ``("route", 1, "auth", "realm")``. The scan follows table headers,
    arrays of tables and dotted keys, and skips multi-line strings; a key
    inside an inline table is found at its table's line.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        self.repeated: list[tuple[tuple[Any, ...], int]] = []
        counts: dict[tuple[Any, ...], int] = {}
        prefix: tuple[Any, ...] = ()
        closing: str | None = None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if closing is not None:
                if line.count(closing) % 2:
                    closing = None
                continue
            if not line or line.startswith("#"):
                continue
            header = _ARRAY_HEADER.match(line)
            if header:
                parts = key_parts(header.group(1))
                path = (*self._resolve(parts[:-1], counts), parts[-1])
                counts[path] = counts.get(path, 0) + 1
                prefix = (*path, counts[path] - 1)
                self._record(prefix, number)
                continue
            header = _TABLE_HEADER.match(line)
            if header:
                prefix = self._resolve(key_parts(header.group(1)), counts)
                self._record(prefix, number)
                continue
            key = KEY_LINE.match(line)
            if key:
                path = (*prefix, *key_parts(key.group(1)))
                if path in self.lines:
                    self.repeated.append((path, number))
                self._record(path, number)
                rest = line[key.end() :]
                for quotes in ('"""', "'''"):
                    if rest.count(quotes) % 2:
                        closing = quotes
                        break

    @staticmethod
    def _resolve(parts: tuple[str, ...], counts: dict[tuple[Any, ...], int]) -> tuple:
        path: tuple[Any, ...] = ()
        for part in parts:
            path = (*path, part)
            if path in counts:  # an array of tables: its last element
                path = (*path, counts[path] - 1)
        return path

    def _record(self, path: tuple[Any, ...], number: int) -> None:
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], number)

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The line of ``path``, else of its nearest enclosing table."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None
