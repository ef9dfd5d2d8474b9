"""Doubles and builders shared by the ``wsplugin.auth`` unit tests (and the
attacks over real sockets in ``tests/integration/test_auth_attacks.py``)."""

from __future__ import annotations

import base64
from io import BytesIO
from typing import Any

from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from tests.helpers import Recorder
from wsplugin import WebSocketServer
from wsplugin.testing import ServerHarness

__all__ = [
    "FORM",
    "Data",
    "Greeter",
    "GuardRequest",
    "HeldChecker",
    "basic",
    "capture_logs",
    "check_of",
    "make_server",
    "quiet",
    "web_request",
]


class Data(Resource):
    """A leaf answering ``body`` (twisted.web.static warns at import)."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self.body, self.content_type = body, content_type.encode()

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        return self.body


def capture_logs(test: SynchronousTestCase) -> list[str]:
    """Every log line (formatted) emitted until the test ends."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


def basic(user: str, password: str) -> list[tuple[str, str]]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return [("Authorization", f"Basic {token}")]


class HeldChecker:
    """A twisted.cred checker whose answers wait for the test.

    Users in ``hold`` wait in ``pending`` until :meth:`release`; others are
    answered at once. ``seen`` lists every user name checked, in order.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, users: dict[str, str], hold: set[str] | None = None) -> None:
        self.users = users
        self.hold = hold
        self.seen: list[str] = []
        self.pending: list[tuple[Any, Deferred[bytes]]] = []

    def requestAvatarId(self, credentials: Any) -> Deferred[bytes]:
        name = credentials.username.decode()
        self.seen.append(name)
        if self.hold is None or name in self.hold:
            d: Deferred[bytes] = Deferred()
            self.pending.append((credentials, d))
            return d
        return self._answer(credentials)

    def _answer(self, credentials: Any) -> Deferred[bytes]:
        name = credentials.username.decode()
        if self.users.get(name) == credentials.password.decode():
            return succeed(credentials.username)
        return fail(UnauthorizedLogin())

    def release(self, index: int = 0) -> None:
        credentials, d = self.pending.pop(index)
        self._answer(credentials).chainDeferred(d)


def quiet(d: Deferred[Any]) -> Deferred[Any]:
    """Consume a Deferred's failure (the test does not look at it)."""
    return d.addErrback(lambda _: None)


def check_of(checker: Any, user: str, password: str) -> Any:
    return lambda: checker.requestAvatarId(
        UsernamePassword(user.encode(), password.encode())
    )


class Greeter(Recorder):
    def on_open(self, conn: Any) -> None:
        super().on_open(conn)
        conn.send_text(f"hello {conn.user}")


def make_server(**options: Any) -> tuple[WebSocketServer, ServerHarness]:
    clock = MemoryReactorClock()
    server = WebSocketServer(Greeter(), reactor=clock, **options)
    return server, ServerHarness(server)


def web_request(
    method: bytes,
    path: bytes = b"/login",
    headers: dict[bytes, bytes] | None = None,
    body: bytes = b"",
    *,
    secure: bool = False,
) -> tuple[Request, DummyChannel]:
    """A real twisted.web request on a DummyChannel (unprocessed)."""
    channel = DummyChannel()
    channel.transport = DummyChannel.TCP(IPv4Address("TCP", "192.0.2.7", 5555))
    if secure:
        channel.isSecure = lambda: True  # type: ignore[method-assign]
    request = Request(channel)
    request.requestHeaders.setRawHeaders(b"host", [b"app.example:8080"])
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    request.content = BytesIO(body)
    request.parseCookies()
    request.method, request.uri, request.path = method, path, path.split(b"?")[0]
    request.clientproto = b"HTTP/1.1"
    request.client = channel.transport.getPeer()
    return request, channel


FORM = {b"content-type": b"application/x-www-form-urlencoded"}


class GuardRequest(DummyRequest):
    """DummyRequest with the attributes a guarded request reads."""

    def __init__(self, path: bytes, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(path[1:].split(b"/"))
        self.path = self.uri = path
        self.client = IPv4Address("TCP", "192.0.2.7", 5555)
        for name, value in (headers or {}).items():
            self.requestHeaders.setRawHeaders(name, [value])

    def render_tree(self, root: Any) -> None:
        resource = root
        while self.postpath and not resource.isLeaf:
            name = self.postpath.pop(0)
            self.prepath.append(name)
            resource = resource.getChildWithDefault(name, self)
        self.render(resource)
