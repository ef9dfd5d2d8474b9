"""``twistd ws`` options: parsing, validation, and the service they build."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import bcrypt
import trustme
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wsplugin.apps.chat import Chat
from wsplugin.apps.echo import Echo
from wsplugin.server import WebSocketServer
from wsplugin.tap import Options, ReloadOnHangup, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    """Options become a validated config, endpoints and a handler."""

    def test_defaults(self) -> None:
        """No options: the chat app on tcp:8888 with default config."""
        options = parse()
        self.assertEqual(options["ports"], ["tcp:8888"])
        self.assertIsInstance(options.handler, Chat)
        self.assertEqual(options.config.max_message_size, 16 * 1024 * 1024)

    def test_repeatable_ports_and_flags(self) -> None:
        """--port repeats; component flags and limits reach the config."""
        options = parse(
            "--port",
            "tcp:0",
            "--port",
            "unix:/tmp/x.sock",
            "--app",
            "echo",
            "--frame-by-frame",
            "--manual-pong",
            "--manual-close",
            "--split-message",
            "--frame-size",
            "64",
            "--max-message-size",
            "1000",
            "--heartbeat-interval",
            "2.5",
            "--allowed-origin",
            "https://a.example",
            "--allowed-origin",
            "https://*.b.example",
            "--subprotocol",
            "chat",
            "--no-utf8-validation",
            "--compression",
            "--skip-upgrade-check",
            "--skip-version-check",
        )
        cfg = options.config
        self.assertEqual(options["ports"], ["tcp:0", "unix:/tmp/x.sock"])
        self.assertIsInstance(options.handler, Echo)
        self.assertEqual(
            (
                cfg.frame_by_frame,
                cfg.manual_pong,
                cfg.manual_close,
                cfg.split_message,
                cfg.frame_size,
                cfg.max_message_size,
                cfg.heartbeat_interval,
                cfg.utf8_validation,
                cfg.compression,
                cfg.skip_upgrade_check,
                cfg.skip_version_check,
            ),
            (True, True, True, True, 64, 1000, 2.5, False, True, True, True),
        )
        self.assertEqual(
            cfg.allowed_origins, ("https://a.example", "https://*.b.example")
        )
        self.assertEqual(cfg.subprotocols, ("chat",))

    def test_module_attr_app(self) -> None:
        """--app module:attr loads (and instantiates) a handler class."""
        options = parse("--app", "wsplugin.apps.echo:Echo")
        self.assertIsInstance(options.handler, Echo)

    def test_errors_are_usage_errors(self) -> None:
        """Bad options raise UsageError with a message naming the problem."""
        cases = [
            (["--app", "nosuch"], "unknown app"),
            (["--app", "nosuchmodule:X"], "cannot import"),
            (["--app", "wsplugin.apps.echo:Nope"], "no attribute"),
            (["--port", "bogus:1234"], "bad --port"),
            (["--port", "tcp:notaport"], "bad --port"),
            (["--port", "ssl:0:privateKey=/nonexistent.pem"], "bad --port"),
            (["--tls-cert", "/nonexistent/cert.pem"], "no such file"),
            (["--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
            (["--split-message", "--frame-size", "2"], "--frame-size"),
            (["--max-message-size", "-5"], "--max-message-size"),
            (["--path", "chat"], "--path"),
        ]
        for args, fragment in cases:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertIn(fragment, str(e), args)
            self.assertNotIn("\n", str(e), args)

    def test_auth_file_guards_the_site(self) -> None:
        """--auth-file guards the app's route and, through http_auth, every
        HTTP path but the --public-path ones; bad public paths are usage
        errors; a mixed file needs --allow-mixed-hashes."""
        users = Path(self.mktemp())
        sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest()).decode()
        users.write_text(f"ann:{sha}\n")
        options = parse(
            "--port", "tcp:0", "--auth-file", str(users),
            "--public-path", "/login", "--public-path", "/assets/",
        )  # fmt: skip
        self.assertEqual(options["public_paths"], ["/login", "/assets/"])
        server = makeService(options)
        route = server.factory.router.resolve("x", "/")
        self.assertIs(route.auth, options.auth)
        self.assertIsNot(server.listening_factory, server.factory)  # a site
        self.assertRaises(usage.UsageError, parse, "--public-path", "login")
        bcrypt_line = "bob:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
        users.write_text(f"ann:{sha}\n{bcrypt_line}\n")
        error = self.assertRaises(usage.UsageError, parse, "--auth-file", str(users))
        self.assertIn("mixes password hashes", str(error))
        parse("--auth-file", str(users), "--allow-mixed-hashes")

    def test_make_service(self) -> None:
        """makeService builds a WebSocketServer with the endpoints, path and
        config; a --path makes other paths 404."""
        options = parse(
            "--port", "tcp:0", "--app", "echo", "--path", "/ws", "--max-queue", "5"
        )
        server = makeService(options)
        self.assertIsInstance(server, WebSocketServer)
        self.assertEqual(server.endpoints, ["tcp:0"])
        self.assertEqual(server.config.max_queue, 5)
        self.assertIsNotNone(server.factory.router.resolve("x", "/ws"))
        self.assertIsNone(server.factory.router.resolve("x", "/other"))


class HttpFlagTests(SynchronousTestCase):
    """Flags for HTTP bodies, connection limits and static files."""

    def test_limits(self) -> None:
        """The new limits reach the config; --per-ip-exempt repeats, and
        'none' leaves no exemption."""
        options = parse(
            "--max-request-body",
            "2048",
            "--request-body-timeout",
            "7",
            "--max-connections-per-ip",
            "9",
            "--per-ip-exempt",
            "10.0.0.0/8",
            "--per-ip-exempt",
            "::1",
        )
        config = options.config
        self.assertEqual(
            (
                config.max_request_body,
                config.request_body_timeout,
                config.max_connections_per_ip,
                config.per_ip_exempt,
            ),
            (2048, 7.0, 9, ("10.0.0.0/8", "::1/128")),
        )
        self.assertEqual(parse("--per-ip-exempt", "none").config.per_ip_exempt, ())
        self.assertRaises(usage.UsageError, parse, "--per-ip-exempt", "nonsense")

    def test_static_flags(self) -> None:
        """--static-listing, --static-dotfiles, --static-follow-symlinks
        reach the StaticFiles root; without them all three are off."""
        root = Path(self.mktemp())
        root.mkdir()
        for flags, expected in [
            ([], False),
            (
                ["--static-listing", "--static-dotfiles", "--static-follow-symlinks"],
                True,
            ),
        ]:
            server = makeService(parse("--static", str(root), *flags))
            files = server.site.resource._http
            self.assertEqual(
                (files.listing, files.dotfiles, files.follow_symlinks),
                (expected,) * 3,
            )


class NumberOptionsTests(SynchronousTestCase):
    """A value that is not a number is refused with the option's name."""

    def test_not_a_number_names_the_option(self) -> None:
        """--max-connections lots and --idle-timeout soon name the option
        and the value (Twisted's own message quoted only int()'s)."""
        cases = {
            ("--max-connections", "lots"): "--max-connections takes a whole "
            "number, not 'lots'",
            ("--idle-timeout", "soon"): "--idle-timeout takes a number, not 'soon'",
            ("--frame-size", "1.5"): "--frame-size takes a whole number, not '1.5'",
        }
        for args, message in cases.items():
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertEqual(str(e), message)

    def test_max_queue_messages_agree(self) -> None:
        """--max-queue -1 and --max-queue 0 give one consistent message."""
        for value in ("-1", "0"):
            e = self.assertRaises(usage.UsageError, parse, "--max-queue", value)
            self.assertEqual(
                str(e), f"--max-queue must be an integer >= 1, not {value}"
            )

    def test_config_names_become_flags(self) -> None:
        """Errors from the config name the flag a twistd user typed."""
        e = self.assertRaises(usage.UsageError, parse, "--send-buffer-policy", "block")
        self.assertTrue(str(e).startswith("--send-buffer-policy must be"), str(e))


def write_pems(test: SynchronousTestCase, ca: trustme.CA, *names: str) -> dict:
    """Certificate, key and CA files for ``names`` in a fresh directory."""
    base = Path(test.mktemp())
    base.mkdir()
    issued = ca.issue_cert(*names)
    files = {
        "cert": base / "cert.pem",
        "key": base / "key.pem",
        "ca": base / "ca.pem",
    }
    issued.cert_chain_pems[0].write_to_path(str(files["cert"]))
    issued.private_key_pem.write_to_path(str(files["key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    return {k: str(v) for k, v in files.items()}


class TLSOptionsTests(SynchronousTestCase):
    """--tls-* build TLSOptions; every port is wrapped or refused."""

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.files = write_pems(self, self.ca, "localhost")

    def tls(self, *args: str) -> Options:
        return parse(
            "--tls-cert", self.files["cert"], "--tls-key", self.files["key"], *args
        )

    def test_all_flags(self) -> None:
        """Every --tls-* flag reaches TLSOptions; the ports stay as given
        (the server wraps them, tcp6: and unix: included)."""
        options = self.tls(
            "--port",
            "tcp:0",
            "--port",
            "tcp6:0:interface=\\:\\:1",
            "--port",
            "unix:/tmp/wsplugin-test.sock",
            "--tls-chain",
            self.files["ca"],
            "--tls-min-version",
            "1.3",
            "--tls-ciphers",
            "ECDHE+AESGCM",
            "--tls-alpn",
            "http/1.1, x-test",
            "--tls-client-ca",
            self.files["ca"],
            "--tls-client-cert",
            "optional",
        )
        tls = options.tls
        self.assertEqual(
            options["ports"],
            ["tcp:0", "tcp6:0:interface=\\:\\:1", "unix:/tmp/wsplugin-test.sock"],
        )
        self.assertEqual(
            (
                tls.certificate,
                tls.key,
                tls.chain,
                tls.min_version,
                tls.ciphers,
                tls.alpn,
                tls.client_ca,
                tls.client_cert,
            ),
            (
                self.files["cert"],
                self.files["key"],
                self.files["ca"],
                "1.3",
                "ECDHE+AESGCM",
                ("http/1.1", "x-test"),
                self.files["ca"],
                "optional",
            ),
        )

    def test_defaults(self) -> None:
        """TLS 1.2 minimum, Twisted's ciphers, automatic ALPN (None, as
        TLSOptions), no client certificates; the default port is tcp:8888
        with TLS."""
        options = self.tls()
        tls = options.tls
        self.assertEqual(options["ports"], ["tcp:8888"])
        self.assertEqual(
            (tls.min_version, tls.ciphers, tls.alpn, tls.client_ca),
            ("1.2", None, None, None),
        )
        self.assertEqual(parse().tls, None)

    def test_alpn_off(self) -> None:
        """--tls-alpn none (or '') turns ALPN off."""
        for value in ("none", ""):
            self.assertEqual(self.tls("--tls-alpn", value).tls.alpn, ())

    def test_refused_ports(self) -> None:
        """A port that speaks TLS itself, or whose kind is unknown, is
        refused with a one-line error instead of staying in cleartext."""
        for port, fragment in [
            ("ssl:0:privateKey=x.pem", "speaks TLS itself"),
            ("tls:/etc/certs:port=0", "speaks TLS itself"),
            ("onion:80", "cannot put TLS on"),
            ("stdio:", "cannot put TLS on"),
        ]:
            e = self.assertRaises(usage.UsageError, self.tls, "--port", port)
            self.assertIn(fragment, str(e), port)
            self.assertTrue(str(e).startswith("--tls-cert: "), str(e))
            self.assertNotIn("\n", str(e))

    def test_errors(self) -> None:
        """Bad --tls-* values and files: one line naming the flag."""
        other = write_pems(self, trustme.CA(), "localhost")
        garbage = Path(self.mktemp())
        garbage.write_text("not a certificate")
        cases = [
            (["--tls-min-version", "1.1"], "--tls-min-version takes 1.2 or 1.3"),
            (["--tls-client-cert", "maybe"], "--tls-client-cert takes optional"),
            (["--tls-ciphers", "NO-SUCH-CIPHER"], "--tls-ciphers"),
            (["--tls-alpn", "h2,"], "--tls-alpn"),
            (["--tls-chain", str(garbage)], "--tls-chain"),
            (["--tls-client-ca", "/nonexistent/ca.pem"], "--tls-client-ca"),
        ]
        for args, fragment in cases:
            e = self.assertRaises(usage.UsageError, self.tls, *args)
            self.assertIn(fragment, str(e), args)
            self.assertNotIn("\n", str(e), args)
        e = self.assertRaises(
            usage.UsageError,
            parse,
            "--tls-cert",
            self.files["cert"],
            "--tls-key",
            other["key"],
        )
        self.assertIn("does not belong to the certificate", str(e))
        e = self.assertRaises(
            usage.UsageError,
            parse,
            "--tls-cert",
            str(garbage),
            "--tls-key",
            other["key"],
        )
        self.assertIn("--tls-cert", str(e))
        for flag, value in [
            ("--tls-ciphers", "x"),
            ("--tls-client-ca", "x"),
            ("--tls-chain", "x"),
            # flags with a default: refused too, even given their default
            ("--tls-min-version", "1.1"),
            ("--tls-min-version", "1.3"),
            ("--tls-min-version", "1.2"),
            ("--tls-alpn", "h2"),
            ("--tls-alpn", "none"),
            ("--tls-client-cert", "optional"),
            ("--tls-client-cert", "required"),
        ]:
            e = self.assertRaises(usage.UsageError, parse, flag, value)
            self.assertEqual(str(e), f"{flag} needs --tls-cert")
        e = self.assertRaises(
            usage.UsageError, parse, "--tls-key", "k", "--tls-min-version", "1.3"
        )
        self.assertEqual(str(e), "--tls-key, --tls-min-version need --tls-cert")

    def test_make_service_tls(self) -> None:
        """makeService gives the server the TLS options and a SIGHUP reloader."""
        server = makeService(self.tls("--port", "tcp:0"))
        self.assertEqual(server.tls.options.certificate, self.files["cert"])
        reloaders = [s for s in server if isinstance(s, ReloadOnHangup)]
        self.assertEqual(len(reloaders), 1)
        plain = makeService(parse("--port", "tcp:0"))
        self.assertIsNone(plain.tls)
        self.assertEqual([s for s in plain if isinstance(s, ReloadOnHangup)], [])
