"""Host and path routing with default host and default path (wsplugin._routing)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsplugin._routing import Route, Router
from wsplugin.config import ServerConfig
from wsplugin.errors import ConfigError

CONFIG = ServerConfig()


class Handler:
    """A distinct handler object, named for readable failures."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Handler({self.name!r})"


def handler_of(route: Route | None) -> object:
    """The handler a resolved route serves (None without a route)."""
    return None if route is None else route.handler


class ExactMatchTests(SynchronousTestCase):
    """An exact host and path pick their route."""

    def test_exact_match(self) -> None:
        """The route registered for host and path serves exactly that pair."""
        router = Router()
        chat, news = Handler("chat"), Handler("news")
        route = router.register("example.com", "/chat", chat, CONFIG)
        router.register("example.com", "/news", news, CONFIG)
        self.assertIs(router.resolve("example.com", "/chat"), route)
        self.assertIs(handler_of(router.resolve("example.com", "/news")), news)

    def test_no_match(self) -> None:
        """An unknown path or host without defaults has no route."""
        router = Router()
        router.register("example.com", "/chat", Handler("chat"), CONFIG)
        self.assertIsNone(router.resolve("example.com", "/other"))
        self.assertIsNone(router.resolve("other.org", "/chat"))

    def test_path_is_exact(self) -> None:
        """Paths match exactly: no prefix, trailing-slash or case folding."""
        router = Router()
        router.register("h", "/chat", Handler("chat"), CONFIG)
        for path in ("/chat/", "/chat/x", "/Chat", "/cha", "chat"):
            self.assertIsNone(router.resolve("h", path), path)

    def test_same_path_on_two_hosts(self) -> None:
        """The same path on two hosts serves two handlers."""
        router = Router()
        a, b = Handler("a"), Handler("b")
        router.register("a.com", "/", a, CONFIG)
        router.register("b.com", "/", b, CONFIG)
        self.assertIs(handler_of(router.resolve("a.com", "/")), a)
        self.assertIs(handler_of(router.resolve("b.com", "/")), b)

    def test_route_fields(self) -> None:
        """register returns a Route with the lowercase host, path, handler and
        config."""
        router = Router()
        handler = Handler("h")
        route = router.register("Example.COM:8080", "/p", handler, CONFIG)
        self.assertEqual(route, Route("example.com", "/p", handler, CONFIG))


class HostNormalisationTests(SynchronousTestCase):
    """Port and case of the host are ignored, at registration and lookup."""

    def test_port_ignored(self) -> None:
        """Any port (or none) in the Host header finds the host's route."""
        router = Router()
        handler = Handler("h")
        router.register("example.com", "/", handler, CONFIG)
        for host in ("example.com", "example.com:80", "example.com:8080"):
            self.assertIs(handler_of(router.resolve(host, "/")), handler, host)

    def test_registered_port_ignored(self) -> None:
        """A port in the registered host is dropped too."""
        router = Router()
        handler = Handler("h")
        router.register("example.com:9000", "/", handler, CONFIG)
        self.assertIs(handler_of(router.resolve("example.com", "/")), handler)

    def test_case_ignored(self) -> None:
        """Host case does not matter on either side."""
        router = Router()
        handler = Handler("h")
        router.register("Example.Com", "/", handler, CONFIG)
        for host in ("example.com", "EXAMPLE.COM:443", "eXaMpLe.cOm"):
            self.assertIs(handler_of(router.resolve(host, "/")), handler, host)

    def test_ipv6_host(self) -> None:
        """An IPv6 literal host matches with or without a port."""
        router = Router()
        handler = Handler("h")
        router.register("[::1]", "/", handler, CONFIG)
        self.assertIs(handler_of(router.resolve("[::1]:8080", "/")), handler)
        self.assertIsNone(router.resolve("[::2]:8080", "/"))


class DefaultPathTests(SynchronousTestCase):
    """The default path of a host serves that host's unknown paths."""

    def test_default_path(self) -> None:
        """An unknown path on a host gets the host's default-path route."""
        router = Router()
        main, chat = Handler("main"), Handler("chat")
        router.register("h", "/", main, CONFIG, default_path=True)
        router.register("h", "/chat", chat, CONFIG)
        self.assertIs(handler_of(router.resolve("h", "/chat")), chat)
        self.assertIs(handler_of(router.resolve("h", "/anything")), main)
        self.assertIs(handler_of(router.resolve("h", "/")), main)

    def test_default_path_is_per_host(self) -> None:
        """A default path on one host does not serve another host."""
        router = Router()
        router.register("a.com", "/", Handler("a"), CONFIG, default_path=True)
        router.register("b.com", "/b", Handler("b"), CONFIG)
        self.assertIsNone(router.resolve("b.com", "/x"))

    def test_later_default_path_wins(self) -> None:
        """Registering another default path on a host replaces the first."""
        router = Router()
        first, second = Handler("first"), Handler("second")
        router.register("h", "/1", first, CONFIG, default_path=True)
        router.register("h", "/2", second, CONFIG, default_path=True)
        self.assertIs(handler_of(router.resolve("h", "/x")), second)
        self.assertIs(handler_of(router.resolve("h", "/1")), first)


class DefaultHostTests(SynchronousTestCase):
    """The default host serves requests for hosts nobody registered."""

    def test_unknown_host_gets_default_host(self) -> None:
        """An unregistered host is served by the default host's routes."""
        router = Router()
        main, other = Handler("main"), Handler("other")
        router.register("main.com", "/ws", main, CONFIG, default_host=True)
        router.register("other.com", "/ws", other, CONFIG)
        self.assertIs(handler_of(router.resolve("unknown.org", "/ws")), main)
        self.assertIs(handler_of(router.resolve("", "/ws")), main)
        self.assertIs(handler_of(router.resolve("other.com", "/ws")), other)

    def test_default_host_then_default_path(self) -> None:
        """An unknown host and unknown path use the default host's default path."""
        router = Router()
        catch_all = Handler("catch-all")
        router.register(
            "main.com", "/", catch_all, CONFIG, default_host=True, default_path=True
        )
        self.assertIs(handler_of(router.resolve("x.org", "/deep/path")), catch_all)

    def test_default_host_unknown_path(self) -> None:
        """An unknown path on the default host without a default path: no route."""
        router = Router()
        router.register("main.com", "/ws", Handler("main"), CONFIG, default_host=True)
        self.assertIsNone(router.resolve("x.org", "/other"))

    def test_known_host_does_not_fall_back(self) -> None:
        """A registered host with no matching path is not served by the default
        host: the host entry decides alone."""
        router = Router()
        router.register(
            "main.com",
            "/",
            Handler("main"),
            CONFIG,
            default_host=True,
            default_path=True,
        )
        router.register("other.com", "/ws", Handler("other"), CONFIG)
        self.assertIsNone(router.resolve("other.com", "/elsewhere"))

    def test_second_default_host_rejected(self) -> None:
        """A second, different default host is a ConfigError naming the first;
        nothing is registered and the first stays the default host."""
        router = Router()
        a = Handler("a")
        router.register("a.com", "/", a, CONFIG, default_host=True)
        exc = self.assertRaises(
            ConfigError,
            router.register,
            "b.com",
            "/",
            Handler("b"),
            CONFIG,
            default_host=True,
        )
        self.assertIn("'a.com'", str(exc))
        self.assertIs(handler_of(router.resolve("b.com", "/")), a)
        self.assertEqual([r.host for r in router.routes()], ["a.com"])

    def test_same_default_host_again(self) -> None:
        """More routes on the default host may say default_host=True again, in
        any case or with a port."""
        router = Router()
        a, b = Handler("a"), Handler("b")
        router.register("a.com", "/a", a, CONFIG, default_host=True)
        router.register("A.com:81", "/b", b, CONFIG, default_host=True)
        self.assertIs(handler_of(router.resolve("x", "/b")), b)
        self.assertIs(handler_of(router.resolve("x", "/a")), a)

    def test_no_default_host(self) -> None:
        """Without a default host an unknown host has no route."""
        router = Router()
        router.register("a.com", "/", Handler("a"), CONFIG, default_path=True)
        self.assertIsNone(router.resolve("b.com", "/"))


class StarNotSpecialTests(SynchronousTestCase):
    """ "*" as host or path matches only itself."""

    def test_star_host(self) -> None:
        """A "*" host serves only a literal "*" Host header."""
        router = Router()
        handler = Handler("star")
        route = router.register("*", "/", handler, CONFIG)
        self.assertEqual(route.host, "*")
        self.assertIsNone(router.resolve("example.com", "/"))
        self.assertIs(handler_of(router.resolve("*", "/")), handler)

    def test_star_path(self) -> None:
        """A "*" path serves only the literal path "*"."""
        router = Router()
        handler = Handler("star")
        router.register("h", "*", handler, CONFIG)
        self.assertIsNone(router.resolve("h", "/"))
        self.assertIsNone(router.resolve("h", "/x"))
        self.assertIs(handler_of(router.resolve("h", "*")), handler)

    def test_star_catch_all_with_defaults(self) -> None:
        """ "*"/"*" registered as default host and path (as WebSocketServer does
        for a single handler) serves every host and path."""
        router = Router()
        handler = Handler("all")
        router.register("*", "*", handler, CONFIG, default_host=True, default_path=True)
        for host, path in (("a.com", "/"), ("b.org:1", "/x/y"), ("", "/")):
            self.assertIs(handler_of(router.resolve(host, path)), handler)


class PathValidationTests(SynchronousTestCase):
    """A route path must start with "/" (or be "*")."""

    def test_relative_path_rejected(self) -> None:
        """Paths not starting with "/" are a ConfigError naming the path."""
        router = Router()
        for path in ("chat", "", " /chat", "**"):
            exc = self.assertRaises(
                ConfigError, router.register, "h", path, Handler("h"), CONFIG
            )
            self.assertIn(repr(path), str(exc))
        self.assertEqual(router.routes(), [])
        self.assertFalse(router)

    def test_non_string_path_rejected(self) -> None:
        """A non-string path is a ConfigError."""
        router = Router()
        self.assertRaises(
            ConfigError, router.register, "h", b"/chat", Handler("h"), CONFIG
        )
        self.assertRaises(ConfigError, router.register, "h", None, Handler("h"), CONFIG)


class UnregisterTests(SynchronousTestCase):
    """unregister removes a route; the rest keeps working."""

    def test_unregister(self) -> None:
        """An unregistered route no longer resolves; others still do."""
        router = Router()
        keep = Handler("keep")
        router.register("h", "/gone", Handler("gone"), CONFIG)
        router.register("h", "/keep", keep, CONFIG)
        router.unregister("h", "/gone")
        self.assertIsNone(router.resolve("h", "/gone"))
        self.assertIs(handler_of(router.resolve("h", "/keep")), keep)
        self.assertEqual([r.path for r in router.routes()], ["/keep"])

    def test_unregister_host_normalised(self) -> None:
        """unregister ignores host case and port like register."""
        router = Router()
        router.register("example.com", "/p", Handler("h"), CONFIG)
        router.unregister("EXAMPLE.com:8080", "/p")
        self.assertIsNone(router.resolve("example.com", "/p"))
        self.assertFalse(router)

    def test_unregister_default_path(self) -> None:
        """Unregistering the default-path route removes the default too."""
        router = Router()
        router.register("h", "/", Handler("main"), CONFIG, default_path=True)
        router.unregister("h", "/")
        self.assertIsNone(router.resolve("h", "/"))
        self.assertIsNone(router.resolve("h", "/other"))

    def test_unregister_absent(self) -> None:
        """Unregistering an unknown host or path is silently ignored."""
        router = Router()
        handler = Handler("h")
        router.register("h", "/p", handler, CONFIG)
        router.unregister("nobody", "/p")
        router.unregister("h", "/missing")
        self.assertIs(handler_of(router.resolve("h", "/p")), handler)

    def test_unregister_star(self) -> None:
        """The "*" host and path are unregistered like any other."""
        router = Router()
        router.register("*", "*", Handler("all"), CONFIG, default_host=True)
        router.unregister("*", "*")
        self.assertIsNone(router.resolve("*", "*"))
        self.assertEqual(router.routes(), [])

    def test_bool(self) -> None:
        """A router is true while it has at least one route."""
        router = Router()
        self.assertFalse(router)
        router.register("h", "/", Handler("h"), CONFIG)
        self.assertTrue(router)
        router.unregister("h", "/")
        self.assertFalse(router)

    def test_unregister_restores_default_host_fallback(self) -> None:
        """Once a host's last route is unregistered, that host is unknown again
        and the default host serves it, as before it was registered."""
        router = Router()
        main = Handler("main")
        router.register("main.com", "/ws", main, CONFIG, default_host=True)
        router.register("other.com", "/ws", Handler("other"), CONFIG)
        router.unregister("other.com", "/ws")
        self.assertIs(handler_of(router.resolve("other.com", "/ws")), main)

    def test_reregistered_default_path_not_stale(self) -> None:
        """Registering a path again replaces its route everywhere: the old
        handler no longer serves as default path, and after unregistering the
        path nothing of it is left."""
        router = Router()
        old, new = Handler("old"), Handler("new")
        router.register("h", "/", old, CONFIG, default_path=True)
        router.register("h", "/", new, CONFIG)
        self.assertIs(handler_of(router.resolve("h", "/")), new)
        self.assertIsNot(handler_of(router.resolve("h", "/other")), old)
        router.unregister("h", "/")
        self.assertIsNone(router.resolve("h", "/other"))


class RouteConfigTests(SynchronousTestCase):
    """Each route keeps the config object it was registered with."""

    def test_config_kept(self) -> None:
        """resolve returns the route with its own config object, unchanged."""
        router = Router()
        small = CONFIG.replace(max_message_size=1024)
        big = CONFIG.replace(max_message_size=10 * 1024 * 1024)
        router.register("h", "/small", Handler("s"), small)
        router.register("h", "/big", Handler("b"), big, default_path=True)
        small_route = router.resolve("h", "/small")
        other_route = router.resolve("h", "/anything")
        assert small_route is not None and other_route is not None
        self.assertIs(small_route.config, small)
        self.assertEqual(small_route.config.max_message_size, 1024)
        self.assertIs(other_route.config, big)
        self.assertEqual(other_route.config.max_message_size, 10 * 1024 * 1024)

    def test_route_is_frozen(self) -> None:
        """A Route cannot be changed after registration."""
        route = Router().register("h", "/", Handler("h"), CONFIG)
        self.assertRaises(AttributeError, setattr, route, "config", CONFIG)
        self.assertIs(route.config, CONFIG)

    def test_routes_lists_all(self) -> None:
        """routes() lists every registered route across hosts."""
        router = Router()
        r1 = router.register("a", "/1", Handler("1"), CONFIG)
        r2 = router.register("b", "/2", Handler("2"), CONFIG, default_path=True)
        r3 = router.register("a", "/3", Handler("3"), CONFIG)
        self.assertEqual(sorted(router.routes(), key=lambda r: r.path), [r1, r2, r3])


class RouteComputedTests(SynchronousTestCase):
    """A Route computes its settings and events once, when it is made."""

    def test_settings_and_events(self) -> None:
        """Settings come from the route's config; events from its handler."""

        class Handler:
            def on_open(self, conn: object) -> None: ...

        config = CONFIG.replace(split_message=True, frame_size=100, manual_pong=True)
        route = Route("h", "/", Handler(), config)
        self.assertEqual(route.settings.fragment_size, 98)  # 2 header bytes
        self.assertEqual(route.settings.plain_key, (98, None))
        self.assertTrue(route.settings.manual_pong)
        self.assertEqual(list(route.events), ["on_open"])

    def test_no_shared_cache(self) -> None:
        """Routes made per request are independent and freed with their last
        reference (nothing else keeps them)."""
        import gc
        import weakref

        route = Route("h", "/", None, CONFIG)
        ref = weakref.ref(route)
        self.assertEqual(route.events, {})
        del route
        gc.collect()
        self.assertIsNone(ref())

    def test_equality_ignores_computed(self) -> None:
        """Two routes with the same fields are equal (computed fields aside)."""
        handler = object()
        self.assertEqual(
            Route("h", "/", handler, CONFIG), Route("h", "/", handler, CONFIG)
        )

    def test_not_callable_event(self) -> None:
        """A handler with a non-callable event cannot be routed."""

        class Bad:
            on_message = 3

        with self.assertRaises(TypeError):
            Route("h", "/", Bad(), CONFIG)
