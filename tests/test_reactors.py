"""wsplugin.reactors: the asyncio reactor on uvloop, installed in a fresh
interpreter (a reactor is installed once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from twisted.trial.unittest import SynchronousTestCase


def need_uvloop(case: SynchronousTestCase) -> None:
    """Skip without uvloop, except under CI=true (the test extra has it)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        case.skipTest("uvloop is not installed (pip install uvloop)")


def run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return result.stdout.strip()


class InstallTests(SynchronousTestCase):
    """install_uvloop() installs Twisted's asyncio reactor on uvloop."""

    def test_install(self) -> None:
        """The reactor is the asyncio one, its loop uvloop's, and it runs
        Twisted calls."""
        need_uvloop(self)
        out = run(
            """
            from wsplugin.reactors import install_uvloop
            reactor = install_uvloop()
            from twisted.internet import reactor as installed
            assert installed is reactor
            reactor.callLater(0, lambda: print("ran") or reactor.stop())
            reactor.run()
            print(type(reactor).__name__, type(reactor._asyncioEventloop).__module__)
            """
        )
        self.assertEqual(out.splitlines(), ["ran", "AsyncioSelectorReactor uvloop"])

    def test_importing_wsplugin_installs_no_reactor(self) -> None:
        """Importing wsplugin (metrics and backplane included) leaves the
        choice of reactor to the program: nothing imports the global one."""
        out = run(
            """
            import sys
            import wsplugin, wsplugin.metrics, wsplugin.backplane, wsplugin.tap
            print("twisted.internet.reactor" in sys.modules)
            """
        )
        self.assertEqual(out, "False")

    def test_too_late(self) -> None:
        """After another reactor was installed it raises, saying so."""
        need_uvloop(self)
        out = run(
            """
            from twisted.internet import reactor
            from twisted.internet.error import ReactorAlreadyInstalledError
            from wsplugin.reactors import install_uvloop
            try:
                install_uvloop()
            except ReactorAlreadyInstalledError:
                print("refused")
            """
        )
        self.assertEqual(out, "refused")

    def test_twistd_lists_it(self) -> None:
        """twistd --help-reactors lists uvloop (the dropin)."""
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        result = subprocess.run(
            [twistd, "--help-reactors"], capture_output=True, text=True, timeout=60
        )
        self.assertIn("uvloop", result.stdout)
