"""The documentation site builds with warnings as errors.

``make docs`` builds the HTML (and CI runs it, .ci/run); these tests run
the same ``sphinx-build -W -n`` on the pages and the API reference, with
the ``dummy`` builder (everything but writing HTML: each page read,
every docstring imported, every reference resolved, in about half the
time), so ``make test`` fails on a page or docstring that would break the
site. Sphinx comes with the ``test`` extra; without it these tests skip
locally, saying why, and fail under CI.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.doccheck import ROOT
from tests.integration.proxy_support import under_ci

DOCS = ROOT / "docs"


def sphinx_build(source: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``sphinx-build -W --keep-going -n -b dummy`` (as ``make docs``, but
    writing no HTML) with docs/conf.py, on ``source``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-n",
            "-q",
            "-E",
            "-b",
            "dummy",
            "-c",
            str(DOCS),
            "-d",
            str(out / "doctrees"),
            *extra,
            str(source),
            str(out / "dummy"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


class DocsiteBuildTests(SynchronousTestCase):
    """docs/ builds into a site without a single warning."""

    def setUp(self) -> None:
        missing = [
            name
            for name in ("sphinx", "furo", "myst_parser")
            if importlib.util.find_spec(name) is None
        ]
        if missing:
            why = f"{', '.join(missing)} not installed (pip install -e '.[docs]')"
            if under_ci():
                raise AssertionError(why + "; CI installs the test extra")
            print(f"\nskipped: {why}")
            raise SkipTest(why)
        self.out = Path(tempfile.mkdtemp(prefix="wsdocsite-"))
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", str(self.out)]))

    def test_site_builds_without_warnings(self) -> None:
        """Every page of docs/ and the API pages of every public module
        build with -W -n: no warning, every wsplugin reference resolves."""
        done = sphinx_build(DOCS, self.out)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertEqual(done.stderr.strip(), "")
        built = {p.stem for p in (self.out / "doctrees").rglob("*.doctree")}
        pages = {p.stem for p in DOCS.glob("*.md")}
        self.assertLessEqual(pages, built)
        self.assertLessEqual({"wsplugin.server", "wsplugin.client", "index"}, built)

    def test_a_warning_fails_the_build(self) -> None:
        """The same settings fail on a reference to an API that does not
        exist (the check above can fail)."""
        source = self.out / "src"
        source.mkdir()
        (source / "index.md").write_text(
            "# Broken\n\nSee {py:func}`wsplugin.no_such_function`.\n"
        )
        done = sphinx_build(source, self.out)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("wsplugin.no_such_function", done.stderr)
