"""``wsplugin.backplane._types``: node and connection ids, and the wire
codec both engines share."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsplugin.backplane import (
    Command,
    LocalBackplane,
    Publication,
    StreamPosition,
    holder_of,
    make_node_id,
    new_connection_id,
)
from wsplugin.backplane._types import WireError, decode, encode_command
from wsplugin.backplane._types import encode_publication as encode_pub
from wsplugin.errors import ConfigError


class IdentityTests(SynchronousTestCase):
    def test_node_ids(self) -> None:
        """A node id is <name>.<worker>; the default name is random."""
        self.assertEqual(make_node_id("web-1", 3), "web-1.3")
        a, b = make_node_id(), make_node_id()
        self.assertNotEqual(a, b)
        self.assertTrue(a.endswith(".0"))
        for bad in ("", "a.b", "a:b", "x" * 65, "é"):
            with self.assertRaises(ConfigError):
                make_node_id(bad)
        for worker in (-1, 1_000_000, True, "1"):
            with self.assertRaises(ConfigError):
                make_node_id("a", worker)  # type: ignore[arg-type]
        with self.assertRaises(ConfigError):
            LocalBackplane(node_id="nodot")

    def test_connection_ids_name_their_holder(self) -> None:
        """A connection id names the node that holds it; other ids name none."""
        conn = new_connection_id("web-1.3")
        self.assertRegex(conn, r"^web-1\.3\.[0-9a-f]{32}$")
        self.assertEqual(holder_of(conn), "web-1.3")
        self.assertNotEqual(conn, new_connection_id("web-1.3"))
        for other in ("3f2b", "a.b.c", "web.1." + "0" * 31, "", 5):
            self.assertIsNone(holder_of(other), other)  # type: ignore[arg-type]
        self.assertTrue(
            LocalBackplane(node_id="q.2").new_connection_id().startswith("q.2.")
        )


class CodecTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """Publications and commands survive encoding, filters included."""
        pub = Publication(
            "room", "h\u00e9".encode(), False, None, None, "chat", ("a",), ("b",), "n.0"
        )
        back, done = decode(encode_pub(pub), offset=4, epoch="e1")
        self.assertEqual(
            back, Publication(**{**_fields(pub), "offset": 4, "epoch": "e1"})
        )
        self.assertFalse(done)
        self.assertEqual(back.position, StreamPosition("e1", 4))
        self.assertEqual(back.message, "h\u00e9")
        everyone = Publication(None, b"\x00", True, origin="n.0")
        back, done = decode(encode_pub(everyone, local_done=True))
        self.assertEqual((back, done), (everyone, True))
        self.assertIsNone(everyone.position)
        self.assertEqual(everyone.message, b"\x00")
        for cmd in (
            Command("send", "n.0.x", b"\x01", True, origin="m.0"),
            Command("close", "n.0.x", code=4001, reason="r", origin="m.0"),
            Command("close_all", None, code=1001, reason="", origin="m.0"),
        ):
            self.assertEqual(decode(encode_command(cmd)), (cmd, False))

    @settings(max_examples=100, derandomize=True, deadline=None)
    @given(
        channel=st.none() | st.text(min_size=1, max_size=20),
        data=st.binary(max_size=64),
        protocol=st.none() | st.text(max_size=10),
        ids=st.none() | st.lists(st.text(max_size=8), max_size=3).map(tuple),
    )
    def test_round_trip_property(
        self, channel: Any, data: bytes, protocol: Any, ids: Any
    ) -> None:
        """Any publication decodes to itself (payload bytes are untouched,
        newlines included)."""
        pub = Publication(channel, data, True, protocol=protocol, ids=ids, origin="o.0")
        self.assertEqual(decode(encode_pub(pub))[0], pub)

    def test_malformed(self) -> None:
        """Bytes that are not our messages raise WireError."""
        for raw in (
            b"no newline",
            b"not json\nx",
            b"[1]\nx",
            b'{"v":"9","k":"p"}\n',
            b'{"v":"1","k":"z"}\n',
            b'{"v":"1"}\n',
            b'{"v":"1","k":"c","t":"explode"}\n',
            b'{"v":"1","k":"c","t":"close","d":"x"}\n',
        ):
            with self.assertRaises(WireError, msg=raw):
                decode(raw)


def _fields(pub: Publication) -> dict[str, Any]:
    return {name: getattr(pub, name) for name in Publication.__slots__}
