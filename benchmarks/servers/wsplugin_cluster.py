"""wsplugin app for the scale-out benchmarks (``benchmarks/scaleout.py``).

A :class:`~wsplugin.channels.ChannelHandler` (clients offering
``wsplugin.channels.v1`` subscribe with recovery) whose plain clients send
commands:

    sub CHANNEL        subscribe; answered "subscribed CHANNEL"
    pub CHANNEL TEXT   publish TEXT to CHANNEL (kept in its history)
    fill CHANNEL N     publish N numbered messages to CHANNEL at once;
                       answered "filled N" once the backplane has them all
"""

from __future__ import annotations

from wsplugin.channels import ChannelHandler

HISTORY = 20_000


class Cluster(ChannelHandler):
    history_size = HISTORY

    def on_plain_message(self, conn, text):
        server = conn.server
        command, _, rest = text.partition(" ")
        if command == "sub":
            conn.subscribe(rest).addCallback(
                lambda _: conn.send_text(f"subscribed {rest}")
            )
        elif command == "pub":
            channel, _, message = rest.partition(" ")
            server.broadcast(message, channel=channel, history_size=HISTORY)
        elif command == "fill":
            channel, _, count = rest.partition(" ")
            for i in range(int(count)):
                server.broadcast(f"m{i}", channel=channel, history_size=HISTORY)
            # a round trip behind the publications: they are all stored
            server.channel_count(channel).addBoth(
                lambda _: conn.send_text(f"filled {count}")
            )
