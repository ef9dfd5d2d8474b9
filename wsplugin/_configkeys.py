"""The keys of ``twistd ws --config``'s file, derived from the options.

A flag is the key of the same name (:func:`option_keys`); which flags the
command line gave is found by :func:`given_options` (they win over the
file). The value checks (:func:`type_problem`, :func:`suggest`) are shared
by the top level (:mod:`wsplugin._configfile`) and the ``[[route]]`` tables
(:mod:`wsplugin._configroutes`).
"""

from __future__ import annotations

import dataclasses
import difflib
import getopt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from wsplugin.config import ServerConfig

__all__ = [
    "FIELD_KINDS",
    "FILE_KEYS",
    "KIND_OVERRIDES",
    "NOT_KEYS",
    "TLS_NAMES",
    "Key",
    "describe_value",
    "given_options",
    "option_keys",
    "suggest",
    "type_problem",
]

TLS_NAMES = {"cert": "certificate"}
"""``--tls-X`` is ``tls.X`` (``-`` as ``_``) except where TLSOptions says
otherwise: the certificate is ``certificate`` there, ``cert`` on the command
line."""

FILE_KEYS = frozenset(
    {"static", "auth_file", "tls.certificate", "tls.key", "tls.chain", "tls.client_ca"}
)
"""Keys that name files or directories: relative ones are taken from the
config file's directory."""

NOT_KEYS = frozenset({"help", "version", "config"})
"""Options that have no key: they act at once, or name the file itself."""

KIND_OVERRIDES = {"tls.alpn": "csv"}
"""``--tls-alpn`` is comma-separated on the command line, a list in a file."""
FIELD_KINDS = {f.name: str(f.type) for f in dataclasses.fields(ServerConfig)}
"""Each :class:`ServerConfig` option's type, as written in its annotation."""


@dataclass(frozen=True)
class Key:
    """One ``twistd ws`` option as a key of the file.

    Attributes:
        name: The key (``max_queue``; ``tls.certificate`` in the ``[tls]``
            table).
        flag: The long option it stands for (``max-queue``, ``tls-cert``,
            ``no-utf8-validation``, ``port``).
        kind: How a value is checked and handed over: ``flag`` and
            ``negated`` (booleans), ``int``, ``float``, ``str``, ``value``
            (passed through the option's own coercer), ``list`` (each item
            given to a repeatable option), ``csv`` (a list joined with
            commas), ``call`` (a string given to an option method) or
            ``switch`` (an option method without argument, called on true).
        dest: The key the option's value is kept under in the parsed options.
        is_file: The value names a file or directory.
    """

    name: str
    flag: str
    kind: str
    dest: str
    is_file: bool = False

    @property
    def location(self) -> tuple[str, ...]:
        """Where the key sits in the file, as TOML table names and key."""
        return tuple(self.name.split("."))


def _name(flag: str) -> str:
    if flag.startswith("tls-"):
        rest = flag[4:]
        return "tls." + TLS_NAMES.get(rest, rest.replace("-", "_"))
    return flag.replace("-", "_")


def _kind_of_field(name: str) -> str | None:
    kind = FIELD_KINDS.get(name)
    return kind if kind in ("int", "float", "str") else None


def option_keys(options: Any) -> dict[str, Key]:
    """Every option of ``options`` (a ``twistd ws`` Options instance) as a
    file key, in the order ``--help`` lists them.

    Derived from the options themselves (``optFlags``, ``optParameters``,
    ``opt_*`` methods, seen through ``longOpt`` and ``synonyms``), so a flag
    added to ``twistd ws`` is a key of the file at once.
    """
    keys: dict[str, Key] = {}
    for entry in getattr(options, "optFlags", []):
        flag = entry[0]
        if flag in NOT_KEYS:
            continue
        if flag.startswith("no-"):
            keys[_name(flag[3:])] = Key(_name(flag[3:]), flag, "negated", flag)
        else:
            keys[_name(flag)] = Key(_name(flag), flag, "flag", flag)
    for entry in getattr(options, "optParameters", []):
        flag, default = entry[0], entry[2]
        coerce = entry[4] if len(entry) > 4 else None
        if flag in NOT_KEYS:
            continue
        name = _name(flag)
        kind = KIND_OVERRIDES.get(name) or _kind_of_field(name)
        if kind is None:
            if coerce in (int, float):
                kind = coerce.__name__
            elif coerce in (None, str) and (
                default is None or isinstance(default, str)
            ):
                kind = "str"
            else:
                kind = "value"
        keys[name] = Key(name, flag, kind, flag, name in FILE_KEYS)
    seen = {k.flag for k in keys.values()}
    for long_opt in options.longOpt:
        takes_arg = long_opt.endswith("=")
        flag = options.synonyms.get(long_opt.rstrip("="), long_opt.rstrip("="))
        if flag in seen or flag in NOT_KEYS:
            continue
        seen.add(flag)
        name = _name(flag)
        if not takes_arg:
            keys[name] = Key(name, flag, "switch", flag)
            continue
        # a repeatable option keeps a list under its name or its plural
        for dest in (flag.replace("-", "_"), flag.replace("-", "_") + "s"):
            if isinstance(options.get(dest), list):
                keys[dest] = Key(dest, flag, "list", dest, dest in FILE_KEYS)
                break
        else:
            keys[name] = Key(name, flag, "call", flag, name in FILE_KEYS)
    return keys


def given_options(options: Any, argv: Sequence[str]) -> set[str]:
    """The long names of the options ``argv`` gives (``max-queue``,
    ``port``...), whatever their values: those win over the file.

    ``twisted.python.usage`` does not tell which options were given, so the
    arguments are read a first time with the same ``getopt`` call and
    tables (``shortOpt``, ``longOpt``, ``synonyms``). Arguments it cannot
    parse give an empty set; the real parse then reports them.
    """
    try:
        pairs, _ = getopt.getopt(list(argv), options.shortOpt, options.longOpt)
    except getopt.error:
        return set()
    given = set()
    for opt, _value in pairs:
        name = opt.lstrip("-")
        name = options.synonyms.get(name, options.synonyms.get(name.replace("-", "_")))
        if name is not None:
            given.add(name.replace("_", "-"))
    return given


# -- values ----------------------------------------------------------------


def describe_value(value: Any) -> str:
    """``value`` as an error message shows it, with its TOML type."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int):
        return f"{value} (an integer)"
    if isinstance(value, float):
        return f"{value} (a number)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"{value} (a date or time)"


def type_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` (as tomllib read it) cannot be a ``kind`` value, or None."""
    if kind in ("flag", "negated", "switch", "bool"):
        ok = isinstance(value, bool)
        want = "true or false"
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "an integer"
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "a number"
    elif kind in ("str", "call"):
        ok = isinstance(value, str)
        want = "a string"
    elif kind == "value":
        ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
        want = "a string or a number"
    else:  # list, csv
        if isinstance(value, list):
            for item in value:
                if not isinstance(item, str) or not item:
                    held = describe_value(item)
                    return f"must be a list of non-empty strings; it holds {held}"
            return None
        ok = False
        want = 'a list of strings, e.g. ["a", "b"]'
    return None if ok else f"must be {want}, not {describe_value(value)}"


def suggest(name: str, known: Iterable[str]) -> str:
    """A likely meant key: one that ``name`` abbreviates, or a close one."""
    known = list(known)
    longer = sorted((k for k in known if k.startswith(name)), key=len)
    close = longer or difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]}?" if close else ""
