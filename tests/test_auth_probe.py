"""``wsplugin.auth._probe``: whether a waiting client is still there,
asked of the socket without reading from it."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.auth_support import make_server, web_request
from wsplugin.auth import HTTPClient
from wsplugin.auth._probe import peer_gone, still_waiting
from wsplugin.testing import handshake_request


class TransportDouble:
    """A transport whose handle is a real socket (one end of a socketpair)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def getHandle(self) -> socket.socket:
        return self.sock


class PeerGoneTests(SynchronousTestCase):
    """The probe that tells a waiting check its client has left, without
    reading from the socket (reading is paused during the handshake)."""

    def test_probe(self) -> None:
        """An open peer is there; a closed one is gone, even with unread data
        queued before its FIN; the data is not consumed; through a wrapper
        transport (TLS) the TCP socket below is asked."""
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        transport = TransportDouble(ours)
        self.assertFalse(peer_gone(transport))
        theirs.sendall(b"early frame")
        self.assertFalse(peer_gone(transport))
        theirs.close()
        self.assertTrue(peer_gone(transport))
        self.assertEqual(ours.recv(100), b"early frame")

        class TLS:
            transport = TransportDouble(ours)

            def getHandle(self) -> object:
                return object()  # an OpenSSL connection, say

        self.assertTrue(peer_gone(TLS()))
        self.assertFalse(peer_gone(object()))  # no socket to ask: present
        self.assertTrue(peer_gone(None))


class Capture:
    """An authenticator that keeps the connection and never answers."""

    conn: Any = None

    def authenticate(self, conn: Any) -> Deferred[Any]:
        self.conn = conn
        return Deferred()


class StillWaitingTests(SynchronousTestCase):
    """Whether a client still waits for its check's answer."""

    def test_connection(self) -> None:
        """A connection in its handshake waits (its in-memory transport has
        no socket to ask); once closed, it does not."""
        capture = Capture()
        _, harness = make_server(auth=capture)
        client = harness.connect()
        client.send_raw(handshake_request())
        self.assertTrue(still_waiting(capture.conn))
        client.drop()
        self.assertFalse(still_waiting(capture.conn))

    def test_http_client_and_others(self) -> None:
        """An HTTP client waits until it disconnects; anything else is
        taken to wait."""
        request, _ = web_request(b"GET", b"/")
        client = HTTPClient(request)
        self.assertTrue(still_waiting(client))
        request.connectionLost(Failure(ConnectionError("gone")))
        self.assertFalse(still_waiting(client))
        self.assertTrue(still_waiting(object()))

    def test_http_client_closed_while_held(self) -> None:
        """An HTTP client whose head is held for its check (reading paused,
        so Twisted has not seen its FIN) is gone once its socket is closed:
        the socket under the request's channel is asked."""
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        request, channel = web_request(b"GET", b"/")
        channel.transport = TransportDouble(ours)
        client = HTTPClient(request)
        self.assertTrue(still_waiting(client))
        theirs.close()
        self.assertFalse(still_waiting(client))
