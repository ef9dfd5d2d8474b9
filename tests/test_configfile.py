"""``twistd ws --config``: the TOML file, its keys, precedence, routes, errors."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import trustme
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._configfile import (
    AUTH_KEYS,
    ROUTE_KEYS,
    option_keys,
)
from wsplugin.apps.chat import Chat
from wsplugin.apps.echo import Echo
from wsplugin.auth import BasicAuth
from wsplugin.config import ServerConfig
from wsplugin.tap import Options, makeService

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "config" / "ws.toml"
DOC = ROOT / "docs" / "config.md"
ROUTE_WORDS = (*ROUTE_KEYS, *AUTH_KEYS, *(k for v in AUTH_KEYS.values() for k in v))
"""Every key a [[route]] table or its auth table may have (but options)."""


def sha_line(user: str, password: str) -> str:
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    return f"{user}:{{SHA}}{digest}\n"


def check_token(token: str) -> str | None:
    """A token checker for ``auth = { token = ... }`` (module:attr)."""
    return "tester" if token == "good" else None


class Authenticator:
    """An authenticator object for ``auth = { authenticator = ... }``."""

    def authenticate(self, conn: Any) -> str:
        return "anyone"


AUTHENTICATOR = Authenticator()
NOT_CALLABLE = 42


class Files:
    """A directory with a config file and the files it may name."""

    def __init__(self, test: SynchronousTestCase) -> None:
        self.dir = Path(test.mktemp()).resolve()
        self.dir.mkdir(parents=True)
        self.path = self.dir / "ws.toml"
        (self.dir / "users").write_text(sha_line("ann", "pw"))
        (self.dir / "public").mkdir()

    def options(self, text: str, *args: str) -> Options:
        """Parse ``--config ws.toml *args`` with ``text`` as the file."""
        self.path.write_text(text)
        options = Options()
        options.parseOptions(["--config", str(self.path), *args])
        return options

    def error(self, test: SynchronousTestCase, text: str, *args: str) -> str:
        """The usage error for ``text``, with the directory written as DIR."""
        e = test.assertRaises(usage.UsageError, self.options, text, *args)
        message = str(e)
        test.assertNotIn("\n", message)
        test.assertNotIn("Traceback", message)
        return message.replace(str(self.dir), "DIR")


def certificates(test: SynchronousTestCase) -> dict[str, str]:
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    base = Path(test.mktemp()).resolve()
    base.mkdir()
    files = {"cert": base / "cert.pem", "key": base / "key.pem", "ca": base / "ca.pem"}
    issued.cert_chain_pems[0].write_to_path(str(files["cert"]))
    issued.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return {k: str(v) for k, v in files.items()}


def fraction(text: str) -> float:
    """A coercer of the kind other options may have: 0 < value <= 1."""
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(f"--ratio must be in (0, 1], not {text}")
    return value


class Extended(Options):
    """Options with the kinds of flags ``twistd ws`` may grow (an int with a
    default, a free string, a custom coercer, a method with and without an
    argument): a file reaches them with no change to the file format."""

    optParameters = [
        *Options.optParameters,
        ["threads", None, 1, "Worker threads.", int],
        ["log-style", None, "plain", "plain or fancy."],
        ["ratio", None, None, "A fraction.", fraction],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["stats"] = None
        self["verbose"] = False

    def opt_stats(self, endpoint: str) -> None:
        """Serve statistics on this endpoint."""
        if ":" not in endpoint:
            raise usage.UsageError(f"--stats takes an endpoint, not {endpoint!r}")
        self["stats"] = endpoint

    def opt_verbose(self) -> None:
        """Log more."""
        self["verbose"] = True


def every_key(test: SynchronousTestCase) -> tuple[str, list[str], Files]:
    """A file setting every key to a value other than its default, and the
    command line that says the same."""
    files = Files(test)
    pems = certificates(test)
    users = str(files.dir / "users")
    public = str(files.dir / "public")
    flags = [
        "empty_404",
        "allow_mixed_hashes",
        "static_listing",
        "static_dotfiles",
        "static_follow_symlinks",
        "frame_by_frame",
        "assemble_messages",
        "skip_upgrade_check",
        "skip_version_check",
        "manual_pong",
        "manual_close",
        "split_message",
        "compression",
        "compression_context_takeover",
        "connection_log",
    ]
    numbers: dict[str, int | float] = {
        "frame_size": 64,
        "max_message_size": 1000,
        "max_frame_size": 900,
        "max_request_head": 8000,
        "max_headers": 50,
        "open_handshake_timeout": 3.5,
        "close_handshake_timeout": 2.5,
        "max_connections": 77,
        "max_connections_per_ip": 7,
        "max_request_body": 4096,
        "request_body_timeout": 9.0,
        "max_queue": 5,
        "max_send_buffer": 65536,
        "idle_timeout": 60.0,
        "shutdown_timeout": 1.5,
        "heartbeat_interval": 4.0,
        "heartbeat_timeout": 3.0,
        "watchdog_interval": 2.0,
        "watchdog_attempts": 3,
        "trusted_proxies": 1,
        "history_size": 10,
        "history_ttl": 60.0,
        "workers": 1,
    }
    strings = {
        "backplane": "local",
        "node_name": "web-1",
        "app": "echo",
        "path": "/ws",
        "static": public,
        "auth_file": users,
        "realm": "the realm",
        "send_buffer_policy": "drop",
        "server_header": "test-server",
        "metrics": "tcp:0:interface=127.0.0.1",
        "log_format": "json",
    }
    lists = {
        "ports": ["tcp:0", "unix:/tmp/wsplugin-config-test.sock"],
        "allowed_origins": ["https://a.example", "https://*.b.example"],
        "subprotocols": ["one", "two"],
        "per_ip_exempt": ["10.0.0.0/8"],
        "public_paths": ["/login", "/assets/"],
    }
    tls = {
        "certificate": pems["cert"],
        "key": pems["key"],
        "chain": pems["ca"],
        "min_version": "1.3",
        "ciphers": "ECDHE+AESGCM",
        "client_ca": pems["ca"],
        "client_cert": "optional",
    }
    keys = option_keys(Options())
    covered = {*flags, *numbers, *strings, *lists, "utf8_validation", "tls.alpn"}
    covered |= {f"tls.{k}" for k in tls}
    test.assertEqual(covered, set(keys), "every key needs a value in this test")

    lines = [f"{k} = true" for k in flags] + ["utf8_validation = false"]
    lines += [f"{k} = {v}" for k, v in numbers.items()]
    lines += [f"{k} = {v!r}" for k, v in strings.items()]
    lines += [f"{k} = {v!r}" for k, v in lists.items()]
    lines += ["[tls]"] + [f"{k} = {v!r}" for k, v in tls.items()]
    lines += ["alpn = ['http/1.1', 'x-test']"]
    args = [f"--{keys[k].flag}" for k in flags] + ["--no-utf8-validation"]
    for k, v in {**numbers, **strings}.items():
        args += [f"--{keys[k].flag}", str(v)]
    for k, values in lists.items():
        for v in values:
            args += [f"--{keys[k].flag}", v]
    for k, v in tls.items():
        args += [f"--{keys['tls.' + k].flag}", v]
    args += ["--tls-alpn", "http/1.1,x-test"]
    return "\n".join(lines) + "\n", args, files


class ApplyTests(SynchronousTestCase):
    """The file's values reach the options as the same flags would."""

    def test_every_key_as_its_flag(self) -> None:
        """A file with every key set gives the very options, config, TLS
        settings, app and authenticator kind that the same flags give."""
        text, args, files = every_key(self)
        from_file = files.options(text)
        from_flags = Options()
        from_flags.parseOptions(args)
        for key in option_keys(from_file).values():
            self.assertEqual(from_file[key.dest], from_flags[key.dest], key.name)
        self.assertEqual(from_file.config, from_flags.config)
        self.assertNotEqual(from_file.config, ServerConfig())
        self.assertEqual(from_file.tls, from_flags.tls)
        self.assertIsInstance(from_file.handler, Echo)
        self.assertIsInstance(from_file.auth, BasicAuth)
        self.assertEqual(from_file.auth.realm, "the realm")

    def test_flags_win(self) -> None:
        """A flag given on the command line wins over the file, even with
        the option's default value; a repeatable flag replaces the file's
        whole list; keys the command line does not give still apply."""
        files = Files(self)
        pems = certificates(self)  # --tls-min-version needs --tls-cert
        text = (
            'ports = ["tcp:1", "tcp:2"]\nmax_queue = 5\nidle_timeout = 9.0\n'
            'utf8_validation = true\nallowed_origins = ["https://file.example"]\n'
            'app = "echo"\n[tls]\nmin_version = "1.3"\n'
            f"certificate = {pems['cert']!r}\nkey = {pems['key']!r}\n"
        )
        options = files.options(
            text,
            "--port", "tcp:0",
            "--max-queue", "32",
            "--no-utf8-validation",
            "--allowed-origin", "https://cli.example",
            "--tls-min-version", "1.2",
            "--app", "chat",
        )  # fmt: skip
        self.assertEqual(options["ports"], ["tcp:0"])
        self.assertEqual(options.config.max_queue, 32)  # the default, given
        self.assertEqual(options.config.idle_timeout, 9.0)  # from the file
        self.assertFalse(options.config.utf8_validation)
        self.assertEqual(options.config.allowed_origins, ("https://cli.example",))
        self.assertEqual(options["tls-min-version"], "1.2")
        self.assertIsInstance(options.handler, Chat)
        self.assertEqual(options.given, {"config", "port", "max-queue",
                                         "no-utf8-validation", "allowed-origin",
                                         "tls-min-version", "app"})  # fmt: skip

    def test_relative_paths_from_the_file(self) -> None:
        """Relative file names are taken from the file's directory, not the
        working directory; absolute ones stay as they are."""
        files = Files(self)
        pems = certificates(self)
        options = files.options(
            'static = "public"\nauth_file = "users"\n'
            f'ports = ["tcp:0"]\n[tls]\ncertificate = {pems["cert"]!r}\n'
            f"key = {pems['key']!r}\n"
        )
        self.assertEqual(options["static"], str(files.dir / "public"))
        self.assertEqual(options["auth-file"], str(files.dir / "users"))
        self.assertEqual(options.tls.certificate, pems["cert"])

    def test_empty_lists(self) -> None:
        """``[]`` says what no flag can: no origin allowed, no exemption
        from the per-address limit, no ALPN; an empty ``ports`` is refused."""
        files = Files(self)
        options = files.options("allowed_origins = []\nper_ip_exempt = []\n")
        self.assertEqual(options.config.allowed_origins, ())
        self.assertEqual(options.config.per_ip_exempt, ())
        pems = certificates(self)
        options = files.options(
            f"[tls]\ncertificate = {pems['cert']!r}\nkey = {pems['key']!r}\nalpn = []\n"
        )
        self.assertEqual(options.tls.alpn, ())
        self.assertEqual(
            files.error(self, "ports = []\n"),
            "DIR/ws.toml:1: ports: lists no endpoint; leave the key out for tcp:8888",
        )

    def test_defaults_without_keys(self) -> None:
        """An empty file changes nothing: the chat app on tcp:8888."""
        options = Files(self).options("# nothing\n")
        self.assertEqual(options["ports"], ["tcp:8888"])
        self.assertEqual(options.config, ServerConfig())
        self.assertIsInstance(options.handler, Chat)
        self.assertEqual(options.routes, [])


class NewOptionsTests(SynchronousTestCase):
    """Options added to ``twistd ws`` later are keys of the file at once."""

    def options(self, files: Files, text: str, *args: str) -> Extended:
        files.path.write_text(text)
        options = Extended()
        options.parseOptions(["--config", str(files.path), *args])
        return options

    def test_kinds(self) -> None:
        """An int parameter, a string, a custom coercer, a method taking a
        value and one taking none, each as its key; flags still win."""
        keys = option_keys(Extended())
        self.assertEqual(
            {n: keys[n].kind for n in ("threads", "log_style", "ratio")},
            {"threads": "int", "log_style": "str", "ratio": "value"},
        )
        self.assertEqual((keys["stats"].kind, keys["verbose"].kind), ("call", "switch"))
        files = Files(self)
        text = (
            'threads = 4\nlog_style = "fancy"\nratio = 0.5\n'
            'stats = "tcp:9100"\nverbose = true\n'
        )
        options = self.options(files, text)
        self.assertEqual(
            [options[k] for k in ("threads", "log-style", "ratio", "stats")]
            + [options["verbose"]],
            [4, "fancy", 0.5, "tcp:9100", True],
        )
        options = self.options(files, text, "--threads", "1", "--stats", "unix:/m")
        self.assertEqual((options["threads"], options["stats"]), (1, "unix:/m"))
        self.assertFalse(self.options(files, "verbose = false\n")["verbose"])

    def test_errors(self) -> None:
        """Their refusals name the file, the line and the key."""
        files = Files(self)
        for text, expected in [
            ('threads = "4"\n', "threads: must be an integer, not '4' (a string)"),
            ("ratio = 2\n", "ratio: must be in (0, 1], not 2"),
            ("ratio = true\n", "ratio: must be a string or a number, not true "
             "(a boolean)"),
            ('stats = "9100"\n', "stats: takes an endpoint, not '9100'"),
            ("verbose = 1\n", "verbose: must be true or false, not 1 (an integer)"),
        ]:  # fmt: skip
            files.path.write_text(text)
            e = self.assertRaises(
                usage.UsageError, Extended().parseOptions, ["--config", str(files.path)]
            )
            self.assertEqual(str(e), f"{files.path}:1: {expected}")


class ErrorTests(SynchronousTestCase):
    """Every error names the file, the line and the key, in one line."""

    def check(self, cases: list[tuple[str, str]], *args: str) -> None:
        files = Files(self)
        for text, expected in cases:
            self.assertEqual(files.error(self, text, *args), expected, text)

    def test_syntax(self) -> None:
        """A TOML syntax error stops the parse with its place in the file
        (the messages themselves: tests/test_configerrors.py)."""
        self.check(
            [
                (
                    "max_queue = 1\n\n# again\nmax_queue = 2\n",
                    "DIR/ws.toml:4: max_queue: given twice (TOML syntax)",
                ),
            ]
        )

    def test_unreadable(self) -> None:
        """A missing file, or one that is not UTF-8."""
        files = Files(self)
        options = Options()
        e = self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            ["--config", str(files.dir / "missing.toml")],
        )
        self.assertEqual(
            str(e).replace(str(files.dir), "DIR"),
            "DIR/missing.toml: cannot read: No such file or directory",
        )
        files.path.write_bytes(b'realm = "ok"\nserver_header = "\xff"\n')
        e = self.assertRaises(
            usage.UsageError, Options().parseOptions, ["--config", str(files.path)]
        )
        self.assertEqual(
            str(e).replace(str(files.dir), "DIR"), "DIR/ws.toml:2: not UTF-8 text"
        )

    def test_top_level(self) -> None:
        """Unknown keys and tables (with a suggestion), wrong types, and
        values an option refuses."""
        self.check(
            [
                (
                    'ports = ["tcp:0"]\nmax_mesage_size = 5\n',
                    "DIR/ws.toml:2: max_mesage_size: unknown key; "
                    "did you mean max_message_size?",
                ),
                ("[server]\nx = 1\n", "DIR/ws.toml:1: server: unknown table"),
                (
                    '[tsl]\ncertificate = "c.pem"\n',
                    "DIR/ws.toml:1: tsl: unknown table; did you mean tls?",
                ),
                (
                    '[tls]\ncert = "c.pem"\n',
                    "DIR/ws.toml:2: tls.cert: unknown key; did you mean "
                    "tls.certificate?",
                ),
                (
                    'config = "other.toml"\n',
                    "DIR/ws.toml:1: config: a config file cannot name another one",
                ),
                (
                    'max_queue = "5"\n',
                    "DIR/ws.toml:1: max_queue: must be an integer, not '5' (a string)",
                ),
                (
                    "max_queue = 5.0\n",
                    "DIR/ws.toml:1: max_queue: must be an integer, not 5.0 (a number)",
                ),
                (
                    "idle_timeout = true\n",
                    "DIR/ws.toml:1: idle_timeout: must be a number, not true "
                    "(a boolean)",
                ),
                (
                    "compression = 1\n",
                    "DIR/ws.toml:1: compression: must be true or false, "
                    "not 1 (an integer)",
                ),
                (
                    "realm = 5\n",
                    "DIR/ws.toml:1: realm: must be a string, not 5 (an integer)",
                ),
                (
                    'ports = "tcp:0"\n',
                    'DIR/ws.toml:1: ports: must be a list of strings, e.g. ["a", "b"], '
                    "not 'tcp:0' (a string)",
                ),
                (
                    'subprotocols = ["a", 5]\n',
                    "DIR/ws.toml:1: subprotocols: must be a list of non-empty "
                    "strings; it holds 5 (an integer)",
                ),
                (
                    "tls = 5\n",
                    "DIR/ws.toml:1: tls: must be a table: write [tls]",
                ),
                (
                    '[route]\npath = "/a"\n',
                    "DIR/ws.toml:1: route: must be an array of tables: write [[route]]",
                ),
            ]
        )

    def test_values_checked_by_the_options(self) -> None:
        """What the options refuse is told in the file's terms: key for
        flag, the key's line, and the file's directory in paths."""
        self.check(
            [
                (
                    'ports = ["tcp:0"]\n\nmax_queue = 0\n',
                    "DIR/ws.toml:3: max_queue: must be an integer >= 1, not 0",
                ),
                (
                    'send_buffer_policy = "block"\n',
                    "DIR/ws.toml:1: send_buffer_policy: must be one of close, "
                    "drop, wait, not 'block'",
                ),
                (
                    'ports = [\n  "tcp:0",\n  "tcp:x",\n]\n',
                    "DIR/ws.toml:1: ports: bad endpoint 'tcp:x': invalid literal "
                    "for int() with base 10: 'x'",
                ),
                (
                    'public_paths = ["/ok", "nope"]\n',
                    "DIR/ws.toml:1: public_paths: must start with '/': 'nope'",
                ),
                (
                    'per_ip_exempt = ["nonsense"]\n',
                    "DIR/ws.toml:1: per_ip_exempt: 'nonsense' is not an IP "
                    "network (e.g. '10.0.0.0/8', '::1')",
                ),
                (
                    'static = "nodir"\n',
                    "DIR/ws.toml:1: static: no such directory: DIR/nodir",
                ),
                (
                    'app = "nosuch"\n',
                    "DIR/ws.toml:1: app: unknown app 'nosuch': use one of chat, "
                    "echo or module:attribute",
                ),
                (
                    'path = "ws"\n',
                    "DIR/ws.toml:1: path: must start with '/': 'ws'",
                ),
                (
                    'auth_file = "nofile"\n',
                    "DIR/ws.toml:1: auth_file: cannot read the password file "
                    "DIR/nofile: No such file or directory",
                ),
                (
                    '[tls]\nkey = "k.pem"\n',
                    "DIR/ws.toml:2: tls.key: needs tls.certificate",
                ),
                (
                    '[tls]\nmin_version = "1.3"\n',
                    "DIR/ws.toml:2: tls.min_version: needs tls.certificate",
                ),
                (
                    '\n[tls]\ncertificate = "nope.pem"\n',
                    "DIR/ws.toml:3: tls.certificate: DIR/nope.pem: no such file",
                ),
                (
                    '[tls]\nmin_version = "1.1"\ncertificate = "c"\n',
                    "DIR/ws.toml:2: tls.min_version: takes 1.2 or 1.3, not '1.1'",
                ),
            ]
        )

    def test_flag_and_file_together(self) -> None:
        """An error about a file value checked with a flag names the file's
        key and leaves the flag as typed; an error about the flag alone is
        the command line's, as without a file."""
        self.check(
            [
                (
                    "frame_size = 2\n",
                    "DIR/ws.toml:1: frame_size: must be at least 3 bytes (a 2-byte "
                    "header and 1 payload byte), not 2",
                ),
            ],
            "--split-message",
        )
        self.check(
            [('realm = "r"\n', "--max-queue must be an integer >= 1, not 0")],
            "--max-queue",
            "0",
        )


class BadHandler:
    """A handler whose event attribute is not callable."""

    on_message = "not a method"


class ExampleTests(SynchronousTestCase):
    """The shipped example and the documentation cover every key."""

    def test_example_loads(self) -> None:
        """examples/config/ws.toml loads: the chat app on /, an echo route
        with its own limits, and a Basic-auth route whose password file is
        found next to the file."""
        options = Options()
        options.parseOptions(["--config", str(EXAMPLE)])
        self.assertEqual(options["ports"], ["tcp:8888:interface=127.0.0.1"])
        self.assertIsInstance(options.handler, Chat)
        self.assertEqual(options.config.max_message_size, 1024 * 1024)
        echo, private = options.routes
        self.assertEqual(echo.path, "/echo")
        self.assertEqual(echo.overrides["max_message_size"], 65536)
        self.assertIsInstance(private.auth, BasicAuth)
        self.assertEqual(private.auth.checker.path, EXAMPLE.parent / "users.htpasswd")
        makeService(options)

    def test_example_has_every_key(self) -> None:
        """Every key is in the example, set or commented out with its
        default, and every [[route]] key and auth kind is shown."""
        text = EXAMPLE.read_text()
        for key in option_keys(Options()).values():
            leaf = key.name.split(".")[-1]
            self.assertRegex(text, rf"(?m)^(# )?{re.escape(leaf)} = ", key.name)
        for name in ROUTE_WORDS:
            self.assertIn(name, text)

    def test_documentation_has_every_key(self) -> None:
        """docs/config.md names every key, route key and auth kind."""
        text = DOC.read_text()
        for key in option_keys(Options()).values():
            self.assertTrue(f"`{key.name.split('.')[-1]}`" in text, key.name)
            self.assertTrue(f"`--{key.flag}`" in text, key.flag)
        for name in ROUTE_WORDS:
            self.assertTrue(f"`{name}`" in text, name)

    def test_documented_snippets_load(self) -> None:
        """Every ```toml block of docs/config.md is a file twistd ws
        accepts (run where the files it names exist)."""
        files = Files(self)
        pems = certificates(self)
        for name, source in [("cert.pem", pems["cert"]), ("key.pem", pems["key"])]:
            (files.dir / name).write_text(Path(source).read_text())
        (files.dir / "users.htpasswd").write_text(sha_line("ann", "pw"))
        blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)
        self.assertGreater(len(blocks), 3)
        for block in blocks:
            try:
                files.options(block)
            except usage.UsageError as e:
                self.fail(f"{e}\n{block}")
