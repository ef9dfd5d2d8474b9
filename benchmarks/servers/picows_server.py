"""picows (Cython, frame-level API; default asyncio event loop).

    python picows_server.py --port P --mode echo|broadcast

picows hands the application frames, not messages, and does not validate
UTF-8: it does less per message than the other servers, which is part of
what it is. echo: each data frame is sent back with the same type and FIN
bit. broadcast: each data frame goes to every connection, sender included.
Auto-pong on (the default); picows recommends uvloop, not used here so that
every asyncio peer runs on the same default loop.
"""

import argparse
import asyncio

from picows import WSListener, WSMsgType, ws_create_server

CLIENTS = set()
DATA = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)


class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        mt = frame.msg_type
        if mt in DATA:
            transport.send(mt, frame.get_payload_as_memoryview(), frame.fin)
        elif mt == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


class Relay(WSListener):
    def on_ws_connected(self, transport):
        CLIENTS.add(transport)

    def on_ws_disconnected(self, transport):
        CLIENTS.discard(transport)

    def on_ws_frame(self, transport, frame):
        mt = frame.msg_type
        if mt in DATA:
            payload = frame.get_payload_as_bytes()
            for client in list(CLIENTS):
                client.send(mt, payload, frame.fin)
        elif mt == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    args = ap.parse_args()
    listener = Echo if args.mode == "echo" else Relay
    server = await ws_create_server(lambda _request: listener(), "127.0.0.1", args.port)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
