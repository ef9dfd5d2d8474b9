"""The smallest wsplugin server: echo every message.

Run:  python examples/echo_server.py [ENDPOINT]      (default tcp:8888)
Try:  python -m websockets ws://127.0.0.1:8888/

If the port is taken, it prints why and exits with status 1.
"""

import sys

from wsplugin import WebSocketServer


class Echo:
    def on_message(self, conn, text):
        conn.send_text(text)

    def on_binary(self, conn, data):
        conn.send_binary(data)


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
sys.exit(WebSocketServer(Echo(), endpoints=[endpoint]).run())
