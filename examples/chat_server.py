"""A browser chat on one port: the page over HTTP, the chat over WebSocket.

GET / serves examples/chat_client.html; ws://HOST:PORT/chat?name=NAME joins
the chat, where every message is sent to everyone as "NAME: text".

Run:  python examples/chat_server.py [ENDPOINT]       (default tcp:8888)
Then open http://127.0.0.1:8888/ in two browser tabs.
"""

import sys
from pathlib import Path

from twisted.web.resource import Resource

from wsplugin import WebSocketServer
from wsplugin.web import File

PAGE = Path(__file__).with_name("chat_client.html")


class Chat:
    def on_open(self, conn):
        conn.user_data = (conn.request.param("name") or "guest")[:32]
        conn.server.broadcast(f"* {conn.user_data} joined")

    def on_message(self, conn, text):
        conn.server.broadcast(f"{conn.user_data}: {text}")

    def on_disconnect(self, conn, was_clean, code, reason):
        conn.server.broadcast(f"* {conn.user_data} left")


pages = Resource()
pages.putChild(b"", File(str(PAGE), defaultType="text/html"))

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
server = WebSocketServer(None, endpoints=[endpoint], http=pages)
server.register_handler("*", "/chat", Chat(), default_host=True)
sys.exit(server.run())
