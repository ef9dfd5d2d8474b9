"""wsplugin broadcast app for workload D.

Every message a client sends is relayed to every connected client, sender
included (the trigger all peer servers implement the same way). Run:

    twistd -n --pidfile= ws --app benchmarks.servers.wsplugin_broadcast:Broadcast

(with the repository root, or ``benchmarks/servers``, on ``PYTHONPATH``).
"""

from __future__ import annotations


class Broadcast:
    """Relay each message to everyone with ``server.broadcast``."""

    def on_message(self, conn, text):
        conn.server.broadcast(text)

    def on_binary(self, conn, data):
        conn.server.broadcast(data)
