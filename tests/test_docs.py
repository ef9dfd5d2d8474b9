"""The documentation says what the code does, and cannot drift from it.

These checks need no sockets. ``tests/integration/test_docs.py`` runs the
pages' programs, clients and command lines; ``tests/doccheck.py`` reads the
pages for both.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from functools import cache
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.doccheck import (
    CITATION,
    EXCLUDED,
    KNOWN_MARKERS,
    PYTHON_EXCLUDED,
    ROOT,
    doc_pages,
    expected_pattern,
    lines_found_in_order,
    markers_in,
    output_matches,
    read_blocks,
    table_rows,
    twistd_lines,
)
from wsplugin import ServerConfig, WebSocketServer
from wsplugin.config import SERVER_ONLY
from wsplugin.tap import Options
from wsplugin.testing import ServerHarness

MAX_NOT_RUN = 6
"""How many python blocks may be marked ``not-run`` in all (keep it short)."""


@cache
def test_names(path: str) -> frozenset[str]:
    """Every test a file defines: ``Class``, ``Class::method``,
    ``Class.method`` and bare function or method names."""
    tree = ast.parse((ROOT / path).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.update(
                        {
                            item.name,
                            f"{node.name}::{item.name}",
                            f"{node.name}.{item.name}",
                        }
                    )
    return frozenset(names)


def page_text_outside_blocks(page: str) -> str:
    """A page with its fenced blocks blanked out (line numbers kept)."""
    lines = (ROOT / page).read_text().split("\n")
    inside = False
    for n, line in enumerate(lines):
        if line.strip().startswith("```"):
            inside = not inside
            lines[n] = ""
        elif inside:
            lines[n] = ""
    return "\n".join(lines)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    text = page_text_outside_blocks(str(page.relative_to(ROOT)))
    for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M):
        base = slug(m.group(1))
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


class CitationTests(SynchronousTestCase):
    """Every test a page names exists (a named test that does not is a bug)."""

    def test_security_tables_cite_existing_tests(self) -> None:
        """Each row of docs/security.md's attack tables names at least one
        test (or says "none"), and every test named exists."""
        rows = 0
        for line, cells in table_rows("docs/security.md"):
            header = self._header("docs/security.md", line)
            if "test" not in header:
                continue
            rows += 1
            cell = cells[header.index("test")]
            cited = CITATION.findall(cell)
            self.assertTrue(
                cited or cell.lower().startswith("none"),
                f"docs/security.md:{line}: no test named for this row",
            )
            for path, name in cited:
                self.assertIn(
                    name, test_names(path), f"docs/security.md:{line}: {path}::{name}"
                )
        self.assertGreater(rows, 60)

    def test_every_cited_test_exists(self) -> None:
        """Tests named anywhere in README.md and docs/*.md exist."""
        count = 0
        for page in [
            "README.md",
            *sorted(p.name for p in (ROOT / "docs").glob("*.md")),
        ]:
            path = page if page == "README.md" else f"docs/{page}"
            for n, text in enumerate((ROOT / path).read_text().split("\n"), 1):
                for file, name in CITATION.findall(text):
                    count += 1
                    self.assertTrue((ROOT / file).is_file(), f"{path}:{n}: {file}")
                    self.assertIn(name, test_names(file), f"{path}:{n}: {file}::{name}")
        self.assertGreater(count, 100)

    def test_a_missing_test_is_caught(self) -> None:
        """The check above fails for a test that does not exist."""
        self.assertNotIn("test_no_such_thing", test_names("tests/test_limits.py"))
        self.assertIn("test_max_connections", test_names("tests/test_limits.py"))
        self.assertIn(
            "ConnectionLimitTests::test_per_ip_limit",
            test_names("tests/integration/test_http_attacks.py"),
        )

    @staticmethod
    def _header(path: str, line: int) -> list[str]:
        lines = (ROOT / path).read_text().split("\n")
        n = line - 1
        while n > 0 and lines[n - 1].startswith("|"):
            n -= 1
        return [c.strip() for c in lines[n].strip().strip("|").split("|")]


class MarkerTests(SynchronousTestCase):
    """The markers that steer the docs' tests are known, and few are skips."""

    def test_not_run_blocks_are_few_and_say_why(self) -> None:
        """Every ``not-run`` marker gives a reason; the list is printed and
        short. Unknown marker names fail (a typo would skip a check)."""
        skipped = []
        for page in doc_pages():
            for line, kind, value in markers_in(page):
                self.assertIn(kind, KNOWN_MARKERS, f"{page}:{line}: <!-- {kind} -->")
                if kind == "not-run":
                    self.assertTrue(value.strip(), f"{page}:{line}: no reason")
                    skipped.append(f"{page}:{line + 1}: {value}")
        print("\nblocks not run:")
        for line in skipped:
            print(f"  {line}")
        for page, why in {**EXCLUDED, **PYTHON_EXCLUDED}.items():
            print(f"  {page}: every python block: {why}")
        self.assertLessEqual(len(skipped), MAX_NOT_RUN)

    def test_markers_sit_on_blocks(self) -> None:
        """A marker is followed by a block (a stray one checks nothing)."""
        for page in doc_pages():
            marked = {b.line for b in read_blocks(page) if b.markers}
            lines = (ROOT / page).read_text().split("\n")
            for line, _, _ in markers_in(page):
                n = line
                while n < len(lines) and (
                    not lines[n].strip() or lines[n].lstrip().startswith("<!--")
                ):
                    n += 1
                self.assertIn(n + 1, marked, f"{page}:{line}: marker without a block")

    def test_every_python_block_compiles(self) -> None:
        """Python blocks are Python (signatures marked not-run aside)."""
        for page in doc_pages():
            if page in PYTHON_EXCLUDED:
                continue
            for block in read_blocks(page):
                if block.lang == "python" and "not-run" not in block.markers:
                    compile(block.code, block.where, "exec", flags=0x2000)


class ExpectedOutputTests(SynchronousTestCase):
    """The loose matching of shown output is loose only where it says."""

    def test_ids_stand_for_the_same_id(self) -> None:
        shown = "welcome, you are a190902a\n8fc8439e joined\na190902a left"
        self.assertTrue(
            output_matches(
                shown, "welcome, you are 11aa22bb\n33cc44dd joined\n11aa22bb left\n"
            )
        )
        self.assertFalse(
            output_matches(
                shown, "welcome, you are 11aa22bb\n33cc44dd joined\n33cc44dd left\n"
            )
        )

    def test_everything_else_is_exact(self) -> None:
        self.assertFalse(output_matches("hello", "hellp"))
        self.assertFalse(output_matches("a\nb", "a\nb\nc"))
        self.assertTrue(
            output_matches("...\nRan 7 tests in 0.010s", "x\ny\nRan 7 tests in 1.5s")
        )
        self.assertTrue(
            expected_pattern("wsplugin_session=<token>; Path=/").fullmatch(
                "wsplugin_session=abc-DEF_123; Path=/\n"
            )
        )

    def test_lines_in_order(self) -> None:
        self.assertEqual(lines_found_in_order("[a] x\n[b] y", "t [a] x\nt [b] y"), [])
        self.assertEqual(
            lines_found_in_order("[a] x\n[b] y", "t [b] y\nt [a] x"), ["[b] y"]
        )


class LinkTests(SynchronousTestCase):
    """Links between the pages lead somewhere."""

    def test_relative_links_and_anchors_exist(self) -> None:
        """Every relative link of README.md and docs/*.md names a file that
        exists and, with ``#anchor``, a heading of that page."""
        count = 0
        for page in [
            "README.md",
            *(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")),
        ]:
            text = page_text_outside_blocks(page)
            for m in re.finditer(r"\]\(([^)\s]+)\)", text):
                target = m.group(1)
                if re.match(r"[a-z]+:", target):
                    continue
                count += 1
                where = f"{page}:{text[: m.start()].count(chr(10)) + 1}: {target}"
                file, _, anchor = target.partition("#")
                path = (ROOT / page).parent / file if file else ROOT / page
                self.assertTrue(path.exists(), where)
                if anchor:
                    self.assertIn(anchor, anchors(path.resolve()), where)
        self.assertGreater(count, 50)

    def test_readme_links_the_guides(self) -> None:
        """README links every page of docs/ (client.md included)."""
        readme = (ROOT / "README.md").read_text()
        for page in sorted((ROOT / "docs").glob("*.md")):
            self.assertIn(f"](docs/{page.name})", readme, page.name)


class TwistdLineTests(SynchronousTestCase):
    """``twistd`` command lines in the pages (the integration part parses
    each with twistd's own option parser)."""

    def lines(self) -> list:
        return [
            line
            for page in doc_pages()
            for block in read_blocks(page)
            if "run" not in block.markers  # transcripts show refusals on purpose
            for line in twistd_lines(block)
        ]

    def test_foreground_servers_write_no_pid_file(self) -> None:
        """Every ``twistd -n`` line has ``--pidfile=``: without it the second
        ``twistd`` started in a directory exits at once with "Another twistd
        server is running"."""
        lines = self.lines()
        self.assertGreater(len(lines), 20)
        for line in lines:
            if line.foreground:
                self.assertTrue(line.has_pidfile, f"{line.where}: {line.text}")

    def test_flags_are_spelled_out(self) -> None:
        """Every ``--flag`` after ``ws`` is a whole option name of
        ``twistd ws`` (its parser would also take a unique prefix)."""
        known = self.ws_flags()
        for line in self.lines():
            if not line.is_ws:
                continue
            for arg in line.ws_args:
                if arg.startswith("--"):
                    self.assertIn(arg.split("=")[0], known, line.where)

    def test_twistd_md_lists_every_option(self) -> None:
        """docs/twistd.md's tables name every option of ``twistd ws``, and
        name no option it does not have."""
        text = page_text_outside_blocks("docs/twistd.md")
        listed = set(re.findall(r"^\| (?:`-\w`, )?`(--[\w-]+)", text, re.M))
        self.assertEqual(listed, self.ws_flags() - {"--help", "--version"})

    @staticmethod
    def ws_flags() -> set[str]:
        options = Options()
        names = {f"--{p[0]}" for p in options.optParameters}
        names |= {f"--{f[0]}" for f in options.optFlags}
        names |= {
            "--" + name[4:].replace("_", "-")
            for name in dir(options)
            if name.startswith("opt_") and len(name) > 5
        }
        return names


class ReferenceTests(SynchronousTestCase):
    """docs/reference.md's signature and option tables are the code's."""

    def test_websocketserver_signature(self) -> None:
        """The signature shown is WebSocketServer's, in order."""
        block = next(
            b
            for b in read_blocks("docs/reference.md")
            if b.code.startswith("WebSocketServer(")
        )
        shown = re.findall(r"^\s+(\*\*\w+|\*|\w+)", block.code, re.M)
        params = inspect.signature(WebSocketServer.__init__).parameters.values()
        real = []
        for p in list(params)[1:]:
            if p.kind is p.KEYWORD_ONLY and "*" not in real:
                real.append("*")
            real.append(f"**{p.name}" if p.kind is p.VAR_KEYWORD else p.name)
        self.assertEqual(shown, real)

    def test_option_tables(self) -> None:
        """Every ServerConfig option has a row with its default, and the
        route column says "server" exactly for SERVER_ONLY."""
        rows = {}
        for line, cells in table_rows("docs/reference.md"):
            m = re.fullmatch(r"`(\w+)`", cells[0])
            if m and len(cells) == 4 and m.group(1) in ServerConfig.option_names():
                rows[m.group(1)] = (line, cells)
        defaults = ServerConfig()
        for f in dataclasses.fields(ServerConfig):
            self.assertIn(f.name, rows, f"no row for {f.name}")
            line, cells = rows[f.name]
            shown = ast.literal_eval(re.match(r"`([^`]+)`", cells[1]).group(1))
            self.assertEqual(shown, getattr(defaults, f.name), f"reference.md:{line}")
            self.assertEqual(
                cells[3] == "server", f.name in SERVER_ONLY, f"reference.md:{line}"
            )

    def test_server_only_lists(self) -> None:
        """Where a page lists SERVER_ONLY in prose, it lists all of it."""
        for page in ("docs/reference.md", "docs/security.md"):
            text = re.sub(r"\s+", " ", (ROOT / page).read_text())
            found = re.findall(
                r"SERVER_ONLY`[^.]*?: ((?:`\w+`(?:,? (?:and )?)?)+)", text
            )
            self.assertTrue(found, page)
            for names in found:
                self.assertEqual(
                    set(re.findall(r"`(\w+)`", names)), set(SERVER_ONLY), page
                )


class HeartbeatClaimTests(SynchronousTestCase):
    """``--heartbeat-interval 0`` alone is accepted and turns keep-alive
    off (twistd.md, reference.md and security.md say so)."""

    def test_interval_zero_alone(self) -> None:
        options = Options()
        options.parseOptions(["--heartbeat-interval", "0"])
        assert options.config is not None
        self.assertEqual(options.config.heartbeat_interval, 0)
        server = WebSocketServer(
            None, reactor=MemoryReactorClock(), config=options.config
        )
        server.register_handler("*", "*", _Echo(), default_host=True, default_path=True)
        harness = ServerHarness(server)
        client = harness.open("/")
        for _ in range(300):
            harness.advance(1)
        self.assertEqual(client.frames(), [])  # no ping, no close
        self.assertFalse(client.closed)


class _Echo:
    def on_message(self, conn: object, text: str) -> None:
        conn.send_text(text)  # type: ignore[attr-defined]
