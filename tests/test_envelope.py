"""wsplugin._envelope: the wsplugin.channels.v1 wire format."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._envelope import (
    MAX_REQUEST,
    EnvelopeError,
    Request,
    encode_error,
    encode_publication,
    encode_request,
    encode_subscribed,
    encode_unsubscribed,
    parse_request,
    parse_server_message,
)

channels = st.text(min_size=1, max_size=40)
payloads = st.one_of(st.text(max_size=200), st.binary(max_size=200))
positions = st.none() | st.tuples(
    st.text(alphabet="0123456789abcdef", min_size=1, max_size=12),
    st.integers(min_value=0, max_value=2**53),
)


class RoundTripTests(SynchronousTestCase):
    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(channels, positions)
    def test_subscribe(self, channel: str, since: tuple[str, int] | None) -> None:
        """What the client library encodes, the server parses back."""
        request = parse_request(encode_request("subscribe", channel, since=since))
        self.assertEqual(request, Request("subscribe", channel, since=since))

    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(channels, payloads)
    def test_publish(self, channel: str, data: str | bytes) -> None:
        """Text stays text, bytes come back as the same bytes (base64)."""
        request = parse_request(encode_request("publish", channel, data=data))
        self.assertEqual(request, Request("publish", channel, data=data))

    @settings(max_examples=100, deadline=None, derandomize=True)
    @given(st.none() | channels, payloads, positions)
    def test_publication(
        self, channel: str | None, data: str | bytes, pos: tuple[str, int] | None
    ) -> None:
        """A publication keeps its channel, payload and position."""
        is_binary = isinstance(data, bytes)
        raw = data if is_binary else data.encode()
        epoch, offset = pos if pos else (None, None)
        text = encode_publication(channel, raw, is_binary, epoch, offset).decode()
        msg = parse_server_message(text)
        self.assertEqual(
            (msg["channel"], msg["data"], msg["epoch"], msg["offset"]),
            (channel, data, epoch, offset),
        )


class ServerMessageTests(SynchronousTestCase):
    def test_subscribed_and_others(self) -> None:
        msg = parse_server_message(encode_subscribed("c", "too_old", ("e", 9), 0))
        self.assertEqual((msg["status"], msg["position"]), ("too_old", ("e", 9)))
        msg = parse_server_message(encode_subscribed("c", "unavailable", None, 0))
        self.assertIsNone(msg["position"])
        self.assertEqual(parse_server_message(encode_unsubscribed("c"))["channel"], "c")
        self.assertEqual(parse_server_message(encode_error("no", "c"))["error"], "no")

    def test_malformed_server_messages(self) -> None:
        for text in (
            "[]",
            '{"type": "what"}',
            '{"type": "publication", "epoch": "e", "data": "x"}',
            '{"type": "publication", "channel": 3, "data": "x"}',
            '{"type": "subscribed", "channel": "c"}',
            '{"type": "unsubscribed"}',
        ):
            self.assertRaises(EnvelopeError, parse_server_message, text)


class RequestErrorTests(SynchronousTestCase):
    def test_each_error_says_what(self) -> None:
        """Malformed requests raise EnvelopeError naming the field."""
        for obj, words in [
            ("not json", "not JSON"),
            ("[1]", "not a JSON object"),
            ({}, "'type' missing"),
            ({"type": "drop"}, "'type' must be"),
            ({"type": "subscribe"}, "'channel'"),
            ({"type": "subscribe", "channel": ""}, "'channel'"),
            ({"type": "subscribe", "channel": "c", "since": 5}, "'since'"),
            ({"type": "subscribe", "channel": "c", "since": {"epoch": "", "offset": 1}},
             "'since.epoch'"),
            ({"type": "subscribe", "channel": "c", "since": ["e", -1]},
             "'since.offset'"),
            ({"type": "subscribe", "channel": "c", "since": ["e", True]},
             "'since.offset'"),
            ({"type": "publish", "channel": "c"}, "'data'"),
            ({"type": "publish", "channel": "c", "data": "!!", "binary": True},
             "base64"),
        ]:  # fmt: skip
            text = obj if isinstance(obj, str) else json.dumps(obj)
            e = self.assertRaises(EnvelopeError, parse_request, text)
            self.assertIn(words, str(e))

    def test_size_bound(self) -> None:
        """A request longer than MAX_REQUEST is refused before parsing."""
        e = self.assertRaises(EnvelopeError, parse_request, " " * (MAX_REQUEST + 1))
        self.assertIn("longer than", str(e))

    def test_encode_misuse(self) -> None:
        self.assertRaises(ValueError, encode_request, "drop", "c")
        self.assertRaises(ValueError, encode_request, "publish", "c")
