"""wsplugin._configroutes: the ``[[route]]`` tables of ``twistd ws
--config`` become routes of the server, and every mistake in one is reported
with the table's line."""

from __future__ import annotations

from typing import Any

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.test_configfile import AUTHENTICATOR, Files, check_token
from wsplugin._configroutes import (
    AUTH_KEYS,
    ROUTE_KEYS,
    ROUTE_OPTIONS,
    RouteSpec,
    without_option_name,
)
from wsplugin.apps.chat import Chat
from wsplugin.apps.echo import Echo
from wsplugin.auth import ApiKeyAuth, BasicAuth, QueryTokenAuth
from wsplugin.config import SERVER_ONLY, ServerConfig
from wsplugin.tap import makeService


class RouteTests(SynchronousTestCase):
    """[[route]] tables become routes of the server."""

    def test_routes_registered(self) -> None:
        """Each route gets its handler, host, overrides and authenticator;
        without an app, paths no route takes have no route (404)."""
        files = Files(self)
        options = files.options(
            'ports = ["tcp:0"]\nmax_message_size = 5000\n'
            '[[route]]\npath = "/echo"\nhandler = "echo"\nmax_message_size = 100\n'
            'subprotocols = ["a", "b"]\ncompression = true\n'
            '[[route]]\npath = "/chat"\nhost = "chat.example"\nhandler = "chat"\n'
            'auth = { htpasswd = "users", realm = "chatters" }\n'
            '[[route]]\npath = "/keys"\nhandler = "echo"\n'
            'auth = { api_keys = { "k-1" = "alice" }, header = "X-Key" }\n'
            '[[route]]\npath = "/token"\nhandler = "echo"\n'
            'auth = { token = "tests.test_configfile:check_token", param = "t" }\n'
            '[[route]]\npath = "/custom"\nhandler = "echo"\n'
            'auth = { authenticator = "tests.test_configfile:AUTHENTICATOR" }\n'
        )
        self.assertIsNone(options.handler)
        server = makeService(options)
        router = server.factory.router
        echo = router.resolve("any.example:80", "/echo")
        self.assertIsInstance(echo.handler, Echo)
        self.assertEqual(echo.config.max_message_size, 100)
        self.assertEqual(echo.config.subprotocols, ("a", "b"))
        self.assertTrue(echo.config.compression)
        self.assertIsNone(echo.auth)
        self.assertEqual(server.config.max_message_size, 5000)
        chat = router.resolve("chat.example", "/chat")
        self.assertIsInstance(chat.handler, Chat)
        self.assertIsInstance(chat.auth, BasicAuth)
        self.assertEqual(chat.auth.realm, "chatters")
        self.assertEqual(chat.auth.checker.path, files.dir / "users")
        self.assertIsNone(router.resolve("other.example", "/chat"))
        keys = router.resolve("x", "/keys").auth
        self.assertIsInstance(keys, ApiKeyAuth)
        self.assertEqual((keys.keys, keys.header), ({"k-1": "alice"}, "X-Key"))
        token = router.resolve("x", "/token").auth
        self.assertIsInstance(token, QueryTokenAuth)
        self.assertEqual((token.check, token.param), (check_token, "t"))
        self.assertIs(router.resolve("x", "/custom").auth, AUTHENTICATOR)
        self.assertIsNone(router.resolve("x", "/other"))

    def test_routes_beside_the_app(self) -> None:
        """With an app, the app serves the paths no route takes; a route
        with ``default_path`` takes them instead on its host."""
        files = Files(self)
        text = 'app = "chat"\n[[route]]\npath = "/echo"\nhandler = "echo"\n'
        router = makeService(files.options(text)).factory.router
        self.assertIsInstance(router.resolve("x", "/echo").handler, Echo)
        self.assertIsInstance(router.resolve("x", "/elsewhere").handler, Chat)
        router = makeService(files.options(text + "default_path = true\n")).factory
        self.assertIsInstance(router.router.resolve("x", "/elsewhere").handler, Echo)
        # --app on the command line is an app too
        text = '[[route]]\npath = "/echo"\nhandler = "echo"\n'
        options = files.options(text, "--app", "chat", "--path", "/chat")
        router = makeService(options).factory.router
        self.assertIsInstance(router.resolve("x", "/chat").handler, Chat)
        self.assertIsNone(router.resolve("x", "/elsewhere"))

    def test_default_host(self) -> None:
        """A route with a host and ``default_host`` serves unknown hosts,
        when no route (or app) serves every host already."""
        files = Files(self)
        options = files.options(
            '[[route]]\npath = "/a"\nhost = "a.example"\nhandler = "echo"\n'
            "default_host = true\n"
        )
        router = makeService(options).factory.router
        self.assertIsNotNone(router.resolve("unknown.example", "/a"))

    def test_auth_inherited_unless_false(self) -> None:
        """A route without ``auth`` is guarded by ``auth_file`` like the
        app; ``auth = false`` makes it public."""
        files = Files(self)
        options = files.options(
            'auth_file = "users"\n'
            '[[route]]\npath = "/guarded"\nhandler = "echo"\n'
            '[[route]]\npath = "/open"\nhandler = "echo"\nauth = false\n'
        )
        router = makeService(options).factory.router
        self.assertIs(router.resolve("x", "/guarded").auth, options.auth)
        self.assertIsInstance(options.auth, BasicAuth)
        self.assertIsNone(router.resolve("x", "/open").auth)

    def test_route_options_are_the_overridable_ones(self) -> None:
        """Every ServerConfig option not in SERVER_ONLY can be set per
        route; every one in it is refused there."""
        files = Files(self)
        for name in ServerConfig.option_names():
            value = getattr(ServerConfig(), name)
            if isinstance(value, tuple) or value is None:
                literal = '["x.example"]' if name != "per_ip_exempt" else "[]"
            elif isinstance(value, bool):
                literal = "true" if not value else "false"
            elif isinstance(value, str):
                literal = repr(value)
            else:
                literal = str(value)
            text = f'[[route]]\npath = "/r"\nhandler = "echo"\n{name} = {literal}\n'
            if name == "assemble_messages":  # an option of frame_by_frame
                text += "frame_by_frame = true\n"
            if name in SERVER_ONLY:
                self.assertIn("applies to the whole server", files.error(self, text))
            else:
                route = files.options(text).routes[0]
                self.assertIn(name, route.overrides)

    def test_registration_logged(self) -> None:
        """makeService logs each route with where the file declares it."""
        files = Files(self)
        options = files.options('[[route]]\npath = "/e"\nhandler = "echo"\n')
        seen: list[str] = []

        def observe(event: dict) -> None:
            seen.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        makeService(options)
        self.assertIn(f"route * /e: Echo ({files.path}:1)", seen)


class RouteErrorTests(SynchronousTestCase):
    """Every mistake in a [[route]] table names the file, the line and the
    key, in one line."""

    def check(self, cases: list[tuple[str, str]], *args: str) -> None:
        files = Files(self)
        for text, expected in cases:
            self.assertEqual(files.error(self, text, *args), expected, text)

    def test_routes(self) -> None:
        """Route errors name the route by its path and the key in it."""
        route = '[[route]]\npath = "/a"\nhandler = "echo"\n'
        self.check(
            [
                (
                    route + "max_connections = 5\n",
                    'DIR/ws.toml:4: route "/a": max_connections: applies to the '
                    "whole server (it acts before a route is known); set it at "
                    "the top level of the file",
                ),
                (
                    route + "handlr = 1\n",
                    'DIR/ws.toml:4: route "/a": handlr: unknown key; did you '
                    "mean handler?",
                ),
                (
                    '[[route]]\npath = "/a"\n',
                    'DIR/ws.toml:1: route "/a": needs a handler (every [[route]] '
                    "has a path and a handler)",
                ),
                (
                    '[[route]]\nhandler = "echo"\n',
                    "DIR/ws.toml:1: route 1: needs a path (every [[route]] has a "
                    "path and a handler)",
                ),
                (
                    '[[route]]\npath = "a"\nhandler = "echo"\n',
                    "DIR/ws.toml:2: route \"a\": path: must start with '/', not 'a'",
                ),
                (
                    route + route.replace("/a", "/b") + "max_queue = 0\n",
                    'DIR/ws.toml:7: route "/b": max_queue: must be an integer '
                    ">= 1, not 0",
                ),
                (
                    route + 'idle_timeout = "1"\n',
                    'DIR/ws.toml:4: route "/a": idle_timeout: must be a number, '
                    "not '1' (a string)",
                ),
                (
                    route + 'host = ""\n',
                    'DIR/ws.toml:4: route "/a": host: must be a host name; leave '
                    "it out for every host",
                ),
                (
                    route + "default_host = true\n",
                    'DIR/ws.toml:4: route "/a": default_host: needs a host (a '
                    "route without one serves every host already)",
                ),
                (
                    '[[route]]\npath = "/a"\nhandler = "nosuch"\n',
                    "DIR/ws.toml:3: route \"/a\": handler: unknown app 'nosuch': "
                    "use one of chat, echo or module:attribute",
                ),
                (
                    'path = "/x"\n' + route,
                    "DIR/ws.toml:1: path: is where the app serves, but there is "
                    "no app (a file with routes has none unless it sets app); set "
                    "app, or leave path out",
                ),
                (
                    route
                    + route.replace("/a", "/b")
                    + 'host = "b.example"\ndefault_host = true\n',
                    'DIR/ws.toml:8: route "/b": default_host: only one host can be '
                    'the default; route "/a" (line 1) has no host, so it serves '
                    "every other host already",
                ),
                (
                    'app = "echo"\n[[route]]\npath = "/b"\nhandler = "echo"\n'
                    'host = "b.example"\ndefault_host = true\n',
                    'DIR/ws.toml:6: route "/b": default_host: only one host can be '
                    "the default; the app serves every other host already",
                ),
                (
                    '[[route]]\npath = "/b"\nhandler = "echo"\nhost = "b.example"\n'
                    "default_host = true\n" + route,
                    'DIR/ws.toml:6: route "/a": a route without a host serves '
                    "every host, but route \"/b\" (line 1) makes 'b.example' the "
                    "default host; give this route a host, or drop default_host "
                    "there",
                ),
                (
                    '[[route]]\npath = "/a"\nhandler = '
                    '"tests.test_configfile:BadHandler"\n',
                    'DIR/ws.toml:1: route "/a": BadHandler.on_message is not callable',
                ),
            ]
        )

    def test_route_auth(self) -> None:
        """Bad ``auth`` tables: their kind, keys and files."""
        route = '[[route]]\npath = "/a"\nhandler = "echo"\n'
        self.check(
            [
                (
                    route + "auth = true\n",
                    'DIR/ws.toml:4: route "/a": auth: must be a table such as '
                    '{ htpasswd = "users.htpasswd" }, or false for a public route; '
                    "not true (a boolean)",
                ),
                (
                    route + "auth = {}\n",
                    'DIR/ws.toml:4: route "/a": auth: needs exactly one of '
                    "htpasswd, api_keys, token, authenticator",
                ),
                (
                    route + 'auth = { htpasswd = "users", token = "x:y" }\n',
                    'DIR/ws.toml:4: route "/a": auth: needs exactly one of '
                    "htpasswd, api_keys, token, authenticator; it has htpasswd, "
                    "token",
                ),
                (
                    route + 'auth = { htpasswd = "users", header = "X" }\n',
                    'DIR/ws.toml:4: route "/a": auth.header: unknown key for '
                    "htpasswd auth",
                ),
                (
                    route + '\n[route.auth]\nhtpasswd = "nofile"\n',
                    'DIR/ws.toml:6: route "/a": auth.htpasswd: cannot read the '
                    "password file DIR/nofile: No such file or directory",
                ),
                (
                    route + 'auth = { htpasswd = "users", realm = "a\\"b" }\n',
                    'DIR/ws.toml:4: route "/a": auth.realm: the realm must be '
                    "printable and without quotes",
                ),
                (
                    route + 'auth = { htpasswd = "users", allow_mixed_hashes = 1 }\n',
                    'DIR/ws.toml:4: route "/a": auth.allow_mixed_hashes: must be '
                    "true or false, not 1 (an integer)",
                ),
                (
                    route + "auth = { api_keys = { k = 5 } }\n",
                    'DIR/ws.toml:4: route "/a": auth.api_keys: must be a table of '
                    'keys and identities, e.g. { "a-long-random-key" = "alice" }',
                ),
                (
                    route + 'auth = { token = "tests.test_configfile:NOT_CALLABLE" }\n',
                    'DIR/ws.toml:4: route "/a": auth.token: '
                    "tests.test_configfile:NOT_CALLABLE is not callable",
                ),
                (
                    route + 'auth = { token = "nosuchmodule:check" }\n',
                    'DIR/ws.toml:4: route "/a": auth.token: cannot import module '
                    "'nosuchmodule' for app 'nosuchmodule:check': No module named "
                    "'nosuchmodule'",
                ),
                (
                    route + "auth = { authenticator = "
                    '"tests.test_configfile:check_token" }\n',
                    'DIR/ws.toml:4: route "/a": auth.authenticator: '
                    "tests.test_configfile:check_token has no authenticate(conn) "
                    "method",
                ),
                (
                    route + 'auth = { api_keys = { k = "v" }, header = "" }\n',
                    'DIR/ws.toml:4: route "/a": auth.header: must not be empty',
                ),
            ]
        )


class Guard:
    """An authenticator, as far as a RouteSpec knows."""


class Registering:
    """A server's register_handler, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def register_handler(self, *args: Any, **kwargs: Any) -> str:
        self.calls.append((args, kwargs))
        return "the route"


class RouteSpecTests(SynchronousTestCase):
    """A checked route, registered on a server."""

    def test_register(self) -> None:
        """register() hands every part of the spec to register_handler,
        returns what it returns and logs the route with its source."""
        seen: list[str] = []

        def observe(event: dict) -> None:
            seen.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        handler, auth = Echo(), Guard()
        spec = RouteSpec(
            "a.example", "/e", handler, auth, False, True, {"max_queue": 3}, 7, "f:7"
        )
        server = Registering()
        self.assertEqual(spec.register(server), "the route")
        self.assertEqual(
            server.calls,
            [
                (
                    ("a.example", "/e", handler),
                    {
                        "default_host": False,
                        "default_path": True,
                        "auth": auth,
                        "max_queue": 3,
                    },
                )
            ],
        )
        self.assertIn("route a.example /e: Echo, auth Guard (f:7)", seen)
        public = RouteSpec("*", "/p", handler, None, True, False)
        public.register(server)
        self.assertIn("route * /p: Echo ()", seen)
        self.assertEqual(server.calls[1][1]["auth"], None)

    def test_without_option_name(self) -> None:
        """A ServerConfig message loses its leading option name, either
        form; other messages are kept."""
        self.assertEqual(
            without_option_name("max_queue: must be >= 1", "max_queue"), "must be >= 1"
        )
        self.assertEqual(
            without_option_name("max_queue must be >= 1", "max_queue"), "must be >= 1"
        )
        self.assertEqual(
            without_option_name("max_queue_bytes: x", "max_queue"), "max_queue_bytes: x"
        )

    def test_keys(self) -> None:
        """A route may set every option but the server-wide ones, besides
        its own keys; each auth kind has its own extra keys."""
        self.assertEqual(
            set(ROUTE_OPTIONS), set(ServerConfig.option_names()) - set(SERVER_ONLY)
        )
        self.assertFalse(set(ROUTE_KEYS) & set(ROUTE_OPTIONS))
        self.assertEqual(
            set(AUTH_KEYS), {"htpasswd", "api_keys", "token", "authenticator"}
        )
        self.assertEqual(AUTH_KEYS["htpasswd"], ("realm", "allow_mixed_hashes"))
