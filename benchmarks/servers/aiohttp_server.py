"""aiohttp ``web.WebSocketResponse`` (default asyncio event loop).

    python aiohttp_server.py --port P --mode echo|broadcast

echo: each TEXT/BINARY message is sent back with send_str/send_bytes.
broadcast: each message goes to every open connection, sender included
(``await ws.send_str`` in a loop, aiohttp's documented pattern).
Access log off (no other server logs per request); other options default,
which includes ``compress=True``: permessage-deflate is accepted when the
client offers it (loadgen does only in workload G; --deflate is accepted
for symmetry with the other peers and changes nothing).
"""

import argparse

from aiohttp import WSMsgType, web

CLIENTS = set()


async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def relay(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    CLIENTS.add(ws)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                for client in list(CLIENTS):
                    if not client.closed:
                        await client.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                for client in list(CLIENTS):
                    if not client.closed:
                        await client.send_bytes(msg.data)
    finally:
        CLIENTS.discard(ws)
    return ws


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    ap.add_argument("--deflate", action="store_true")
    args = ap.parse_args()
    app = web.Application()
    app.router.add_get("/{tail:.*}", echo if args.mode == "echo" else relay)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
