"""A handler for the scale-out tests: it answers commands sent as text, so
a test client can ask a node (or a worker) for its connection id and
process, and make it broadcast, publish to a channel, ``write_data`` to any
connection id, or count the cluster.

    id                  -> "id <conn id> <pid>"
    bcast TEXT          -> server.broadcast(TEXT)
    sub CHANNEL         -> conn.subscribe(CHANNEL), then "subscribed CHANNEL"
    pub CHANNEL TEXT    -> server.broadcast(TEXT, channel=CHANNEL)
    send ID TEXT        -> server.write_data(ID, TEXT)
    count               -> "count <cluster-wide connections>"

``twistd ws --app tests.integration.cluster_app:Node`` (from the checkout).
It speaks ``wsplugin.channels.v1`` too (a ChannelHandler with history), so
recovering clients can use it.
"""

from __future__ import annotations

import os
from typing import Any

from wsplugin.channels import ChannelHandler


class Node(ChannelHandler):
    history_size = 1000

    def on_plain_message(self, conn: Any, text: str) -> None:
        server = conn.server
        command, _, rest = text.partition(" ")
        if command == "id":
            conn.send_text(f"id {conn.id} {os.getpid()}")
        elif command == "bcast":
            server.broadcast(rest)
        elif command == "sub":
            conn.subscribe(rest).addCallback(
                lambda _: conn.send_text(f"subscribed {rest}")
            )
        elif command == "pub":
            channel, _, message = rest.partition(" ")
            server.broadcast(message, channel=channel, history_size=1000)
        elif command == "send":
            target, _, message = rest.partition(" ")
            server.write_data(target, message)
        elif command == "count":
            server.connection_count().addCallback(
                lambda n: conn.send_text(f"count {n}")
            )
