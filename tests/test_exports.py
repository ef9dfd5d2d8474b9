"""The public names each package exports: ``__all__`` pinned, so adding or
removing a public name is a deliberate change of this test."""

from __future__ import annotations

import importlib

from twisted.trial.unittest import SynchronousTestCase

TOP_ALL = [
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

PUBLIC_MODULES = {
    "apps",
    "auth",
    "backplane",
    "channels",
    "cli",
    "client",
    "config",
    "connection",
    "errors",
    "factory",
    "forward",
    "handshake",
    "logs",
    "metrics",
    "protocol",
    "reactors",
    "server",
    "tap",
    "testing",
    "tls",
    "uploads",
    "web",
}
"""The modules documented as import paths; every other one is private."""

DOCUMENTED_PATHS = [
    ("wsplugin.uploads", ["UploadResource", "UploadRefused", "safe_filename"]),
    ("wsplugin.forward", ["ForwardResource"]),
    ("wsplugin.reactors", ["install_uvloop", "install"]),
    ("wsplugin.protocol", ["WebSocketServerProtocol", "ROUTE_EVENTS", "copy_options"]),
    ("wsplugin.factory", ["WebSocketServerFactory", "Connections"]),
    ("wsplugin.server", ["WebSocketServer", "listener_lost"]),
    (
        "wsplugin.connection",
        [
            "Connection",
            "ConnectionState",
            "ConnectionEngine",
            "CloseMessage",
            "Fragment",
            "Headers",
            "Message",
            "Request",
            "MESSAGE_KINDS",
            "forwarded_address",
            "check_close_code",
        ],
    ),
    (
        "wsplugin.web",
        [
            "upgrade",
            "StaticFiles",
            "File",
            "EmptyPage",
            "SiteRequest",
            "BoundedSite",
            "BoundedHTTPChannel",
            "WebSocketResource",
            "site_root",
            "make_site",
            "site_factory",
            "access_log_formatter",
            "redact_query",
            "is_websocket_request",
        ],
    ),
    (
        "wsplugin.testing",
        [
            "ServerHarness",
            "FakeClient",
            "FakeTransport",
            "handshake_request",
            "client_frame",
            "parse_frames",
            "ClientFrame",
            "HttpResponse",
        ],
    ),
    ("wsplugin.config", ["ServerConfig", "MiB", "SERVER_ONLY"]),
    ("wsplugin.metrics", ["Metrics", "MetricsService", "metrics_endpoint"]),
    ("wsplugin.logs", ["json_observer", "twistd_json_observer", "scrub"]),
]
"""``from wsplugin.X import Y`` lines of docs/, examples/ and the docstrings."""


class TopLevelExportTests(SynchronousTestCase):
    """``wsplugin`` exports its public API explicitly."""

    def test_all_is_pinned(self) -> None:
        """``wsplugin.__all__`` is exactly the documented names."""
        import wsplugin

        self.assertEqual(sorted(wsplugin.__all__), sorted(TOP_ALL))

    def test_every_name_resolves(self) -> None:
        """Each name in ``__all__`` is an attribute, and none is private."""
        import wsplugin

        for name in wsplugin.__all__:
            self.assertTrue(name == "__version__" or not name.startswith("_"), name)
            self.assertTrue(hasattr(wsplugin, name), name)

    def test_reexports_are_the_module_objects(self) -> None:
        """The top-level names are the objects of the public modules."""
        import wsplugin
        import wsplugin.connection
        import wsplugin.protocol
        import wsplugin.server

        self.assertIs(wsplugin.Connection, wsplugin.connection.Connection)
        self.assertIs(wsplugin.WebSocketServer, wsplugin.server.WebSocketServer)
        self.assertIs(
            wsplugin.WebSocketServerProtocol, wsplugin.protocol.WebSocketServerProtocol
        )

    def test_internal_modules_are_private(self) -> None:
        """Every module of the package that is not a documented import path
        has an underscore name."""
        import pkgutil

        import wsplugin

        for info in pkgutil.iter_modules(wsplugin.__path__):
            if not info.name.startswith("_"):
                self.assertIn(info.name, PUBLIC_MODULES)

    def test_documented_import_paths(self) -> None:
        """``from wsplugin.X import Y`` keeps working for every documented Y."""
        for module_name, names in DOCUMENTED_PATHS:
            module = importlib.import_module(module_name)
            for name in names:
                self.assertTrue(hasattr(module, name), f"{module_name}.{name}")


CLIENT_ALL = [
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


class ClientExportTests(SynchronousTestCase):
    """``wsplugin.client`` exports its public API and nothing private."""

    def test_all_is_pinned(self) -> None:
        """``wsplugin.client.__all__`` is exactly the documented names."""
        import wsplugin.client

        self.assertEqual(sorted(wsplugin.client.__all__), sorted(CLIENT_ALL))

    def test_every_name_resolves(self) -> None:
        """Each name in ``__all__`` is an attribute, and none is private."""
        import wsplugin.client

        for name in wsplugin.client.__all__:
            self.assertFalse(name.startswith("_"), name)
            self.assertTrue(hasattr(wsplugin.client, name), name)

    def test_documented_import_paths(self) -> None:
        """Every import from ``wsplugin.client`` in docs/, examples/, tests/
        and conformance/ keeps working, ``decode_chunked`` included."""
        module = importlib.import_module("wsplugin.client")
        for name in (*CLIENT_ALL, "decode_chunked"):
            self.assertTrue(hasattr(module, name), name)

    def test_reexports_are_the_module_objects(self) -> None:
        """The re-exports are the objects of the modules that define them."""
        import wsplugin.cli
        import wsplugin.client
        from wsplugin.client import _connect, _connection, _reconnect

        self.assertIs(wsplugin.client.connect, _connect.connect)
        self.assertIs(wsplugin.client.ClientConnection, _connection.ClientConnection)
        self.assertIs(wsplugin.client.ReconnectingClient, _reconnect.ReconnectingClient)
        self.assertTrue(callable(wsplugin.cli.main))
