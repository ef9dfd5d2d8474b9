"""The awaitable API (TMS Sparkle ``Receive``, FPC ``WaitForMessage``).

A handler without ``on_message`` reads its connection with ``async for``;
the loop ends when the client closes.

Run:  python examples/awaitable_echo.py [ENDPOINT]     (default tcp:8888)
"""

import sys

from twisted.internet.defer import Deferred

from wsplugin import WebSocketServer


class Loop:
    def on_open(self, conn):
        return Deferred.fromCoroutine(self.serve(conn))

    async def serve(self, conn):
        async for message in conn:
            conn.send(f"Echo: {message}" if isinstance(message, str) else message)


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
sys.exit(WebSocketServer(Loop(), endpoints=[endpoint]).run())
