"""Tests for ``wsplugin.errors``."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsplugin import errors
from wsplugin.connection import Headers
from wsplugin.errors import (
    ClientError,
    ConnectFailed,
    HandshakeFailed,
    OpenTimeout,
    ReceiveTimeout,
    TLSFailed,
    WSPluginError,
)


class ClientErrorTests(SynchronousTestCase):
    """The client's errors: their tree, messages and attributes."""

    def test_errors_derive_from_wsplugin_error(self) -> None:
        """Every client error is a WSPluginError; timeouts are TimeoutErrors.
        ReceiveTimeout is shared with the server's Connection, so it is not a
        ClientError (one class to catch on either side)."""
        for error in (
            ConnectFailed("h", 1, "r"),
            TLSFailed("h", 1, "r"),
            OpenTimeout("h", 1, "r"),
            HandshakeFailed("ws://h/", 401, "Unauthorized"),
        ):
            self.assertIsInstance(error, ClientError)
            self.assertIsInstance(error, WSPluginError)
        self.assertIsInstance(OpenTimeout("h", 1, "r"), TimeoutError)
        self.assertIsInstance(ReceiveTimeout("x"), TimeoutError)
        self.assertIsInstance(ReceiveTimeout("x"), WSPluginError)
        self.assertNotIsInstance(ReceiveTimeout("x"), ClientError)
        self.assertEqual(
            str(ConnectFailed("::1", 80, "Connection refused")),
            "cannot connect to [::1]:80: Connection refused",
        )

    def test_messages(self) -> None:
        """Each message is one line naming the host or URL and what failed."""
        self.assertEqual(
            str(TLSFailed("localhost", 8443, "certificate verify failed")),
            "TLS handshake with localhost:8443 failed: certificate verify failed",
        )
        self.assertEqual(
            str(HandshakeFailed("ws://h/", 401, "Unauthorized")),
            "handshake with ws://h/ failed: 401 Unauthorized",
        )
        self.assertEqual(
            str(HandshakeFailed("ws://h/", 101, detail="bad accept")),
            "handshake with ws://h/ failed: invalid 101 response: bad accept",
        )
        self.assertEqual(
            str(HandshakeFailed("ws://h/", None)),
            "handshake with ws://h/ failed: no HTTP response",
        )
        error = ConnectFailed("h", 1, "Connection refused")
        self.assertEqual(
            (error.host, error.port, error.reason), ("h", 1, "Connection refused")
        )

    def test_handshake_failed_response(self) -> None:
        """``response`` is the answer as a Response (None without a status);
        without headers, ``headers`` is an empty case-insensitive mapping."""
        headers = Headers((("WWW-Authenticate", "Basic"),))
        error = HandshakeFailed("ws://h/", 401, "Unauthorized", headers, b"no")
        response = error.response
        assert response is not None
        self.assertEqual(
            (response.status, response.reason, response.body),
            (401, "Unauthorized", b"no"),
        )
        self.assertIs(response.headers, headers)
        bare = HandshakeFailed("ws://h/", None)
        self.assertIsNone(bare.response)
        self.assertEqual(len(bare.headers), 0)
        self.assertIsNone(bare.headers.get("www-authenticate"))
        self.assertEqual(bare.headers.get_all("set-cookie"), [])
        self.assertEqual(bare.headers.raw(), ())
        self.assertRaises(KeyError, lambda: bare.headers["x"])

    def test_exported(self) -> None:
        """The client's errors are in ``wsplugin.errors.__all__`` and are the
        very classes ``wsplugin.client`` exports."""
        import wsplugin.client

        for name in (
            "ClientError",
            "ConnectFailed",
            "HandshakeFailed",
            "OpenTimeout",
            "ReceiveTimeout",
            "TLSFailed",
        ):
            self.assertIn(name, errors.__all__)
            self.assertIs(getattr(wsplugin.client, name), getattr(errors, name))


class UploadRefusedTests(SynchronousTestCase):
    """UploadRefused sits in errors.py's tree and keeps its import path."""

    def test_one_class_two_paths(self) -> None:
        """``wsplugin.uploads.UploadRefused`` is ``wsplugin.errors.UploadRefused``,
        a WSPluginError carrying its status and message."""
        from wsplugin import uploads

        self.assertIs(uploads.UploadRefused, errors.UploadRefused)
        self.assertIn("UploadRefused", errors.__all__)
        refused = errors.UploadRefused(422, "infected")
        self.assertIsInstance(refused, errors.WSPluginError)
        self.assertEqual((refused.status, refused.message), (422, "infected"))

    def test_status_must_be_an_error(self) -> None:
        """A status outside 400-599 is a ConfigError naming the fix."""
        with self.assertRaises(errors.ConfigError) as caught:
            errors.UploadRefused(200, "fine")
        self.assertIn("4xx or 5xx", str(caught.exception))
