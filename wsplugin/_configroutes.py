"""The ``[[route]]`` tables of ``twistd ws --config``'s file.

Each table is checked against the options already checked (the server's
config, its auth, its app) and becomes a :class:`RouteSpec`; the specs are
then registered on a server that never starts, so that what
``register_handler`` refuses is reported with the table's line too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from wsplugin._configerrors import ConfigFileError
from wsplugin._configkeys import FIELD_KINDS, describe_value, suggest, type_problem
from wsplugin.apps import AppNotFound, load_app
from wsplugin.config import SERVER_ONLY
from wsplugin.errors import ConfigError

if TYPE_CHECKING:
    from wsplugin._configfile import ConfigFile

__all__ = ["AUTH_KEYS", "ROUTE_KEYS", "ROUTE_OPTIONS", "RouteSpec", "RouteTables"]

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

ROUTE_OPTIONS = tuple(name for name in FIELD_KINDS if name not in SERVER_ONLY)
"""The :class:`ServerConfig` options a ``[[route]]`` table may set."""

_log = Logger(namespace="wsplugin._configfile")


def without_option_name(message: str, name: str) -> str:
    """A ServerConfig message without its leading option name."""
    for prefix in (name + ": ", name + " "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


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


class RouteTables:
    """Reads the ``[[route]]`` tables of a :class:`~wsplugin._configfile.ConfigFile`.

    Args:
        file: The parsed file (its ``data``, ``lines``, ``path``, and the
            keys it applied); errors are made by its ``error()``.
    """

    def __init__(self, file: ConfigFile) -> None:
        self.file = file

    def routes(self, options: Any) -> list[RouteSpec]:
        """The ``[[route]]`` tables, checked against the options already
        checked (``options.config``, ``options.auth``, ``options.handler``).

        A route without ``auth`` gets ``options.auth`` (``auth_file``):
        routes are guarded like the app unless one says ``auth = false``.

        Raises:
            ConfigFileError: a missing or bad key, a server-only option, an
                authenticator that cannot be built, or routes that clash.
        """
        if (
            "allowed_origins" in self.file.applied_names
            and not self.file.data["allowed_origins"]
        ):
            # a flag cannot say "no origin at all"; the file can
            options.config = options.config.replace(allowed_origins=())
        specs = []
        for index, table in enumerate(self.file.data.get("route", [])):
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
            return self.file.error(
                location, f"{label}: {name}" if name else label, problem
            )

        for name in table:
            if name in ROUTE_KEYS or name in ROUTE_OPTIONS:
                continue
            if name in SERVER_ONLY:
                raise fail(
                    name,
                    "applies to the whole server (it acts before a route is "
                    "known); set it at the top level of the file",
                )
            raise fail(
                name, "unknown key" + suggest(name, [*ROUTE_KEYS, *ROUTE_OPTIONS])
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
                problem = type_problem(kind, table[name])
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
        for name in ROUTE_OPTIONS:
            if name not in table:
                continue
            value = table[name]
            kind = FIELD_KINDS[name]
            if kind == "bool":
                problem = type_problem("bool", value)
            elif kind in ("int", "float", "str"):
                problem = type_problem(kind, value)
            else:
                problem = type_problem("list", value)
            if problem is not None:
                raise fail(name, problem)
            overrides[name] = tuple(value) if isinstance(value, list) else value
        try:
            options.config.for_route(**overrides)
        except ConfigError as e:
            lead = re.match(r"\w+", str(e))
            name = lead.group(0) if lead and lead.group(0) in overrides else ""
            raise fail(
                name, without_option_name(str(e), name) if name else str(e)
            ) from None
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
            line=self.file.lines.line_of(where),
            source=f"{self.file.path}:{self.file.lines.line_of(where)}",
        )

    def _auth(self, options: Any, value: Any, where: tuple[Any, ...], fail: Any) -> Any:
        if value is False:
            return None
        if not isinstance(value, dict):
            raise fail(
                "auth",
                'must be a table such as { htpasswd = "users.htpasswd" }, '
                f"or false for a public route; not {describe_value(value)}",
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
                extra = suggest(name, [kind, *AUTH_KEYS[kind]])
                raise fail(f"auth.{name}", f"unknown key for {kind} auth{extra}")
        from wsplugin.auth import ApiKeyAuth, BasicAuth, HtpasswdChecker, QueryTokenAuth

        def text(name: str, default: str) -> str:
            got = value.get(name, default)
            problem = type_problem("str", got)
            if problem is not None or not got:
                raise fail(f"auth.{name}", problem or "must not be empty")
            return str(got)

        try:
            if kind == "htpasswd":
                mixed = value.get(
                    "allow_mixed_hashes", bool(options["allow-mixed-hashes"])
                )
                problem = type_problem("bool", mixed)
                if problem is not None:
                    raise fail("auth.allow_mixed_hashes", problem)
                checker = HtpasswdChecker(
                    self.file.resolve(text("htpasswd", "")), allow_mixed=mixed
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
                raise self.file.error(("route", index), f'route "{spec.path}"', problem)
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
            raise self.file.error(
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
                raise self.file.error(
                    ("route", index), f'route "{spec.path}"', str(e)
                ) from None
