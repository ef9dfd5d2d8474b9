"""Raw Autobahn on Twisted: the peer wsplugin is built on.

    python autobahn_server.py --port P --mode echo|broadcast

echo: every message comes back on its connection (``sendMessage``).
broadcast: every message is relayed to every open connection, sender
included, framed once with ``factory.prepareMessage`` and written with
``sendPreparedMessage``. Default reactor (epoll on Linux), default Autobahn
options (UTF-8 validation on, no auto-ping), no logging.
--deflate: accept permessage-deflate offers (Autobahn then compresses each
message per receiver; ``sendPreparedMessage`` does so for compressed
connections).
"""

import argparse

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)
from twisted.internet import reactor


class Echo(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


class Broadcast(WebSocketServerProtocol):
    def onOpen(self):
        self.factory.clients.add(self)

    def onClose(self, wasClean, code, reason):
        self.factory.clients.discard(self)

    def onMessage(self, payload, isBinary):
        prepared = self.factory.prepareMessage(payload, isBinary)
        for client in list(self.factory.clients):
            client.sendPreparedMessage(prepared)


def accept_deflate(offers):
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    ap.add_argument("--deflate", action="store_true")
    args = ap.parse_args()
    factory = WebSocketServerFactory(f"ws://127.0.0.1:{args.port}")
    if args.deflate:
        factory.setProtocolOptions(perMessageCompressionAccept=accept_deflate)
    factory.protocol = Echo if args.mode == "echo" else Broadcast
    factory.clients = set()
    reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
