"""HTTP Basic authentication before the upgrade (sgc ``Authentication``).

Clients must send ``Authorization: Basic ...`` for a user in the password
file; others get 401 with ``WWW-Authenticate`` and never reach the handler.
``conn.user`` carries the user name into every event.

Run:  python examples/auth_basic.py [ENDPOINT] [HTPASSWD]
      (default tcp:8888; without a file, a demo file with alice:secret is used)
Try:  python -m websockets ws://alice:secret@127.0.0.1:8888/
Make a real file with:  htpasswd -cB -C 12 users.htpasswd alice
"""

import sys
import tempfile

import bcrypt

from wsplugin import WebSocketServer
from wsplugin.auth import BasicAuth, HtpasswdChecker


class Greeter:
    def on_open(self, conn):
        conn.send_text(f"welcome, {conn.user}")

    def on_message(self, conn, text):
        conn.send_text(f"{conn.user} said: {text}")


def demo_password_file():
    demo = tempfile.NamedTemporaryFile("w", suffix=".htpasswd", delete=False)
    demo.write("alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt()).decode() + "\n")
    demo.close()
    return demo.name


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
password_file = sys.argv[2] if len(sys.argv) > 2 else demo_password_file()
auth = BasicAuth(HtpasswdChecker(password_file), realm="example")
sys.exit(WebSocketServer(Greeter(), endpoints=[endpoint], auth=auth).run())
