"""Broadcast chat (the FPC ``broadcastServer``, with TMS ``SendMessageTo``).

Every text a client sends goes to every *other* client, prefixed with the
sender's short id; joins and leaves are announced to everyone.

Run:  python examples/broadcast_server.py [ENDPOINT]   (default tcp:8888)
"""

import sys

from wsplugin import WebSocketServer


class Broadcast:
    def on_open(self, conn):
        conn.server.broadcast(f"* {conn.id[-8:]} joined")

    def on_message(self, conn, text):
        # TMS SendMessageTo: everyone except the sender
        conn.server.send_to(f"{conn.id[-8:]}: {text}", lambda other: other is not conn)

    def on_disconnect(self, conn, was_clean, code, reason):
        conn.server.broadcast(f"* {conn.id[-8:]} left")


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
sys.exit(WebSocketServer(Broadcast(), endpoints=[endpoint]).run())
