"""A wsplugin echo or broadcast server for ``compare.py``, using whichever
``wsplugin`` is first on ``PYTHONPATH`` (so older checkouts can be run):

    PYTHONPATH=CHECKOUT python serve.py PORT echo|broadcast [--compression]
        [--reactor=uvloop]

Echo is ``twistd ws --app echo``'s handler; broadcast relays every message
to everyone with ``server.broadcast``, like ``servers/wsplugin_broadcast.py``.
"""

import sys

if "--reactor=uvloop" in sys.argv:
    from wsplugin.reactors import install_uvloop

    install_uvloop()

from twisted.internet import reactor  # noqa: E402

from wsplugin import WebSocketServer  # noqa: E402
from wsplugin.apps.echo import Echo  # noqa: E402


class Broadcast:
    def on_message(self, conn, text):
        conn.server.broadcast(text)

    def on_binary(self, conn, data):
        conn.server.broadcast(data)


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    handler = Echo() if mode == "echo" else Broadcast()
    server = WebSocketServer(
        handler,
        endpoints=[f"tcp:{port}:interface=127.0.0.1"],
        compression="--compression" in sys.argv,
    )
    server.start()
    reactor.run()


if __name__ == "__main__":
    main()
