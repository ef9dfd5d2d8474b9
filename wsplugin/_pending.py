"""Resources decided later: a ``before_request`` hook or an authenticator
that answers with a Deferred or a coroutine (:class:`PendingResource`,
:func:`settle`).

``twisted.web`` walks a request down the resource tree synchronously: each
``getChildWithDefault`` returns the next resource at once. A hook that has
to ask a database, or a bcrypt check, cannot answer at once, so it returns
a :class:`PendingResource` instead: a leaf whose Deferred fires with the
resource that answers, or from which the walk goes on down the rest of the
path. On wsplugin's site (:class:`~wsplugin.web.SiteRequest`) this happens
at the request head: the connection stops reading (the body and any
pipelined request wait, in order) until the Deferred fires, and the body
limits are those of the resource finally found. On any other site
:meth:`PendingResource.render` waits instead, after the body.

A resource may also decide at the head when it is the one found (the walk
ended on it): wsplugin's site calls its ``head_resource(request)`` method,
if it has one, and uses what it returns (a resource, or a
:class:`PendingResource`). :func:`wsplugin.auth.guard` uses this to check
credentials before the body of a request for the guarded resource itself.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import NOT_DONE_YET

__all__ = ["PendingResource", "settle"]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.web")

MAX_STEPS = 32
"""Most pending decisions and ``head_resource`` hand-offs for one request: a
guard inside a guard inside a hook is 3; a loop of resources handing each
other on is a bug, stopped here."""


class PendingResource(Resource):
    """A resource that is not known yet.

    Args:
        deferred: Fires with the resource that answers the request, or from
            which the walk down the tree goes on (with ``request.postpath``
            as it stands). A failure answers 500 and is logged.
    """

    isLeaf = True

    def __init__(self, deferred: Deferred[Any]) -> None:
        super().__init__()
        self.deferred = deferred

    def render(self, request: Any) -> Any:
        """Wait for the decision, then render what it found (a plain
        ``twisted.web`` site: the body has already been read)."""
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        try:
            settled = settle(self, request)
        except Exception:
            settled = fail()
        d = settled if isinstance(settled, Deferred) else succeed(settled)

        def found(resource: Any) -> None:
            if gone or request.finished:
                return
            body = resource.render(request)
            if body is not NOT_DONE_YET:
                request.write(body)
                request.finish()

        def failed(failure: Failure) -> None:
            _log.failure(
                "deciding the resource for {path} failed",
                failure,
                path=request.path.decode("latin-1"),
            )
            if not gone and not request.finished and not request.startedWriting:
                request.setResponseCode(500)
                request.setHeader(b"content-length", b"0")
                request.finish()

        d.addCallback(found).addErrback(failed)
        return NOT_DONE_YET


def settle(resource: Any, request: Any) -> Any:
    """The resource that answers ``request``, starting from ``resource``
    (what the walk found): a resource, or a Deferred firing with one while
    a decision is pending.

    A :class:`PendingResource` is replaced by what its Deferred gives,
    walked down the rest of the path; a resource with ``head_resource`` by
    what that returns. Decisions already made are taken at once, so a hook
    that answers synchronously costs no wait.
    """
    for _ in range(MAX_STEPS):
        decide = getattr(resource, "head_resource", None)
        if decide is not None:
            handed = decide(request)
            if handed is resource:
                return resource
            resource = handed
            continue
        if not isinstance(resource, PendingResource):
            return resource
        d = resource.deferred
        outcome: list[Any] = []
        d.addBoth(_keep, outcome)
        if not outcome:
            return d.addCallback(_walk_on, request)
        if isinstance(outcome[0], Failure):
            d.addErrback(lambda _: None)  # raised here instead
            outcome[0].raiseException()
        resource = getChildForRequest(outcome[0], request)
    raise RuntimeError(f"resources kept handing {request.path!r} on: a loop?")


def _keep(result: Any, into: list[Any]) -> Any:
    """Note a Deferred's result (a value or a Failure) and pass it on."""
    into.append(result)
    return result


def _walk_on(resource: Any, request: Any) -> Any:
    """After a pending decision: on down the rest of the path from it."""
    return settle(getChildForRequest(resource, request), request)
