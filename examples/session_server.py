"""Sessions shared by HTTP pages and WebSockets, with session events (sgc
``OnCreateSession``, ``OnSessionStart``, ``OnSessionEnd``,
``OnInvalidSession``, ``SessionTimeout``).

``POST /login`` (form fields ``username``, ``password``) starts a session
and sets its cookie; ``DELETE /login`` ends it. ``/cart`` is a page that
reads the session with ``store.session_of(request)``; ``/members`` is
guarded by the session cookie; the WebSocket route ``/ws`` greets the
session's user (``conn.session``) and closes with 1008 when the session
ends. A login that presents an older session cookie gets a new id (session
fixation). Every event is printed.

Run:  python examples/session_server.py [ENDPOINT]     (default tcp:8888)
Try:  curl -c jar -d 'username=alice&password=secret' http://127.0.0.1:8888/login
      curl -b jar http://127.0.0.1:8888/cart
"""

import sys

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.internet import reactor
from twisted.web.resource import Resource

from wsplugin import WebSocketServer
from wsplugin.auth import LoginResource, SessionAuth, SessionStore, guard


class Sessions:
    """The session events; each is optional."""

    def create_session(self, identity):
        # OnCreateSession: the application's object for the session
        return {"user": identity, "visits": 0}

    def on_session_start(self, session):
        print(f"session started for {session.identity}", flush=True)

    def on_session_end(self, session, reason):
        # "logout", "expired" (SessionTimeout), "evicted" or "replaced"
        print(f"session of {session.identity} ended: {reason}", flush=True)

    def on_invalid_session(self, request):
        # an unknown or expired session id was presented
        print(f"invalid session presented for {request.path}", flush=True)


class Cart(Resource):
    isLeaf = True

    def render_GET(self, request):
        session = store.session_of(request)
        if session is None:
            request.setResponseCode(401)
            return b"log in first\n"
        session.data["visits"] += 1
        return f"{session.data['user']}: visit {session.data['visits']}\n".encode()


class Members(Resource):
    isLeaf = True

    def render_GET(self, request):
        # guard(SessionAuth) puts the session on the request
        return f"members only, {request.wsplugin_session.identity}\n".encode()


class Hello:
    def on_open(self, conn):
        conn.send_text(f"hello {conn.session.data['user']}")


checker = InMemoryUsernamePasswordDatabaseDontUse()  # for demos; use HtpasswdChecker
checker.addUser(b"alice", b"secret")
store = SessionStore(reactor, timeout=900, handler=Sessions())

root = Resource()
root.putChild(b"login", LoginResource(checker, store))
root.putChild(b"cart", Cart())
root.putChild(b"members", guard(Members(), SessionAuth(store)))

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
server = WebSocketServer(None, endpoints=[endpoint], http=root)
server.register_handler("*", "/ws", Hello(), default_host=True, auth=SessionAuth(store))
sys.exit(server.run())
