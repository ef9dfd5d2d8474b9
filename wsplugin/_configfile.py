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

import re
import sys
from pathlib import Path
from typing import Any

from wsplugin._configerrors import ConfigFileError, syntax_error
from wsplugin._configkeys import Key, given_options, option_keys, suggest, type_problem
from wsplugin._configroutes import AUTH_KEYS, ROUTE_KEYS, RouteSpec, RouteTables
from wsplugin._tomllines import KeyLines
from wsplugin.apps import AppNotFound, load_app
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
    "tomllib",
]

_FLAG = re.compile(r"--([a-z0-9][a-z0-9-]*)")
_REPHRASE = {"port": ("bad --port ", "--port: bad endpoint ")}
"""Option messages that read wrong with a key in place of the flag."""


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
        self.lines = KeyLines(text)
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
            raise syntax_error(path, text, str(e)) from None
        return cls(path, text, data, option_keys(options))

    # -- errors --------------------------------------------------------------

    def error(
        self, where: tuple[Any, ...], key: str | None, problem: str
    ) -> ConfigFileError:
        """An error about the key at ``where`` (a path of
        :class:`~wsplugin._tomllines.KeyLines`)."""
        return ConfigFileError(self.path, self.lines.line_of(where), key, problem)

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
                hint = suggest(name, ["route", "tls"] if table else self.keys)
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
        problem = type_problem(key.kind, value)
        if problem is not None:
            raise self.error(key.location, key.name, problem)
        if key.flag in given:
            return
        if key.is_file and isinstance(value, str):
            value = self.resolve(value)
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
                    self._call(key, method, self.resolve(item) if key.is_file else item)
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

    def resolve(self, value: str) -> str:
        """A file name from the file: relative ones are taken from its directory."""
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
        checked (``options.config``, ``options.auth``, ``options.handler``);
        see :class:`~wsplugin._configroutes.RouteTables`.

        Raises:
            ConfigFileError: a missing or bad key, a server-only option, an
                authenticator that cannot be built, or routes that clash.
        """
        return RouteTables(self).routes(options)
