"""``wsplugin.auth._guard``: guard() on ``DummyRequest`` trees, and
site_guard() through ``WebSocketServer(http_auth=...)``."""

from __future__ import annotations

import base64
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.auth_support import Data, Greeter, GuardRequest, web_request
from wsplugin import WebSocketServer
from wsplugin.auth import ApiKeyAuth, BasicAuth, LoginThrottle, guard, site_guard
from wsplugin.errors import ConfigError


class GuardTests(SynchronousTestCase):
    """guard() answers 401/403 before a resource is looked up."""

    def setUp(self) -> None:
        tree = Resource()
        tree.putChild(b"secret", Data(b"s3cret", "text/plain"))
        tree.putChild(b"login", Data(b"form", "text/plain"))
        tree.putChild(b"assets", Resource())
        tree.children[b"assets"].putChild(b"app.js", Data(b"js", "text/plain"))
        self.tree = tree
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        self.auth = BasicAuth(
            checker, realm="site", throttle=LoginThrottle(task.Clock())
        )
        self.root = guard(tree, self.auth, public_paths=["/login", "/assets/"])

    def fetch(
        self, path: bytes, headers: dict[bytes, bytes] | None = None
    ) -> GuardRequest:
        request = GuardRequest(path, headers)
        request.render_tree(self.root)
        return request

    def test_refused_without_credentials(self) -> None:
        """Existing and missing paths alike: 401, WWW-Authenticate, no body."""
        for path in (b"/secret", b"/.env", b"/", b"/assets/../secret", b"/login/x"):
            request = self.fetch(path)
            self.assertEqual(request.responseCode, 401, path)
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"www-authenticate"),
                [b'Basic realm="site"'],
            )
            self.assertEqual(b"".join(request.written), b"")

    def test_allowed_with_credentials(self) -> None:
        """With credentials the resource renders, with the identity set."""
        auth = {b"authorization": b"Basic " + base64.b64encode(b"ada:lovelace")}
        request = self.fetch(b"/secret", auth)
        self.assertEqual(b"".join(request.written), b"s3cret")
        self.assertEqual(request.wsplugin_user, "ada")

    def test_forwarded_address(self) -> None:
        """guard(trusted_proxies=1) gives authenticators the forwarded address."""
        seen = []

        class Peer:
            def authenticate(self, client: Any) -> Any:
                seen.append(client.request.peer_address)
                return "someone"

        root = guard(self.tree, Peer(), trusted_proxies=1)
        GuardRequest(b"/secret", {b"x-forwarded-for": b"203.0.113.5"}).render_tree(root)
        GuardRequest(b"/secret").render_tree(root)
        self.assertEqual(seen, ["203.0.113.5", "192.0.2.7"])

    def test_public_paths(self) -> None:
        """public_paths are served without a check: exact, or a subtree."""
        self.assertEqual(b"".join(self.fetch(b"/login").written), b"form")
        self.assertEqual(b"".join(self.fetch(b"/assets/app.js").written), b"js")

    def test_other_authenticators(self) -> None:
        """Any authenticator works: an API key's 403 for a wrong key."""
        root = guard(self.tree, ApiKeyAuth({"k1": "ops"}))
        request = GuardRequest(b"/secret", {b"x-api-key": b"k2"})
        request.render_tree(root)
        self.assertEqual(request.responseCode, 403)
        request = GuardRequest(b"/secret", {b"x-api-key": b"k1"})
        request.render_tree(root)
        self.assertEqual(b"".join(request.written), b"s3cret")

    def test_leaf_and_failing_authenticator(self) -> None:
        """A guarded leaf is checked in render; an authenticator raising
        something other than Reject gives an empty 500 and a logged error."""

        class Broken:
            def authenticate(self, client: Any) -> Any:
                raise RuntimeError("boom")

        request = GuardRequest(b"/")
        request.render_tree(guard(Data(b"leaf", "text/plain"), Broken()))
        self.assertEqual(request.responseCode, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_bad_public_paths(self) -> None:
        """Public paths must start with '/' and come as a list."""
        self.assertRaises(ConfigError, guard, self.tree, self.auth, public_paths="/x")
        self.assertRaises(ConfigError, guard, self.tree, self.auth, public_paths=["x"])

    def test_children_added_later_are_guarded(self) -> None:
        """putChild on the guarded resource adds to the wrapped tree, behind
        the same check."""
        self.root.putChild(b"late", Data(b"late", "text/plain"))
        self.assertEqual(self.fetch(b"/late").responseCode, 401)
        auth = {b"authorization": b"Basic " + base64.b64encode(b"ada:lovelace")}
        self.assertEqual(b"".join(self.fetch(b"/late", auth).written), b"late")


class SiteGuardTests(SynchronousTestCase):
    """WebSocketServer(http_auth=...) guards the whole same-port site."""

    def request(
        self,
        server: WebSocketServer,
        path: bytes,
        headers: dict[bytes, bytes] | None = None,
    ) -> Request:
        site: Site = server.site
        request, channel = web_request(b"GET", path, headers)
        channel.site = site
        request.requestReceived(b"GET", path, b"HTTP/1.1")
        return request

    def test_whole_site(self) -> None:
        """Resources and unknown paths get 401; public paths pass; with
        credentials the resource answers; before_request runs after the check."""
        pages = Resource()
        pages.putChild(b"", Data(b"home", "text/plain"))
        pages.putChild(b"login", Data(b"form", "text/plain"))
        seen: list[bytes] = []
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        auth = BasicAuth(checker, throttle=LoginThrottle(task.Clock()))
        server = WebSocketServer(
            Greeter(),
            path="/ws",
            reactor=MemoryReactorClock(),
            http=pages,
            http_auth=auth,
            public_paths=["/login"],
            before_request=lambda r: seen.append(r.path),
        )
        for path in (b"/", b"/.env", b"/ws"):
            self.assertEqual(self.request(server, path).code, 401, path)
        self.assertEqual(seen, [])
        self.assertEqual(self.request(server, b"/login").code, 200)
        creds = {b"authorization": b"Basic " + base64.b64encode(b"ada:lovelace")}
        request = self.request(server, b"/", creds)
        self.assertEqual(request.code, 200)
        self.assertEqual(seen, [b"/login", b"/"])


class SiteGuardHookTests(SynchronousTestCase):
    """site_guard() is a before_request hook: what it returns decides."""

    def test_hook(self) -> None:
        """A guarded request gets a Deferred of the refusal (decided before
        the body, on wsplugin's site); public paths and skipped requests go
        on to ``then``; a bad path list is refused."""
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        auth = BasicAuth(checker, throttle=LoginThrottle(task.Clock()))
        then: list[bytes] = []
        hook = site_guard(
            auth,
            public_paths=["/pub/"],
            skip=lambda r: r.path == b"/ws",
            then=lambda r: then.append(r.path),
        )
        request = GuardRequest(b"/secret")
        refusal = self.successResultOf(hook(request))
        self.assertIsInstance(refusal, Resource)
        request.render(refusal)
        self.assertEqual(request.responseCode, 401)
        self.assertEqual(then, [])
        for path in (b"/pub/x", b"/ws"):
            self.assertIsNone(hook(GuardRequest(path)))
        self.assertEqual(then, [b"/pub/x", b"/ws"])
        self.assertRaises(ConfigError, site_guard, auth, public_paths=["pub"])
