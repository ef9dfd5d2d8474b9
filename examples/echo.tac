"""A twistd application file: ``twistd -ny examples/echo.tac``.

Composes a WebSocketServer into a Twisted application next to anything else
the application runs. WSPLUGIN_ENDPOINT overrides the default tcp:8888.
"""

import os

from twisted.application.service import Application

from wsplugin import WebSocketServer


class Echo:
    def on_message(self, conn, text):
        conn.send_text(text)


application = Application("echo")
endpoint = os.environ.get("WSPLUGIN_ENDPOINT", "tcp:8888")
WebSocketServer(Echo(), endpoints=[endpoint]).setServiceParent(application)
