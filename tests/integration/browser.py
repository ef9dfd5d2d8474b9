"""A small, blocking Chrome DevTools Protocol driver for headless Chromium.

Only what the browser tests need: start a fresh headless Chromium, open pages,
evaluate JavaScript in them and poll until an expression is true.  It talks CDP
over each page's own ``webSocketDebuggerUrl`` with the ``websockets`` sync
client, so nothing beyond the test dependencies is needed.  Every wait is
bounded, and :meth:`Chromium.stop` kills the whole process group and removes
the temporary profile.

All methods block: call them from a thread (``deferToThread``), never from the
reactor thread.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

#: Flags for a quiet, self-contained headless browser that talks to nothing
#: but the pages it is told to open.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--no-default-browser-check",
    "--disable-extensions",
    "--remote-debugging-port=0",
)


class BrowserError(Exception):
    """Chromium did not start, a CDP call failed, or a wait timed out."""


def find_chromium() -> str | None:
    """The path of a Chromium binary on PATH, or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    """One browser tab and the DevTools connection that drives it."""

    target_id: str
    ws: ClientConnection
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class Chromium:
    """A headless Chromium process with a throwaway profile.

    Use as ``with Chromium() as browser: ...`` or call :meth:`start` and
    :meth:`stop` yourself.
    """

    def __init__(
        self,
        executable: str | None = None,
        timeout: float = 20.0,
        flags: Sequence[str] = (),
    ) -> None:
        found = executable or find_chromium()
        if found is None:
            raise BrowserError("no chromium on PATH")
        self.executable = found
        self.timeout = timeout
        self.flags = tuple(flags)  # added to CHROMIUM_FLAGS
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.port: int | None = None
        self.pages: list[Page] = []
        self._connections = contextlib.ExitStack()

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log_path(self) -> Path | None:
        """Chromium's stdout/stderr, kept while it runs (for failure messages)."""
        return self.workdir / "chromium.log" if self.workdir else None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of Chromium's output, without the D-Bus noise."""
        path = self.log_path
        if path is None or not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in text if "dbus" not in line][-lines:])

    def start(self) -> None:
        """Start Chromium and wait (bounded) until its DevTools port answers."""
        self.workdir = Path(tempfile.mkdtemp(prefix="wsplugin-chromium-"))
        profile = self.workdir / "profile"
        profile.mkdir()
        with open(self.workdir / "chromium.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.executable,
                    *CHROMIUM_FLAGS,
                    *self.flags,
                    f"--user-data-dir={profile}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed in stop()
            )
        try:
            self.port = self._wait_devtools_port(profile / "DevToolsActivePort")
            self._get_json("/json/version")
        except BaseException:
            self.stop()
            raise

    def _wait_devtools_port(self, path: Path) -> int:
        deadline = time.monotonic() + self.timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrowserError(
                    f"chromium exited with {self.proc.returncode} before DevTools "
                    f"was up:\n{self.log_tail()}"
                )
            try:
                first = path.read_text().splitlines()[0]
                return int(first)
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)
        raise BrowserError(
            f"chromium wrote no {path.name} in {self.timeout}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Close the pages, kill Chromium's process group, remove the profile."""
        try:
            self._connections.close()
        except Exception:  # best effort at cleanup: the browser may be gone
            pass
        self.pages = []
        if self.proc is not None:
            _kill_group(self.proc)
            self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # -- DevTools --------------------------------------------------------

    def _http(self, method: str, path: str) -> Any:
        if self.port is None:
            raise BrowserError("chromium is not started")
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read().decode())

    def _get_json(self, path: str) -> Any:
        return self._http("GET", path)

    def version(self) -> dict[str, str]:
        """The browser's ``/json/version`` answer (``Browser``, ...)."""
        return dict(self._get_json("/json/version"))

    def new_page(self, url: str) -> Page:
        """Open a new tab on ``url`` and connect to its DevTools endpoint.

        The load is not awaited: poll with :meth:`wait_for` for what the test
        needs to see.
        """
        quoted = urllib.parse.quote(url, safe=":/?&=%#")
        try:
            target = self._http("PUT", f"/json/new?{quoted}")
        except urllib.error.HTTPError as e:
            if e.code != 405:
                raise
            target = self._http("GET", f"/json/new?{quoted}")  # older Chromium
        # Entered as a context manager (websockets >= 17 warns otherwise) and
        # closed by stop().
        ws = self._connections.enter_context(
            connect(
                target["webSocketDebuggerUrl"],
                open_timeout=self.timeout,
                max_size=None,
            )
        )
        page = Page(target_id=target["id"], ws=ws)
        self.pages.append(page)
        return page

    def call(self, page: Page, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command to ``page`` and return its ``result`` (bounded).

        Events that arrive meanwhile are dropped: no domain is enabled, so
        there are few.
        """
        message_id = next(page.ids)
        page.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method} in {self.timeout}s")
            try:
                reply = json.loads(page.ws.recv(timeout=remaining))
            except TimeoutError:
                continue
            if reply.get("id") != message_id:
                continue
            if "error" in reply:
                raise BrowserError(f"{method} failed: {reply['error']}")
            return dict(reply.get("result", {}))

    def evaluate(self, page: Page, expression: str) -> Any:
        """Evaluate a JavaScript expression in ``page``; return its JSON value.

        Promises are awaited; a thrown exception raises :class:`BrowserError`.
        """
        result = self.call(
            page,
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get(
                "text"
            )
            raise BrowserError(f"{expression!r} threw: {text}")
        return result.get("result", {}).get("value")

    def wait_for(
        self,
        page: Page,
        expression: str,
        timeout: float | None = None,
        interval: float = 0.05,
    ) -> Any:
        """Poll ``expression`` in ``page`` until it is truthy; return its value.

        Raise :class:`BrowserError` after ``timeout`` seconds (the browser's
        default timeout when None), naming the expression and its last value.
        Errors while the page is still loading (no ``document.body`` yet)
        count as "not yet".
        """
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        last: Any = None
        while True:
            try:
                last = self.evaluate(page, expression)
            except BrowserError as e:
                last = e
            else:
                if last:
                    return last
            if time.monotonic() >= deadline:
                raise BrowserError(
                    f"{expression!r} not true after {limit}s (last: {last!r})"
                )
            time.sleep(interval)


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group led by ``proc``, then SIGKILL it (bounded).

    The second signal also reaches children (renderers, zygotes) that may
    outlive the main process.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
