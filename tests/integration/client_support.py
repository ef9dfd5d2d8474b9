"""Shared pieces of the client's loopback tests: bounded waits, an echo
handler, a test case that closes its clients, certificates from a private CA."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import trustme
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from websockets.sync.server import serve

from tests.helpers import Recorder
from tests.integration.support import ServerTestCase, in_thread
from wsplugin.client import ClientConnection, connect

WAIT = 10.0
"""Seconds any single wait in these tests may take."""


def bounded(d: Deferred[Any], seconds: float = WAIT) -> Deferred[Any]:
    """``d``, failing with a TimeoutError if it takes longer than ``seconds``."""
    return d.addTimeout(seconds, reactor)


class Echo(Recorder):
    """Records events, echoes messages, remembers the request headers."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[Any] = []

    def allow(self, conn: Any) -> Any:
        self.headers.append(conn.request.headers)
        conn.response_headers.append(("Set-Cookie", "session=abc; HttpOnly"))
        return super().allow(conn)

    def on_message(self, conn: Any, text: str) -> None:
        super().on_message(conn, text)
        if text.startswith("big:"):
            conn.send_text("x" * int(text[4:]))
        else:
            conn.send_text(text)

    def on_binary(self, conn: Any, data: bytes) -> None:
        super().on_binary(conn, data)
        conn.send_binary(data)


class ClientTestCase(ServerTestCase):
    """Connects clients and closes them after the test."""

    @inlineCallbacks
    def open(self, url: str, **options: Any) -> Any:
        """Connect (bounded) and close the connection at cleanup."""
        conn = yield bounded(connect(url, **options), options.get("open_timeout", WAIT))
        self.addCleanup(self.close, conn)
        return conn

    def websockets_server(self, handler: Any, **kw: Any) -> WebsocketsServer:
        """A ``websockets`` server in a thread, stopped at cleanup."""
        server = WebsocketsServer(handler, **kw)
        self.addCleanup(in_thread, server.stop)
        return server

    @inlineCallbacks
    def close(self, conn: ClientConnection) -> Any:
        """Close ``conn`` and wait (bounded) until it has ended."""
        if conn.state.value != "closed":
            conn.close()
            try:
                yield bounded(conn.wait_closed())
            except Exception:
                conn.abort()


def certificates(test: Any, *names: str) -> tuple[trustme.CA, str, str]:
    """A private CA and a server certificate for ``names``, as PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert(*names)
    base = Path(test.mktemp()).resolve()
    base.parent.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = f"{base}-cert.pem", f"{base}-key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    return ca, cert_path, key_path


class WebsocketsServer:
    """The ``websockets`` package's sync server, in a thread."""

    def __init__(self, handler: Any, **kw: Any) -> None:
        self.server = serve(handler, "127.0.0.1", 0, **kw)
        self.port = self.server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(WAIT)
