"""Run the Autobahn TestSuite against ``twistd ws --app echo`` in several modes,
and against wsplugin's client.

This is what ``make conformance`` runs. For each selected server mode it:

1. picks a free loopback port (bind port 0, close);
2. starts ``twistd -n ws --port tcp:PORT:interface=127.0.0.1 --app echo`` with the
   mode's flags, logging to ``build/conformance/<mode>/server.log``;
3. waits (bounded) until the port accepts connections;
4. runs the ``kosoku`` fuzzing client (the Autobahn TestSuite cases) against it,
   which writes Autobahn-format HTML/JSON reports into ``build/conformance/<mode>/``;
5. stops the server with SIGTERM and waits (bounded) for it to exit;
6. reads the reports' ``index.json`` and decides whether the mode passed.

The mode ``client`` turns the roles around: it starts kosoku as the fuzzing
*server* (``kosoku -m fuzzingserver HOST:PORT``), runs
``conformance/echo_client.py`` (an echo client built on ``wsplugin.client``)
against it, which walks the cases the Autobahn way (``/getCaseCount``, then
``/runCase?case=N&agent=A`` for each case, then ``/updateReports?agent=A``),
waits (bounded) for kosoku to write its reports and exit, and judges them the
same way.

Finally it prints a summary table (mode x OK / NON-STRICT / INFORMATIONAL /
UNIMPLEMENTED / FAILED) and exits non-zero when any mode failed.

A mode fails when any case FAILED (including kosoku's ERROR verdict and a
failed closing handshake), when a case is UNIMPLEMENTED although the mode
supports the feature (only the compression cases 12.* and 13.* may be
UNIMPLEMENTED, and only in a mode without ``--compression``), when a selected
case is missing from the report, or when the server could not be started,
crashed during the run, or did not stop on SIGTERM (in mode ``client``: when
kosoku did not listen, the echo client failed or timed out, or kosoku did not
exit after the reports).

Usage::

    .venv/bin/python conformance/run.py                   # every mode
    .venv/bin/python conformance/run.py --mode split      # one mode
    .venv/bin/python conformance/run.py --mode full --cases '12.1.*' --parallel 1
    .venv/bin/python conformance/run.py --mode client     # wsplugin.client

Only the standard library and ``kosoku`` are used. Case patterns follow the
Autobahn TestSuite rules, as kosoku does: a pattern without ``*`` is an exact
case id; with ``*`` it is a regular-expression-like glob matched from the start
of the case id (so ``9.7.*`` selects 9.7.1 to 9.7.6).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the parent of ``conformance/``)."""

DEFAULT_OUT = ROOT / "build" / "conformance"
HOST = "127.0.0.1"

#: Summary columns, in display order. kosoku's ERROR verdict is counted as FAILED.
VERDICTS: tuple[str, ...] = (
    "OK",
    "NON-STRICT",
    "INFORMATIONAL",
    "UNIMPLEMENTED",
    "FAILED",
)

#: Case categories that exercise permessage-deflate (RFC 7692).
COMPRESSION_CATEGORIES = frozenset({"12", "13"})

#: Every category except the compression ones (there is no category 8).
CORE_CASES: tuple[str, ...] = (
    "1.*",
    "2.*",
    "3.*",
    "4.*",
    "5.*",
    "6.*",
    "7.*",
    "9.*",
    "10.*",
)

#: Seconds to wait for the server's port to accept connections.
START_TIMEOUT = 20.0
#: Seconds to wait for the server to exit after SIGTERM (then SIGKILL).
STOP_TIMEOUT = 15.0
#: Default limit, in seconds, for one mode's kosoku run.
RUN_TIMEOUT = 1800.0
#: How many failing cases to list per mode on the console.
MAX_LISTED_FAILURES = 25


@dataclass(frozen=True)
class Mode:
    """One way of configuring the echo server, and the cases it must pass.

    Attributes:
        name: the ``--mode`` name and the report sub-directory.
        server_args: extra ``twistd ws`` options for this mode.
        cases: default case patterns (kosoku ``-i`` globs).
        compression: whether the server negotiates permessage-deflate, i.e.
            whether UNIMPLEMENTED is a failure for the 12.* / 13.* cases.
        description: one line for ``--list-modes`` and the docs.
    """

    name: str
    server_args: tuple[str, ...]
    cases: tuple[str, ...]
    compression: bool
    description: str


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode(
            "full",
            ("--compression",),
            ("*",),
            True,
            "defaults + permessage-deflate: the whole suite, 12.* and 13.* included",
        ),
        Mode(
            "split",
            ("--split-message", "--frame-size", "64"),
            CORE_CASES,
            False,
            "outgoing messages split into frames of 64 bytes (header included)",
        ),
        Mode(
            "frames",
            ("--frame-by-frame",),
            CORE_CASES,
            False,
            "frame-by-frame delivery: each received frame is echoed as a frame",
        ),
        Mode(
            "manual-pong",
            ("--manual-pong",),
            ("2.*",),
            False,
            "the application answers pings itself",
        ),
        Mode(
            "manual-close",
            ("--manual-close",),
            ("7.*",),
            False,
            "the application answers close frames itself",
        ),
    )
}


@dataclass(frozen=True)
class ClientMode(Mode):
    """A mode that tests wsplugin's client instead of its server.

    kosoku serves the cases (``kosoku -m fuzzingserver``) and
    ``conformance/echo_client.py``, built on ``wsplugin.client``, walks them.
    ``server_args`` is empty; ``compression`` says whether the client offers
    permessage-deflate.

    Attributes:
        client_args: options for ``echo_client.py``.
    """

    client_args: tuple[str, ...] = ()


CLIENT_MODES: dict[str, ClientMode] = {
    mode.name: mode
    for mode in (
        ClientMode(
            "client",
            (),
            ("*",),
            True,
            "wsplugin.client echo client against kosoku's fuzzing server, with"
            " permessage-deflate: the whole suite",
            client_args=("--compression",),
        ),
    )
}

#: Every mode ``--mode`` accepts, in the order ``make conformance`` runs them.
ALL_MODES: dict[str, Mode] = {**MODES, **CLIENT_MODES}

#: The echo client mode ``client`` runs, and the agent name it reports as.
ECHO_CLIENT = ROOT / "conformance" / "echo_client.py"
CLIENT_AGENT = "wsplugin-client"
#: Seconds to wait for kosoku to write its reports and exit after the client.
REPORT_TIMEOUT = 120.0


# --------------------------------------------------------------------------
# Case selection (pure)
# --------------------------------------------------------------------------


def pattern_matches(pattern: str, case_id: str) -> bool:
    """Tell whether a kosoku/Autobahn case pattern selects ``case_id``.

    A pattern without ``*`` is an exact id. With ``*``, each ``*`` matches any
    run of characters and the pattern is anchored at the start of the id only
    (Autobahn's ``re.match`` semantics, which kosoku keeps): ``1*.1.1`` selects
    ``12.1.10`` too.
    """
    if "*" not in pattern:
        return pattern == case_id
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.match(regex, case_id) is not None


def select_cases(patterns: Iterable[str], case_ids: Sequence[str]) -> list[str]:
    """Return the ids from ``case_ids`` selected by any of ``patterns``.

    The result keeps the order of ``case_ids``. Raises ``ValueError`` naming
    the first pattern that selects nothing (kosoku refuses those too).
    """
    patterns = list(patterns)
    for pattern in patterns:
        if not any(pattern_matches(pattern, case_id) for case_id in case_ids):
            raise ValueError(f"no case matches pattern {pattern!r}")
    return [
        case_id
        for case_id in case_ids
        if any(pattern_matches(pattern, case_id) for pattern in patterns)
    ]


def all_case_ids() -> list[str]:
    """Every case id kosoku knows, in suite order.

    Read in a child interpreter: ``kosoku.cases`` installs its own
    ``autobahn`` shim on import, which breaks (and is broken by) a process
    that has already imported the real Autobahn, as wsplugin's tests have.
    """
    code = "import json\nfrom kosoku.cases import CASES\nprint(json.dumps(list(CASES)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return list(json.loads(result.stdout))


def case_sort_key(case_id: str) -> tuple[int, ...]:
    """Numeric ordering of case ids: 1.2.10 sorts after 1.2.9."""
    return tuple(int(part) for part in case_id.split(".") if part.isdigit())


# --------------------------------------------------------------------------
# Verdicts (pure)
# --------------------------------------------------------------------------


def classify(behavior: str, behavior_close: str) -> str:
    """Fold kosoku's two verdicts for one case into one summary column.

    ``behavior`` judges the message exchange, ``behavior_close`` the closing
    handshake. The close verdict can only make a case worse, mirroring the
    colours of Autobahn's own report:

    * ``FAILED``, ``ERROR`` or an unknown behavior -> ``FAILED``;
    * ``UNIMPLEMENTED`` -> ``UNIMPLEMENTED`` (whatever the close did);
    * otherwise a close verdict ``OK`` or ``INFORMATIONAL`` keeps the behavior;
      ``WRONG CODE`` (unexpected close code) or ``FAILED BY CLIENT`` (the
      client had to drop the TCP connection) downgrade ``OK`` to
      ``NON-STRICT``; ``FAILED``, ``UNCLEAN`` or anything else -> ``FAILED``.
    """
    if behavior == "UNIMPLEMENTED":
        return "UNIMPLEMENTED"
    if behavior not in ("OK", "NON-STRICT", "INFORMATIONAL"):
        return "FAILED"
    if behavior_close in ("OK", "INFORMATIONAL"):
        return behavior
    if behavior_close in ("WRONG CODE", "FAILED BY CLIENT"):
        return "NON-STRICT" if behavior == "OK" else behavior
    return "FAILED"


def category(case_id: str) -> str:
    """The top-level category of a case id: ``"12"`` for ``12.1.3``."""
    return case_id.split(".", 1)[0]


def unimplemented_allowed(mode: Mode, case_id: str) -> bool:
    """Tell whether ``case_id`` may be UNIMPLEMENTED in ``mode``.

    Only the compression cases, and only in a mode that does not enable
    permessage-deflate. Every other UNIMPLEMENTED is a failure.
    """
    return not mode.compression and category(case_id) in COMPRESSION_CATEGORIES


@dataclass(frozen=True)
class CaseOutcome:
    """One case as reported in kosoku's ``index.json``.

    Attributes:
        case_id: e.g. ``"6.3.1"``.
        behavior: kosoku's verdict on the message exchange.
        behavior_close: kosoku's verdict on the closing handshake.
        remote_close_code: the close code the server sent, if any.
        reportfile: the case's JSON report, relative to the report directory.
        verdict: the summary column, see :func:`classify`.
    """

    case_id: str
    behavior: str
    behavior_close: str
    remote_close_code: int | None
    reportfile: str
    verdict: str


def parse_index(
    index: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> dict[str, CaseOutcome]:
    """Turn a kosoku/Autobahn ``index.json`` document into outcomes by case id.

    The document maps agent (the server's ``Server`` header) -> case id ->
    ``{"behavior", "behaviorClose", "remoteCloseCode", "reportfile", ...}``.
    There is one agent per run; should there be several, a case keeps its worst
    outcome.
    """
    rank = {verdict: position for position, verdict in enumerate(VERDICTS)}
    outcomes: dict[str, CaseOutcome] = {}
    for cases in index.values():
        for case_id, entry in cases.items():
            behavior = str(entry.get("behavior", "ERROR"))
            behavior_close = str(entry.get("behaviorClose", "FAILED"))
            outcome = CaseOutcome(
                case_id=case_id,
                behavior=behavior,
                behavior_close=behavior_close,
                remote_close_code=entry.get("remoteCloseCode"),
                reportfile=str(entry.get("reportfile", "")),
                verdict=classify(behavior, behavior_close),
            )
            previous = outcomes.get(case_id)
            if previous is None or rank[outcome.verdict] > rank[previous.verdict]:
                outcomes[case_id] = outcome
    return dict(sorted(outcomes.items(), key=lambda item: case_sort_key(item[0])))


@dataclass
class ModeResult:
    """The outcome of running one mode.

    Attributes:
        mode: the mode that ran.
        selected: the case ids that were asked for.
        outcomes: what kosoku reported, by case id.
        problems: run-level failures (server did not start, crashed, ...).
        warnings: things worth a look that do not fail the run.
        seconds: wall-clock time of the mode, server start to stop.
        report_dir: where the reports and ``server.log`` are.
    """

    mode: Mode
    selected: list[str]
    outcomes: dict[str, CaseOutcome]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report_dir: Path | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Number of reported cases per summary column."""
        counts = dict.fromkeys(VERDICTS, 0)
        for outcome in self.outcomes.values():
            counts[outcome.verdict] += 1
        return counts

    @property
    def missing(self) -> list[str]:
        """Selected cases absent from the report."""
        return [case_id for case_id in self.selected if case_id not in self.outcomes]

    @property
    def failures(self) -> list[CaseOutcome]:
        """Cases that fail the mode: FAILED, or UNIMPLEMENTED where not allowed."""
        return [
            outcome
            for outcome in self.outcomes.values()
            if outcome.verdict == "FAILED"
            or (
                outcome.verdict == "UNIMPLEMENTED"
                and not unimplemented_allowed(self.mode, outcome.case_id)
            )
        ]

    @property
    def passed(self) -> bool:
        """Whether the mode passed: no failures, nothing missing, no problems."""
        return not (self.failures or self.missing or self.problems)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable digest, written to ``<mode>/summary.json``."""
        return {
            "mode": self.mode.name,
            "server_args": list(self.mode.server_args),
            "client_args": list(getattr(self.mode, "client_args", ())),
            "passed": self.passed,
            "seconds": round(self.seconds, 1),
            "cases": len(self.outcomes),
            "counts": self.counts,
            "failures": [
                {
                    "id": outcome.case_id,
                    "behavior": outcome.behavior,
                    "behaviorClose": outcome.behavior_close,
                    "remoteCloseCode": outcome.remote_close_code,
                    "reportfile": outcome.reportfile,
                }
                for outcome in self.failures
            ],
            "missing": self.missing,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def exit_code(results: Iterable[ModeResult]) -> int:
    """0 when every mode passed, 1 otherwise."""
    return 0 if all(result.passed for result in results) else 1


def format_summary(results: Sequence[ModeResult]) -> str:
    """Render the mode x verdict table printed at the end of a run."""
    headers = ("mode", "cases", *VERDICTS, "time", "result")
    rows: list[tuple[str, ...]] = []
    totals = dict.fromkeys(VERDICTS, 0)
    for result in results:
        counts = result.counts
        for verdict in VERDICTS:
            totals[verdict] += counts[verdict]
        rows.append(
            (
                result.mode.name,
                str(len(result.outcomes)),
                *(str(counts[verdict]) for verdict in VERDICTS),
                f"{result.seconds:.0f}s",
                "pass" if result.passed else "FAIL",
            )
        )
    rows.append(
        (
            "total",
            str(sum(len(result.outcomes) for result in results)),
            *(str(totals[verdict]) for verdict in VERDICTS),
            f"{sum(result.seconds for result in results):.0f}s",
            "pass" if results and exit_code(results) == 0 else "FAIL",
        )
    )
    widths = [
        max(len(row[column]) for row in (headers, *rows))
        for column in range(len(headers))
    ]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        )
        return "  ".join((first, *rest))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *map(line, rows[:-1]), rule, line(rows[-1])])


def plain_text(markup: str) -> str:
    """Strip the HTML the Autobahn case texts carry (``<br>`` etc.)."""
    text = re.sub(r"<br\s*/?>", " ", markup, flags=re.IGNORECASE)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())


def describe_failures(result: ModeResult, limit: int = MAX_LISTED_FAILURES) -> str:
    """List a mode's problems and failing cases, one per line, for the console."""
    lines: list[str] = [
        f"[{result.mode.name}] {problem}" for problem in result.problems
    ]
    if result.missing:
        lines.append(
            f"[{result.mode.name}] {len(result.missing)} selected case(s) missing"
            f" from the report: {', '.join(result.missing[:limit])}"
        )
    failures = result.failures
    for outcome in failures[:limit]:
        why = ""
        if outcome.verdict == "UNIMPLEMENTED":
            why = " (this mode supports the feature)"
        expectation = ""
        if result.report_dir is not None and outcome.reportfile:
            expectation = case_expectation(result.report_dir / outcome.reportfile)
        lines.append(
            f"[{result.mode.name}] {outcome.case_id}: behavior={outcome.behavior}"
            f" close={outcome.behavior_close}"
            f" remoteCloseCode={outcome.remote_close_code}{why}"
            + (f"\n    {expectation}" if expectation else "")
        )
    if len(failures) > limit:
        lines.append(
            f"[{result.mode.name}] ... and {len(failures) - limit} more failing"
            " case(s); see index.html"
        )
    for warning in result.warnings:
        lines.append(f"[{result.mode.name}] warning: {warning}")
    return "\n".join(lines)


def case_expectation(report: Path) -> str:
    """The plain-text expectation and outcome from a per-case JSON report."""
    try:
        case = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    expectation = plain_text(str(case.get("expectation", "")))
    outcome = "; ".join(
        text
        for text in (
            plain_text(str(case.get("result", ""))),
            plain_text(str(case.get("resultClose", ""))),
        )
        if text
    )
    lines = []
    if expectation:
        lines.append(f"expected: {expectation}")
    if outcome:
        lines.append(f"got: {outcome}")
    return "\n    ".join(lines)


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------


def venv_script(name: str) -> Path:
    """The console script ``name`` installed next to the running interpreter."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run this with the project's virtualenv Python"
        )
    return path


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that was free a moment ago (bind port 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(
    mode: Mode, port: int, logfile: Path, extra: Sequence[str] = ()
) -> list[str]:
    """The ``twistd`` command line that serves the echo app for ``mode``.

    ``extra`` options (``--server-arg``) are appended after the mode's own.
    """
    return [
        str(venv_script("twistd")),
        "-n",
        "--pidfile=",
        f"--logfile={logfile}",
        "ws",
        "--port",
        f"tcp:{port}:interface={HOST}",
        "--app",
        "echo",
        *mode.server_args,
        *extra,
    ]


def kosoku_command(
    port: int, patterns: Sequence[str], parallel: int, outdir: Path
) -> list[str]:
    """The ``kosoku`` fuzzing-client command line for one mode."""
    command = [
        str(venv_script("kosoku")),
        f"{HOST}:{port}",
        "-p",
        str(parallel),
        "-o",
        str(outdir),
    ]
    for pattern in patterns:
        command += ["-i", pattern]
    return command


def child_env() -> dict[str, str]:
    """The environment for the server: the repo root first on PYTHONPATH.

    That lets ``twistd`` find ``wsplugin`` and ``twisted/plugins/`` from a
    checkout that is not installed into the virtualenv.
    """
    env = dict(os.environ)
    paths = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def wait_for_port(
    proc: subprocess.Popen[bytes], port: int, timeout: float = START_TIMEOUT
) -> str | None:
    """Wait until ``HOST:port`` accepts a TCP connection.

    Returns ``None`` once it does, or a description of why it never did (the
    server exited, or ``timeout`` seconds passed).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = proc.poll()
        if status is not None:
            return f"server exited with status {status} before accepting connections"
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return None
        except OSError:
            time.sleep(0.1)
    return f"server did not accept connections on {HOST}:{port} within {timeout:.0f}s"


def stop_server(
    proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT
) -> str | None:
    """SIGTERM the server and wait for it; SIGKILL it if it does not exit.

    Returns ``None`` on a clean stop (exit status 0, or death by the SIGTERM
    itself, which is how ``twistd`` re-raises it), else a description.
    """
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"server did not exit within {timeout:.0f}s of SIGTERM; killed it"
    if status not in (0, -signal.SIGTERM):
        return f"server exited with status {status} after SIGTERM"
    return None


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, indented, or a note if unreadable."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        return f"    (cannot read {path}: {error})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def count_tracebacks(path: Path) -> int:
    """How many tracebacks (unhandled errors) a server log holds."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return text.count("Traceback (most recent call last)")


def run_mode(
    mode: Mode,
    patterns: Sequence[str],
    selected: list[str],
    out_root: Path,
    parallel: int,
    run_timeout: float = RUN_TIMEOUT,
    server_extra: Sequence[str] = (),
) -> ModeResult:
    """Serve ``mode``, run the selected cases against it, and judge the run."""
    report_dir = out_root / mode.name
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True)
    server_log = report_dir / "server.log"
    result = ModeResult(mode, selected, {}, report_dir=report_dir)
    port = free_port()
    command = server_command(mode, port, server_log, server_extra)
    print(f"== {mode.name}: {len(selected)} case(s) against {' '.join(command[1:])}")
    sys.stdout.flush()

    started = time.monotonic()
    with (report_dir / "server.stderr").open("wb") as server_stderr:
        server = subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=server_stderr,
            stderr=subprocess.STDOUT,
        )
        try:
            problem = wait_for_port(server, port)
            if problem is None:
                problem = run_kosoku(port, patterns, parallel, report_dir, run_timeout)
                status = server.poll()
                if status is not None:
                    result.problems.append(
                        f"server crashed during the run (exit status {status})"
                    )
            if problem is not None:
                result.problems.append(problem)
        finally:
            stopped = stop_server(server)
            result.seconds = time.monotonic() - started
    if stopped is not None:
        result.problems.append(stopped)

    stderr = report_dir / "server.stderr"
    extra = (
        f"\n  {stderr}:\n{log_tail(stderr)}"
        if stderr.exists() and stderr.stat().st_size
        else ""
    )
    return finish_result(result, report_dir, server_log, extra)


def finish_result(
    result: ModeResult, report_dir: Path, log: Path, extra: str = ""
) -> ModeResult:
    """Read kosoku's report into ``result``, note tracebacks in ``log``, add
    the log's tail to any problem, and write ``summary.json``."""
    index = report_dir / "index.json"
    if index.exists():
        result.outcomes = parse_index(json.loads(index.read_text(encoding="utf-8")))
    elif not result.problems:
        result.problems.append(f"kosoku wrote no {index}")
    tracebacks = count_tracebacks(log)
    if tracebacks:
        result.warnings.append(
            f"{log} holds {tracebacks} traceback(s): look for unhandled errors"
        )
    if result.problems:
        result.problems.append(f"tail of {log}:\n{log_tail(log)}{extra}")
    (report_dir / "summary.json").write_text(
        json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8"
    )
    return result


def run_logged(
    command: Sequence[str],
    log: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> int | None:
    """Run ``command`` from the repository root, output to ``log``; its exit
    status, or None when it did not finish within ``timeout`` seconds."""
    with log.open("wb") as output:
        try:
            return subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            return None


def run_kosoku(
    port: int,
    patterns: Sequence[str],
    parallel: int,
    report_dir: Path,
    timeout: float,
) -> str | None:
    """Run kosoku into ``report_dir``; its console output goes to ``kosoku.log``.

    kosoku exits 1 both when a case did not pass (by its own, stricter rules)
    and on errors, so the verdict is taken from ``index.json`` instead; this
    returns a description only when kosoku timed out or wrote no report.
    """
    command = kosoku_command(port, patterns, parallel, report_dir)
    log = report_dir / "kosoku.log"
    status = run_logged(command, log, timeout)
    if status is None:
        return f"kosoku did not finish within {timeout:.0f}s (see {log})"
    if not (report_dir / "index.json").exists():
        return f"kosoku exited with status {status} and wrote no report:\n" + log_tail(
            log, 15
        )
    return None


# --------------------------------------------------------------------------
# Client mode: kosoku serves, wsplugin's echo client connects
# --------------------------------------------------------------------------


def fuzzingserver_command(
    port: int, patterns: Sequence[str], outdir: Path
) -> list[str]:
    """The ``kosoku -m fuzzingserver`` command line serving the cases."""
    command = [
        str(venv_script("kosoku")),
        "-m",
        "fuzzingserver",
        f"{HOST}:{port}",
        "-o",
        str(outdir),
    ]
    for pattern in patterns:
        command += ["-i", pattern]
    return command


def echo_client_command(
    mode: ClientMode, port: int, agent: str = CLIENT_AGENT
) -> list[str]:
    """The command line of the wsplugin echo client walking the cases."""
    return [
        sys.executable,
        str(ECHO_CLIENT),
        f"ws://{HOST}:{port}",
        "--agent",
        agent,
        *mode.client_args,
    ]


def run_client_mode(
    mode: ClientMode,
    patterns: Sequence[str],
    selected: list[str],
    out_root: Path,
    run_timeout: float = RUN_TIMEOUT,
) -> ModeResult:
    """Serve the cases with kosoku, walk them with the echo client, judge."""
    report_dir = out_root / mode.name
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True)
    result = ModeResult(mode, selected, {}, report_dir=report_dir)
    port = free_port()
    fuzzer_cmd = fuzzingserver_command(port, patterns, report_dir)
    client_cmd = echo_client_command(mode, port)
    print(
        f"== {mode.name}: {len(selected)} case(s) served by"
        f" {' '.join(fuzzer_cmd[1:])}, client {' '.join(client_cmd[1:])}"
    )
    sys.stdout.flush()

    kosoku_log = report_dir / "kosoku.log"
    client_log = report_dir / "client.log"
    started = time.monotonic()
    with kosoku_log.open("wb") as fuzzer_output:
        fuzzer = subprocess.Popen(
            fuzzer_cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=fuzzer_output,
            stderr=subprocess.STDOUT,
        )
        try:
            problem = wait_for_port(fuzzer, port)
            if problem is not None:
                result.problems.append(problem.replace("server", "kosoku", 1))
            else:
                problem = run_echo_client(client_cmd, client_log, run_timeout)
                if problem is not None:
                    result.problems.append(problem)
                try:
                    fuzzer.wait(timeout=REPORT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    result.problems.append(
                        f"kosoku did not exit within {REPORT_TIMEOUT:.0f}s of the"
                        " client's last case"
                    )
        finally:
            if fuzzer.poll() is None:
                fuzzer.kill()
                fuzzer.wait()
            result.seconds = time.monotonic() - started

    return finish_result(
        result, report_dir, client_log, f"\n  {kosoku_log}:\n{log_tail(kosoku_log)}"
    )


def run_echo_client(command: Sequence[str], log: Path, timeout: float) -> str | None:
    """Run the echo client, output to ``log``; a description if it failed."""
    status = run_logged(command, log, timeout, env=child_env())
    if status is None:
        return f"the echo client did not finish within {timeout:.0f}s (see {log})"
    if status != 0:
        return f"the echo client exited with status {status} (see {log})"
    return None


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="conformance/run.py",
        description="Run the Autobahn TestSuite (kosoku) against twistd ws --app echo"
        " and against wsplugin.client.",
    )
    parser.add_argument(
        "--mode",
        action="append",
        choices=list(ALL_MODES),
        metavar="NAME",
        help=f"mode to run (repeatable; default: all of {', '.join(ALL_MODES)})",
    )
    parser.add_argument(
        "--cases",
        action="append",
        metavar="PATTERN",
        help="case id or * glob replacing each mode's selection (repeatable)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=2,
        metavar="N",
        help="cases run in parallel by kosoku (default: 2)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="report root; each mode writes DIR/<mode>/ (default: build/conformance)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=RUN_TIMEOUT,
        metavar="SECONDS",
        help=f"limit for one mode's kosoku run (default: {RUN_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra 'twistd ws' option for every server mode, e.g."
        " --server-arg=--max-message-size=0 (repeatable)",
    )
    parser.add_argument(
        "--list-modes", action="store_true", help="print the modes and exit"
    )
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected modes, print the summary, return the exit status."""
    args = parse_args(argv)
    if args.list_modes:
        for mode in ALL_MODES.values():
            flags = getattr(mode, "client_args", ()) or mode.server_args
            print(
                f"{mode.name:13} {' '.join(flags):32}"
                f" {' '.join(mode.cases):40} {mode.description}"
            )
        return 0

    case_ids = all_case_ids()
    plan: list[tuple[Mode, list[str], list[str]]] = []
    for name in args.mode or list(ALL_MODES):
        mode = ALL_MODES[name]
        patterns = args.cases or list(mode.cases)
        try:
            selected = select_cases(patterns, case_ids)
        except ValueError as error:
            print(f"conformance: {error}", file=sys.stderr)
            return 2
        plan.append((mode, patterns, selected))

    results: list[ModeResult] = []
    for mode, patterns, selected in plan:
        if isinstance(mode, ClientMode):
            result = run_client_mode(
                mode, patterns, selected, args.out.resolve(), args.timeout
            )
        else:
            result = run_mode(
                mode,
                patterns,
                selected,
                args.out.resolve(),
                args.parallel,
                args.timeout,
                args.server_arg,
            )
        results.append(result)
        report = describe_failures(result)
        if report:
            print(report)
        print(
            f"== {mode.name}: {'pass' if result.passed else 'FAIL'}"
            f" in {result.seconds:.0f}s; reports in {result.report_dir}/index.html"
        )
        sys.stdout.flush()

    print()
    print(format_summary(results))
    status = exit_code(results)
    if status:
        print("\nconformance: FAILED (details above and in the reports)")
    return status


if __name__ == "__main__":
    sys.exit(main())
