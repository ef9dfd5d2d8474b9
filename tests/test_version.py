"""``wsplugin._version``: the one place the version is written."""

from __future__ import annotations

import re
from importlib import metadata

from twisted.trial.unittest import SynchronousTestCase

import wsplugin
from wsplugin._version import __version__


class VersionTests(SynchronousTestCase):
    """The version the package reports is the one it was installed as."""

    def test_exported_and_installed(self) -> None:
        """``wsplugin.__version__`` is ``_version.__version__``, a PEP 440
        release, and the installed distribution carries it (setup.py reads
        it from this module)."""
        self.assertIs(wsplugin.__version__, __version__)
        self.assertRegex(__version__, re.compile(r"^\d+\.\d+\.\d+([ab]|rc)?\d*$"))
        self.assertEqual(metadata.version("wsplugin"), __version__)
