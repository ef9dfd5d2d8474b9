"""wsplugin._siterequest: a request whose head is checked, resource found
and body limits applied before any body byte, on a fake channel."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from wsplugin._pending import PendingResource
from wsplugin._siterequest import SiteRequest
from wsplugin.web import EmptyPage


class Page(Resource):
    """A leaf with the server's limits."""

    isLeaf = True


class Big(Page):
    """A resource that raises its own body limits."""

    max_request_body = 1000
    request_body_timeout = 30.0


class Broken(Resource):
    """A resource whose walk raises."""

    def getChild(self, path: bytes, request: Any) -> Resource:
        raise ValueError("walk failed")


class Sink:
    """A request body taken chunk by chunk."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass


class Taker(Page):
    """A resource with open_request_body."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer
        self.opened: list[int | None] = []

    def open_request_body(self, request: Any, length: int | None) -> Any:
        self.opened.append(length)
        return self.answer


class Channel:
    """What a SiteRequest needs of its channel."""

    def __init__(self, root: Resource) -> None:
        self.site = Site(root)
        self.max_request_body = 100
        self.body_timeout = 5.0
        self.refused: list[tuple[int, str, Any]] = []
        self.transport = None

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "192.0.2.1", 50000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def refuse(self, status: int, reason: str, headers: Any) -> None:
        self.refused.append((status, reason, headers))


def site_tree(**children: Resource) -> Resource:
    root = Resource()
    for name, child in children.items():
        root.putChild(name.encode(), child)
    return root


class HeadTests(SynchronousTestCase):
    """The head: the target checked, the resource found once."""

    def request(self, **children: Resource) -> SiteRequest:
        tree = {"page": Page(), "big": Big(), **children}
        return SiteRequest(Channel(site_tree(**tree)))

    def test_found_once(self) -> None:
        """The resource and query are known from the head; take_found gives
        the resource once, with the walk's path."""
        request = self.request()
        self.assertIsNone(request.head_received(b"GET /page?a=1&b= HTTP/1.1", 0))
        self.assertEqual((request.method, request.path), (b"GET", b"/page"))
        self.assertEqual(request.args, {b"a": [b"1"], b"b": [b""]})
        found = request.take_found()
        self.assertIsInstance(found, Page)
        self.assertEqual(request.prepath, [b"page"])
        self.assertIsNone(request.take_found())

    def test_bad_heads(self) -> None:
        """A malformed request line or a target that is not a path is 400."""
        self.assertEqual(
            self.request().head_received(b"GET /page", 0),
            (400, "malformed request line"),
        )
        status, reason = self.request().head_received(b"GET http://h/ HTTP/1.1", 0)
        self.assertEqual(status, 400)
        self.assertIn("not a path", reason)

    def test_server_limits(self) -> None:
        """Without limits of its own a resource gets the server's: a
        declared body over them is 413 before any byte."""
        request = self.request()
        self.assertEqual(
            request.head_received(b"POST /page HTTP/1.1", 101),
            (413, "declared body of 101 bytes, over 100"),
        )
        request = self.request()
        self.assertIsNone(request.head_received(b"POST /page HTTP/1.1", 100))
        self.assertEqual(request.body_timeout, 5.0)
        request = self.request()
        self.assertIsNone(
            request.head_received(
                b"POST /page HTTP/1.1", 10**9, max_request_body=0, body_timeout=1.0
            )
        )
        self.assertEqual(request.body_timeout, 1.0)

    def test_resource_limits(self) -> None:
        """A resource's own limits apply to its requests only."""
        request = self.request()
        self.assertIsNone(request.head_received(b"POST /big HTTP/1.1", 1000))
        self.assertEqual(request.body_timeout, 30.0)
        self.assertEqual(
            self.request().head_received(b"POST /big HTTP/1.1", 1001)[0], 413
        )

    def test_refused_from_the_head(self) -> None:
        """An error page is answered before its body is read; without a
        body it is rendered as usual."""
        page = EmptyPage(401, {b"WWW-Authenticate": b"Basic"})
        self.assertEqual(
            self.request(guarded=page).head_received(b"POST /guarded HTTP/1.1", 5),
            (401, "refused from its head", [(b"WWW-Authenticate", b"Basic")]),
        )
        request = self.request(guarded=page)
        self.assertIsNone(request.head_received(b"GET /guarded HTTP/1.1", 0))
        self.assertIs(request.take_found(), page)

    def test_decided_later(self) -> None:
        """A pending decision gives a Deferred; the limits are those of the
        resource it finds."""
        d: Deferred[Any] = Deferred()
        request = self.request(later=PendingResource(d))
        pending = request.head_received(b"POST /later HTTP/1.1", 500)
        self.assertIsInstance(pending, Deferred)
        answers: list[Any] = []
        pending.addCallback(answers.append)
        d.callback(Big())
        self.assertEqual(answers, [None])
        self.assertIsInstance(request.take_found(), Big)

    def test_walk_failed(self) -> None:
        """A walk that raises goes on with the server's limits; render gets
        the failure (take_found raises it)."""
        request = self.request(broken=Broken())
        self.assertIsNone(request.head_received(b"GET /broken/x HTTP/1.1", 0))
        self.assertRaises(ValueError, request.take_found)

    def test_asterisk(self) -> None:
        """``OPTIONS *`` has no resource."""
        request = self.request()
        self.assertIsNone(request.head_received(b"OPTIONS * HTTP/1.1", 0))
        self.assertIsNone(request.take_found())


class BodyTests(SynchronousTestCase):
    """Where the body goes, and where it is cut."""

    def head(self, resource: Resource, length: int | None) -> SiteRequest:
        channel = Channel(site_tree(r=resource))
        request = SiteRequest(channel)
        self.assertIsNone(request.head_received(b"POST /r HTTP/1.1", length))
        return request

    def test_destination(self) -> None:
        """Memory for a small declared body, a temporary file otherwise."""
        request = self.head(Big(), 10)
        request.gotLength(10)
        self.assertIsInstance(request.content, BytesIO)
        request = self.head(Page(), None)
        request.gotLength(None)
        self.addCleanup(request.content.close)
        self.assertNotIsInstance(request.content, BytesIO)

    def test_cut_at_the_limit(self) -> None:
        """A chunked body is stored up to the limit, then refused with 413
        by the channel; later chunks are dropped."""
        request = self.head(Page(), None)
        request.gotLength(None)
        content = request.content
        request.handleContentChunk(b"x" * 60)
        request.handleContentChunk(b"x" * 40)
        self.assertEqual(request.channel.refused, [])
        request.handleContentChunk(b"x")
        request.handleContentChunk(b"y")
        self.assertEqual(request.channel.refused, [(413, "body over 100 bytes", ())])
        self.assertTrue(content.closed)

    def test_own_refusal(self) -> None:
        """An HTTP/2 stream's on_refuse is used instead of the channel."""
        request = self.head(Page(), None)
        seen: list[tuple[int, str, Any]] = []
        request.on_refuse = lambda *args: seen.append(args)
        request.gotLength(None)
        self.addCleanup(request.content.close)
        request.handleContentChunk(b"x" * 101)
        self.assertEqual(seen, [(413, "body over 100 bytes", ())])
        self.assertEqual(request.channel.refused, [])

    def test_resource_sink(self) -> None:
        """open_request_body's object becomes request.content and gets the
        body; a tuple refuses before any byte."""
        sink = Sink()
        taker = Taker(sink)
        request = self.head(taker, 3)
        request.gotLength(3)
        self.assertIs(request.content, sink)
        request.handleContentChunk(b"abc")
        self.assertEqual((sink.data, taker.opened), (b"abc", [3]))
        request = SiteRequest(Channel(site_tree(r=Taker((415, "not a form")))))
        self.assertEqual(
            request.head_received(b"POST /r HTTP/1.1", 3), (415, "not a form")
        )

    def test_length_before_the_head(self) -> None:
        """With defer_length (HTTP/2), a length that comes first is applied
        once the head is accepted."""
        request = SiteRequest(Channel(site_tree(r=Page())))
        request.defer_length = True
        request.gotLength(5)
        self.assertIsNone(request.content)
        self.assertIsNone(request.head_received(b"POST /r HTTP/1.1", 5))
        self.assertIsInstance(request.content, BytesIO)
        self.assertFalse(request.defer_length)


class Processed(SiteRequest):
    """Records the args it is processed with, instead of rendering."""

    processed: dict[bytes, list[bytes]] | None = None

    def process(self) -> None:
        self.processed = dict(self.args)


class FormTests(SynchronousTestCase):
    """Twisted parses small forms only."""

    def post(self, body: bytes) -> Processed:
        request = Processed(Channel(site_tree(r=Big())))
        target = b"/r?q=1"
        head = b"POST " + target + b" HTTP/1.1"
        self.assertIsNone(request.head_received(head, len(body)))
        request.requestHeaders.setRawHeaders(
            b"content-type", [b"application/x-www-form-urlencoded"]
        )
        request.gotLength(len(body))
        request.handleContentChunk(body)
        request.requestReceived(b"POST", target, b"HTTP/1.1")
        return request

    def test_small_form_parsed(self) -> None:
        """A form within the server's limit is parsed into request.args."""
        request = self.post(b"a=1&b=2")
        self.assertEqual(request.processed, {b"q": [b"1"], b"a": [b"1"], b"b": [b"2"]})

    def test_large_form_left_unparsed(self) -> None:
        """A body over the server's limit (that only a resource with its
        own limit receives) is left in request.content, unparsed."""
        body = b"a=" + b"x" * 200
        request = self.post(body)
        self.assertEqual(request.processed, {b"q": [b"1"]})
        request.content.seek(0)
        self.assertEqual(request.content.read(), body)
