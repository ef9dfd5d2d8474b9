"""The echo app: sends back whatever arrives, in every server mode.

* messages come back as messages (text as text, binary as binary);
* with ``frame_by_frame``, each frame comes back as a frame;
* with ``manual_pong``, the app answers each ping with a pong itself;
* with ``manual_close``, the app answers the peer's close, echoing its code.

This is the application the Autobahn TestSuite runs against.
"""

from __future__ import annotations

from wsplugin.connection import Connection


class Echo:
    """Echo handler."""

    def on_message(self, conn: Connection, text: str) -> None:
        """Send the text message back."""
        conn.send_text(text)

    def on_binary(self, conn: Connection, data: bytes) -> None:
        """Send the binary message back."""
        conn.send_binary(data)

    def on_fragment(
        self, conn: Connection, data: bytes, is_binary: bool, fin: bool
    ) -> None:
        """Frame-by-frame mode: send the frame back as a frame."""
        conn.send_frame(data, is_binary, fin)

    def on_ping(self, conn: Connection, payload: bytes) -> None:
        """With ``manual_pong``, answer the ping (otherwise the server did)."""
        if conn.config is not None and conn.config.manual_pong:
            conn.pong(payload)

    def on_close(self, conn: Connection, code: int | None, reason: str) -> None:
        """With ``manual_close``, answer the close, echoing a sendable code."""
        if conn.config is not None and conn.config.manual_close:
            if code is None or code in (1005, 1006, 1015):
                conn.close(None)
            else:
                conn.close(code, reason)
