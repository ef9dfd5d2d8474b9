"""The connection log: one event when a WebSocket connection opens, one when
it ends, with the fields an operator filters and sums on.

Both events go to the ``wsplugin.connections`` namespace at ``info`` level,
through :mod:`twisted.logger`, so any observer gets them: ``twistd``'s text
log, or one JSON object per line with ``twistd ws --log-format json``
(:mod:`wsplugin.logs`). Their fields (besides ``log_*``):

=================  ==========================================================
``event``          ``"connection.open"`` or ``"connection.close"``
``conn_id``        the connection's id (``conn.id``)
``peer``           the client's address (``conn.request.peer_address``): the
                   real client behind a trusted proxy or PROXY protocol
``peer_port``      its port (0 from ``X-Forwarded-For``; None for UNIX)
``proxy``          the socket peer when ``peer`` came from a proxy, else None
``route``          the route that serves it (``/chat``, ``host/chat``, ``*``)
``path``           the request path, never its query string
``subprotocol``    the negotiated subprotocol, or None
``duration``       close only: seconds since the 101 answer
``bytes_in``       close only: bytes read from the socket, handshake included
``bytes_out``      close only: bytes written (or queued), handshake included
``code``           close only: the close code ``on_disconnect`` gets
``reason``         close only: its reason
``code_sent``      close only: the code of the close frame sent, or None
``code_received``  close only: the code of the peer's close frame, or None
``clean``          close only: whether the closing handshake completed
=================  ==========================================================

Request headers, the query string and message payloads are never fields:
they can carry credentials (``Authorization``, cookies, ``?token=``) or user
data. The server logs these events only with ``connection_log=True``
(``twistd ws --connection-log``): formatted by a file observer, the two
cost about half of what the handshake itself costs (Twisted's formatting of
the message and of the time stamp dominates; see docs/logging.md).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

__all__ = ["connection_log", "log_close", "log_open", "route_label"]

connection_log = Logger(namespace="wsplugin.connections")
"""The logger of the connection events (filter on its namespace)."""


def route_label(route: Any) -> str:
    """A route as logs and metrics name it: its path, after its host when
    the route is registered for one host (``"example.com/chat"``); ``"*"``
    for a route that serves every path. Bounded by the routes registered,
    never by what clients send."""
    if route is None:
        return ""
    return route.path if route.host == "*" else f"{route.host}{route.path}"


def _common(proto: Any) -> dict[str, Any]:
    conn = proto.connection
    request = conn.request
    proxy = request.proxy_peer
    return {
        "conn_id": conn.id,
        "peer": request.peer_address,
        "peer_port": getattr(request.peer, "port", None),
        "proxy": getattr(proxy, "host", None) if proxy is not None else None,
        "route": route_label(proto.route),
        "path": request.path,
        "subprotocol": conn.subprotocol,
    }


def log_open(proto: Any) -> None:
    """The connection of ``proto`` (a server protocol) just opened."""
    connection_log.info(
        "connection {conn_id} open from {peer} on {route}",
        event="connection.open",
        **_common(proto),
    )


def log_close(proto: Any, code: int | None, reason: str, clean: bool) -> None:
    """The connection of ``proto`` ended with ``code`` and ``reason``."""
    opened = getattr(proto, "opened_at", None)
    duration = proto.factory.clock.seconds() - opened if opened is not None else 0.0
    connection_log.info(
        "connection {conn_id} closed: {code} {reason!r} after {duration} s",
        event="connection.close",
        duration=round(max(duration, 0.0), 3),
        bytes_in=proto.bytes_in,
        bytes_out=proto.bytes_out,
        code=code,
        reason=reason[:123],
        code_sent=proto.localCloseCode,
        code_received=proto.remoteCloseCode,
        clean=bool(clean),
        **_common(proto),
    )
