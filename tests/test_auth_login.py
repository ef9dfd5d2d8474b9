"""``wsplugin.auth._login``: LoginResource on ``twisted.web`` requests over
a ``DummyChannel``."""

from __future__ import annotations

import base64
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import task
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from tests.auth_support import FORM, HeldChecker, capture_logs, web_request
from wsplugin.auth import LoginResource, LoginThrottle, SessionStore


class LoginResourceTests(SynchronousTestCase):
    """LoginResource: cookies, form parsing, throttle, cross-site refusal."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.store = SessionStore(self.clock)
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace")
        self.throttle = LoginThrottle(self.clock, max_failures=2, backoff=10)
        self.login = LoginResource(checker, self.store, throttle=self.throttle)

    def post(
        self, body: bytes, headers: dict[bytes, bytes] | None = None, **kw: Any
    ) -> Request:
        request, _ = web_request(
            b"POST", headers={**FORM, **(headers or {})}, body=body, **kw
        )
        request.render(self.login)
        return request

    def test_login_sets_session_cookie(self) -> None:
        """Form credentials from the body: 204 and a browser-session cookie
        (HttpOnly, SameSite=Strict, no Max-Age); Secure over TLS."""
        request = self.post(b"username=ada&password=lovelace")
        self.assertEqual(request.code, 204)
        cookie = request.responseHeaders.getRawHeaders(b"set-cookie")[0].decode()
        name_value, *attributes = cookie.split("; ")
        self.assertEqual(attributes, ["Path=/", "HttpOnly", "SameSite=Strict"])
        self.assertEqual(self.store.get(name_value.split("=", 1)[1]), "ada")
        secure = self.post(b"username=ada&password=lovelace", secure=True)
        self.assertTrue(
            secure.responseHeaders.getRawHeaders(b"set-cookie")[0].endswith(b"; Secure")
        )

    def test_basic_credentials_and_query_ignored(self) -> None:
        """Without a username field, HTTP Basic credentials count; the query
        string is never read."""
        auth = b"Basic " + base64.b64encode(b"ada:lovelace")
        self.assertEqual(self.post(b"", {b"authorization": auth}).code, 204)
        request, _ = web_request(b"POST", b"/login?username=ada&password=lovelace")
        request.render(self.login)
        self.assertEqual(request.code, 401)

    def test_wrong_password_then_429(self) -> None:
        """Wrong credentials: empty 401 and a log line; after max_failures,
        429 with Retry-After."""
        logs = capture_logs(self)
        self.assertEqual(self.post(b"username=ada&password=x").code, 401)
        self.assertIn("login failed from 192.0.2.7", logs)
        self.post(b"username=ada&password=y")
        request = self.post(b"username=ada&password=lovelace")
        self.assertEqual(request.code, 429)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"10"])

    def test_behind_a_proxy(self) -> None:
        """With trusted_proxies, failures count by the X-Forwarded-For
        address: one guesser behind the proxy does not block the others."""
        login = LoginResource(
            InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace"),
            self.store,
            throttle=self.throttle,
            trusted_proxies=1,
        )

        def post(address: str, password: bytes) -> int:
            headers = {**FORM, b"x-forwarded-for": b"198.51.100.1, " + address.encode()}
            request, _ = web_request(
                b"POST", headers=headers, body=b"username=ada&password=" + password
            )
            request.render(login)
            return int(request.code)

        self.assertEqual([post("203.0.113.1", b"x") for _ in range(3)], [401, 401, 429])
        self.assertEqual(post("203.0.113.2", b"lovelace"), 204)

    def test_large_body(self) -> None:
        """A form body over 4096 bytes gets 413 without a check."""
        self.assertEqual(self.post(b"username=ada&password=" + b"x" * 5000).code, 413)
        self.assertEqual(self.throttle.stats.started, 0)

    def test_cross_site_refused(self) -> None:
        """A POST from another site's page (Origin, or Sec-Fetch-Site without
        Origin) gets 403 and no session; the same origin, allowed_origins,
        Sec-Fetch-Site same-origin/none and clients without either pass."""
        body = b"username=ada&password=lovelace"
        for headers, status in [
            ({b"origin": b"https://evil.example"}, 403),
            ({b"origin": b"null"}, 403),
            ({b"origin": b"http://app.example:9999"}, 403),
            ({b"sec-fetch-site": b"cross-site"}, 403),
            ({b"sec-fetch-site": b"same-site"}, 403),
            ({b"origin": b"http://app.example:8080"}, 204),
            ({b"origin": b"https://app.example:8080"}, 204),
            ({b"sec-fetch-site": b"same-origin"}, 204),
            ({b"sec-fetch-site": b"none"}, 204),
            ({}, 204),
        ]:
            request = self.post(body, headers)
            self.assertEqual(request.code, status, headers)
        self.assertEqual(len(self.store), 5)
        self.login.allowed_origins = ("https://*.example.org",)
        self.assertEqual(
            self.post(body, {b"origin": b"https://a.example.org"}).code, 204
        )

    def test_logout(self) -> None:
        """DELETE ends the session and clears the cookie (Max-Age=0); a
        cross-site DELETE gets 403 and ends nothing."""
        token = self.store.create("ada")
        cookie = {b"cookie": b"wsplugin_session=" + token.encode()}
        request, _ = web_request(
            b"DELETE", headers={**cookie, b"origin": b"https://evil.example"}
        )
        request.render(self.login)
        self.assertEqual((request.code, self.store.get(token)), (403, "ada"))
        request, _ = web_request(b"DELETE", headers=cookie)
        request.render(self.login)
        self.assertEqual(request.code, 204)
        self.assertIsNone(self.store.get(token))
        self.assertIn(
            b"Max-Age=0", request.responseHeaders.getRawHeaders(b"set-cookie")[0]
        )

    def test_client_gone_before_answer(self) -> None:
        """A login whose client disconnects while the check waits is skipped
        and nothing is written."""
        checker = HeldChecker({"ada": "lovelace"}, hold={"bogus"})
        throttle = LoginThrottle(self.clock, concurrency=1)
        login = LoginResource(checker, self.store, throttle=throttle)
        first, _ = web_request(b"POST", headers=FORM, body=b"username=bogus&password=x")
        first.render(login)
        second, _ = web_request(b"POST", headers=FORM, body=b"username=ada&password=x")
        second.render(login)
        second.connectionLost(Failure(ConnectionError("gone")))
        checker.release(0)
        self.assertEqual(checker.seen, ["bogus"])
        self.assertEqual(throttle.stats.dropped, 1)


class FixationTests(SynchronousTestCase):
    """A login never keeps the session id the browser had before it."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.store = SessionStore(self.clock)
        checker = InMemoryUsernamePasswordDatabaseDontUse(ada=b"lovelace", eve=b"evil")
        self.login = LoginResource(
            checker, self.store, throttle=LoginThrottle(self.clock)
        )

    def log_in(self, body: bytes, cookie: str | None = None) -> str:
        headers = dict(FORM)
        if cookie is not None:
            headers[b"cookie"] = b"wsplugin_session=" + cookie.encode()
        request, _ = web_request(b"POST", headers=headers, body=body)
        request.render(self.login)
        self.assertEqual(request.code, 204)
        value = request.responseHeaders.getRawHeaders(b"set-cookie")[0].decode()
        return value.split(";")[0].split("=", 1)[1]

    def test_planted_id_of_another_user(self) -> None:
        """An attacker's live session id planted in the victim's browser:
        the victim's login gets a new id, and the planted one is ended."""
        planted = self.store.create("eve")
        token = self.log_in(b"username=ada&password=lovelace", planted)
        self.assertNotEqual(token, planted)
        self.assertIsNone(self.store.get(planted))
        self.assertEqual(self.store.get(token), "ada")

    def test_own_session_rotated(self) -> None:
        """Logging in again with one's own cookie keeps the session (its
        data) under a new id; the old id is invalid."""
        first = self.log_in(b"username=ada&password=lovelace")
        session = self.store.session(first)
        assert session is not None
        session.data["theme"] = "dark"
        second = self.log_in(b"username=ada&password=lovelace", first)
        self.assertNotEqual(second, first)
        self.assertIsNone(self.store.get(first))
        self.assertIs(self.store.session(second), session)
        self.assertEqual(len(self.store), 1)

    def test_unknown_planted_id(self) -> None:
        """A made-up id is ignored: a fresh session is made."""
        token = self.log_in(b"username=ada&password=lovelace", "made-up-id")
        self.assertNotEqual(token, "made-up-id")
        self.assertEqual(self.store.get(token), "ada")
