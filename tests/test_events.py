"""wsplugin._events: handler return values and bound event methods."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._events import ROUTE_EVENTS, as_deferred, bind_events


class AsDeferredTests(SynchronousTestCase):
    """A value, a Deferred or a coroutine all become a Deferred."""

    def test_value_deferred_coroutine(self) -> None:
        """Values fire at once; a Deferred is itself; a coroutine runs."""
        self.assertEqual(self.successResultOf(as_deferred(3)), 3)
        d: Deferred[int] = Deferred()
        self.assertIs(as_deferred(d), d)

        async def coro() -> int:
            return 4

        self.assertEqual(self.successResultOf(as_deferred(coro())), 4)


class BindEventsTests(SynchronousTestCase):
    """Event methods are looked up once; absent ones are left out."""

    def test_bound_and_absent(self) -> None:
        """Only the events a handler has are bound."""

        class Handler:
            def on_open(self, conn: Any) -> None: ...

            def unrelated(self) -> None: ...

        events = bind_events(Handler())
        self.assertEqual(list(events), ["on_open"])
        self.assertEqual(bind_events(None), {})
        self.assertIn("on_message", ROUTE_EVENTS)

    def test_not_callable(self) -> None:
        """An event name that is not callable is an error, named."""

        class Handler:
            on_message = "not a method"

        with self.assertRaisesRegex(TypeError, "Handler.on_message"):
            bind_events(Handler())
