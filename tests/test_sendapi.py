"""wsplugin._sendapi: the sending methods' arguments, one implementation for
server and factory."""

from __future__ import annotations

import warnings
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import WebSocketServer, WebSocketServerFactory
from wsplugin._sendapi import SendingMethods


class SharedTests(SynchronousTestCase):
    """The server and its factory share one fan-out and one registry."""

    def test_same_objects(self) -> None:
        """server.broadcast and factory.broadcast are the same method,
        working on the same fan-out."""
        server, _ = make(Recorder())
        self.assertTrue(issubclass(WebSocketServer, SendingMethods))
        self.assertTrue(issubclass(WebSocketServerFactory, SendingMethods))
        self.assertIs(server.fanout, server.factory.fanout)
        self.assertIs(server.registry, server.factory.registry)


class ArgumentTests(SynchronousTestCase):
    """Arguments are checked before anything is sent."""

    def setUp(self) -> None:
        self.server, harness = make(Recorder())
        self.client = harness.open()

    def test_message_types(self) -> None:
        """str is text, bytes-like is binary, anything else a TypeError."""
        self.assertEqual(self.server.broadcast("t"), 1)
        self.assertEqual(self.server.broadcast(memoryview(b"b")), 1)
        self.assertEqual(self.client.messages(), ["t", b"b"])
        with self.assertRaises(TypeError):
            self.server.broadcast(3)  # type: ignore[arg-type]

    def test_ids_are_str(self) -> None:
        """bytes ids are refused, named; one str is one id; exclude takes a
        single Connection."""
        conn = self.client.connection
        for name in ("ids", "exclude"):
            with self.assertRaisesRegex(TypeError, f"broadcast\\({name}="):
                self.server.broadcast("x", **{name: b"id"})
        self.assertEqual(self.server.broadcast("x", ids=conn.id), 1)
        self.assertEqual(self.server.broadcast("x", exclude=conn), 0)
        self.assertEqual(self.server.broadcast("x", exclude=conn.id), 0)

    def test_protocol_keyword_deprecated(self) -> None:
        """protocol= still filters, with a DeprecationWarning at the caller."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.assertEqual(self.server.broadcast("x", protocol="none"), 0)
        self.assertEqual(caught[0].filename, __file__)

    def test_ping_and_disconnect_all_skip_failures(self) -> None:
        """A connection that fails to ping or close is logged, not counted."""

        def broken(*args: Any) -> None:
            raise RuntimeError("broken")

        self.client.connection.ping = broken  # type: ignore[method-assign]
        self.assertEqual(self.server.ping_all(), 0)
        self.client.connection.close = broken  # type: ignore[method-assign]
        self.assertEqual(self.server.disconnect_all(), 0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
