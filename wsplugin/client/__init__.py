"""A WebSocket client with the server side's Connection API (FPC ``TWebsocketClient``).

:func:`connect` opens one connection and fires with a :class:`ClientConnection`:
the same facade a server handler gets (``send_text``, ``send_binary``,
``send_frame``, ``ping``, ``close``, ``await receive()``, ``async for``), plus
the handshake :attr:`~ClientConnection.response` (status, headers: read your
``Set-Cookie`` there, FPC ``OnHandshakeSuccess``) and
:meth:`~ClientConnection.wait_for_message` (FPC ``WaitForMessage``)::

    from wsplugin.client import connect

    async def chat(reactor):
        conn = await connect("ws://127.0.0.1:8888/", reactor=reactor,
                             headers={"Authorization": "Bearer ..."})
        conn.send_text("hello")
        conn.ping(b"are you there?")
        pong = await conn.wait_for_message(kinds=("pong",), timeout=5)
        async for message in conn:       # str (text) or bytes (binary)
            print(message)

A refused upgrade fails the Deferred with :class:`HandshakeFailed`, carrying
the status, headers and body of the server's answer (FPC
``OnHandshakeFailure``). :class:`ReconnectingClient` keeps a connection up
across drops and server restarts, with exponential backoff (Twisted's
``ClientService``). ``python -m wsplugin.client URL`` is an interactive chat
client (FPC ``chatClient``); see :mod:`wsplugin.cli`.

The protocol and factory are subclasses of Autobahn's
``WebSocketClientProtocol`` / ``WebSocketClientFactory``, adapters only, as on
the server side: Autobahn frames, masks, validates UTF-8, compresses and checks
the handshake. Safe defaults bound what a server can make the client hold:
messages of at most 16 MiB (larger ones close the connection with 1009), a
10 s limit for connecting plus the whole opening handshake, a receive queue of
32 messages (reading from the socket pauses while it is full) and an error
response body of at most 64 KiB.

The package's modules, each re-exported here (import from
``wsplugin.client``, not from them):

- ``_url``: :func:`parse_url`, :class:`URL` (pure);
- ``_http``: the response head and error body, :class:`Response` (pure);
- ``_config``: :class:`ClientConfig` (pure); ``_tls``: trust for ``wss://``;
- ``_connection``: :class:`ClientConnection`, :class:`Message` and the
  inbox of received messages;
- ``_protocol``: the Autobahn adapter, :class:`WebSocketClientProtocol` and
  :class:`WebSocketClientFactory`;
- ``_connect``: :func:`connect`; ``_reconnect``: :class:`ReconnectingClient`;
- ``_channels``: :class:`ChannelSubscriptions`, channels that survive
  reconnections (``wsplugin.channels.v1``, docs/scaling.md).

Exceptions (defined in :mod:`wsplugin.errors`, all
:class:`~wsplugin.errors.WSPluginError`)::

    WSPluginError
    ├── ReceiveTimeout                 ``wait_for_message(timeout=)`` elapsed
    │   (also TimeoutError)            (the same class as on the server)
    └── ClientError                    base of the client's errors
        ├── ConnectFailed              no TCP connection: DNS, refused, unreachable
        │   ├── TLSFailed              the TLS handshake failed (untrusted
        │   │                          certificate, wrong host name, protocol)
        │   └── OpenTimeout            not open within ``open_timeout``
        │       (also TimeoutError)
        └── HandshakeFailed            the server did not answer with a valid
                                       101: ``status`` (None if it sent no
                                       valid HTTP response), ``headers``, ``body``

Sending or receiving on a connection that has ended raises
:class:`~wsplugin.errors.ConnectionClosed`, as on the server.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsplugin.client._channels import ChannelPublication, ChannelSubscriptions
from wsplugin.client._config import ClientConfig
from wsplugin.client._connect import connect
from wsplugin.client._connection import MESSAGE_KINDS, ClientConnection, Message
from wsplugin.client._http import Response, parse_response_head

# importable from here as before, though not part of __all__
from wsplugin.client._http import decode_chunked as decode_chunked
from wsplugin.client._protocol import WebSocketClientFactory, WebSocketClientProtocol
from wsplugin.client._reconnect import ReconnectingClient
from wsplugin.client._url import URL, parse_url
from wsplugin.errors import (
    ClientError,
    ConnectFailed,
    HandshakeFailed,
    OpenTimeout,
    ReceiveTimeout,
    TLSFailed,
)

__all__ = [
    "ChannelPublication",
    "ChannelSubscriptions",
    "ClientConfig",
    "ClientConnection",
    "ClientError",
    "ConnectFailed",
    "HandshakeFailed",
    "MESSAGE_KINDS",
    "Message",
    "OpenTimeout",
    "ReceiveTimeout",
    "ReconnectingClient",
    "Response",
    "TLSFailed",
    "URL",
    "WebSocketClientFactory",
    "WebSocketClientProtocol",
    "connect",
    "main",
    "parse_response_head",
    "parse_url",
]


def main(argv: Sequence[str] | None = None) -> int:
    """The chat client: :func:`wsplugin.cli.main`.

    Imported when called: ``wsplugin.cli`` imports this package, so importing
    it here at the top would fail when ``wsplugin.cli`` is imported first (as
    the ``wsplugin-client`` script does).
    """
    from wsplugin.cli import main as cli_main

    return cli_main(argv)
