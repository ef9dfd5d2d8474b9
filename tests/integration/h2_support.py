"""A small blocking HTTP/2 client for the tests, on the ``h2`` package (the
one Twisted's server uses): TLS with ALPN ``h2``, streams opened by hand,
and every event recorded, so a test sees exactly what the server sent
(headers, data, resets, GOAWAY) on each stream. Every wait is bounded."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events


@dataclass
class Answer:
    """What one stream received."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None  # the RST_STREAM error code, if reset

    @property
    def status(self) -> int:
        return int(self.headers.get(":status", "0"))


class H2Client:
    """One HTTP/2 connection over TLS to ``127.0.0.1:port``."""

    def __init__(self, port: int, ca: str, alpn: tuple[str, ...] = ("h2",)) -> None:
        context = ssl.create_default_context(cafile=ca)
        context.set_alpn_protocols(list(alpn))
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.alpn = self.sock.selected_alpn_protocol()
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.answers: dict[int, Answer] = {}
        self.goaway: int | None = None
        self.closed = False
        self.window_updates = 0
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream; send ``body`` (all of it, if the window allows:
        call :meth:`send` for more); returns the stream id."""
        stream = self.conn.get_next_available_stream_id()
        head = [
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", "localhost"),
            *(headers or []),
        ]
        self.conn.send_headers(stream, head, end_stream=end and not body)
        self.answers[stream] = Answer()
        if body:
            self.send(stream, body, end=end)
        self._flush()
        return stream

    def send(self, stream: int, data: bytes, end: bool = False) -> int:
        """Send as much of ``data`` as flow control allows now; returns how
        many bytes were sent (the stream may have been reset: 0)."""
        sent = 0
        try:
            while sent < len(data):
                room = min(
                    self.conn.local_flow_control_window(stream),
                    self.conn.max_outbound_frame_size,
                    len(data) - sent,
                )
                if room <= 0:
                    break
                self.conn.send_data(stream, data[sent : sent + room])
                sent += room
            if end and sent == len(data):
                self.conn.end_stream(stream)
        except h2.exceptions.StreamClosedError:
            pass
        self._flush()
        return sent

    def pump(self, timeout: float = 0.5) -> None:
        """Read and handle what the server sends for ``timeout`` seconds (or
        until the connection closes)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except (ssl.SSLError, OSError):
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            self._handle(self.conn.receive_data(data))
            self._flush()

    def wait(self, stream: int, timeout: float = 10) -> Answer:
        """Pump until ``stream`` ended or was reset (bounded)."""
        deadline = time.monotonic() + timeout
        answer = self.answers[stream]
        while (
            not (answer.ended or answer.reset is not None)
            and not self.closed
            and time.monotonic() < deadline
        ):
            self.pump(0.2)
        return answer

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            stream = getattr(event, "stream_id", None)
            answer = self.answers.get(stream) if stream else None
            if isinstance(event, h2.events.ResponseReceived) and answer:
                answer.headers.update(dict(event.headers))
            elif isinstance(event, h2.events.DataReceived) and answer:
                answer.body += event.data
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded) and answer:
                answer.ended = True
            elif isinstance(event, h2.events.StreamReset) and answer:
                answer.reset = int(event.error_code)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = int(event.error_code)
            elif isinstance(event, h2.events.WindowUpdated):
                self.window_updates += 1

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except Exception:
            pass
        self.sock.close()
