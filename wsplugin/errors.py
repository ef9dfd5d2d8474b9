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
    ├── ReceiveTimeout (TimeoutError)     ``wait_for_message(timeout=)`` elapsed,
    │                                     on a server or a client connection
    ├── ProtocolError                     the peer broke RFC 6455; carries the
    │                                     close code sent (1002, 1007, 1009...)
    ├── UnknownConnection (LookupError)   ``write_data`` with an id nobody has
    ├── InvalidCloseCode (ValueError)     ``close()`` with a code RFC 6455 forbids
    ├── FragmentedSendError               data sent while a ``send_frame``
    │                                     message is still open
    ├── UploadRefused                     raised by an upload handler
    │                                     (:mod:`wsplugin.uploads`): the HTTP
    │                                     status (4xx/5xx) and message to answer
    └── ClientError                       raised by :mod:`wsplugin.client`
        ├── ConnectFailed                 no connection: DNS, refused, unreachable
        │   ├── TLSFailed                 the TLS handshake failed (untrusted
        │   │                             certificate, wrong host name, protocol)
        │   └── OpenTimeout (TimeoutError)  not open within ``open_timeout``
        └── HandshakeFailed               no valid 101: carries the ``status``
                                          (None without an HTTP answer),
                                          ``headers`` and ``body``

The client's errors carry no close code: they describe why a connection was
never made (or a wait ended), not how one was closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, cast

from wsplugin._headers import check_header

if TYPE_CHECKING:
    from wsplugin.client import Response
    from wsplugin.connection import Headers

__all__ = [
    "ClientError",
    "ConfigError",
    "ConnectFailed",
    "ConnectionClosed",
    "FragmentedSendError",
    "HandshakeFailed",
    "HandshakeRejected",
    "InvalidCloseCode",
    "OpenTimeout",
    "ProtocolError",
    "ReceiveTimeout",
    "Reject",
    "RouteNotFound",
    "TLSFailed",
    "UnknownConnection",
    "UploadRefused",
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
    """``wait_for_message`` found no message in time (on a server
    :class:`~wsplugin.Connection` or a client connection alike)."""


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


class UploadRefused(WSPluginError):
    """Raised by an upload handler's method to refuse the whole upload
    (:class:`wsplugin.uploads.UploadResource`; also importable from there).

    Args:
        status: The HTTP status to answer with (400-599; 403 by default).
        message: Sent to the client as ``{"error": message}`` (so no secrets
            in it) and logged.

    Raised from ``before_upload`` the answer comes before any body byte is
    read (with an empty body: the message is then only logged); from any
    other method, files already written for the request are removed.
    """

    def __init__(self, status: int = 403, message: str = "upload refused") -> None:
        if not 400 <= status <= 599:
            raise ConfigError(
                f"an upload refusal needs a 4xx or 5xx status, not {status!r}"
            )
        super().__init__(status, message)
        self.status = status
        self.message = message


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


# --------------------------------------------------------------------------
# The client's errors (wsplugin.client re-exports them)
# --------------------------------------------------------------------------


class ClientError(WSPluginError):
    """Base class of the errors :func:`wsplugin.client.connect` and the
    client raise."""


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ConnectFailed(ClientError):
    """No connection to the server (DNS, refused, unreachable, dropped).

    Args:
        host: The host of the URL.
        port: The port connected to.
        reason: What went wrong, in a few words ("Connection refused").
    """

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(self._message(host, port, reason))
        self.host = host
        self.port = port
        self.reason = reason

    @staticmethod
    def _message(host: str, port: int, reason: str) -> str:
        return f"cannot connect to {_netloc(host, port)}: {reason}"


class TLSFailed(ConnectFailed):
    """The TLS handshake failed: an untrusted or expired certificate, a
    certificate for another host name, or no common protocol version."""

    @staticmethod
    def _message(host: str, port: int, reason: str) -> str:
        return f"TLS handshake with {_netloc(host, port)} failed: {reason}"


class OpenTimeout(ConnectFailed, TimeoutError):
    """The connection was not open within ``open_timeout`` seconds (TCP, TLS
    and the opening handshake together)."""


class _NoHeaders(Mapping[str, str]):
    """The headers of a :class:`HandshakeFailed` built without any: empty,
    with the ``get_all`` and ``raw`` of :class:`wsplugin.connection.Headers`.

    The client always passes a real ``Headers``; this default exists because
    ``errors`` is the bottom module and may not import ``connection`` (which
    imports it).
    """

    def __getitem__(self, name: str) -> str:
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def get_all(self, name: str) -> list[str]:
        """No values for any name."""
        return []

    def raw(self) -> tuple[tuple[str, str], ...]:
        """No pairs."""
        return ()

    def __repr__(self) -> str:
        return "Headers([])"


class HandshakeFailed(ClientError):
    """The server did not accept the upgrade (FPC ``OnHandshakeFailure``).

    Attributes:
        url: The URL connected to.
        status: The HTTP status the server answered with (e.g. 401, 403,
            404); 101 when it did switch protocols but its answer was invalid
            (a wrong ``Sec-WebSocket-Accept``, an extension or subprotocol the
            client did not offer); None when it sent no valid HTTP response
            at all (closed the connection, or sent something else).
        reason: The status line's reason phrase.
        headers: The response headers (case-insensitive; ``get_all`` for
            repeated ones such as ``Set-Cookie`` or ``WWW-Authenticate``).
        body: The response body, at most ``max_error_body`` bytes.
        detail: What was wrong, for a status of 101 or None.
    """

    def __init__(
        self,
        url: str,
        status: int | None,
        reason: str = "",
        headers: Headers | None = None,
        body: bytes = b"",
        detail: str = "",
    ) -> None:
        if status is not None and status != 101:
            what = f"{status} {reason}".rstrip()
        elif status == 101:
            what = f"invalid 101 response: {detail}"
        else:
            what = detail or "no HTTP response"
        super().__init__(f"handshake with {url} failed: {what}")
        self.url = url
        self.status = status
        self.reason = reason
        # _NoHeaders has the read API of Headers (mapping, get_all, raw)
        self.headers: Headers = (
            headers if headers is not None else cast("Headers", _NoHeaders())
        )
        self.body = body
        self.detail = detail

    @property
    def response(self) -> Response | None:
        """The server's answer as a :class:`wsplugin.client.Response` (None
        without one)."""
        if self.status is None:
            return None
        # a leaf module (no wsplugin imports), so no import cycle
        from wsplugin.client._http import Response

        return Response(self.status, self.reason, self.headers, self.body)
