"""wsplugin._configerrors: a config file's error is one line naming the
file, the line (and column) and the key; TOML syntax errors included."""

from __future__ import annotations

import tomllib
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._configerrors import ConfigFileError, syntax_error
from wsplugin.errors import ConfigError


def toml_error(text: str) -> ConfigFileError:
    """syntax_error for what tomllib says about ``text``."""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return syntax_error("ws.toml", text, str(e))
    raise AssertionError(f"{text!r} is valid TOML")


class ConfigFileErrorTests(SynchronousTestCase):
    """The error's message and parts."""

    def test_error_type(self) -> None:
        """ConfigFileError carries the parts of its message."""
        e = ConfigFileError("ws.toml", 3, "max_queue", "must be >= 1", column=None)
        self.assertEqual(str(e), "ws.toml:3: max_queue: must be >= 1")
        self.assertEqual((e.path, e.line, e.key, e.problem), (
            "ws.toml", 3, "max_queue", "must be >= 1"))  # fmt: skip
        self.assertEqual(str(ConfigFileError("f", None, None, "x")), "f: x")
        self.assertEqual(str(ConfigFileError("f", 2, None, "x", 5)), "f:2:5: x")

    def test_is_a_config_error(self) -> None:
        """It is a ConfigError (what callers of the config catch), and a
        column without a line is not shown."""
        e = ConfigFileError("f", None, "k", "bad", column=7)
        self.assertIsInstance(e, ConfigError)
        self.assertEqual(str(e), "f: k: bad")
        self.assertEqual(e.column, 7)


class SyntaxErrorTests(SynchronousTestCase):
    """tomllib's messages, made into ConfigFileErrors."""

    def test_line_column_and_key(self) -> None:
        """tomllib's line and column, and the key on that line."""
        e = toml_error('ports = ["tcp:0"]\nmax_queue = \n')
        self.assertEqual(str(e), "ws.toml:2:13: max_queue: invalid value (TOML syntax)")
        self.assertEqual((e.line, e.column, e.key), (2, 13, "max_queue"))
        self.assertEqual(
            str(toml_error("a = 1 2\n")),
            "ws.toml:1:7: a: expected newline or end of document "
            "after a statement (TOML syntax)",
        )

    def test_no_key_on_the_line(self) -> None:
        """A line that is not ``key =`` (a table header) names no key."""
        e = toml_error('[tls]\nkey = "x"\n\n[tls]\n')
        self.assertEqual(
            str(e), "ws.toml:4:5: cannot declare ('tls',) twice (TOML syntax)"
        )
        self.assertIsNone(e.key)

    def test_given_twice(self) -> None:
        """A key given twice is pointed at where it is repeated, dotted
        keys as the file spells them."""
        e = toml_error("max_queue = 1\n\n# again\nmax_queue = 2\n")
        self.assertEqual(str(e), "ws.toml:4: max_queue: given twice (TOML syntax)")
        e = toml_error('[tls]\nkey = "a"\nkey = "b"\n')
        self.assertEqual(str(e), "ws.toml:3: tls.key: given twice (TOML syntax)")

    def test_end_of_document(self) -> None:
        """An error at the end of the document is on the last line, with
        its key (quoted keys unquoted)."""
        e = toml_error('x = 1\n"q k" = ')
        self.assertEqual(str(e), "ws.toml:2: q k: invalid value (TOML syntax)")
        self.assertIsNone(e.column)
        e = toml_error("a = [1,\n")
        self.assertEqual(str(e), "ws.toml:1: a: invalid value (TOML syntax)")

    def test_message_without_a_place(self) -> None:
        """A message without tomllib's location is kept whole, first letter
        lowered, with no line; an empty text does not fail."""
        e = syntax_error("ws.toml", "", "Something odd")
        self.assertEqual(str(e), "ws.toml: something odd (TOML syntax)")
        self.assertIsNone(e.line)
        e = syntax_error("ws.toml", "", "Invalid value (at end of document)")
        self.assertEqual(str(e), "ws.toml:1: invalid value (TOML syntax)")
