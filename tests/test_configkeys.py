"""wsplugin._configkeys: the keys of ``twistd ws --config``'s file, derived
from the options, and the value checks shared by the top level and the
``[[route]]`` tables."""

from __future__ import annotations

import dataclasses
import datetime

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from wsplugin import TLSOptions
from wsplugin._configkeys import (
    Key,
    describe_value,
    given_options,
    option_keys,
    suggest,
    type_problem,
)
from wsplugin.config import ServerConfig
from wsplugin.tap import Options


class KeysTests(SynchronousTestCase):
    """The keys are derived from the options: every flag has one."""

    def test_every_flag_has_a_key_and_back(self) -> None:
        """Each long option of ``twistd ws`` (but --help, --version and
        --config) is exactly one key, and each key is an option."""
        options = Options()
        flags = {
            options.synonyms.get(o.rstrip("="), o.rstrip("=")) for o in options.longOpt
        } - {"help", "version", "config"}
        keys = option_keys(options)
        self.assertEqual(sorted(k.flag for k in keys.values()), sorted(flags))
        self.assertEqual(len(keys), len(flags))

    def test_names(self) -> None:
        """Flags become keys with ``_``; --no-X is X; repeatable flags are
        lists under their plural; --tls-* are the [tls] table's keys."""
        keys = option_keys(Options())
        expected = {
            "max_message_size": ("max-message-size", "int"),
            "idle_timeout": ("idle-timeout", "float"),
            "send_buffer_policy": ("send-buffer-policy", "str"),
            "utf8_validation": ("no-utf8-validation", "negated"),
            "compression": ("compression", "flag"),
            "ports": ("port", "list"),
            "allowed_origins": ("allowed-origin", "list"),
            "subprotocols": ("subprotocol", "list"),
            "per_ip_exempt": ("per-ip-exempt", "list"),
            "public_paths": ("public-path", "list"),
            "tls.certificate": ("tls-cert", "str"),
            "tls.alpn": ("tls-alpn", "csv"),
            "app": ("app", "str"),
            "auth_file": ("auth-file", "str"),
        }
        for name, (flag, kind) in expected.items():
            self.assertEqual((keys[name].flag, keys[name].kind), (flag, kind), name)
        self.assertEqual(
            {k.name for k in keys.values() if k.is_file},
            {
                "static",
                "auth_file",
                "tls.certificate",
                "tls.key",
                "tls.chain",
                "tls.client_ca",
            },
        )

    def test_tls_keys_are_tls_options_fields(self) -> None:
        """The [tls] keys are TLSOptions' field names, one for one."""
        keys = option_keys(Options())
        tls = {k.name[4:] for k in keys.values() if k.name.startswith("tls.")}
        self.assertEqual(tls, {f.name for f in dataclasses.fields(TLSOptions)})

    def test_every_config_field_is_a_key(self) -> None:
        """Every ServerConfig option is a top-level key of the same name."""
        keys = option_keys(Options())
        for name in ServerConfig.option_names():
            self.assertIn(name, keys)

    def test_given_options(self) -> None:
        """The options given are recorded by their long names, from short
        options, abbreviations and ``--x=value`` forms, whatever the value."""
        options = Options()
        self.assertEqual(
            given_options(
                options,
                ["-p", "tcp:1", "-a", "echo", "--max-q", "32", "--no-utf8-validation"]
                + ["--path=/x", "--per-ip-exempt", "none"],
            ),
            {"port", "app", "max-queue", "no-utf8-validation", "path", "per-ip-exempt"},
        )
        self.assertEqual(given_options(options, ["--no-such-flag"]), set())


class Small(usage.Options):
    """Options of every shape a key is derived from."""

    optFlags = [
        ["verbose", "v", "talk"],
        ["no-colour", None, "plain"],
        ["help", "h", ""],
    ]
    optParameters = [
        ["count", "c", 1, "a number", int],
        ["ratio", None, 0.5, "a fraction", float],
        ["name", None, None, "a string"],
        ["level", None, 3, "passed through its coercer", lambda s: int(s) * 2],
        ["tls-cert", None, None, "a certificate"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["hosts"] = []

    def opt_host(self, value: str) -> None:
        """Repeatable."""
        self["hosts"].append(value)

    def opt_mode(self, value: str) -> None:
        """Takes a string."""

    def opt_reset(self) -> None:
        """A switch."""


class DerivedKeyTests(SynchronousTestCase):
    """option_keys on options of each kind, apart from twistd ws."""

    def test_kinds(self) -> None:
        """Flags, negated flags, typed parameters, a coerced value, a
        repeatable option, an option method with and without argument."""
        keys = option_keys(Small())
        got = {name: (k.flag, k.kind, k.dest, k.is_file) for name, k in keys.items()}
        self.assertEqual(
            got,
            {
                "verbose": ("verbose", "flag", "verbose", False),
                "colour": ("no-colour", "negated", "no-colour", False),
                "count": ("count", "int", "count", False),
                "ratio": ("ratio", "float", "ratio", False),
                "name": ("name", "str", "name", False),
                "level": ("level", "value", "level", False),
                "tls.certificate": ("tls-cert", "str", "tls-cert", True),
                "hosts": ("host", "list", "hosts", False),
                "mode": ("mode", "call", "mode", False),
                "reset": ("reset", "switch", "reset", False),
            },
        )
        self.assertEqual(keys["tls.certificate"].location, ("tls", "certificate"))
        self.assertEqual(keys["count"].location, ("count",))

    def test_key_is_a_value(self) -> None:
        """Keys compare by value and cannot be changed."""
        key = Key("a", "a", "int", "a")
        self.assertEqual(key, Key("a", "a", "int", "a"))
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, key, "kind", "str")


class ValueTests(SynchronousTestCase):
    """How values are described and checked."""

    def test_describe_value(self) -> None:
        """Each TOML type named as an error message shows it."""
        self.assertEqual(describe_value(True), "true (a boolean)")
        self.assertEqual(describe_value(3), "3 (an integer)")
        self.assertEqual(describe_value(1.5), "1.5 (a number)")
        self.assertEqual(describe_value("x"), "'x' (a string)")
        self.assertEqual(describe_value([1]), "a list")
        self.assertEqual(describe_value({}), "a table")
        self.assertEqual(
            describe_value(datetime.date(2024, 1, 2)), "2024-01-02 (a date or time)"
        )

    def test_type_problem_accepts(self) -> None:
        """The right type of each kind passes (an int is a float too)."""
        for kind, value in [
            ("flag", True),
            ("negated", False),
            ("switch", True),
            ("bool", False),
            ("int", 0),
            ("float", 2),
            ("float", 2.5),
            ("str", ""),
            ("call", "x"),
            ("value", "1k"),
            ("value", 3),
            ("list", ["a"]),
            ("csv", []),
        ]:
            self.assertIsNone(type_problem(kind, value), (kind, value))

    def test_type_problem_refuses(self) -> None:
        """A wrong type says what was wanted and what was given; booleans
        are never numbers."""
        cases = [
            ("flag", 1, "must be true or false, not 1 (an integer)"),
            ("int", True, "must be an integer, not true (a boolean)"),
            ("int", 1.5, "must be an integer, not 1.5 (a number)"),
            ("float", "1", "must be a number, not '1' (a string)"),
            ("str", 1, "must be a string, not 1 (an integer)"),
            ("value", False, "must be a string or a number, not false (a boolean)"),
            ("list", "a", 'must be a list of strings, e.g. ["a", "b"], not \'a\''),
            ("csv", ["a", ""], "must be a list of non-empty strings; it holds ''"),
            ("list", ["a", 2], "must be a list of non-empty strings; it holds 2"),
        ]
        for kind, value, expected in cases:
            problem = type_problem(kind, value)
            assert problem is not None, (kind, value)
            self.assertTrue(problem.startswith(expected), (problem, expected))

    def test_suggest(self) -> None:
        """An abbreviation suggests the shortest key it starts; a typo the
        closest key; nothing close, nothing."""
        known = ["max_queue", "max_queue_bytes", "idle_timeout"]
        self.assertEqual(suggest("max_q", known), "; did you mean max_queue?")
        self.assertEqual(suggest("idle_timout", known), "; did you mean idle_timeout?")
        self.assertEqual(suggest("zzz", known), "")
        self.assertEqual(suggest("x", iter(())), "")
