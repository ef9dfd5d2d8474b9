"""The light scan that finds the line of each key of a TOML text
(wsplugin._tomllines), checked against tomllib itself."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._configfile import tomllib
from wsplugin._tomllines import KeyLines, key_parts


class KeyPartsTests(SynchronousTestCase):
    """A dotted key as its parts."""

    def test_quoted_and_dotted(self) -> None:
        """Quotes are taken off; dots inside quotes do not split."""
        self.assertEqual(key_parts("a . \"b.c\" . 'd'"), ("a", "b.c", "d"))


TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\\'),
    max_size=6,
)
"""String values, with the characters that could look like TOML syntax
(``=``, ``[``, ``#``, ``'``) but nothing that needs an escape."""


class LinesTests(SynchronousTestCase):
    """The light scan that finds each key's line."""

    def test_tables_and_arrays(self) -> None:
        """Headers, arrays of tables (counted), sub-tables of the last
        element, dotted keys, quoted keys, inline tables, and multi-line
        strings whose lines are not keys."""
        text = (
            "# comment\n"  # 1
            "a = 1\n"  # 2
            'tls.key = "k"\n'  # 3
            "[tls]\n"  # 4
            'certificate = "c"\n'  # 5
            "[[route]]\n"  # 6
            'path = "/a"\n'  # 7
            "[[route]]\n"  # 8
            '"path" = """\n'  # 9
            "handler = 'not a key'\n"  # 10
            '"""\n'  # 11
            "auth = { htpasswd = 'x' }\n"  # 12
            "[route.limits]\n"  # 13
            "max_queue = 3\n"  # 14
        )
        lines = KeyLines(text)
        expect = {
            ("a",): 2,
            ("tls", "key"): 3,
            ("tls", "certificate"): 5,
            ("route", 0): 6,
            ("route", 0, "path"): 7,
            ("route", 1): 8,
            ("route", 1, "path"): 9,
            ("route", 1, "handler"): 8,  # inside the string: the table's line
            ("route", 1, "auth", "htpasswd"): 12,  # the inline table's line
            ("route", 1, "limits", "max_queue"): 14,
            ("nothing",): None,
        }
        for path, line in expect.items():
            self.assertEqual(lines.line_of(path), line, path)

    @settings(max_examples=60, derandomize=True, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["", "tls", "route", "other"]),
                st.lists(
                    st.tuples(
                        st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True).filter(
                            lambda k: k not in ("tls", "route", "other")
                        ),
                        st.one_of(
                            st.integers(-(2**63), 2**63 - 1),
                            TEXT,
                            st.booleans(),
                            st.lists(TEXT, max_size=3),
                        ),
                    ),
                    max_size=4,
                    unique_by=lambda kv: kv[0],
                ),
            ),
            max_size=6,
        )
    )
    def test_agrees_with_tomllib(self, sections: list) -> None:
        """For documents made of tables, arrays of tables and keys with any
        values, every key tomllib reads is found at the line it is on."""
        out: list[str] = []
        where: dict[tuple, int] = {}
        counts: dict[str, int] = {}
        seen_tables: set[str] = set()
        for table, pairs in sections:
            if table == "route":
                out.append("[[route]]")
                counts["route"] = counts.get("route", 0) + 1
                prefix: tuple = ("route", counts["route"] - 1)
            elif table:
                if table in seen_tables:
                    continue
                seen_tables.add(table)
                out.append(f"[{table}]")
                prefix = (table,)
            else:
                if out:
                    continue  # top-level keys come first
                prefix = ()
            for key, value in pairs:
                out.append(f"{key} = {toml_value(value)}")
                where[(*prefix, key)] = len(out)
        text = "\n".join(out) + "\n"
        tomllib.loads(text)  # a valid document
        lines = KeyLines(text)
        for path, line in where.items():
            self.assertEqual(lines.line_of(path), line, (path, text))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return f'"{value}"'  # TEXT has no quote, backslash or control character
    return "[" + ", ".join(toml_value(v) for v in value) + "]"
