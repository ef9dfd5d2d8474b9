"""The ``twistd ws --config FILE`` file: every command-line option, plus routes.

The file is TOML, read with the standard library's :mod:`tomllib` (the
``tomli`` backport on Python 3.10). Its keys are derived from the options of
``twistd ws`` themselves (:func:`option_keys`), so a new flag is a new key
without a second list to keep in step:

* a flag is the key of the same name with ``_`` for ``-``
  (``--max-message-size`` is ``max_message_size``);
* a ``--no-...`` flag is the positive key (``--no-utf8-validation`` is
  ``utf8_validation = false``);
* a repeatable flag is a list under its plural (``--port`` is ``ports``,
  ``--allowed-origin`` is ``allowed_origins``, ``--public-path`` is
  ``public_paths``);
* the ``--tls-*`` flags are the keys of a ``[tls]`` table named as
  :class:`~wsplugin.TLSOptions` names them (``--tls-cert`` is
  ``tls.certificate``, ``--tls-alpn`` the list ``tls.alpn``).

``[[route]]`` tables add WebSocket routes (``path``, ``host``, ``handler``,
``auth`` and any :class:`~wsplugin.ServerConfig` option a route may
override). Relative file paths are taken from the file's directory, so a
file works wherever ``twistd`` is started.

Flags given on the command line win over the file, even a flag given with
its default value: :func:`given_options` records which were given.

Every error names the file, the line and the key, in one line
(``ws.toml:12: max_queue: must be an integer >= 1, not 0``), and is raised as
:class:`ConfigFileError`; ``twistd ws`` turns it into a usage error (exit
status 1, no traceback). docs/config.md describes the format for users.
"""

from __future__ import annotations

import dataclasses
import difflib
import getopt
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from wsplugin.apps import AppNotFound, load_app
from wsplugin.config import SERVER_ONLY, ServerConfig
from wsplugin.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same parser, backported (a dependency on 3.10)
    import tomli as tomllib

__all__ = [
    "AUTH_KEYS",
    "ROUTE_KEYS",
    "ConfigFile",
    "ConfigFileError",
    "Key",
    "RouteSpec",
    "given_options",
    "option_keys",
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

ROUTE_KEYS: tuple[str, ...] = (
    "path",
    "host",
    "handler",
    "auth",
    "default_host",
    "default_path",
)
"""The keys of a ``[[route]]`` table besides the :class:`ServerConfig`
options a route may override (every option not in :data:`SERVER_ONLY`)."""

AUTH_KEYS: dict[str, tuple[str, ...]] = {
    "htpasswd": ("realm", "allow_mixed_hashes"),
    "api_keys": ("header",),
    "token": ("param",),
    "authenticator": (),
}
"""The kinds of a route's ``auth`` table (exactly one per table) and the
keys each kind takes besides its own."""

_log = Logger()

_FIELDS = {f.name: str(f.type) for f in dataclasses.fields(ServerConfig)}
_ROUTE_OPTIONS = tuple(name for name in _FIELDS if name not in SERVER_ONLY)


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
    kind = _FIELDS.get(name)
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


# -- locating keys ---------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'[^']*'"
_KEY = rf"(?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*"
_ARRAY_HEADER = re.compile(rf"\[\[\s*({_KEY})\s*\]\]")
_TABLE_HEADER = re.compile(rf"\[\s*({_KEY})\s*\]")
_KEY_LINE = re.compile(rf"({_KEY})\s*=")
_PART = re.compile(rf"{_BARE}|{_QUOTED}")


def _parts(key: str) -> tuple[str, ...]:
    out = []
    for part in _PART.findall(key):
        if part[0] in "\"'":
            part = part[1:-1]
        out.append(part)
    return tuple(out)


class _Lines:
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
                parts = _parts(header.group(1))
                path = (*self._resolve(parts[:-1], counts), parts[-1])
                counts[path] = counts.get(path, 0) + 1
                prefix = (*path, counts[path] - 1)
                self._record(prefix, number)
                continue
            header = _TABLE_HEADER.match(line)
            if header:
                prefix = self._resolve(_parts(header.group(1)), counts)
                self._record(prefix, number)
                continue
            key = _KEY_LINE.match(line)
            if key:
                path = (*prefix, *_parts(key.group(1)))
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


# -- values ----------------------------------------------------------------


def _what(value: Any) -> str:
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


def _type_problem(kind: str, value: Any) -> str | None:
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
                    return (
                        f"must be a list of non-empty strings; it holds {_what(item)}"
                    )
            return None
        ok = False
        want = 'a list of strings, e.g. ["a", "b"]'
    return None if ok else f"must be {want}, not {_what(value)}"


def _suggest(name: str, known: Iterable[str]) -> str:
    """A likely meant key: one that ``name`` abbreviates, or a close one."""
    known = list(known)
    longer = sorted((k for k in known if k.startswith(name)), key=len)
    close = longer or difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]}?" if close else ""


_SYNTAX_AT = re.compile(r"^(.*?) \(at (?:line (\d+), column (\d+)|end of document)\)$")
_FLAG = re.compile(r"--([a-z0-9][a-z0-9-]*)")
_REPHRASE = {"port": ("bad --port ", "--port: bad endpoint ")}
"""Option messages that read wrong with a key in place of the flag."""


@dataclass(frozen=True)
class RouteSpec:
    """A ``[[route]]`` of the file, checked and ready to register.

    Attributes:
        host: Host name, or ``"*"`` for every host.
        path: Exact request path.
        handler: The handler object.
        auth: The authenticator, or None for a public route.
        default_host: This host serves requests for unknown hosts.
        default_path: This route serves unknown paths on its host.
        overrides: :class:`ServerConfig` options for this route.
        line: The line of the route's ``[[route]]`` header.
        source: Where the route is written (``ws.toml:12``), for the log.
    """

    host: str
    path: str
    handler: Any
    auth: Any
    default_host: bool
    default_path: bool
    overrides: Mapping[str, Any] = field(default_factory=dict)
    line: int | None = None
    source: str = ""

    def register(self, server: Any) -> Any:
        """Register this route on ``server`` (a WebSocketServer), and log it."""
        _log.info(
            "route {host} {path}: {handler}{auth} ({source})",
            host=self.host,
            path=self.path,
            handler=type(self.handler).__name__,
            auth=f", auth {type(self.auth).__name__}" if self.auth else "",
            source=self.source,
        )
        return server.register_handler(
            self.host,
            self.path,
            self.handler,
            default_host=self.default_host,
            default_path=self.default_path,
            auth=self.auth,
            **self.overrides,
        )


class ConfigFile:
    """A parsed config file and where each of its keys is.

    Use :meth:`load`, then :meth:`apply` before the options are checked and
    :meth:`routes` after; :meth:`explain` rewrites an option error in the
    file's terms.
    """

    def __init__(
        self, path: str, text: str, data: dict[str, Any], keys: dict[str, Key]
    ) -> None:
        self.path = path
        self.directory = Path(path).resolve().parent
        self.data = data
        self.keys = keys
        self.lines = _Lines(text)
        self.applied: set[str] = set()  # flags whose value came from the file
        self.applied_names: set[str] = set()  # ... and their keys

    @classmethod
    def load(cls, path: str, options: Any) -> ConfigFile:
        """Read and parse ``path`` (keys derived from ``options``).

        Raises:
            ConfigFileError: the file cannot be read, is not UTF-8, or is
                not valid TOML.
        """
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise ConfigFileError(
                path, None, None, f"cannot read: {e.strerror}"
            ) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise ConfigFileError(path, line, None, "not UTF-8 text") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise cls._syntax_error(path, text, str(e)) from None
        return cls(path, text, data, option_keys(options))

    @staticmethod
    def _syntax_error(path: str, text: str, message: str) -> ConfigFileError:
        lines = _Lines(text)
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
            named = _KEY_LINE.match(source)
            key = ".".join(_parts(named.group(1))) if named else None
        return ConfigFileError(path, line, key, f"{problem} (TOML syntax)", column)

    # -- errors --------------------------------------------------------------

    def error(
        self, where: tuple[Any, ...], key: str | None, problem: str
    ) -> ConfigFileError:
        """An error about the key at ``where`` (see :class:`_Lines`)."""
        return ConfigFileError(self.path, self.lines.line_of(where), key, problem)

    @staticmethod
    def _problem(message: str, name: str) -> str:
        """A ServerConfig message without its leading option name."""
        for prefix in (name + ": ", name + " "):
            if message.startswith(prefix):
                return message[len(prefix) :]
        return message

    # -- the top level -------------------------------------------------------

    def apply(self, options: Any, given: set[str]) -> None:
        """Put the file's values into ``options`` for every option not
        ``given`` on the command line.

        Raises:
            ConfigFileError: an unknown key or table, a value of the wrong
                type, or a value an option method refuses.
        """
        values = dict(self.data)
        tls = values.pop("tls", None)
        routes = values.pop("route", None)
        flat = list(values.items())
        if tls is not None:
            if not isinstance(tls, dict):
                raise self.error(("tls",), "tls", "must be a table: write [tls]")
            flat += [(f"tls.{k}", v) for k, v in tls.items()]
        for name, value in flat:
            key = self.keys.get(name)
            if name == "config":
                raise self.error((name,), name, "a config file cannot name another one")
            if key is None:
                table = isinstance(value, dict)
                what = "table" if table else "key"
                hint = _suggest(name, ["route", "tls"] if table else self.keys)
                raise self.error(tuple(name.split(".")), name, f"unknown {what}{hint}")
            self._apply_one(options, key, value, given)
        if routes is not None:
            if not isinstance(routes, list) or not all(
                isinstance(r, dict) for r in routes
            ):
                raise self.error(
                    ("route",), "route", "must be an array of tables: write [[route]]"
                )
            if "app" not in given and "app" not in self.data:
                options["app"] = None  # the routes alone serve; others get 404
                if options["path"] is not None:
                    where = ("path",) if "path" in self.applied_names else ("route",)
                    raise self.error(
                        where,
                        "path",
                        "is where the app serves, but there is no app (a file "
                        "with routes has none unless it sets app); set app, or "
                        "leave path out",
                    )

    def _apply_one(self, options: Any, key: Key, value: Any, given: set[str]) -> None:
        problem = _type_problem(key.kind, value)
        if problem is not None:
            raise self.error(key.location, key.name, problem)
        if key.flag in given:
            return
        if key.is_file and isinstance(value, str):
            value = self._file(value)
        if key.kind in ("flag", "negated"):
            options[key.dest] = int(value == (key.kind == "flag"))
        elif key.kind == "float":
            options[key.dest] = float(value)
        elif key.kind in ("int", "str"):
            options[key.dest] = value
        elif key.kind == "value":
            coerce = next(
                e[4] for e in options.optParameters if e[0] == key.flag and len(e) > 4
            )
            options[key.dest] = self._call(key, coerce, str(value))
        elif key.kind == "csv":
            options[key.dest] = ",".join(value) if value else "none"
        else:
            method = getattr(options, "opt_" + key.flag.replace("-", "_"))
            if key.kind == "switch":
                if value:
                    self._call(key, method)
            elif key.kind == "call":
                self._call(key, method, value)
            else:  # list
                if not value and key.name == "ports":
                    raise self.error(
                        key.location,
                        key.name,
                        "lists no endpoint; leave the key out for tcp:8888",
                    )
                if not value and key.name == "per_ip_exempt":
                    value = ["none"]
                for item in value:
                    self._call(key, method, self._file(item) if key.is_file else item)
        if key.name == "app":
            try:
                options.handler = load_app(value)
            except AppNotFound as e:
                raise self.error(key.location, key.name, str(e)) from None
        self.applied.add(key.flag)
        self.applied_names.add(key.name)

    def _call(self, key: Key, function: Any, *args: Any) -> Any:
        from twisted.python.usage import UsageError

        try:
            return function(*args)
        except (UsageError, ConfigError, ValueError) as e:
            raise self.error(
                key.location, key.name, self._in_keys(str(e), set(), lead=key.flag)
            ) from None

    def _file(self, value: str) -> str:
        return str(self.directory / value) if value else value

    # -- errors from the option checks --------------------------------------

    def _display(self, flag: str, given: set[str]) -> str | None:
        key = next((k for k in self.keys.values() if k.flag == flag), None)
        if key is None or flag in given:
            return None
        return key.name

    def _in_keys(self, message: str, given: set[str], lead: str | None = None) -> str:
        """``message`` with the flags the file set written as its keys, and
        without a leading mention of ``lead``."""
        if lead is not None:
            message = re.sub(rf"^--{re.escape(lead)}(?::\s*|\s+)", "", message)
        return _FLAG.sub(
            lambda m: self._display(m.group(1), given) or m.group(0), message
        )

    def explain(self, message: str, given: set[str]) -> str:
        """An option error in the file's terms when it is about a value the
        file gave: ``--max-queue must be ...`` becomes ``ws.toml:4:
        max_queue: must be ...``. Errors about command-line values are
        returned as they are."""
        for flag, words in _REPHRASE.items():
            if flag in self.applied:
                message = message.replace(*words)
        for found in _FLAG.finditer(message):
            flag = found.group(1)
            if flag in self.applied:
                key = next(k for k in self.keys.values() if k.flag == flag)
                problem = self._in_keys(message, given, lead=flag)
                return str(self.error(key.location, key.name, problem))
        return message

    # -- routes --------------------------------------------------------------

    def routes(self, options: Any) -> list[RouteSpec]:
        """The ``[[route]]`` tables, checked against the options already
        checked (``options.config``, ``options.auth``, ``options.handler``).

        A route without ``auth`` gets ``options.auth`` (``auth_file``):
        routes are guarded like the app unless one says ``auth = false``.

        Raises:
            ConfigFileError: a missing or bad key, a server-only option, an
                authenticator that cannot be built, or routes that clash.
        """
        if "allowed_origins" in self.applied_names and not self.data["allowed_origins"]:
            # a flag cannot say "no origin at all"; the file can
            options.config = options.config.replace(allowed_origins=())
        specs = []
        for index, table in enumerate(self.data.get("route", [])):
            specs.append(self._route(options, index, table))
        self._check_default_hosts(options, specs)
        self._try_registering(options, specs)
        return specs

    def _route(self, options: Any, index: int, table: dict[str, Any]) -> RouteSpec:
        where = ("route", index)
        path = table.get("path")
        label = f'route "{path}"' if isinstance(path, str) else f"route {index + 1}"

        def fail(name: str, problem: str) -> ConfigFileError:
            location = (*where, *name.split(".")) if name else where
            return self.error(location, f"{label}: {name}" if name else label, problem)

        for name in table:
            if name in ROUTE_KEYS or name in _ROUTE_OPTIONS:
                continue
            if name in SERVER_ONLY:
                raise fail(
                    name,
                    "applies to the whole server (it acts before a route is "
                    "known); set it at the top level of the file",
                )
            raise fail(
                name, "unknown key" + _suggest(name, [*ROUTE_KEYS, *_ROUTE_OPTIONS])
            )
        for name in ("path", "handler"):
            if name not in table:
                raise fail(
                    "", f"needs a {name} (every [[route]] has a path and a handler)"
                )
        kinds = {"path": "str", "host": "str", "handler": "str"}
        kinds.update(default_host="bool", default_path="bool")
        for name, kind in kinds.items():
            if name in table:
                problem = _type_problem(kind, table[name])
                if problem is not None:
                    raise fail(name, problem)
        if not table["path"].startswith("/"):
            raise fail("path", f"must start with '/', not {table['path']!r}")
        host = table.get("host", "*")
        if not host or host == "*":
            if "host" in table:
                raise fail("host", "must be a host name; leave it out for every host")
            if "default_host" in table:
                raise fail(
                    "default_host",
                    "needs a host (a route without one serves every host already)",
                )
        try:
            handler = load_app(table["handler"])
        except AppNotFound as e:
            raise fail("handler", str(e)) from None
        overrides: dict[str, Any] = {}
        for name in _ROUTE_OPTIONS:
            if name not in table:
                continue
            value = table[name]
            kind = _FIELDS[name]
            if kind == "bool":
                problem = _type_problem("bool", value)
            elif kind in ("int", "float", "str"):
                problem = _type_problem(kind, value)
            else:
                problem = _type_problem("list", value)
            if problem is not None:
                raise fail(name, problem)
            overrides[name] = tuple(value) if isinstance(value, list) else value
        try:
            options.config.for_route(**overrides)
        except ConfigError as e:
            lead = re.match(r"\w+", str(e))
            name = lead.group(0) if lead and lead.group(0) in overrides else ""
            raise fail(name, self._problem(str(e), name) if name else str(e)) from None
        auth = options.auth
        if "auth" in table:
            auth = self._auth(options, table["auth"], where, fail)
        return RouteSpec(
            host=host,
            path=table["path"],
            handler=handler,
            auth=auth,
            default_host=table.get("default_host", host == "*"),
            default_path=table.get("default_path", False),
            overrides=overrides,
            line=self.lines.line_of(where),
            source=f"{self.path}:{self.lines.line_of(where)}",
        )

    def _auth(self, options: Any, value: Any, where: tuple[Any, ...], fail: Any) -> Any:
        if value is False:
            return None
        if not isinstance(value, dict):
            raise fail(
                "auth",
                'must be a table such as { htpasswd = "users.htpasswd" }, '
                f"or false for a public route; not {_what(value)}",
            )
        kinds = [k for k in AUTH_KEYS if k in value]
        if len(kinds) != 1:
            raise fail(
                "auth",
                f"needs exactly one of {', '.join(AUTH_KEYS)}"
                + (f"; it has {', '.join(kinds)}" if kinds else ""),
            )
        kind = kinds[0]
        for name in value:
            if name != kind and name not in AUTH_KEYS[kind]:
                extra = _suggest(name, [kind, *AUTH_KEYS[kind]])
                raise fail(f"auth.{name}", f"unknown key for {kind} auth{extra}")
        from wsplugin.auth import ApiKeyAuth, BasicAuth, HtpasswdChecker, QueryTokenAuth

        def text(name: str, default: str) -> str:
            got = value.get(name, default)
            problem = _type_problem("str", got)
            if problem is not None or not got:
                raise fail(f"auth.{name}", problem or "must not be empty")
            return str(got)

        try:
            if kind == "htpasswd":
                mixed = value.get(
                    "allow_mixed_hashes", bool(options["allow-mixed-hashes"])
                )
                problem = _type_problem("bool", mixed)
                if problem is not None:
                    raise fail("auth.allow_mixed_hashes", problem)
                checker = HtpasswdChecker(
                    self._file(text("htpasswd", "")), allow_mixed=mixed
                )
                realm = text("realm", options["realm"])
                try:
                    return BasicAuth(checker, realm)
                except ConfigError as e:
                    raise fail("auth.realm", str(e)) from None
            if kind == "api_keys":
                keys = value["api_keys"]
                if (
                    not isinstance(keys, dict)
                    or not keys
                    or not all(
                        isinstance(k, str) and k and isinstance(v, str) and v
                        for k, v in keys.items()
                    )
                ):
                    raise fail(
                        "auth.api_keys",
                        "must be a table of keys and identities, e.g. "
                        '{ "a-long-random-key" = "alice" }',
                    )
                return ApiKeyAuth(dict(keys), text("header", "X-API-Key"))
            target = load_app(text(kind, ""))
            if kind == "token":
                if not callable(target):
                    raise fail("auth.token", f"{value['token']} is not callable")
                return QueryTokenAuth(target, text("param", "token"))
            if not callable(getattr(target, "authenticate", None)):
                raise fail(
                    "auth.authenticator",
                    f"{value['authenticator']} has no authenticate(conn) method",
                )
            return target
        except AppNotFound as e:
            raise fail(f"auth.{kind}", str(e)) from None
        except ConfigError as e:
            if isinstance(e, ConfigFileError):
                raise
            raise fail(f"auth.{kind}", str(e)) from None

    def _check_default_hosts(self, options: Any, specs: list[RouteSpec]) -> None:
        """One default host at most: the app and the routes without ``host``
        serve every host (they are the default host ``*``); a route may make
        its own host the default instead, if nothing else serves every host."""
        default: str | None = "*" if options.handler is not None else None
        by: int | None = None  # the route that made ``default`` the default
        for index, spec in enumerate(specs):
            if not spec.default_host or default in (None, spec.host):
                if spec.default_host:
                    default, by = spec.host, index
                continue
            if spec.host == "*":
                assert by is not None  # only a route names another default
                problem = (
                    "a route without a host serves every host, but route "
                    f'"{specs[by].path}" (line {specs[by].line}) makes '
                    f"{default!r} the default host; give this route a host, or "
                    "drop default_host there"
                )
                raise self.error(("route", index), f'route "{spec.path}"', problem)
            if by is None:
                other = "the app serves every other host already"
            elif default == "*":
                other = (
                    f'route "{specs[by].path}" (line {specs[by].line}) has no '
                    "host, so it serves every other host already"
                )
            else:
                other = f'route "{specs[by].path}" (line {specs[by].line}) makes '
                other += f"{default!r} the default host already"
            location: tuple[Any, ...] = ("route", index, "default_host")
            raise self.error(
                location,
                f'route "{spec.path}": default_host',
                f"only one host can be the default; {other}",
            )

    def _try_registering(self, options: Any, specs: list[RouteSpec]) -> None:
        """Register every route on a server that never starts, so what
        ``register_handler`` refuses is reported now, with its line,
        instead of as a traceback when twistd builds the service."""
        from wsplugin.server import WebSocketServer

        probe = WebSocketServer(
            options.handler, path=options["path"], endpoints=[], config=options.config
        )
        for index, spec in enumerate(specs):
            try:
                probe.register_handler(
                    spec.host,
                    spec.path,
                    spec.handler,
                    default_host=spec.default_host,
                    default_path=spec.default_path,
                    **spec.overrides,
                )  # no auth: nothing to check, and no warning twice
            except (ConfigError, TypeError, ValueError) as e:
                raise self.error(
                    ("route", index), f'route "{spec.path}"', str(e)
                ) from None
