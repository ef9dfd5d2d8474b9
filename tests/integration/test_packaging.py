"""Building the package: no setuptools warnings, and the data files ship."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.support import ROOT, in_thread


class WheelTests(TestCase):
    """``pip wheel .`` as ``make run``/``make venv`` builds the package."""

    timeout = 600

    @inlineCallbacks
    def test_wheel_builds_quietly_with_its_data(self) -> None:
        """The build does not warn that wsplugin.apps.static is missing from
        the packages (a 35-line setuptools warning on every `make run`), and
        the wheel holds the chat page, py.typed and the twistd dropin."""
        if os.environ.get("WSPLUGIN_SKIP_INSTALL_TEST"):
            raise SkipTest("WSPLUGIN_SKIP_INSTALL_TEST is set")
        out = Path(self.mktemp()).resolve()
        out.mkdir(parents=True)

        def build() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--no-deps",
                    "-w",
                    str(out),
                    ".",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=540,
            )

        result = yield in_thread(build)
        log = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, log)
        self.assertNotIn("absent from the `packages` configuration", log)
        (wheel,) = out.glob("wsplugin-*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        for name in (
            "wsplugin/apps/static/chat.html",
            "wsplugin/py.typed",
            "twisted/plugins/wsplugin_ws.py",
        ):
            self.assertIn(name, names)
