"""Tests for the pure parts of ``conformance/run.py`` (the ``make conformance`` runner).

``conformance/`` is not a package (it is not shipped), so the runner is loaded
from its file path. Nothing here starts a server or runs kosoku.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

RUNNER_PATH = Path(__file__).resolve().parent.parent / "conformance" / "run.py"


def _load_runner() -> ModuleType:
    """Import ``conformance/run.py`` as the module ``conformance_run``."""
    name = "conformance_run"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RUNNER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before execution: dataclasses look their module up by name.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


run = _load_runner()

# kosoku.cases is not imported here: it installs an autobahn shim that
# clashes with the real Autobahn the rest of the suite imports.
KOSOKU_SKIP = None if importlib.util.find_spec("kosoku") else "kosoku is not installed"


def entry(
    behavior: str = "OK",
    behavior_close: str = "OK",
    code: int | None = 1000,
    reportfile: str = "",
) -> dict[str, object]:
    """One ``index.json`` case entry, shaped as kosoku writes it."""
    return {
        "behavior": behavior,
        "behaviorClose": behavior_close,
        "duration": 1,
        "remoteCloseCode": code,
        "reportfile": reportfile,
    }


def result_for(mode_name: str, index: dict[str, dict[str, object]]) -> object:
    """A ``ModeResult`` for ``mode_name`` built from one agent's case entries."""
    outcomes = run.parse_index({"AutobahnPython/1.0": index})
    return run.ModeResult(run.MODES[mode_name], list(index), outcomes)


class PatternTests(SynchronousTestCase):
    """Case selection follows the Autobahn/kosoku pattern rules."""

    IDS = ["1.1.1", "1.2.1", "2.1", "9.7.1", "10.1.1", "12.1.1", "12.1.10", "13.1.1"]

    def test_exact_id(self) -> None:
        """A pattern without ``*`` selects exactly that id."""
        self.assertTrue(run.pattern_matches("2.1", "2.1"))
        self.assertFalse(run.pattern_matches("2.1", "2.10"))
        self.assertFalse(run.pattern_matches("1.1", "1.1.1"))

    def test_glob_anchored_at_start_only(self) -> None:
        """``*`` globs match from the start of the id, like Autobahn's re.match."""
        self.assertTrue(run.pattern_matches("1.*", "1.2.1"))
        self.assertFalse(run.pattern_matches("1.*", "10.1.1"))
        self.assertTrue(run.pattern_matches("1*.1.1", "12.1.10"))
        self.assertTrue(run.pattern_matches("*", "13.7.18"))

    def test_dots_are_literal(self) -> None:
        """A ``.`` in a pattern is a literal dot, not a regex wildcard."""
        self.assertFalse(run.pattern_matches("1.*", "1x2"))

    def test_select_keeps_suite_order(self) -> None:
        """``select_cases`` returns ids in the given order, each once."""
        self.assertEqual(
            run.select_cases(["12.*", "1.*", "1.1.1"], self.IDS),
            ["1.1.1", "1.2.1", "12.1.1", "12.1.10"],
        )

    def test_select_rejects_empty_pattern(self) -> None:
        """A pattern that selects nothing is an error (kosoku refuses it too)."""
        with self.assertRaises(ValueError) as caught:
            run.select_cases(["1.*", "8.*"], self.IDS)
        self.assertIn("8.*", str(caught.exception))


class ClassifyTests(SynchronousTestCase):
    """kosoku's two verdicts fold into one summary column."""

    def test_behavior_passes_through_on_clean_close(self) -> None:
        """OK, NON-STRICT and INFORMATIONAL stand when the close was OK."""
        for behavior in ("OK", "NON-STRICT", "INFORMATIONAL"):
            self.assertEqual(run.classify(behavior, "OK"), behavior)
        self.assertEqual(
            run.classify("INFORMATIONAL", "INFORMATIONAL"), "INFORMATIONAL"
        )

    def test_failed_and_error(self) -> None:
        """FAILED, ERROR and unknown behaviors are all FAILED."""
        self.assertEqual(run.classify("FAILED", "OK"), "FAILED")
        self.assertEqual(run.classify("ERROR", "FAILED"), "FAILED")
        self.assertEqual(run.classify("SOMETHING-NEW", "OK"), "FAILED")

    def test_unimplemented(self) -> None:
        """UNIMPLEMENTED stays UNIMPLEMENTED whatever the close verdict."""
        self.assertEqual(run.classify("UNIMPLEMENTED", "OK"), "UNIMPLEMENTED")
        self.assertEqual(run.classify("UNIMPLEMENTED", "FAILED"), "UNIMPLEMENTED")

    def test_bad_close_fails_a_good_exchange(self) -> None:
        """A close FAILED or UNCLEAN turns an OK exchange into FAILED."""
        self.assertEqual(run.classify("OK", "FAILED"), "FAILED")
        self.assertEqual(run.classify("OK", "UNCLEAN"), "FAILED")

    def test_lenient_close_is_non_strict(self) -> None:
        """WRONG CODE and FAILED BY CLIENT downgrade OK to NON-STRICT only."""
        self.assertEqual(run.classify("OK", "WRONG CODE"), "NON-STRICT")
        self.assertEqual(run.classify("OK", "FAILED BY CLIENT"), "NON-STRICT")
        self.assertEqual(run.classify("INFORMATIONAL", "WRONG CODE"), "INFORMATIONAL")


class ParseIndexTests(SynchronousTestCase):
    """``index.json`` documents become per-case outcomes."""

    def test_parse(self) -> None:
        """Every field is read, and ids come out in numeric order."""
        outcomes = run.parse_index(
            {
                "AutobahnPython/26.10.2": {
                    "1.2.10": entry(),
                    "1.2.9": entry("NON-STRICT"),
                    "6.3.1": entry(
                        "FAILED", "FAILED BY CLIENT", None, "a_case_6_3_1.json"
                    ),
                }
            }
        )
        self.assertEqual(list(outcomes), ["1.2.9", "1.2.10", "6.3.1"])
        failed = outcomes["6.3.1"]
        self.assertEqual(failed.behavior, "FAILED")
        self.assertEqual(failed.behavior_close, "FAILED BY CLIENT")
        self.assertIsNone(failed.remote_close_code)
        self.assertEqual(failed.reportfile, "a_case_6_3_1.json")
        self.assertEqual(failed.verdict, "FAILED")
        self.assertEqual(outcomes["1.2.9"].verdict, "NON-STRICT")
        self.assertEqual(outcomes["1.2.10"].remote_close_code, 1000)

    def test_several_agents_keep_worst(self) -> None:
        """If two agents report the same case, the worse verdict wins."""
        outcomes = run.parse_index(
            {"a": {"1.1.1": entry("FAILED")}, "b": {"1.1.1": entry()}}
        )
        self.assertEqual(outcomes["1.1.1"].verdict, "FAILED")

    def test_missing_fields_fail(self) -> None:
        """An entry without verdicts counts as FAILED, never as a pass."""
        outcomes = run.parse_index({"a": {"1.1.1": {}}})
        self.assertEqual(outcomes["1.1.1"].verdict, "FAILED")


class DecisionTests(SynchronousTestCase):
    """Which outcomes make a mode, and the run, fail."""

    def test_all_ok_passes(self) -> None:
        """A mode whose cases are all OK passes and exits 0."""
        result = result_for("full", {"1.1.1": entry(), "2.1": entry()})
        self.assertTrue(result.passed)
        self.assertEqual(run.exit_code([result]), 0)

    def test_failed_exits_non_zero(self) -> None:
        """One FAILED case fails the mode and the run."""
        result = result_for("split", {"1.1.1": entry(), "6.3.1": entry("FAILED")})
        self.assertFalse(result.passed)
        self.assertEqual([o.case_id for o in result.failures], ["6.3.1"])
        self.assertEqual(run.exit_code([result]), 1)

    def test_one_failing_mode_fails_the_run(self) -> None:
        """The exit status is non-zero if any one mode failed."""
        good = result_for("manual-pong", {"2.1": entry()})
        bad = result_for("manual-close", {"7.1.1": entry("OK", "UNCLEAN")})
        self.assertEqual(run.exit_code([good, bad]), 1)

    def test_unimplemented_compression_in_full_mode_fails(self) -> None:
        """Mode full enables compression, so an UNIMPLEMENTED 12.* case fails."""
        result = result_for("full", {"12.1.1": entry("UNIMPLEMENTED")})
        self.assertFalse(result.passed)
        self.assertEqual(run.exit_code([result]), 1)

    def test_unimplemented_compression_without_compression_is_ok(self) -> None:
        """Without --compression, UNIMPLEMENTED 12.*/13.* cases are tolerated."""
        result = result_for(
            "split",
            {"12.1.1": entry("UNIMPLEMENTED"), "13.1.1": entry("UNIMPLEMENTED")},
        )
        self.assertTrue(result.passed)
        self.assertEqual(result.counts["UNIMPLEMENTED"], 2)

    def test_unimplemented_other_case_fails(self) -> None:
        """UNIMPLEMENTED outside the compression cases fails in any mode."""
        result = result_for("split", {"1.1.1": entry("UNIMPLEMENTED")})
        self.assertFalse(result.passed)

    def test_informational_is_ok(self) -> None:
        """INFORMATIONAL cases pass."""
        result = result_for("full", {"7.1.6": entry("INFORMATIONAL", "INFORMATIONAL")})
        self.assertTrue(result.passed)
        self.assertEqual(result.counts["INFORMATIONAL"], 1)

    def test_non_strict_is_ok(self) -> None:
        """NON-STRICT cases pass."""
        result = result_for("full", {"6.4.1": entry("NON-STRICT")})
        self.assertTrue(result.passed)

    def test_missing_case_fails(self) -> None:
        """A selected case absent from the report fails the mode."""
        outcomes = run.parse_index({"a": {"1.1.1": entry()}})
        result = run.ModeResult(run.MODES["full"], ["1.1.1", "1.1.2"], outcomes)
        self.assertEqual(result.missing, ["1.1.2"])
        self.assertFalse(result.passed)

    def test_problem_fails(self) -> None:
        """A run-level problem (server crash) fails the mode even if cases pass."""
        result = result_for("full", {"1.1.1": entry()})
        result.problems.append("server crashed during the run (exit status 1)")
        self.assertFalse(result.passed)

    def test_warning_does_not_fail(self) -> None:
        """Warnings are reported but do not fail the mode."""
        result = result_for("full", {"1.1.1": entry()})
        result.warnings.append("server.log holds 1 traceback(s)")
        self.assertTrue(result.passed)

    def test_no_mode_run_fails(self) -> None:
        """Nothing run is not a pass in the summary's total row."""
        self.assertIn("FAIL", run.format_summary([]).splitlines()[-1])


class SummaryTests(SynchronousTestCase):
    """The printed table and the JSON digest."""

    def test_counts(self) -> None:
        """Each reported case is counted in exactly one column."""
        result = result_for(
            "full",
            {
                "1.1.1": entry(),
                "1.1.2": entry("NON-STRICT"),
                "7.1.6": entry("INFORMATIONAL", "INFORMATIONAL"),
                "12.1.1": entry("UNIMPLEMENTED"),
                "6.3.1": entry("FAILED"),
                "9.1.1": entry("ERROR", "FAILED"),
            },
        )
        self.assertEqual(
            result.counts,
            {
                "OK": 1,
                "NON-STRICT": 1,
                "INFORMATIONAL": 1,
                "UNIMPLEMENTED": 1,
                "FAILED": 2,
            },
        )

    def test_table(self) -> None:
        """The table has a header, a row per mode and a total row."""
        full = result_for("full", {"1.1.1": entry(), "6.3.1": entry("FAILED")})
        full.seconds = 12.0
        pong = result_for("manual-pong", {"2.1": entry(), "2.2": entry()})
        lines = run.format_summary([full, pong]).splitlines()
        self.assertEqual(
            lines[0].split(),
            ["mode", "cases", *run.VERDICTS, "time", "result"],
        )
        self.assertEqual(
            lines[2].split(), ["full", "2", "1", "0", "0", "0", "1", "12s", "FAIL"]
        )
        self.assertEqual(
            lines[3].split(),
            ["manual-pong", "2", "2", "0", "0", "0", "0", "0s", "pass"],
        )
        self.assertEqual(
            lines[-1].split(), ["total", "4", "3", "0", "0", "0", "1", "12s", "FAIL"]
        )

    def test_json_digest(self) -> None:
        """``to_json`` is JSON-serialisable and lists the failures."""
        result = result_for("split", {"1.1.1": entry(), "6.3.1": entry("FAILED")})
        digest = json.loads(json.dumps(result.to_json()))
        self.assertEqual(digest["mode"], "split")
        self.assertFalse(digest["passed"])
        self.assertEqual([f["id"] for f in digest["failures"]], ["6.3.1"])

    def test_plain_text(self) -> None:
        """Case texts lose their HTML for the console."""
        self.assertEqual(
            run.plain_text("Send text.<br><br>MESSAGE:<br>&lt;x&gt;"),
            "Send text. MESSAGE: <x>",
        )

    def test_case_expectation(self) -> None:
        """The failure listing reads expectation and outcome from the case report."""
        report = Path(self.mktemp())
        report.write_text(
            json.dumps(
                {
                    "expectation": "The connection is failed immediately.",
                    "result": "Actual events differ from any expected.",
                    "resultClose": "Connection was properly closed",
                }
            )
        )
        text = run.case_expectation(report)
        self.assertIn("expected: The connection is failed immediately.", text)
        self.assertIn("got: Actual events differ", text)
        self.assertEqual(run.case_expectation(report.with_name("absent.json")), "")


class ModeTableTests(SynchronousTestCase):
    """The modes ``make conformance`` runs, and what each selects."""

    def test_names_and_flags(self) -> None:
        """The five modes, with the server flags the brief specifies."""
        self.assertEqual(
            {name: mode.server_args for name, mode in run.MODES.items()},
            {
                "full": ("--compression",),
                "split": ("--split-message", "--frame-size", "64"),
                "frames": ("--frame-by-frame",),
                "manual-pong": ("--manual-pong",),
                "manual-close": ("--manual-close",),
            },
        )

    def test_only_full_has_compression(self) -> None:
        """Only mode full negotiates permessage-deflate."""
        self.assertEqual(
            [name for name, mode in run.MODES.items() if mode.compression], ["full"]
        )

    def test_unimplemented_allowed(self) -> None:
        """UNIMPLEMENTED is allowed for 12/13 only, and only without compression."""
        split, full = run.MODES["split"], run.MODES["full"]
        self.assertTrue(run.unimplemented_allowed(split, "13.7.18"))
        self.assertFalse(run.unimplemented_allowed(split, "1.1.1"))
        self.assertFalse(run.unimplemented_allowed(full, "12.1.1"))

    def test_case_counts(self) -> None:
        """Each mode selects the documented slice of the 517 kosoku cases."""
        ids = run.all_case_ids()
        counts = {
            name: len(run.select_cases(mode.cases, ids))
            for name, mode in run.MODES.items()
        }
        self.assertEqual(
            counts,
            {
                "full": 517,
                "split": 301,
                "frames": 301,
                "manual-pong": 11,
                "manual-close": 37,
            },
        )
        for name in ("split", "frames"):
            selected = run.select_cases(run.MODES[name].cases, ids)
            self.assertFalse(
                [i for i in selected if run.category(i) in run.COMPRESSION_CATEGORIES]
            )

    test_case_counts.skip = KOSOKU_SKIP  # type: ignore[attr-defined]

    def test_server_command(self) -> None:
        """twistd runs in the foreground, on loopback, with the mode's flags."""
        command = run.server_command(run.MODES["split"], 4321, Path("/x/server.log"))
        self.assertEqual(Path(command[0]).name, "twistd")
        self.assertEqual(
            command[1:],
            [
                "-n",
                "--pidfile=",
                "--logfile=/x/server.log",
                "ws",
                "--port",
                "tcp:4321:interface=127.0.0.1",
                "--app",
                "echo",
                "--split-message",
                "--frame-size",
                "64",
            ],
        )

    def test_server_command_extra(self) -> None:
        """``--server-arg`` options come after the mode's own flags."""
        command = run.server_command(
            run.MODES["full"], 4321, Path("/x/server.log"), ["--no-utf8-validation"]
        )
        self.assertEqual(command[-2:], ["--compression", "--no-utf8-validation"])

    def test_parse_args(self) -> None:
        """Modes and case patterns repeat; parallelism defaults to 2."""
        args = run.parse_args(
            ["--mode", "split", "--mode", "frames", "--cases", "1.*", "--cases", "2.1"]
        )
        self.assertEqual(args.mode, ["split", "frames"])
        self.assertEqual(args.cases, ["1.*", "2.1"])
        self.assertEqual(args.parallel, 2)
        self.assertEqual(run.parse_args([]).server_arg, [])

    def test_kosoku_command(self) -> None:
        """kosoku gets the loopback address, parallelism, outdir and patterns."""
        command = run.kosoku_command(4321, ["1.*", "2.1"], 2, Path("/x/full"))
        self.assertEqual(Path(command[0]).name, "kosoku")
        self.assertEqual(
            command[1:],
            ["127.0.0.1:4321", "-p", "2", "-o", "/x/full", "-i", "1.*", "-i", "2.1"],
        )

    def test_free_port(self) -> None:
        """``free_port`` returns a usable port number."""
        self.assertTrue(0 < run.free_port() < 65536)


def _load_echo_client() -> ModuleType:
    """Import ``conformance/echo_client.py`` as ``conformance_echo_client``."""
    name = "conformance_echo_client"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, RUNNER_PATH.with_name("echo_client.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class ConformanceClientModeTests(SynchronousTestCase):
    """The ``client`` mode of the conformance runner (pure parts)."""

    def test_mode_table(self) -> None:
        """``client`` is selectable and run by default, besides the server modes."""
        self.assertNotIn("client", run.MODES)
        self.assertEqual(list(run.ALL_MODES)[-1], "client")
        mode = run.ALL_MODES["client"]
        self.assertIsInstance(mode, run.ClientMode)
        self.assertTrue(mode.compression)
        self.assertEqual(mode.client_args, ("--compression",))
        self.assertEqual(run.parse_args(["--mode", "client"]).mode, ["client"])
        self.assertIsNone(run.parse_args([]).mode)

    def test_commands(self) -> None:
        """kosoku serves on loopback; the echo client is pointed at it."""
        fuzzer = run.fuzzingserver_command(4321, ["1.*", "2.1"], Path("/x/client"))
        self.assertEqual(Path(fuzzer[0]).name, "kosoku")
        self.assertEqual(
            fuzzer[1:],
            [
                "-m",
                "fuzzingserver",
                "127.0.0.1:4321",
                "-o",
                "/x/client",
                "-i",
                "1.*",
                "-i",
                "2.1",
            ],
        )
        client = run.echo_client_command(run.ALL_MODES["client"], 4321)
        self.assertEqual(client[0], sys.executable)
        self.assertEqual(Path(client[1]).name, "echo_client.py")
        self.assertEqual(
            client[2:],
            ["ws://127.0.0.1:4321", "--agent", "wsplugin-client", "--compression"],
        )

    def test_verdicts(self) -> None:
        """Compression is offered, so UNIMPLEMENTED 12.* fails the client mode;
        the JSON digest names the client's options."""
        mode = run.ALL_MODES["client"]
        outcomes = run.parse_index(
            {"wsplugin-client": {"1.1.1": {"behavior": "OK", "behaviorClose": "OK"}}}
        )
        self.assertTrue(run.ModeResult(mode, ["1.1.1"], outcomes).passed)
        self.assertFalse(run.unimplemented_allowed(mode, "12.1.1"))
        digest = run.ModeResult(mode, ["1.1.1"], outcomes).to_json()
        self.assertEqual(digest["client_args"], ["--compression"])

    def test_whole_suite(self) -> None:
        """The client mode selects all 517 cases."""
        ids = run.all_case_ids()
        self.assertEqual(len(run.select_cases(run.ALL_MODES["client"].cases, ids)), 517)

    test_whole_suite.skip = KOSOKU_SKIP  # type: ignore[attr-defined]

    def test_echo_client_arguments(self) -> None:
        """The echo client takes the server URL, an agent and --compression."""
        echo_client = _load_echo_client()
        args = echo_client.parse_args(["ws://127.0.0.1:9001", "--compression"])
        self.assertEqual(
            (args.url, args.agent, args.compression),
            ("ws://127.0.0.1:9001", "wsplugin-client", True),
        )
