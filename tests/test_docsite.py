"""The documentation site's structure, without building it.

``docs/_ext/wsdocs.py`` turns the Markdown pages into the Sphinx site
(navigation from docs/index.md, example files included instead of their
copies, one API page per public module). These tests call its functions
directly: they need neither Sphinx nor a build, so they run in a second.
``tests/integration/test_docsite.py`` builds the site with warnings as
errors, and ``make docs`` builds its HTML.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.doccheck import ROOT, doc_pages, read_blocks
from tests.test_exports import PUBLIC_MODULES

sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import wsdocs  # noqa: E402  (docs/_ext is not a package)

DOCS = ROOT / "docs"


class NavigationTests(SynchronousTestCase):
    """docs/index.md's link lists are the site's navigation."""

    def test_every_page_is_in_the_navigation(self) -> None:
        """Each docs/*.md page (but the index) and the API reference is in
        exactly one of the index's toctrees: a page left out would be a
        warning (an error with -W) and unreachable from the sidebar."""
        toctrees = wsdocs.toctrees((DOCS / "index.md").read_text())
        listed = re.findall(r"^(?![:`])(\S+)$", toctrees, re.M)
        pages = sorted(p.stem for p in DOCS.glob("*.md") if p.stem != "index")
        self.assertEqual(sorted(listed), sorted([*pages, "api/index"]))
        self.assertEqual(len(listed), len(set(listed)))

    def test_the_four_kinds_of_page(self) -> None:
        """Tutorial, how-to guides, topics and reference, as issue 17 asks:
        the guides it names are how-tos, the topics it names are topics."""
        toctrees = wsdocs.toctrees((DOCS / "index.md").read_text())
        sections = dict(re.findall(r":caption: (.+)\n\n((?:\S+\n)+)", toctrees, re.M))
        self.assertEqual(
            list(sections), ["Tutorial", "How-to guides", "Topics", "Reference"]
        )
        howtos = sections["How-to guides"].split()
        for page in ("deploy", "tls", "auth", "proxies", "scaling", "metrics"):
            self.assertIn(page, howtos)
        topics = sections["Topics"].split()
        for page in ("architecture", "security", "performance", "conformance"):
            self.assertIn(page, topics)
        self.assertIn("seed-mapping", topics)
        self.assertIn("api/index", sections["Reference"].split())

    def test_toctrees_read_links_only_outside_code(self) -> None:
        """A page linked twice is listed once; links in a fenced block, to
        other sites or to an anchor only, and before the first caption, are
        not pages of the site."""
        page = (
            "Intro: [x](intro.md)\n"
            "## One\n"
            "- [a](a.md) and [a again](a.md#part)\n"
            "- [site](https://example.com/b.md) [anchor](#c)\n"
            "```md\n[d](d.md)\n```\n"
            "## Two\n"
            "- [a](a.md), [e](sub/e.rst)\n"
            "## Empty\n"
        )
        self.assertEqual(
            wsdocs.toctrees(page),
            "\n```{toctree}\n:hidden:\n:caption: One\n\na\n```\n"
            "\n```{toctree}\n:hidden:\n:caption: Two\n\nsub/e\n```\n",
        )


class ExampleIncludeTests(SynchronousTestCase):
    """A block marked ``<!-- example: FILE -->`` becomes FILE on the site."""

    def test_marked_block_becomes_literalinclude(self) -> None:
        page = (
            "Text\n"
            "<!-- example: examples/nginx/wsplugin.conf -->\n"
            "```nginx\nserver {}\n```\n"
            "  <!-- example: examples/sparkle_echo.py from line 11 -->\n"
            "  <!-- fresh-server -->\n"
            "  ```python\n  x = 1\n  ```\n"
            "```haproxy\nglobal\n```\n"
        )
        self.assertEqual(
            wsdocs.include_examples(page),
            "Text\n"
            "<!-- example: examples/nginx/wsplugin.conf -->\n"
            "```{literalinclude} /../examples/nginx/wsplugin.conf\n"
            ":language: nginx\n```\n"
            "  <!-- example: examples/sparkle_echo.py from line 11 -->\n"
            "  <!-- fresh-server -->\n"
            "  ```{literalinclude} /../examples/sparkle_echo.py\n"
            "  :language: python\n  :lines: 11-\n  ```\n"
            "```haproxy\nglobal\n```\n",
        )

    def test_marker_without_block(self) -> None:
        with self.assertRaises(ValueError) as caught:
            wsdocs.include_examples("<!-- example: examples/x.py -->\nText\n")
        self.assertIn("line 2", str(caught.exception))

    def test_copies_are_their_files(self) -> None:
        """Every block marked ``<!-- example: FILE [from line N] -->``, in
        any language, is FILE (from line N) as the site includes it: the
        page on GitHub shows what the site and the tests use."""
        count = 0
        for page in doc_pages():
            for block in read_blocks(page):
                if "example" not in block.markers:
                    continue
                count += 1
                m = re.fullmatch(
                    r"(?P<path>\S+)(?:\s+from line\s+(?P<line>\d+))?",
                    block.markers["example"],
                )
                self.assertIsNotNone(m, block.where)
                assert m is not None
                path = ROOT / m.group("path")
                self.assertTrue(path.is_file(), f"{block.where}: {path}")
                lines = path.read_text().split("\n")[int(m.group("line") or 1) - 1 :]
                self.assertEqual(
                    block.code.rstrip("\n"),
                    "\n".join(lines).rstrip("\n"),
                    f"{block.where} is not {block.markers['example']}",
                )
        self.assertGreaterEqual(count, 5)


class ApiPagesTests(SynchronousTestCase):
    """One API page per public module; each object described once."""

    def test_one_page_per_public_module(self) -> None:
        """API_MODULES is tests/test_exports.py's PUBLIC_MODULES and the
        package; each has docs/api/NAME.rst, listed in docs/api/index.rst."""
        expected = {"wsplugin", *(f"wsplugin.{m}" for m in PUBLIC_MODULES)}
        self.assertEqual(set(wsdocs.API_MODULES), expected)
        self.assertEqual(len(wsdocs.API_MODULES), len(expected))
        index = (DOCS / "api" / "index.rst").read_text()
        listed = re.findall(r"^   (wsplugin\S*)$", index, re.M)
        self.assertEqual(sorted(listed), sorted(expected))
        for module in expected:
            text = (DOCS / "api" / f"{module}.rst").read_text()
            self.assertIn(f".. wsplugin-module:: {module}\n", text)
        self.assertEqual(
            sorted(p.stem for p in (DOCS / "api").glob("*.rst")),
            sorted([*expected, "index"]),
        )

    def test_every_export_is_described_once(self) -> None:
        """Every name in a public module's ``__all__`` is on its page or
        linked from it, and each wsplugin object is described on exactly
        one page (autodoc would warn about a duplicate description)."""
        described: dict[int, str] = {}
        for module in wsdocs.API_MODULES:
            plan = wsdocs.plan_module(module)
            names = (
                plan.documented
                + [n for n, _ in plan.constants]
                + [n for n, _ in plan.elsewhere]
                + [n for n, _ in plan.foreign]
            )
            exports = importlib.import_module(module).__all__
            self.assertEqual(sorted(names), sorted(exports), module)
            for name in plan.documented:
                obj = getattr(importlib.import_module(module), name)
                if inspect.isclass(obj) or inspect.isfunction(obj):
                    self.assertNotIn(id(obj), described, f"{module}.{name}")
                    described[id(obj)] = f"{module}.{name}"
        paths = wsdocs.api_paths()
        for module in wsdocs.API_MODULES:
            for name, target in wsdocs.plan_module(module).elsewhere:
                self.assertEqual(paths[target], target, f"{module}.{name}")

    def test_objects_live_on_their_defining_page(self) -> None:
        """A class re-exported by the package is described under the
        module that defines it, and the package's page links there."""
        self.assertIn(
            "Connection", wsdocs.plan_module("wsplugin.connection").documented
        )
        self.assertIn(
            ("Connection", "wsplugin.connection.Connection"),
            wsdocs.plan_module("wsplugin").elsewhere,
        )
        self.assertEqual(
            wsdocs.home_of("wsplugin._lifecycle", ["wsplugin", "wsplugin.server"]),
            "wsplugin.server",
        )
        self.assertIsNone(wsdocs.home_of("twisted.web.resource", ["wsplugin.web"]))

    def test_references_resolve_to_the_description(self) -> None:
        """References by import path, by bare public name, and to an
        attribute, all lead to the one description; others are not API."""
        self.assertEqual(
            wsdocs.api_target("wsplugin.client.HandshakeFailed"),
            "wsplugin.errors.HandshakeFailed",
        )
        self.assertEqual(
            wsdocs.api_target("HandshakeFailed"), "wsplugin.errors.HandshakeFailed"
        )
        self.assertEqual(
            wsdocs.api_target("Connection.send_text"),
            "wsplugin.connection.Connection.send_text",
        )
        self.assertIsNone(wsdocs.api_target("NoSuchThing"))
        self.assertTrue(wsdocs.is_api_reference("wsplugin.Connection"))
        self.assertTrue(wsdocs.is_api_reference("Connection"))
        self.assertFalse(wsdocs.is_api_reference("wsplugin._lifecycle.Lifecycle"))
        self.assertFalse(wsdocs.is_api_reference("twisted.internet.defer.Deferred"))

    def test_module_page_text(self) -> None:
        """The reStructuredText of a page that re-exports: automodule for
        its own objects, links for the others."""
        rst = "\n".join(wsdocs.module_rst(wsdocs.plan_module("wsplugin.client")))
        self.assertIn(".. automodule:: wsplugin.client\n   :members: ", rst)
        self.assertIn("ClientConnection", rst.split("\n")[1])
        self.assertIn(
            "- :py:obj:`wsplugin.client.HandshakeFailed "
            "<wsplugin.errors.HandshakeFailed>`",
            rst,
        )

    def test_signatures_are_made_parseable(self) -> None:
        """A zope interface's repr and a dataclass's ``<factory>`` default
        would break autodoc's signature parsing."""
        self.assertEqual(
            wsdocs.signature_text(
                "(clock: <InterfaceClass twisted.internet.interfaces.IReactorTime>,"
                " headers: list = <factory>, b=<factory>)"
            ),
            "(clock: ~twisted.internet.interfaces.IReactorTime,"
            " headers: list = ..., b=...)",
        )
        self.assertIsNone(wsdocs.signature_text(None))
