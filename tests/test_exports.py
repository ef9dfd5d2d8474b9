"""The public names each package exports: ``__all__`` pinned, so adding or
removing a public name is a deliberate change of this test."""

from __future__ import annotations

import importlib

from twisted.trial.unittest import SynchronousTestCase

CLIENT_ALL = [
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
