"""wsplugin._static: StaticFiles' safe defaults and EmptyPage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from wsplugin.web import EmptyPage, StaticFiles


class StaticFilesTests(SynchronousTestCase):
    """StaticFiles refuses escapes, listings and dotfiles unless allowed."""

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        (base / "out").mkdir(parents=True)
        (base / "out" / "secret").write_text("s")
        self.root = base / "root"
        (self.root / "dir").mkdir(parents=True)
        (self.root / ".env").write_text("e")
        (self.root / "link").symlink_to(base / "out")

    def _get(self, files: StaticFiles, *segments: bytes) -> Any:
        from twisted.web.test.requesthelper import DummyRequest

        resource: Any = files
        for segment in segments:
            resource = resource.getChild(segment, DummyRequest([segment]))
        return resource

    def test_defaults(self) -> None:
        """Escaping link, dotfile: not found; listing: 403."""
        files = StaticFiles(str(self.root))
        self.assertIs(self._get(files, b"link"), files.childNotFound)
        self.assertIs(self._get(files, b".env"), files.childNotFound)
        self.assertEqual(self._get(files, b"dir", b"")._code, 403)

    def test_options(self) -> None:
        """Each option turns its refusal off, in subdirectories too."""
        files = StaticFiles(
            str(self.root), listing=True, dotfiles=True, follow_symlinks=True
        )
        self.assertTrue(self._get(files, b"link", b"secret").path.endswith("secret"))
        self.assertTrue(self._get(files, b".env").path.endswith(".env"))
        self.assertEqual(
            type(self._get(files, b"dir", b"")).__name__, "DirectoryLister"
        )


class EmptyPageTests(SynchronousTestCase):
    """A status, its headers and an empty body, for any path below it."""

    def test_render(self) -> None:
        """The status and headers are set; the body is empty."""
        page = EmptyPage(404, {b"x-why": b"gone"})
        request = DummyRequest([b"a"])
        self.assertEqual(page.render(request), b"")
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-why"), [b"gone"])
        self.assertIs(page.getChild(b"deeper", request), page)
