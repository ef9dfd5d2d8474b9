"""Exceptions raised by wsplugin.

Every exception derives from :class:`WSPluginError` and carries the HTTP
status or WebSocket close code it maps to, so the server can answer a peer
without a lookup table::

    WSPluginError
    ├── ConfigError (ValueError)         bad option value; raised at construction
    ├── HandshakeRejected                 an upgrade refused before 101
    │   ├── Reject                        raised/returned by ``allow``: any 4xx/5xx
    │   └── RouteNotFound                 no handler for host/path: 404
    ├── ConnectionClosed                  send/receive on a connection that ended
    ├── ReceiveTimeout (TimeoutError)     ``wait_for_message(timeout=)`` elapsed
    ├── ProtocolError                     the peer broke RFC 6455; carries the
    │                                     close code sent (1002, 1007, 1009...)
    ├── UnknownConnection (LookupError)   ``write_data`` with an id nobody has
    ├── InvalidCloseCode (ValueError)     ``close()`` with a code RFC 6455 forbids
    └── FragmentedSendError               data sent while a ``send_frame``
                                          message is still open
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "ConnectionClosed",
    "FragmentedSendError",
    "HandshakeRejected",
    "InvalidCloseCode",
    "ProtocolError",
    "ReceiveTimeout",
    "Reject",
    "RouteNotFound",
    "UnknownConnection",
    "WSPluginError",
]


class WSPluginError(Exception):
    """Base class of every exception wsplugin raises."""


class ConfigError(WSPluginError, ValueError):
    """An option has a value it cannot take; the message names the option."""


class HandshakeRejected(WSPluginError):
    """The opening handshake is refused with an HTTP error status.

    Args:
        status: HTTP status code sent to the client (400-599).
        reason: Short reason phrase; it is sent on the status line, so it must
            not contain secrets or user input.
        headers: Extra response headers, e.g. ``[("WWW-Authenticate", ...)]``.
    """

    def __init__(
        self,
        status: int = 403,
        reason: str = "Forbidden",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        if not 400 <= status <= 599:
            raise ConfigError(
                f"a rejected handshake needs a 4xx or 5xx status, not {status!r}"
            )
        if not reason.isprintable() or not reason.isascii():
            raise ConfigError("the reject reason must be one line of printable ASCII")
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)
        from wsplugin.handshake import check_header

        for name, value in self.headers:
            try:
                check_header(name, value)
            except ValueError as e:
                raise ConfigError(str(e)) from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.reason!r})"


class Reject(HandshakeRejected):
    """Returned (or raised) by a handler's ``allow`` to deny an upgrade.

    ``Reject(401, "Unauthorized", [("WWW-Authenticate", 'Basic realm="x"')])``
    """


class RouteNotFound(HandshakeRejected):
    """No handler is registered for the request's host and path (404)."""

    def __init__(self, host: str, path: str) -> None:
        super().__init__(404, "Not Found")
        self.host = host
        self.path = path


class ConnectionClosed(WSPluginError):
    """The connection ended; sending or receiving on it is no longer possible.

    Args:
        code: The close code that ended the connection (1006 when the TCP
            connection dropped without a close frame).
        reason: The close reason, possibly empty.
    """

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class ReceiveTimeout(WSPluginError, TimeoutError):
    """``Connection.wait_for_message`` found no message in time."""


class UnknownConnection(WSPluginError, LookupError):
    """No open connection has the given id."""

    def __init__(self, conn_id: str) -> None:
        super().__init__(
            f"no open connection has id {conn_id!r}; it may have disconnected "
            "(check server.connections before writing)"
        )
        self.conn_id = conn_id


class InvalidCloseCode(WSPluginError, ValueError):
    """A close code that an endpoint may not send (RFC 6455, section 7.4)."""


class FragmentedSendError(WSPluginError):
    """A message was sent while a ``send_frame`` message is still unfinished.

    Finish the fragmented message with ``send_frame(..., fin=True)`` first.
    """


class ProtocolError(WSPluginError):
    """The peer broke the protocol and the server failed the connection.

    Passed to ``on_error`` (wrapped in a Failure); never raised to callers.

    Args:
        code: The close code the server sent (1002, 1007, 1009, ...).
        reason: What was wrong, without any payload bytes.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"protocol error, closing with {code}: {reason}")
        self.code = code
        self.reason = reason
