"""wsplugin._httplimits: a resource's own body limits, the reason phrases,
and the empty answers given from a request head."""

from __future__ import annotations

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from wsplugin._httplimits import head_answer, resource_limit, status_phrase
from wsplugin.web import EmptyPage


class Limited(Resource):
    """A resource with limits of its own."""

    max_request_body = 1024
    request_body_timeout = 2.5


class ResourceLimitTests(SynchronousTestCase):
    """A resource's ``max_request_body`` / ``request_body_timeout``."""

    def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            if event.get("log_namespace") == "wsplugin.web":
                self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_own_value(self) -> None:
        """A resource's own numbers win over the server's, 0 included."""
        page = Limited()
        self.assertEqual(resource_limit(page, "max_request_body", 99), 1024)
        self.assertEqual(resource_limit(page, "request_body_timeout", 60.0), 2.5)
        page.max_request_body = 0
        self.assertEqual(resource_limit(page, "max_request_body", 99), 0)
        self.assertEqual(self.logged, [])

    def test_server_default(self) -> None:
        """Without the attribute, or with None, the server's value."""
        self.assertEqual(resource_limit(Resource(), "max_request_body", 99), 99)
        page = Limited()
        page.max_request_body = None
        self.assertEqual(resource_limit(page, "max_request_body", 99), 99)
        self.assertEqual(self.logged, [])

    def test_bad_values_logged(self) -> None:
        """A negative number, a bool or a string is not a limit: the
        server's value is used and the mistake logged."""
        for bad in (-1, True, "10", [5]):
            page = Limited()
            page.max_request_body = bad
            self.assertEqual(resource_limit(page, "max_request_body", 77), 77)
        self.assertEqual(len(self.logged), 4)
        self.assertIn(".max_request_body must be a number >= 0, not -1", self.logged[0])
        self.assertIn("using the server's 77", self.logged[0])
        self.assertIn("not '10'", self.logged[2])


class StatusPhraseTests(SynchronousTestCase):
    """RFC 9110's reason phrases."""

    def test_phrases(self) -> None:
        """Known statuses by name, 413 and 414 by their RFC 9110 names, and
        unknown ones as Error / OK."""
        self.assertEqual(status_phrase(200), b"OK")
        self.assertEqual(status_phrase(404), b"Not Found")
        self.assertEqual(status_phrase(413), b"Content Too Large")
        self.assertEqual(status_phrase(414), b"URI Too Long")
        self.assertEqual(status_phrase(599), b"Error")
        self.assertEqual(status_phrase(299), b"OK")


class HeadAnswerTests(SynchronousTestCase):
    """What is refused before any body byte."""

    def test_error_page_refused(self) -> None:
        """An EmptyPage with an error status is answered from the head,
        with its headers."""
        page = EmptyPage(401, {b"WWW-Authenticate": b'Basic realm="x"'})
        self.assertEqual(
            head_answer(page),
            (401, "refused from its head", [(b"WWW-Authenticate", b'Basic realm="x"')]),
        )

    def test_not_refused(self) -> None:
        """Other resources, and an EmptyPage with a success status, read
        their body."""
        self.assertIsNone(head_answer(Resource()))
        self.assertIsNone(head_answer(EmptyPage(204)))
        self.assertIsNone(head_answer(EmptyPage(399)))
        self.assertIsNone(head_answer(None))

    def test_header_injection_dropped(self) -> None:
        """A header whose name or value holds CR, LF or NUL is not sent."""
        page = EmptyPage(
            403,
            {
                b"X-Ok": b"1",
                b"X-Bad": b"a\r\nSet-Cookie: x=1",
                b"X-Nul": b"a\x00",
                b"X\nName": b"v",
            },
        )
        self.assertEqual(
            head_answer(page), (403, "refused from its head", [(b"X-Ok", b"1")])
        )
