"""A live feed that browser pages follow without missing an item.

The server publishes one item a second to the channel ``feed`` and keeps
the last 300 (``history_size``). Its page, ``live_feed.html`` (served at
``/``), subscribes with ``wsplugin.channels.v1`` and the position of the
last item it showed: after a dropped connection, a server restart or a
laptop waking up, it gets the items it missed first, in order, then the
live ones; when they are gone from history it says so and reloads.
docs/scaling.md ("Recovery in a browser page") walks through the page.

Run:  python examples/live_feed.py [ENDPOINT]   (default tcp:8888)
then open http://127.0.0.1:8888/. This server keeps its history in memory;
with ``backplane="redis://..."`` several of them share one feed.
"""

import sys
from pathlib import Path

from twisted.internet import task
from twisted.web.resource import Resource

from wsplugin import WebSocketServer
from wsplugin.channels import ChannelHandler
from wsplugin.web import File

PAGE = Path(__file__).with_name("live_feed.html")


class Feed(ChannelHandler):
    history_size = 300  # five minutes of items

    def channel_allowed(self, conn, channel):
        return channel == "feed"

    def publish_allowed(self, conn, channel):
        return False  # the server alone writes the feed


def page():
    root = Resource()
    root.putChild(b"", File(str(PAGE), defaultType="text/html"))
    return root


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
server = WebSocketServer(Feed(), endpoints=[endpoint], http=page())
count = 0


def tick():
    global count
    count += 1
    server.broadcast(f"item {count}", channel="feed", history_size=300)


task.LoopingCall(tick).start(1.0, now=False)
sys.exit(server.run())
