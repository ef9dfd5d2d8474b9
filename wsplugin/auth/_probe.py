"""Is the client still there? A waiting password check of a client that
has left is skipped, so the CPU goes to clients that still wait.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from wsplugin.auth._http import HTTPClient
from wsplugin.connection import Connection, ConnectionState

__all__ = ["peer_gone", "still_waiting"]


def _socket_of(transport: Any) -> socket.socket | None:
    """The TCP socket under a transport (through TLS and wrappers), if any."""
    for _ in range(4):
        if transport is None:
            return None
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if callable(get_handle) else None
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
    return None


def peer_gone(transport: Any) -> bool:
    """Whether the peer has closed or reset the TCP connection.

    While a password check is pending, the handshake stops reading from the
    socket (backpressure), so Twisted does not notice a client that closed:
    the socket is asked directly, without reading from it. ``POLLRDHUP``
    (Linux) sees the peer's FIN even behind unread data; elsewhere a peek
    sees it when nothing else is queued. A transport without a socket
    (tests, pipes) counts as present.
    """
    if transport is None:
        return True
    sock = _socket_of(transport)
    if sock is None:
        return False
    if sock.fileno() < 0:
        return True  # closed on our side already
    rdhup = getattr(select, "POLLRDHUP", 0)
    if rdhup and hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock.fileno(), rdhup | select.POLLHUP | select.POLLERR)
        return bool(poller.poll(0))
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return data == b""


def still_waiting(client: Any) -> bool:
    """Whether ``client`` (a Connection or an HTTPClient) still waits for
    its answer; a check for one that left is skipped."""
    if isinstance(client, HTTPClient):
        if client.gone:
            return False
        # the head's check holds the body back (backpressure), so Twisted
        # has not read the client's FIN: ask the socket, as for upgrades
        channel = getattr(client.web_request, "channel", None)
        if channel is None:
            return True  # no connection to ask (a test's request)
        return not peer_gone(getattr(channel, "transport", None))
    if isinstance(client, Connection):
        if client.state is not ConnectionState.CONNECTING:
            return False
        # the socket probe needs the transport under the connection's engine
        return not peer_gone(getattr(client.engine, "transport", None))
    return True
