"""Per-connection user data (TMS ``UserData`` / ``OwnsUserData``).

The server gives every connection a session object when the handshake
response is sent; the object is released (its ``close()`` called) when the
connection ends. Clients can send ``name <NAME>`` and ``whoami``.

Run:  python examples/user_data.py [ENDPOINT]          (default tcp:8888)
"""

import itertools
import sys

from wsplugin import WebSocketServer

numbers = itertools.count(1)


class Session:
    def __init__(self):
        self.number = next(numbers)
        self.name = f"guest-{self.number}"

    def close(self):
        print(f"session {self.number} ({self.name}) released", flush=True)


class Named:
    def on_handshake_response_sent(self, conn):
        conn.owns_user_data = True
        conn.user_data = Session()

    def on_message(self, conn, text):
        command, _, argument = text.partition(" ")
        if command == "name" and argument:
            conn.user_data.name = argument
            conn.send_text(f"ok, you are {argument}")
        elif command == "whoami":
            conn.send_text(conn.user_data.name)
        else:
            conn.send_text("commands: name <NAME>, whoami")


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
sys.exit(WebSocketServer(Named(), endpoints=[endpoint]).run())
