"""Upgrade to WebSocket from inside an HTTP service (TMS Sparkle ``Upgrade``).

A plain ``twisted.web`` resource calls ``upgrade(request)``; a WebSocket
request becomes a Connection read with ``async for``, anything else gets 400
(the Sparkle service's ``SetStatusCode(400)``).

Run:  python examples/sparkle_echo.py [ENDPOINT]       (default tcp:8888)
Try:  python -m websockets ws://127.0.0.1:8888/echo
"""

import sys

from twisted.internet import endpoints, reactor
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from wsplugin.web import upgrade


class EchoService(Resource):
    isLeaf = True

    def render_GET(self, request):
        conn = upgrade(request)
        if conn is not None:
            Deferred.fromCoroutine(self.echo(conn))
        return NOT_DONE_YET

    async def echo(self, conn):
        async for message in conn:
            if isinstance(message, str):
                conn.send_text("Echo: " + message)
        # the loop ends when the client closes; the server answers its close


root = Resource()
root.putChild(b"echo", EchoService())

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"

listening = endpoints.serverFromString(reactor, endpoint).listen(Site(root))
failed = []


def cannot_listen(failure):
    failed.append(failure)
    reactor.callWhenRunning(reactor.stop)


listening.addErrback(cannot_listen)
reactor.run()
if failed:
    print(f"cannot start: {failed[0].getErrorMessage()}", file=sys.stderr)
    sys.exit(1)
