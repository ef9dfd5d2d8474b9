"""The authenticators of WebSocket routes guarding plain HTTP resources,
and a ``before_request`` hook that decides later (a coroutine).

``/reports/`` needs HTTP Basic credentials (alice:secret): 401 with
``WWW-Authenticate`` without them. ``/api/`` needs an ``X-API-Key``
(``k-123``): 401 without one, 403 for an unknown one. ``/feed`` needs a
``?token=`` (``t-4f9a``). Each refusal comes from the request head, before
a byte of its body is read; ``/reports/upload`` takes bodies of up to
8 MiB (the server's limit stays 1 MiB), but only from alice. The
``before_request`` hook looks the client's address up in a block list
asynchronously: while it decides, the connection reads nothing more and its
pipelined requests wait, in order.

Run:  python examples/guarded_server.py [ENDPOINT]     (default tcp:8888)
Try:  curl -u alice:secret http://127.0.0.1:8888/reports/
      curl -H 'X-API-Key: k-123' http://127.0.0.1:8888/api/status
"""

import sys

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor, task
from twisted.web.resource import Resource

from wsplugin import WebSocketServer
from wsplugin.auth import ApiKeyAuth, BasicAuth, QueryTokenAuth, guard
from wsplugin.config import MiB
from wsplugin.web import EmptyPage

BLOCKED = {"203.0.113.66"}


class Text(Resource):
    isLeaf = True

    def __init__(self, text):
        super().__init__()
        self.text = text

    def render_GET(self, request):
        return f"{self.text} for {request.wsplugin_user}\n".encode()


class Upload(Resource):
    isLeaf = True
    max_request_body = 8 * MiB  # this resource only

    def render_POST(self, request):
        request.content.seek(0, 2)
        return b"stored %d bytes\n" % request.content.tell()


async def before_request(request):
    """Ask a (slow) block list about the client; refuse or go on."""
    await task.deferLater(reactor, 0.01, lambda: None)  # a database, say
    if request.getClientAddress().host in BLOCKED:
        return EmptyPage(403)
    return None


checker = InMemoryUsernamePasswordDatabaseDontUse()  # for demos; use HtpasswdChecker
checker.addUser(b"alice", b"secret")

reports = Resource()
reports.putChild(b"", Text("the reports"))
reports.putChild(b"upload", Upload())
api = Resource()
api.putChild(b"status", Text("status: fine"))

root = Resource()
root.putChild(b"reports", guard(reports, BasicAuth(checker, realm="reports")))
root.putChild(b"api", guard(api, ApiKeyAuth({"k-123": "ops"})))
root.putChild(b"feed", guard(Text("the feed"), QueryTokenAuth({"t-4f9a": "carol"}.get)))

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
server = WebSocketServer(
    None, endpoints=[endpoint], http=root, before_request=before_request
)
sys.exit(server.run())
