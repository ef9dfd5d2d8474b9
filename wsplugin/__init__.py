"""wsplugin: a WebSocket server component suite for Twisted, on Autobahn.

The public API is re-exported here; the modules behind it are private.
"""

from wsplugin._routing import Route, Router
from wsplugin._version import __version__
from wsplugin.config import ServerConfig
from wsplugin.connection import (
    CloseMessage,
    Connection,
    ConnectionState,
    Fragment,
    Headers,
    Message,
    Request,
)
from wsplugin.errors import (
    ConfigError,
    ConnectionClosed,
    FragmentedSendError,
    HandshakeRejected,
    InvalidCloseCode,
    ProtocolError,
    ReceiveTimeout,
    Reject,
    RouteNotFound,
    UnknownConnection,
    WSPluginError,
)
from wsplugin.factory import Connections, WebSocketServerFactory
from wsplugin.protocol import WebSocketServerProtocol
from wsplugin.server import WebSocketServer
from wsplugin.tls import PeerCertificate, TLSOptions

__all__ = [
    "CloseMessage",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionState",
    "Connections",
    "Fragment",
    "FragmentedSendError",
    "HandshakeRejected",
    "Headers",
    "InvalidCloseCode",
    "Message",
    "PeerCertificate",
    "ProtocolError",
    "ReceiveTimeout",
    "Reject",
    "Request",
    "Route",
    "RouteNotFound",
    "Router",
    "ServerConfig",
    "TLSOptions",
    "UnknownConnection",
    "WSPluginError",
    "WebSocketServer",
    "WebSocketServerFactory",
    "WebSocketServerProtocol",
    "__version__",
]
