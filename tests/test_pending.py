"""wsplugin._pending: resources decided later (a Deferred or a coroutine
from a hook), settled at the head or rendered after the body."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from wsplugin._pending import MAX_STEPS, PendingResource, settle


class Request:
    """What settling and rendering use of a twisted.web request."""

    def __init__(self, path: bytes = b"/") -> None:
        self.path = path
        self.prepath: list[bytes] = []
        self.postpath = path.split(b"/")[1:]
        self.finish_d: Deferred[None] = Deferred()
        self.finished = False
        self.startedWriting = False
        self.code = 200
        self.headers: dict[bytes, bytes] = {}
        self.written: list[bytes] = []

    def notifyFinish(self) -> Deferred[None]:
        return self.finish_d

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def write(self, data: bytes) -> None:
        self.startedWriting = True
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True


class Page(Resource):
    """A leaf answering with its body."""

    isLeaf = True

    def __init__(self, body: bytes = b"page") -> None:
        super().__init__()
        self.body = body

    def render(self, request: Any) -> Any:
        return self.body


class Later(Resource):
    """A leaf that answers by itself, later."""

    isLeaf = True

    def render(self, request: Any) -> Any:
        return NOT_DONE_YET


def tree() -> Resource:
    root = Resource()
    api = Resource()
    api.putChild(b"items", Page(b"items"))
    root.putChild(b"api", api)
    return root


def result(value: Any) -> Any:
    """What a Deferred holds (or the value itself)."""
    if not isinstance(value, Deferred):
        return value
    out: list[Any] = []
    value.addBoth(out.append)
    return out[0]


class Decider(Resource):
    """A resource that decides at the head."""

    isLeaf = True

    def __init__(self, answer: Any = None) -> None:
        super().__init__()
        self.answer = self if answer is None else answer
        self.asked = 0

    def head_resource(self, request: Any) -> Any:
        self.asked += 1
        return self.answer


class SettleTests(SynchronousTestCase):
    """The resource that answers, found from what the walk found."""

    def test_plain_resource(self) -> None:
        """A resource that is not pending is the answer."""
        page = Page()
        self.assertIs(settle(page, Request()), page)

    def test_decided_already(self) -> None:
        """A decision already made is taken at once, and the walk goes on
        down the rest of the path from it."""
        request = Request(b"/api/items")
        found = settle(PendingResource(succeed(tree())), request)
        self.assertIsInstance(found, Page)
        self.assertEqual(found.body, b"items")
        self.assertEqual(request.prepath, [b"api", b"items"])

    def test_decided_later(self) -> None:
        """A pending decision gives a Deferred firing with the resource
        found by walking on from it."""
        d: Deferred[Any] = Deferred()
        settled = settle(PendingResource(d), Request(b"/api/items"))
        self.assertIsInstance(settled, Deferred)
        self.assertFalse(settled.called)
        d.callback(tree())
        self.assertEqual(result(settled).body, b"items")

    def test_pending_after_pending(self) -> None:
        """A decision may hand on to another pending one."""
        inner: Deferred[Any] = Deferred()
        outer = PendingResource(succeed(PendingResource(inner)))
        settled = settle(outer, Request(b"/x"))
        inner.callback(Page(b"last"))
        self.assertEqual(result(settled).body, b"last")

    def test_failed(self) -> None:
        """A failed decision is raised at once if already made, or fails
        the Deferred later."""
        request = Request()
        self.assertRaises(
            ValueError, settle, PendingResource(fail(ValueError("no"))), request
        )
        d: Deferred[Any] = Deferred()
        settled = settle(PendingResource(d), request)
        d.errback(ValueError("later"))
        failure = result(settled)
        self.assertIsInstance(failure, Failure)
        self.assertTrue(failure.check(ValueError))

    def test_head_resource(self) -> None:
        """head_resource answers for itself (itself: it is the answer), or
        hands on to another resource, pending ones included."""
        decider = Decider()
        self.assertIs(settle(decider, Request()), decider)
        self.assertEqual(decider.asked, 1)
        page = Page()
        self.assertIs(settle(Decider(page), Request()), page)
        d: Deferred[Any] = Deferred()
        settled = settle(Decider(PendingResource(d)), Request())
        d.callback(page)
        self.assertIs(result(settled), page)

    def test_loop_stopped(self) -> None:
        """Resources handing each other on forever are a bug, stopped
        after MAX_STEPS with the path named."""
        first, second = Decider(), Decider()
        first.answer, second.answer = second, first
        e = self.assertRaises(RuntimeError, settle, first, Request(b"/spin"))
        self.assertIn("b'/spin'", str(e))
        self.assertEqual(first.asked + second.asked, MAX_STEPS)


class RenderTests(SynchronousTestCase):
    """On a plain twisted.web site: wait for the decision after the body."""

    def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "wsplugin.web":
                self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_rendered_when_decided(self) -> None:
        """The resource found renders the answer once the decision comes."""
        d: Deferred[Any] = Deferred()
        request = Request(b"/page")
        self.assertIs(PendingResource(d).render(request), NOT_DONE_YET)
        self.assertEqual(request.written, [])
        d.callback(Page(b"hello"))
        self.assertEqual(request.written, [b"hello"])
        self.assertTrue(request.finished)

    def test_resource_answering_later(self) -> None:
        """A resource found that answers later finishes by itself."""
        request = Request()
        PendingResource(succeed(Later())).render(request)
        self.assertEqual((request.written, request.finished), ([], False))

    def test_failure_is_500(self) -> None:
        """A failed decision answers 500 with an empty body, logged."""
        request = Request(b"/broken")
        PendingResource(fail(ValueError("db down"))).render(request)
        self.assertEqual(request.code, 500)
        self.assertEqual(request.headers, {b"content-length": b"0"})
        self.assertTrue(request.finished)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(self.logged, ["deciding the resource for /broken failed"])

    def test_loop_is_500(self) -> None:
        """A loop of hand-offs answers 500 too."""
        first, second = Decider(), Decider()
        first.answer, second.answer = second, first
        request = Request()
        PendingResource(succeed(first)).render(request)
        self.assertEqual(request.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_client_gone(self) -> None:
        """A client that left before the decision gets nothing written, and
        a failure after it left is only logged."""
        d: Deferred[Any] = Deferred()
        request = Request()
        PendingResource(d).render(request)
        request.finish_d.errback(Failure(ConnectionError("gone")))
        d.callback(Page())
        self.assertEqual((request.written, request.finished), ([], False))
        d2: Deferred[Any] = Deferred()
        request = Request()
        PendingResource(d2).render(request)
        request.finish_d.errback(Failure(ConnectionError("gone")))
        d2.errback(ValueError("late"))
        self.assertEqual((request.code, request.finished), (200, False))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
