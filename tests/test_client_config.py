"""Tests for ``wsplugin.client._config``: ``ClientConfig`` validation, pure."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsplugin.client import ClientConfig
from wsplugin.client._config import make_config
from wsplugin.errors import ConfigError


class ConfigTests(SynchronousTestCase):
    """``ClientConfig`` validates options when it is built."""

    def test_headers_forms_and_merging(self) -> None:
        """Mappings and pairs are accepted; repeated names are joined, Cookie
        with ``; ``; Origin and User-Agent replace the defaults."""
        config = ClientConfig(
            headers=[
                ("Cookie", "a=1"),
                ("cookie", "b=2"),
                ("X-Tag", "1"),
                ("X-Tag", "2"),
                ("Origin", "https://app.example"),
                ("User-Agent", "probe/1"),
            ]
        )
        headers, origin, agent = config.request_headers()
        self.assertEqual(headers, {"Cookie": "a=1; b=2", "X-Tag": "1, 2"})
        self.assertEqual((origin, agent), ("https://app.example", "probe/1"))
        self.assertEqual(ClientConfig(headers={"A": "b"}).headers, (("A", "b"),))

    def test_bad_headers(self) -> None:
        """Header injection, non-token names and handshake headers are refused."""
        for headers, words in [
            ({"X": "a\r\nEvil: 1"}, "control"),
            ({"Bad Name": "x"}, "invalid request header name"),
            ({"Sec-WebSocket-Protocol": "x"}, "subprotocols="),
            ({"Host": "x"}, "set by the handshake"),
            ("X: y", "mapping"),
            ([("only-name",)], "pairs"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                ClientConfig(headers=headers)
            self.assertIn(words, str(caught.exception))

    def test_limits_and_tls_options(self) -> None:
        """Non-positive timeouts, negative sizes and conflicting TLS options
        are refused; 0 turns a size limit off on purpose."""
        self.assertEqual(ClientConfig(max_message_size=0).max_message_size, 0)
        for options in [
            {"open_timeout": 0},
            {"close_timeout": -1},
            {"max_message_size": -1},
            {"max_queue": 0},
            {"subprotocols": ["a b"]},
            {"tls": object(), "ca_file": "x.pem"},
            {"ca_file": "x.pem", "trust": b"x"},
        ]:
            self.assertRaises(ConfigError, ClientConfig, **options)
        self.assertEqual(ClientConfig(subprotocols="chat").subprotocols, ("chat",))

    def test_make_config(self) -> None:
        """``config=`` or keyword options, not both; unknown options name
        themselves."""
        config = ClientConfig(max_queue=4)
        self.assertIs(make_config(config, {}), config)
        self.assertEqual(make_config(None, {"max_queue": 4}), config)
        with self.assertRaises(ConfigError) as caught:
            make_config(config, {"origin": "x", "headers": {}})
        self.assertIn("got headers, origin", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            make_config(None, {"colour": "red"})
        self.assertIn("colour", str(caught.exception))
