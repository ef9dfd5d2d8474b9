"""``twistd ws`` options: parsing, validation, and the service they build."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import bcrypt
import trustme
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wsplugin.apps.chat import Chat
from wsplugin.apps.echo import Echo
from wsplugin.server import WebSocketServer
from wsplugin.tap import Options, makeService


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
            (["--tls-key", "k.pem"], "need --tls-cert"),
            (["--split-message", "--frame-size", "2"], "frame_size"),
            (["--max-message-size", "-5"], "max_message_size"),
            (["--path", "chat"], "--path"),
        ]
        for args, fragment in cases:
            e = self.assertRaises(usage.UsageError, parse, *args)
            self.assertIn(fragment, str(e), args)
            self.assertNotIn("\n", str(e), args)

    def test_tls_turns_tcp_into_ssl(self) -> None:
        """--tls-cert/--tls-key/--tls-chain turn tcp: ports into ssl: ones."""
        cert = Path(self.mktemp())
        cert.write_text("not read at this point")
        options = Options()
        options["tls-cert"] = str(cert)
        options["tls-key"] = str(cert)
        self.assertEqual(
            options._tls_port("tcp:8443:interface=127.0.0.1"),
            f"ssl:8443:interface=127.0.0.1:certKey={cert}:privateKey={cert}",
        )
        self.assertEqual(options._tls_port("unix:/x"), "unix:/x")

    def test_tls_options_exclude_old_versions(self) -> None:
        """The TLS context built from --tls-cert refuses TLS 1.0 and 1.1."""
        ca = trustme.CA()
        cert = ca.issue_cert("localhost")
        base = self.mktemp()
        cert.cert_chain_pems[0].write_to_path(base + "-c.pem")
        cert.private_key_pem.write_to_path(base + "-k.pem")
        options = parse(
            "--port",
            "tcp:0",
            "--tls-cert",
            base + "-c.pem",
            "--tls-key",
            base + "-k.pem",
        )
        (description,) = options["ports"]
        endpoint = serverFromString(reactor, description)
        flags = endpoint._sslContextFactory._options
        self.assertTrue(flags & SSL.OP_NO_TLSv1)
        self.assertTrue(flags & SSL.OP_NO_TLSv1_1)
        self.assertFalse(flags & SSL.OP_NO_TLSv1_2)

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
