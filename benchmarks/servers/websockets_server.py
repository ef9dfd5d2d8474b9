"""``websockets`` (asyncio implementation, default asyncio event loop).

    python websockets_server.py --port P --mode echo|broadcast

echo: ``async for message in ws: await ws.send(message)``.
broadcast: every message goes to every open connection, sender included,
with ``websockets.asyncio.server.broadcast`` (framed once per message).
Library defaults otherwise (keep-alive pings every 20 s, 1 MiB max size;
permessage-deflate only if the client offers it, which loadgen does only
in workload G). --deflate states that default (``compression="deflate"``)
explicitly; without it compression is left at the default too.
"""

import argparse
import asyncio
import logging

from websockets.asyncio.server import broadcast, serve

CLIENTS = set()


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def relay(ws):
    CLIENTS.add(ws)
    try:
        async for message in ws:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(ws)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    ap.add_argument("--deflate", action="store_true")
    args = ap.parse_args()
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    handler = echo if args.mode == "echo" else relay
    async with serve(handler, "127.0.0.1", args.port, compression="deflate") as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
