"""A real browser against ``twistd -n ws``: headless Chromium loads the built-in
chat page from the server, two tabs talk through it, and a tab that lost its
connection recovers what it missed.

Needs Debian's ``chromium`` (``.ci/install-system-deps`` installs it).  Where
it is missing the test tries that script once (as root with apt-get), fails
under CI (``CI`` set) and otherwise skips, saying why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.browser import BrowserError, Chromium, Page, find_chromium
from tests.integration.support import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / ".ci" / "install-system-deps"
TWISTD = Path(sys.executable).with_name("twistd")
WAIT = 20.0  # seconds for any single thing the browser should show

STATE = "document.body && document.body.dataset.state"
LOG = "Array.from(document.querySelectorAll('#log li'), li => li.textContent)"
STATUS = "document.getElementById('status').textContent"

_install_lock = threading.Lock()
_install_result: list[str | None] = []  # [path] or [None + reason], cached


def _try_install() -> str | None:
    """Run .ci/install-system-deps once per process; the chromium path or None."""
    with _install_lock:
        if not _install_result:
            _install_result.append(_install_chromium())
        return _install_result[0]


def _install_chromium() -> str | None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    try:
        subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=240,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return find_chromium()


def chromium_or_skip() -> str:
    """The chromium binary; installs it if it can, else fails (CI) or skips."""
    path = find_chromium() or _try_install()
    if path:
        return path
    why = (
        "chromium is not on PATH and .ci/install-system-deps could not install "
        "it here (needs root and apt-get with Debian's package lists)"
    )
    if os.environ.get("CI"):
        raise AssertionError(why + "; CI must run .ci/install-system-deps first")
    raise SkipTest(why)


class TwistdProcess:
    """``twistd -n ws`` on a free loopback port, in its own process group."""

    def __init__(self, test: TestCase, *args: str) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="wsplugin-twistd-"))
        test.addCleanup(shutil.rmtree, self.workdir, True)
        self.log = self.workdir / "twistd.log"
        self.output = self.workdir / "twistd.out"
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(TWISTD),
                    "-n",
                    "--pidfile=",
                    f"--logfile={self.log}",
                    "ws",
                    "--port",
                    f"tcp:{self.port}:interface=127.0.0.1",
                    *args,
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        test.addCleanup(self.kill)

    def describe(self) -> str:
        """Its output and log, for failure messages."""
        parts = []
        for path in (self.output, self.log):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def wait_listening(self) -> None:
        """Block until the port accepts connections (bounded)."""
        try:
            wait_for_port(self.port, timeout=WAIT)
        except TimeoutError:
            raise AssertionError(
                f"twistd did not listen on {self.port}:\n{self.describe()}"
            ) from None

    def terminate(self, timeout: float = WAIT) -> int:
        """SIGTERM twistd (just the server, as a service manager would)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"twistd still running {timeout}s after SIGTERM:\n{self.describe()}"
            ) from None

    def kill(self) -> None:
        """Cleanup: SIGTERM then SIGKILL the whole process group (bounded)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                continue
        try:  # anything left in the group after twistd itself exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class BrowserChatTests(TestCase):
    """The chat page in headless Chromium, served by ``twistd -n ws``."""

    timeout = 120

    def setUp(self) -> None:
        self.browser = Chromium(chromium_or_skip(), timeout=WAIT)
        self.addCleanup(self.browser.stop)
        self.server = TwistdProcess(self)

    def open_pages(self, count: int) -> list[Page]:
        """Start the browser, open ``count`` chat tabs and wait until all are
        connected (blocking: runs in a thread)."""
        self.server.wait_listening()
        self.browser.start()
        url = f"http://127.0.0.1:{self.server.port}/"
        pages = [self.browser.new_page(url) for _ in range(count)]
        for i, page in enumerate(pages):
            self.wait(page, f"{STATE} === 'open'", f"page {i} never opened")
        return pages

    def wait(self, page: Page, expression: str, what: str) -> object:
        """:meth:`Chromium.wait_for`, failing with the page's state, the
        browser's and the server's output."""
        try:
            return self.browser.wait_for(page, expression, WAIT)
        except BrowserError as e:
            try:
                seen = self.browser.evaluate(
                    page, f"({{url: location.href, status: {STATUS}, log: {LOG}}})"
                )
            except BrowserError as inner:
                seen = inner
            raise AssertionError(
                f"{what}: {e}\npage: {seen!r}\n"
                f"chromium:\n{self.browser.log_tail()}\n{self.server.describe()}"
            ) from None

    @inlineCallbacks
    def test_two_pages_chat(self) -> None:
        """A message typed in page A and sent with the button shows in both
        pages' logs: the server broadcast it to every client."""

        def scenario() -> tuple[object, object]:
            a, b = self.open_pages(2)
            self.browser.evaluate(
                a,
                "document.getElementById('message').value = 'hello from A';"
                "document.getElementById('send').click();",
            )
            wanted = f"{LOG}.includes('hello from A')"
            self.wait(b, wanted, "page B never showed A's message")
            self.wait(a, wanted, "page A never showed its own message")
            self.assertEqual(
                self.browser.evaluate(a, "document.getElementById('message').value"),
                "",
            )
            return self.browser.evaluate(a, LOG), self.browser.evaluate(b, LOG)

        log_a, log_b = yield deferToThread(scenario)
        self.assertEqual(log_b, ["hello from A"])
        self.assertEqual(log_a, ["hello from A"])

    @inlineCallbacks
    def test_page_recovers_what_it_missed(self) -> None:
        """A page that lost its connection gets, when it is back, the
        messages sent meanwhile, in order, once, before new ones: it
        subscribes with the position of the last message it showed
        (wsplugin.channels.v1)."""

        def say(page: Page, text: str) -> None:
            self.browser.evaluate(
                page,
                f"document.getElementById('message').value = {text!r};"
                "document.getElementById('send').click();",
            )

        def scenario() -> tuple[object, object]:
            a, b = self.open_pages(2)
            say(a, "before")
            self.wait(b, f"{LOG}.includes('before')", "B never saw 'before'")
            self.browser.evaluate(b, "window.chat.disconnect()")
            self.wait(b, f"{STATE} === 'closed'", "B never closed")
            for text in ("one", "two", "three"):
                say(a, text)
            self.wait(a, f"{LOG}.includes('three')", "A never saw 'three'")
            self.browser.evaluate(b, "window.chat.connect()")
            self.wait(b, f"{LOG}.includes('three')", "B never recovered")
            say(a, "after")
            self.wait(b, f"{LOG}.includes('after')", "B never saw 'after'")
            return self.browser.evaluate(a, LOG), self.browser.evaluate(b, LOG)

        log_a, log_b = yield deferToThread(scenario)
        self.assertEqual(log_a, ["before", "one", "two", "three", "after"])
        self.assertEqual(
            log_b,
            [
                "before",
                "connection closed with code 1000",
                "one",
                "two",
                "three",
                "3 missed message(s) recovered",
                "after",
            ],
        )

    @inlineCallbacks
    def test_server_shutdown_closes_page(self) -> None:
        """SIGTERM makes twistd close its connections with 1001 (going away);
        the page sees that close code and shows the "closed" state."""

        def scenario() -> tuple[int, object, object]:
            (page,) = self.open_pages(1)
            status = self.server.terminate()
            self.wait(page, f"{STATE} === 'closed'", "page never saw the close")
            return (
                status,
                self.browser.evaluate(page, STATUS),
                self.browser.evaluate(page, LOG),
            )

        status, text, log = yield deferToThread(scenario)
        # twistd re-raises the signal it stopped on, so a clean stop on SIGTERM
        # is reported as "killed by SIGTERM".
        self.assertIn(status, (0, -signal.SIGTERM), self.server.describe())
        # the page then tries to come back, 1 s later (the server is gone)
        self.assertEqual(
            text, "closed (1001), reconnecting in 1 s", self.server.describe()
        )
        self.assertEqual(log[0], "connection closed with code 1001")


class LiveFeedPageTests(TestCase):
    """examples/live_feed.html, the page docs/scaling.md walks through, in
    headless Chromium."""

    timeout = 120

    @inlineCallbacks
    def test_page_that_leaves_and_comes_back_misses_nothing(self) -> None:
        """The tab leaves the page for 2.5 s and comes back: its first item
        is the one after the last it showed, and the rest follow without a
        gap (it subscribed with its stored position)."""
        browser = Chromium(chromium_or_skip(), timeout=WAIT)
        self.addCleanup(browser.stop)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "live_feed.py"),
             f"tcp:{port}:interface=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.addCleanup(lambda: (proc.terminate(), proc.wait(10)))
        items = (
            "Array.from(document.querySelectorAll('#items li'), li => li.textContent)"
        )

        def scenario() -> tuple[list[str], list[str]]:
            wait_for_port(port, timeout=WAIT)
            browser.start()
            url = f"http://127.0.0.1:{port}/"
            page = browser.new_page(url)
            browser.wait_for(page, f"{items}.length >= 2", WAIT)
            before = browser.evaluate(page, items)
            browser.evaluate(page, "location.href = 'about:blank'")
            time.sleep(2.5)
            browser.evaluate(page, f"location.href = {url!r}")
            browser.wait_for(page, f"{items}.length >= 4", WAIT)
            return before, browser.evaluate(page, items)

        before, after = yield deferToThread(scenario)
        last = int(before[-1].split()[1])
        numbers = [int(i.split()[1]) for i in after]
        self.assertEqual(numbers, list(range(last + 1, last + 1 + len(numbers))))
