"""Read the documentation's code blocks, so the tests can run them.

``tests/test_docs.py`` and ``tests/integration/test_docs.py`` use this
module: every fenced block of README.md and docs/*.md, the HTML-comment
markers written right before a block, the ``twistd ... ws ...`` command
lines of the shell blocks, and the expected output shown after a program.

Markers (an HTML comment on the line(s) right before a block; invisible on
GitHub):

``<!-- not-run: REASON -->``
    a ```python block that the tests do not run (counted and printed,
    with the reason; keep them few).
``<!-- run -->``
    a ```sh block run with ``bash`` in the page's working directory (it
    makes files later blocks use), or a ```text / ```console transcript
    whose ``$ `` lines are run there and whose other lines are compared
    with what they print (a transcript calls that directory ``/srv``).
``<!-- server-output -->`` / ``<!-- server-output: NAME -->``
    a ```text block whose lines the running server (or the server program
    NAME, or ``twistd``: the page's last ``twistd`` server) prints, in this
    order, each inside one line of its output.
``<!-- fresh-server -->``
    a client block run against the current server started again, as the
    page asks (state left by earlier clients would change its output).
``<!-- example: examples/FILE -->`` / ``<!-- example: examples/FILE from line N -->``
    a block (of any language) that is that example file, or the file from
    line N to its end; the documentation site includes the file itself
    (docs/_ext/wsdocs.py), and tests/test_docsite.py checks the copy.

Expected output is matched loosely where it must be: a line ``...``
stands for any lines; 8-hex-digit connection ids (``a190902a``) stand for
any such id, the same one wherever the text repeats it; ``<token>`` for
any run of non-blank characters up to ``;``; a duration ``0.010s`` for any
duration; and a source port after ``127.0.0.1:`` for any port.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EXCLUDED: dict[str, str] = {}
"""Pages left out altogether (python blocks and twistd lines), with why."""

PYTHON_EXCLUDED: dict[str, str] = {}
"""Pages whose python blocks are not run (their twistd lines still are)."""

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>[\w-]+)\s*(?::\s*(?P<value>.*?))?\s*-->\s*$")
KNOWN_MARKERS = {"not-run", "run", "server-output", "fresh-server", "example"}


@dataclass
class Block:
    """One fenced block of a page."""

    path: str
    """The page, relative to the checkout: ``docs/web.md``."""
    line: int
    """Line number of the opening fence (1-based)."""
    lang: str
    code: str
    markers: dict[str, str] = field(default_factory=dict)
    direct: bool = False
    """Nothing but blank lines between the previous block and this one."""

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def filename(self) -> str | None:
        """The file a block names on its first line (``# chat_server.py``)."""
        first = self.code.split("\n", 1)[0].strip()
        m = re.fullmatch(r"#\s*(?:/\S+/)?([\w.-]+\.(?:py|tac))(?::.*)?", first)
        return m.group(1) if m else None


def doc_pages() -> list[str]:
    """README.md and every docs/*.md page, minus :data:`EXCLUDED`."""
    pages = ["README.md"] + sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")
    )
    return [p for p in pages if p not in EXCLUDED]


def read_blocks(path: str) -> list[Block]:
    """Every fenced block of a page, with its markers."""
    lines = (ROOT / path).read_text().split("\n")
    blocks: list[Block] = []
    i = 0
    last_end = -1
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent = len(m.group("indent"))
        start = i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        markers: dict[str, str] = {}
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        while j >= 0 and (mm := MARKER.match(lines[j])):
            markers[mm.group("kind")] = mm.group("value") or ""
            j -= 1
        gap = lines[last_end + 1 : start]
        direct = last_end >= 0 and all(not g.strip() or MARKER.match(g) for g in gap)
        blocks.append(
            Block(
                path=path,
                line=start + 1,
                lang=m.group("lang") or "",
                code="\n".join(body) + "\n",
                markers=markers,
                direct=direct,
            )
        )
        last_end = i
        i += 1
    return blocks


def markers_in(path: str) -> list[tuple[int, str, str]]:
    """Every marker comment of a page: (line, kind, value)."""
    found = []
    for n, text in enumerate((ROOT / path).read_text().split("\n"), 1):
        m = MARKER.match(text)
        if m:
            found.append((n, m.group("kind"), m.group("value") or ""))
    return found


# --- command lines ---------------------------------------------------------

TWISTD = re.compile(r"(^|/)twistd$")


def command_lines(block: Block) -> list[tuple[int, str]]:
    """The shell command lines of a sh/console/ini block, continuation lines
    joined: (line number, command). In a console block only ``$ `` lines
    count; in an ini block only ``ExecStart=`` values."""
    out: list[tuple[int, str]] = []
    pending = ""
    pending_line = 0
    for offset, raw in enumerate(block.code.split("\n"), 1):
        text = raw.rstrip()
        if block.lang == "console":
            if not pending:
                if not text.startswith("$ "):
                    continue
                text = text[2:]
        elif block.lang == "ini":
            if not text.startswith("ExecStart="):
                continue
            text = text[len("ExecStart=") :]
        if not pending:
            pending_line = block.line + offset
        if text.endswith("\\") and not text.endswith("\\\\"):
            pending += text[:-1] + " "
            continue
        pending += text
        if pending.strip():
            out.append((pending_line, pending.strip()))
        pending = ""
    return out


@dataclass
class TwistdLine:
    """A ``twistd`` command line shown in a page."""

    where: str
    text: str
    env: dict[str, str]
    twistd_args: list[str]
    """The arguments after ``twistd``, its own and the plugin's."""

    @property
    def is_ws(self) -> bool:
        return "ws" in self.twistd_args

    @property
    def foreground(self) -> bool:
        return any(a in ("-n", "--nodaemon") for a in self.twistd_args) or any(
            re.fullmatch(r"-\w*n\w*", a) for a in self.twistd_args
        )

    @property
    def has_pidfile(self) -> bool:
        return any(
            a == "--pidfile" or a.startswith("--pidfile=") for a in self.twistd_args
        )

    @property
    def ws_args(self) -> list[str]:
        return self.twistd_args[self.twistd_args.index("ws") + 1 :]


def twistd_lines(block: Block) -> list[TwistdLine]:
    """The ``twistd`` commands of a sh/console/ini block."""
    if block.lang not in ("sh", "console", "ini", "bash"):
        return []
    found = []
    for line, text in command_lines(block):
        # one command per line here; drop a trailing "&" and later commands
        text = re.split(r"\s(?:&&|;|\|)\s|\s&\s*$|\s&\s*#", text)[0]
        try:
            words = shlex.split(text, comments=True)
        except ValueError as e:
            raise AssertionError(
                f"{block.path}:{line}: cannot split {text!r}: {e}"
            ) from None
        env = {}
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name, _, value = words.pop(0).partition("=")
            env[name] = value
        if not words or not TWISTD.search(words[0]):
            continue
        found.append(TwistdLine(f"{block.path}:{line}", text, env, words[1:]))
    return found


# --- expected output -------------------------------------------------------

HEX_ID = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{8}\b")


def expected_pattern(expected: str, *, lines: bool = True) -> re.Pattern[str]:
    """A regex for shown output, with the loose parts of the module docstring.

    With ``lines``, the whole output must match (``...`` lines skip);
    otherwise the pattern is for one line, found inside a line.
    """
    ids: dict[str, str] = {}

    def one_line(text: str) -> str:
        out = []
        pos = 0
        special = re.compile(
            r"(?P<id>" + HEX_ID.pattern + r")|(?P<token><token>)"
            r"|(?P<dur>\b\d+\.\d+s\b)|(?P<port>(?<=127\.0\.0\.1:)\d{4,5}\b)"
        )
        for m in special.finditer(text):
            out.append(re.escape(text[pos : m.start()]))
            if m.group("id"):
                word = m.group("id")
                if word in ids:
                    out.append(f"(?P={ids[word]})")
                else:
                    ids[word] = f"id{len(ids)}"
                    out.append(f"(?P<{ids[word]}>[0-9a-f]{{8}})")
            elif m.group("token"):
                out.append(r"[^;\s]+")
            elif m.group("dur"):
                out.append(r"\d+\.\d+s")
            else:
                out.append(r"\d+")
            pos = m.end()
        out.append(re.escape(text[pos:]))
        return "".join(out)

    if not lines:
        return re.compile(one_line(expected.strip()))
    parts = []
    for text in expected.strip("\n").split("\n"):
        if text.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(one_line(text.rstrip()) + r"[ \t]*\n")
    return re.compile("".join(parts))


def output_matches(expected: str, actual: str) -> bool:
    """Whether ``actual`` is the shown ``expected`` output (whole)."""
    actual = "\n".join(line.rstrip() for line in actual.strip("\n").split("\n"))
    return expected_pattern(expected).fullmatch(actual + "\n") is not None


def lines_found_in_order(expected: str, actual: str) -> list[str]:
    """The expected lines not found, in order, each inside a line of actual."""
    remaining = actual.split("\n")
    missing = []
    for text in expected.strip("\n").split("\n"):
        if not text.strip() or text.strip() == "...":
            continue
        pattern = expected_pattern(text, lines=False)
        for k, line in enumerate(remaining):
            if pattern.search(line):
                remaining = remaining[k + 1 :]
                break
        else:
            missing.append(text)
    return missing


# --- docs/security.md ------------------------------------------------------

CITATION = re.compile(r"`?(?P<file>tests/[\w/]+\.py)::(?P<name>[\w.]+)`?")


def table_rows(path: str) -> list[tuple[int, list[str]]]:
    """The body rows of every Markdown table of a page: (line, cells)."""
    rows = []
    lines = (ROOT / path).read_text().split("\n")
    for n, text in enumerate(lines, 1):
        if not text.startswith("|") or re.fullmatch(r"\|[-|: ]+\|?", text.strip()):
            continue
        if n < len(lines) and re.fullmatch(r"\|[-|: ]+\|?", lines[n].strip()):
            continue  # a header row
        rows.append((n, [c.strip() for c in text.strip().strip("|").split("|")]))
    return rows
