"""wsplugin._registry: the open connections by id, and the public view."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Recorder, make
from wsplugin import UnknownConnection
from wsplugin._registry import Connections, Registry


class RegistryTests(SynchronousTestCase):
    """Registry and Connections over connections of a harness server."""

    def setUp(self) -> None:
        self.server, harness = make(Recorder())
        self.a = harness.open().connection
        self.b = harness.open().connection

    def test_open_connections_registered(self) -> None:
        """Opened connections are in the server's registry, in order."""
        registry = self.server.factory.registry
        self.assertEqual(registry.snapshot(), [self.a, self.b])
        self.assertEqual(registry.ids(), [self.a.id, self.b.id])
        self.assertEqual(len(registry), 2)

    def test_remove_only_the_same(self) -> None:
        """remove() leaves another connection holding the same id alone."""
        registry = Registry()
        registry.add(self.a)
        impostor = type(self.a).__new__(type(self.a))
        impostor.id = self.a.id
        registry.remove(impostor)
        self.assertIs(registry.get(self.a.id), self.a)
        registry.remove(self.a)
        self.assertIsNone(registry.get(self.a.id))

    def test_view(self) -> None:
        """Connections: iterate, len, [id], get, in (by id or object), ids."""
        view = Connections(self.server.factory.registry)
        self.assertEqual(list(view), [self.a, self.b])
        self.assertEqual(len(view), 2)
        self.assertIs(view[self.a.id], self.a)
        self.assertIsNone(view.get("nope"))
        self.assertEqual(view.get("nope", 5), 5)
        self.assertIn(self.a, view)
        self.assertIn(self.b.id, view)
        self.assertNotIn("nope", view)
        self.assertEqual(view.ids(), [self.a.id, self.b.id])
        with self.assertRaises(UnknownConnection):
            view["nope"]

    def test_snapshot_safe_while_closing(self) -> None:
        """Iterating while connections end does not break the iteration."""
        for conn in self.server.connections:
            conn.abort()
        self.server.factory.clock.advance(0)
        self.assertEqual(len(self.server.connections), 0)
