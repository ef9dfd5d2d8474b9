"""``twistd ws``: command-line options and the service they build.

Every :class:`~wsplugin.ServerConfig` option is a command-line option
(``max_message_size`` is ``--max-message-size``; a boolean that defaults to
on, like ``utf8_validation``, is turned off with ``--no-utf8-validation``).
Bad options exit with status 1 and a one-line error naming the problem.

``--config ws.toml`` reads the same options (and ``[[route]]`` tables) from
a TOML file; options given on the command line win over it
(:mod:`wsplugin._configfile`, docs/config.md).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from wsplugin._configfile import ConfigFile, ConfigFileError, RouteSpec, given_options
from wsplugin._tapcluster import (
    CLUSTER_PARAMETERS,
    Cluster,
    become_worker,
    check_cluster,
    supervisor,
)
from wsplugin.apps import AppNotFound, load_app
from wsplugin.config import ServerConfig
from wsplugin.errors import ConfigError
from wsplugin.server import WebSocketServer
from wsplugin.tls import (
    CLIENT_CERT_MODES,
    TLS_VERSIONS,
    ServerTLS,
    TLSOptions,
    on_hangup,
    tls_wrappable,
)

__all__ = ["Options", "makeService"]

_HELP = {
    "frame_by_frame": "Deliver each frame to on_fragment instead of whole messages.",
    "assemble_messages": "With --frame-by-frame, also deliver whole messages.",
    "skip_upgrade_check": "Accept handshakes without valid Upgrade/Connection headers.",
    "skip_version_check": "Accept handshakes without Sec-WebSocket-Version: 13.",
    "manual_pong": "Do not answer pings automatically (the app does).",
    "manual_close": "Do not answer close frames automatically (the app does).",
    "split_message": "Send messages in frames of at most --frame-size bytes.",
    "frame_size": "Largest frame sent with --split-message, header included.",
    "max_message_size": "Largest message accepted in bytes (0: no limit).",
    "max_frame_size": "Largest frame payload accepted in bytes (0: no limit).",
    "max_request_head": "Largest handshake request head in bytes (0: no limit).",
    "max_headers": "Most handshake request headers (0: no limit).",
    "open_handshake_timeout": "Seconds for the whole opening handshake (0: none).",
    "close_handshake_timeout": "Seconds to wait for a close reply (0: forever).",
    "max_connections": "Most connections, HTTP ones too; over it 503 (0: no limit).",
    "max_connections_per_ip": "Most connections from one IPv4 address or IPv6 /64 "
    "(0: no limit).",
    "per_ip_exempt": "Network not limited per address (repeatable; 'none' for "
    "no exemption; default loopback).",
    "max_request_body": "Largest HTTP request body in bytes; 413 over it (0: none).",
    "request_body_timeout": "Seconds for an HTTP request body; 408 after (0: none).",
    "max_queue": "Messages queued for receive() before reads pause.",
    "max_send_buffer": "Outgoing bytes queued per connection before the policy.",
    "send_buffer_policy": "Over max-send-buffer: close, drop or wait.",
    "idle_timeout": "Close clients sending no message this long (0: off).",
    "shutdown_timeout": "Seconds a stop waits for clients to close.",
    "heartbeat_interval": "Ping clients silent for this many seconds (0: off).",
    "heartbeat_timeout": "Seconds to wait for an answer, then close 1011 (0: never).",
    "watchdog_interval": "Check ports and re-listen a failed or lost one every "
    "this many seconds (0: off).",
    "watchdog_attempts": "Re-listen attempts before giving up (0: forever).",
    "allowed_origins": "Allowed Origin pattern (repeatable; * wildcards).",
    "subprotocols": "Subprotocol the server speaks (repeatable).",
    "compression": "Accept permessage-deflate (RFC 7692).",
    "compression_context_takeover": "Keep the compressor between messages "
    "(costs memory; no compress-once broadcasts).",
    "utf8_validation": "Do not validate incoming text as UTF-8 (trusted peers only).",
    "server_header": "Server response header value ('' omits it).",
    "trusted_proxies": "Proxies whose X-Forwarded-For is trusted (0: none).",
    "connection_log": "Log each connection's open and close: id, peer, route, "
    "duration, bytes, close code (docs/logging.md).",
}

_REPEATABLE = {
    "allowed_origins": "allowed-origin",
    "subprotocols": "subprotocol",
    "per_ip_exempt": "per-ip-exempt",
}


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _number(flag: str, kind: type) -> Callable[[str], Any]:
    """A coercer that names its option when the value is not a number
    (Twisted's own message would only quote ``int()``'s complaint)."""
    what = "a whole number" if kind is int else "a number"

    def coerce(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise usage.UsageError(f"--{flag} takes {what}, not {value!r}") from None

    return coerce


def _config_options() -> tuple[list[list[Any]], list[list[Any]]]:
    defaults = ServerConfig()
    flags: list[list[Any]] = []
    params: list[list[Any]] = []
    for f in dataclasses.fields(ServerConfig):
        if f.name in _REPEATABLE:
            continue
        default = getattr(defaults, f.name)
        text = _HELP[f.name]
        if f.type == "bool":
            if default:
                flags.append([f"no-{_flag(f.name)}", None, text])
            else:
                flags.append([_flag(f.name), None, text])
        else:
            kind = {"int": int, "float": float}.get(str(f.type))
            coerce = str if kind is None else _number(_flag(f.name), kind)
            params.append([_flag(f.name), None, default, text, coerce])
    return flags, params


_CONFIG_FLAGS, _CONFIG_PARAMS = _config_options()


class Options(usage.Options):
    """Options of ``twistd ws``."""

    synopsis = "[--port ENDPOINT]... [--app echo|chat|module:attr] [options]"
    longdesc = (
        "Run a wsplugin WebSocket server. With no options: the chat demo on "
        "tcp:8888. --port takes any Twisted endpoint string (tcp:, ssl:, "
        "unix:, systemd:) and may be repeated. With --tls-cert every port "
        "speaks TLS; SIGHUP reloads the TLS files."
    )

    optParameters = [
        ["app", "a", "chat", "echo, chat, or module:attribute of a handler."],
        ["path", None, None, "Serve the app only on this path (others get 404)."],
        ["tls-cert", None, None, "Certificate (PEM): every port speaks TLS."],
        [
            "tls-key",
            None,
            None,
            "Private key (PEM) for --tls-cert (default: same file).",
        ],
        ["tls-chain", None, None, "Intermediate certificates (PEM) for --tls-cert."],
        ["tls-min-version", None, "1.2", "Lowest TLS version: 1.2 or 1.3."],
        ["tls-ciphers", None, None, "OpenSSL cipher string for TLS 1.2."],
        [
            "tls-alpn",
            None,
            None,
            "ALPN protocols, comma-separated ('' or none: off). "
            "Default: h2,http/1.1 when pages are served and h2 is "
            "installed, else http/1.1.",
        ],
        ["tls-client-ca", None, None, "CA file (PEM): ask for client certificates."],
        [
            "tls-client-cert",
            None,
            "required",
            "With --tls-client-ca: required or optional.",
        ],
        ["static", None, None, "Serve this directory over HTTP on the same port."],
        [
            "auth-file",
            None,
            None,
            "htpasswd file (bcrypt or {SHA}): HTTP Basic auth for the app's route "
            "and every HTTP path (see --public-path).",
        ],
        ["realm", None, "wsplugin", "Realm named in the Basic auth challenge."],
        [
            "config",
            None,
            None,
            "TOML file with any of these options and [[route]] tables; "
            "options given here win (docs/config.md).",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint, e.g. "
            "tcp:9100:interface=127.0.0.1 ({worker}: the worker's index; "
            "docs/metrics.md).",
        ],
        [
            "log-format",
            None,
            "text",
            "text, or json: one JSON object per line, to twistd's --logfile.",
        ],
        *CLUSTER_PARAMETERS,
        *_CONFIG_PARAMS,
    ]
    optFlags = [
        ["empty-404", None, "Answer unknown HTTP paths with an empty 404."],
        [
            "allow-mixed-hashes",
            None,
            "Accept an --auth-file mixing {SHA} and bcrypt, or bcrypt costs "
            "(a warning; response times then tell those users apart).",
        ],
        ["static-listing", None, "--static: list directories without an index."],
        ["static-dotfiles", None, "--static: serve names starting with '.'."],
        [
            "static-follow-symlinks",
            None,
            "--static: serve links that lead out of the directory.",
        ],
        *_CONFIG_FLAGS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["allowed_origins"] = []
        self["subprotocols"] = []
        self["public_paths"] = []
        self["per_ip_exempt"] = []
        self.handler: Any = None
        self.config: ServerConfig | None = None
        self.auth: Any = None
        self.tls: TLSOptions | None = None
        self.given: set[str] = set()  # options on the command line (--config)
        self.config_file: ConfigFile | None = None
        self.routes: list[RouteSpec] = []  # the --config file's [[route]]s
        self.argv: list[str] = []  # as given (--workers starts workers with them)
        self.cluster: Cluster | None = None  # --backplane, --workers...

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, noting which options were given: they win over --config.
        An error about a value from the --config file names its line and key."""
        self.argv = list(sys.argv[1:] if options is None else options)
        self.given = given_options(self, self.argv)
        try:
            super().parseOptions(options)
        except ConfigFileError as e:
            raise usage.UsageError(str(e)) from None
        except usage.UsageError as e:
            if self.config_file is None:
                raise
            raise usage.UsageError(
                self.config_file.explain(str(e), self.given)
            ) from None

    def opt_port(self, endpoint: str) -> None:
        """Listen on a Twisted endpoint string (repeatable; default tcp:8888)."""
        self["ports"].append(endpoint)

    opt_p = opt_port

    def opt_allowed_origin(self, pattern: str) -> None:
        self["allowed_origins"].append(pattern)

    opt_allowed_origin.__doc__ = (
        "Allowed Origin pattern, * wildcards, or same-origin (repeatable; "
        "default: any, but only the same origin with --auth-file)."
    )

    def opt_subprotocol(self, name: str) -> None:
        """A subprotocol the server speaks (repeatable; the client's order wins)."""
        self["subprotocols"].append(name)

    def opt_public_path(self, path: str) -> None:
        if not path.startswith("/"):
            raise usage.UsageError(f"--public-path must start with '/': {path!r}")
        self["public_paths"].append(path)

    opt_public_path.__doc__ = (
        "An HTTP path served without --auth-file credentials; a trailing / "
        "opens everything under it (repeatable)."
    )

    def opt_per_ip_exempt(self, network: str) -> None:
        """Network not limited by --max-connections-per-ip (repeatable;
        default loopback; 'none' limits loopback too)."""
        self["per_ip_exempt"].append(network)

    def postOptions(self) -> None:
        """Check everything now, so twistd fails fast with a one-line error."""
        if self["config"] is not None:  # its values, under the command line's
            self.config_file = ConfigFile.load(self["config"], self)
            self.config_file.apply(self, self.given)
        if not self["ports"]:
            self["ports"] = ["tcp:8888"]
        if self["path"] is not None and not self["path"].startswith("/"):
            raise usage.UsageError(f"--path must start with '/': {self['path']!r}")
        self.tls = self._tls_options()
        self.config = self._build_config()
        self.cluster = check_cluster(self)
        for description in self["ports"] if self.cluster.worker is None else ():
            _check_endpoint(description)  # a worker's come from its supervisor
        try:
            if self.handler is None and self["app"] is not None:  # --config: loaded
                self.handler = load_app(self["app"])
        except AppNotFound as e:
            raise usage.UsageError(str(e)) from None
        self._check_metrics()
        self._check_log_format()
        if self["static"] is not None and not Path(self["static"]).is_dir():
            raise usage.UsageError(f"--static: no such directory: {self['static']}")
        self.auth = None
        if self["auth-file"] is not None:
            from wsplugin.auth import BasicAuth, HtpasswdChecker

            try:
                checker = HtpasswdChecker(
                    self["auth-file"], allow_mixed=bool(self["allow-mixed-hashes"])
                )
                self.auth = BasicAuth(checker, self["realm"])
            except ConfigError as e:
                raise usage.UsageError(f"--auth-file: {e}") from None
        if self.config_file is not None:
            self.routes = self.config_file.routes(self)

    def _check_metrics(self) -> None:
        description = self["metrics"]
        if description is None:
            return
        try:
            from wsplugin.metrics import Metrics, metrics_endpoint

            Metrics(description)  # prometheus_client is there
            _check_endpoint(metrics_endpoint(description, 0), "--metrics")
        except ConfigError as e:
            raise usage.UsageError(f"--metrics: {e}") from None

    def _check_log_format(self) -> None:
        """--log-format json: twistd's log observer becomes
        :func:`wsplugin.logs.twistd_json_observer` (twistd reads its
        ``logger`` option after this; its ``--logfile`` is kept)."""
        from wsplugin import logs

        fmt = self["log-format"]
        if fmt not in logs.LOG_FORMATS:
            raise usage.UsageError(
                f"--log-format takes {' or '.join(logs.LOG_FORMATS)}, not {fmt!r}"
            )
        parent = getattr(self, "parent", None)
        if fmt != "json" or parent is None:
            return  # not under twistd (a test, a script): nothing to set up
        if parent.get("syslog") or parent.get("logger"):
            given = "--syslog" if parent.get("syslog") else "--logger"
            raise usage.UsageError(
                f"--log-format json and twistd's {given} both choose the log; "
                "give one of them"
            )
        logs.use_for_twistd(parent.get("logfile"), bool(parent.get("nodaemon")))
        parent["logger"] = "wsplugin.logs.twistd_json_observer"

    def _build_config(self) -> ServerConfig:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(ServerConfig):
            if f.name in _REPEATABLE:
                given = self[f.name]
                if f.name == "per_ip_exempt":
                    given = [v for v in given if v != "none"]
                if self[f.name]:
                    values[f.name] = tuple(given)
            elif f.type == "bool":
                default = getattr(ServerConfig, f.name)
                key = f"no-{_flag(f.name)}" if default else _flag(f.name)
                if self[key]:
                    values[f.name] = not default
            else:
                values[f.name] = self[_flag(f.name)]
        try:
            return ServerConfig.from_options(**values)
        except ConfigError as e:
            raise usage.UsageError(_flags_in(str(e))) from None

    def _tls_options(self) -> TLSOptions | None:
        """--tls-* as TLSOptions, with the files read now (fail fast), and
        every --port checked: all of them will speak TLS."""
        cert = self["tls-cert"]
        if cert is None:
            # given on the command line (even with its default value), or set
            # by --config to another value than the default
            given = [
                f"--{name}"
                for name, default in _TLS_DEFAULTS.items()
                if name in self.given or self[name] != default
            ]
            if given:
                verb = "needs" if len(given) == 1 else "need"
                raise usage.UsageError(f"{', '.join(given)} {verb} --tls-cert")
            return None
        if self["tls-min-version"] not in TLS_VERSIONS:
            raise usage.UsageError(
                f"--tls-min-version takes {' or '.join(TLS_VERSIONS)}, "
                f"not {self['tls-min-version']!r}"
            )
        if self["tls-client-cert"] not in CLIENT_CERT_MODES:
            raise usage.UsageError(
                f"--tls-client-cert takes {' or '.join(CLIENT_CERT_MODES)}, "
                f"not {self['tls-client-cert']!r}"
            )
        alpn: tuple[str, ...] | None = None  # automatic (TLSOptions.alpn)
        if self["tls-alpn"] is not None:
            given = self["tls-alpn"].strip()
            names = [] if given.lower() in ("", "none") else given.split(",")
            alpn = tuple(name.strip() for name in names)
        for description in self["ports"]:
            try:
                tls_wrappable(description)
            except ConfigError as e:
                raise usage.UsageError(f"--tls-cert: {e}") from None
        try:
            options = TLSOptions(
                certificate=cert,
                key=self["tls-key"],
                chain=self["tls-chain"],
                min_version=self["tls-min-version"],
                ciphers=self["tls-ciphers"],
                alpn=alpn,
                client_ca=self["tls-client-ca"],
                client_cert=self["tls-client-cert"],
            )
            ServerTLS(options)
        except ConfigError as e:
            raise usage.UsageError(_flags_in(str(e))) from None
        return options


# every --tls-* flag but --tls-cert, with its default: each needs --tls-cert
_TLS_DEFAULTS: dict[str, str | None] = {
    "tls-key": None,
    "tls-chain": None,
    "tls-min-version": "1.2",
    "tls-ciphers": None,
    "tls-alpn": None,
    "tls-client-ca": None,
    "tls-client-cert": "required",
}

_TLS_FLAGS = {
    "tls certificate": "--tls-cert",
    "tls key": "--tls-key",
    "tls chain": "--tls-chain",
    "tls client_ca": "--tls-client-ca",
    "tls client_cert": "--tls-client-cert",
    "tls min_version": "--tls-min-version",
    "tls ciphers": "--tls-ciphers",
    "tls alpn": "--tls-alpn",
    "tls:": "--tls-cert:",
}
_OPTION_NAME = re.compile(
    r"\b("
    + "|".join(sorted(ServerConfig.option_names(), key=len, reverse=True))
    + r")\b"
)


def _flags_in(message: str) -> str:
    """A config error as a twistd user reads it: ``max_queue`` becomes
    ``--max-queue``, ``tls key`` becomes ``--tls-key``."""
    for name, flag in _TLS_FLAGS.items():
        if message.startswith(name):
            return flag + message[len(name) :]
    return _OPTION_NAME.sub(lambda m: "--" + _flag(m.group(1)), message)


def _check_endpoint(description: str, flag: str = "--port") -> None:
    """Parse an endpoint string now (loading TLS files) without listening."""
    from twisted.internet import reactor

    try:
        serverFromString(reactor, description)
    except Exception as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "systemd:" in description and isinstance(e, LookupError):
            # Twisted's parser only says "list index out of range" or 'ws'
            detail = (
                "systemd passed no such socket (LISTEN_FDS, LISTEN_PID and "
                "LISTEN_FDNAMES name none for this process); start twistd from "
                "its .socket unit (docs/deploy.md)"
            )
        raise usage.UsageError(f"bad {flag} {description!r}: {detail}") from None


class ReloadOnHangup(Service):
    """Reload the server's TLS files on SIGHUP while running (``twistd ws``).

    A failed reload is logged and the old certificate stays in use; open
    connections are never touched.
    """

    def __init__(self, server: WebSocketServer) -> None:
        self.server = server
        self._restore: Callable[[], None] | None = None

    def startService(self) -> None:
        """Install the SIGHUP handler."""
        super().startService()
        self._restore = on_hangup(self._reload, self.server.reactor)

    def stopService(self) -> None:
        """Put the previous SIGHUP handler back."""
        super().stopService()
        if self._restore is not None:
            self._restore()
            self._restore = None

    def _reload(self) -> None:
        try:
            self.server.reload_tls()
        except ConfigError:
            pass  # logged by reload_tls; the old certificate stays


def makeService(options: Options) -> Any:
    """Build the server from parsed options (the twistd entry point); with
    ``--workers N`` (N > 1) the supervisor of N workers, which build it."""
    assert options.config is not None and options.cluster is not None
    cluster = options.cluster
    if cluster.supervises:
        return supervisor(cluster, options, options.config.shutdown_timeout)
    handler = options.handler
    page = getattr(handler, "resource", None)
    server = WebSocketServer(
        handler,
        path=options["path"],
        endpoints=options["ports"],
        config=options.config,
        auth=options.auth,
        http_auth=options.auth,
        public_paths=options["public_paths"],
        static=options["static"],
        http=page() if callable(page) and options["static"] is None else None,
        empty_404=options["empty-404"],
        static_listing=options["static-listing"],
        static_dotfiles=options["static-dotfiles"],
        static_follow_symlinks=options["static-follow-symlinks"],
        tls=options.tls,
        metrics=options["metrics"],
        backplane=cluster.backplane,
    )
    if cluster.worker is not None:
        become_worker(server, cluster.worker, options["ports"])
        if server.metrics is not None:  # each worker its own /metrics
            server.metrics.worker = cluster.worker.index
    for route in options.routes:
        route.register(server)
    server.exit_on_listen_failure = True  # as twistd web: exit, don't idle
    if server.tls is not None:
        ReloadOnHangup(server).setServiceParent(server)
    return server
