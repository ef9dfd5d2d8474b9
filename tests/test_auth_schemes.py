"""``wsplugin.auth._schemes``: BasicAuth, QueryTokenAuth and ApiKeyAuth on
the WebSocket handshake (``wsplugin.testing``'s StringTransport harness on a
``MemoryReactorClock``) and on plain HTTP (``DummyRequest``)."""

from __future__ import annotations

import base64
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from tests.auth_support import (
    HeldChecker,
    basic,
    capture_logs,
    make_server,
    web_request,
)
from wsplugin.auth import (
    ApiKeyAuth,
    BasicAuth,
    HTTPClient,
    LoginThrottle,
    QueryTokenAuth,
)
from wsplugin.errors import ConfigError, Reject
from wsplugin.testing import handshake_request


class BasicAuthTests(SynchronousTestCase):
    """BasicAuth on the WebSocket handshake, through the throttle."""

    def setUp(self) -> None:
        self.checker = HeldChecker({"ada": "lovelace"}, hold=set())

    def test_answers(self) -> None:
        """Right credentials open with conn.user; wrong or none get 401 with
        WWW-Authenticate; malformed ones 401 too."""
        auth = BasicAuth(
            self.checker, realm="chat", throttle=LoginThrottle(task.Clock())
        )
        _, harness = make_server(auth=auth)
        client = harness.open(headers=basic("ada", "lovelace"))
        self.assertEqual(client.messages(), ["hello ada"])
        for headers in (
            basic("ada", "nope"),
            [],
            [("Authorization", "Basic !!!")],
            [("Authorization", "Basic " + base64.b64encode(b"nocolon").decode())],
        ):
            response = harness.connect().handshake(headers=headers)
            self.assertEqual(response.status, 401)
            self.assertEqual(response.header("WWW-Authenticate"), 'Basic realm="chat"')

    def test_429_after_failures(self) -> None:
        """An address with max_failures failures gets 429 with Retry-After,
        even with the right password; the check does not run."""
        throttle = LoginThrottle(task.Clock(), max_failures=2, backoff=30)
        _, harness = make_server(auth=BasicAuth(self.checker, throttle=throttle))
        for _ in range(2):
            self.assertEqual(
                harness.connect().handshake(headers=basic("ada", "x")).status, 401
            )
        response = harness.connect().handshake(headers=basic("ada", "lovelace"))
        self.assertEqual((response.status, response.header("Retry-After")), (429, "30"))
        self.assertEqual(len(self.checker.seen), 2)

    def test_503_when_queue_full_and_gone_clients_skipped(self) -> None:
        """With the queue full the next upgrade gets 503; a client that left
        while waiting is skipped, and the legit one behind it is served."""
        checker = HeldChecker({"ada": "lovelace"}, hold={"bogus"})
        throttle = LoginThrottle(
            task.Clock(), concurrency=1, max_queued=2, max_pending_per_peer=0
        )
        _, harness = make_server(auth=BasicAuth(checker, throttle=throttle))
        bogus = [harness.connect() for _ in range(4)]
        for client in bogus:
            client.send_raw(handshake_request(headers=basic("bogus", "x")))
        self.assertEqual(bogus[3].read_response().status, 503)
        self.assertEqual(bogus[3].response.header("Retry-After"), "1")
        bogus[1].drop()
        bogus[2].drop()
        legit = harness.connect()
        legit.send_raw(handshake_request(headers=basic("ada", "lovelace")))
        self.assertEqual(throttle.stats.dropped, 2)
        checker.release(0)
        harness.flush()
        self.assertEqual(bogus[0].read_response().status, 401)
        self.assertEqual(legit.read_response().status, 101)
        self.assertEqual(checker.seen, ["bogus", "ada"])

    def test_plain_http_and_realm(self) -> None:
        """On plain HTTP the identity is the user name as ``str``; a realm
        with a quote or a control character is refused at once."""
        auth = BasicAuth(self.checker, throttle=LoginThrottle(task.Clock()))
        request, _ = web_request(
            b"GET",
            b"/",
            {b"authorization": b"Basic " + base64.b64encode(b"ada:lovelace")},
        )
        self.assertEqual(
            self.successResultOf(auth.authenticate(HTTPClient(request))), "ada"
        )
        for realm in ('a"b', "a\nb"):
            self.assertRaises(ConfigError, BasicAuth, self.checker, realm)


def rejected(test: SynchronousTestCase, d: Deferred[Any]) -> int:
    """The status a refusal carries."""
    return test.failureResultOf(d, Reject).value.status


class QueryTokenAuthTests(SynchronousTestCase):
    """A token in the URL query, checked by the application's callable."""

    def test_handshake(self) -> None:
        """A missing token gets 401, one the check refuses (None or False)
        403, a good one opens with the check's identity; the log line has
        the path without the query, so the token is not logged."""
        tokens = {"t1": "ada", "t2": False}
        _, harness = make_server(auth=QueryTokenAuth(tokens.get))
        lines = capture_logs(self)
        client = harness.open("/?token=t1")
        self.assertEqual(client.messages(), ["hello ada"])
        self.assertEqual(harness.connect().handshake("/").status, 401)
        self.assertEqual(harness.connect().handshake("/?token=t2").status, 403)
        self.assertEqual(harness.connect().handshake("/?token=zz").status, 403)
        self.assertTrue(lines)
        self.assertFalse([line for line in lines if "zz" in line or "t2" in line])

    def test_deferred_and_coroutine_checks(self) -> None:
        """The check may return a Deferred or be a coroutine; another
        parameter name can be chosen."""

        async def check(token: str) -> str | None:
            return "bob" if token == "k" else None

        request, _ = web_request(b"GET", b"/?key=k")
        auth = QueryTokenAuth(check, param="key")
        self.assertEqual(
            self.successResultOf(auth.authenticate(HTTPClient(request))), "bob"
        )
        auth = QueryTokenAuth(lambda token: succeed(None), param="key")
        self.assertEqual(rejected(self, auth.authenticate(HTTPClient(request))), 403)


class ApiKeyAuthTests(SynchronousTestCase):
    """An API key in a request header."""

    def test_keys(self) -> None:
        """A missing key gets 401, an unknown one 403, a known one its
        identity; another header can be named."""
        auth = ApiKeyAuth({"k1": "ops", "k2": "ci"}, header="X-Key")

        def client(headers: dict[bytes, bytes]) -> HTTPClient:
            return HTTPClient(web_request(b"GET", b"/", headers)[0])

        self.assertEqual(rejected(self, auth.authenticate(client({}))), 401)
        self.assertEqual(
            rejected(self, auth.authenticate(client({b"x-key": b"k3"}))), 403
        )
        self.assertEqual(
            self.successResultOf(auth.authenticate(client({b"x-key": b"k2"}))), "ci"
        )

    def test_callable_on_handshake(self) -> None:
        """With a callable, its answer is the identity (None: 403)."""
        _, harness = make_server(auth=ApiKeyAuth(lambda key: key.upper() or None))
        client = harness.open(headers=[("X-API-Key", "ada")])
        self.assertEqual(client.messages(), ["hello ADA"])
        self.assertEqual(harness.connect().handshake().status, 401)
