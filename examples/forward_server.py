"""Forward ``/api/`` to an upstream HTTP server, with WebSocket on ``/ws``
(sgc ``OnBeforeForwardHTTP`` / ``OnAfterForwardHTTP``).

Requests under ``/api`` go to UPSTREAM (``/api/hello?name=you`` becomes
``UPSTREAM/hello?name=you``) with ``X-Forwarded-For``/``-Proto``/``-Host``;
the answer is relayed as the upstream sends it. The handler gives every
request an ``X-Request-Id``, refuses ``/api/admin`` itself (403, the upstream
is never asked), marks answers with ``X-Upstream-Status``, and turns an
upstream that cannot be reached into a JSON 503. ``/legacy/`` forwards to a
server that is down, to show that. ``/ws`` is an echo WebSocket route.

Run:  python examples/forward_server.py [ENDPOINT] [UPSTREAM]
      (default tcp:8888; without UPSTREAM a small demo application is
      started on a free loopback port)
Try:  curl -i 'http://127.0.0.1:8888/api/hello?name=you'
      curl -i http://127.0.0.1:8888/legacy/report
"""

import itertools
import json
import socket
import sys

from twisted.internet import endpoints, reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from wsplugin import WebSocketServer
from wsplugin.forward import ForwardResource
from wsplugin.web import EmptyPage

ids = itertools.count(1)


class Hooks:
    def before_forward(self, request, upstream):
        # OnBeforeForwardHTTP: change the request, or answer instead
        if request.path.startswith(b"/api/admin"):
            return EmptyPage(403)
        upstream.headers.setRawHeaders(b"x-request-id", [b"%d" % next(ids)])
        return None

    def after_forward(self, request, response):
        # OnAfterForwardHTTP: the upstream's answer, or the error
        if response.error is not None:
            print(f"upstream error: {response.code}", flush=True)
            response.code, response.phrase = 503, b"Service Unavailable"
            response.headers.setRawHeaders(b"content-type", [b"application/json"])
            response.headers.setRawHeaders(b"retry-after", [b"60"])
            response.body = b'{"error": "try again later"}\n'
        else:
            response.headers.setRawHeaders(
                b"x-upstream-status", [b"%d" % response.code]
            )


class Echo:
    def on_message(self, conn, text):
        conn.send_text(text)


class DemoApp(Resource):
    """The demo upstream: answers with what it was sent."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        seen = {
            "path": request.uri.decode(),
            "request_id": request.getHeader(b"x-request-id").decode(),
            "forwarded_for": request.getHeader(b"x-forwarded-for").decode(),
        }
        return json.dumps(seen).encode() + b"\n"


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
if len(sys.argv) > 2:
    upstream = sys.argv[2]
else:
    demo_port = unused_port()
    demo = endpoints.TCP4ServerEndpoint(reactor, demo_port, interface="127.0.0.1")
    demo.listen(Site(DemoApp()))
    upstream = f"http://127.0.0.1:{demo_port}"
print(f"forwarding /api/ to {upstream}", flush=True)

root = Resource()
api = ForwardResource(upstream, Hooks(), timeout=10)
legacy = ForwardResource(f"http://127.0.0.1:{unused_port()}", Hooks())
root.putChild(b"api", api)
root.putChild(b"legacy", legacy)
server = WebSocketServer(None, endpoints=[endpoint], http=root)
server.register_handler("*", "/ws", Echo(), default_host=True)
reactor.addSystemEventTrigger("before", "shutdown", api.close)
sys.exit(server.run())
