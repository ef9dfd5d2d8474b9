"""Fragments and whole messages (sgc ``FragmentedMessages = frgAll``), and
a frame size per message (FPC ``WriteMessage(..., MaxFrameLength)``).

With ``frame_by_frame`` and ``assemble_messages`` every frame of a
client's message reaches ``on_fragment`` as it arrives, then the whole
message reaches ``on_message``. The server answers each whole message with
how many frames carried it, sent in frames of at most 16 bytes, header
included (``frame_size=16``: 14 payload bytes per frame).

Run:  python examples/fragments_server.py [ENDPOINT]    (default tcp:8888)
"""

import sys

from wsplugin import WebSocketServer


class Fragments:
    def on_open(self, conn):
        conn.user_data = 0  # frames of the message being received

    def on_fragment(self, conn, data, is_binary, fin):
        # a progress report could go out here, before the message is whole
        conn.user_data += 1

    def on_message(self, conn, text):
        frames, conn.user_data = conn.user_data, 0
        conn.send_text(f"{frames} frames: {text}", frame_size=16)


endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp:8888"
server = WebSocketServer(
    Fragments(), endpoints=[endpoint], frame_by_frame=True, assemble_messages=True
)
sys.exit(server.run())
