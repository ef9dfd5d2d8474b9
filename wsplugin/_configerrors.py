"""The error of a config file that cannot be used: one line naming the file,
the line and the key (``ws.toml:12: max_queue: must be an integer >= 1,
not 0``), never a traceback."""

from __future__ import annotations

import re

from wsplugin._tomllines import KEY_LINE, KeyLines, key_parts
from wsplugin.errors import ConfigError

__all__ = ["ConfigFileError", "syntax_error"]

_SYNTAX_AT = re.compile(r"^(.*?) \(at (?:line (\d+), column (\d+)|end of document)\)$")


class ConfigFileError(ConfigError):
    """A config file that cannot be used; ``str()`` is one line naming the
    file, the line (and column, for TOML syntax errors) and the key.

    Attributes:
        path: The file, as it was named on the command line.
        line: 1-based line number, or None when no line can be pointed at.
        column: 1-based column of a syntax error, else None.
        key: The key at fault as the file spells it (``max_queue``,
            ``tls.certificate``, ``route "/chat": auth.realm``), or None.
        problem: What is wrong, without the location.
    """

    def __init__(
        self,
        path: str,
        line: int | None,
        key: str | None,
        problem: str,
        column: int | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.key = key
        self.problem = problem
        where = path
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def syntax_error(path: str, text: str, message: str) -> ConfigFileError:
    """The error for tomllib's ``message`` about ``text``: its line and
    column, and the key on that line (or the repeated key, for TOML's
    "cannot overwrite a value")."""
    lines = KeyLines(text)
    found = _SYNTAX_AT.match(message)
    problem = found.group(1) if found else message
    problem = problem[:1].lower() + problem[1:]
    if problem.startswith("cannot overwrite a value") and lines.repeated:
        where, number = lines.repeated[0]
        key = ".".join(str(p) for p in where)
        return ConfigFileError(path, number, key, "given twice (TOML syntax)")
    line = column = None
    if found and found.group(2):
        line, column = int(found.group(2)), int(found.group(3))
    elif found:
        line = max(1, len(text.splitlines()))
    key = None
    if line is not None:
        source = text.splitlines()[line - 1].strip() if text.splitlines() else ""
        named = KEY_LINE.match(source)
        key = ".".join(key_parts(named.group(1))) if named else None
    return ConfigFileError(path, line, key, f"{problem} (TOML syntax)", column)
