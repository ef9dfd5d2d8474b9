"""``wsplugin.backplane._url``: backplane URLs and their redaction."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from wsplugin.backplane import RedisURL, parse_backplane_url
from wsplugin.errors import ConfigError


class UrlTests(SynchronousTestCase):
    def test_valid_forms(self) -> None:
        """The documented URL forms parse to their parts."""
        cases: dict[str, RedisURL | None] = {
            "local": None,
            "redis://localhost": RedisURL("redis", "localhost", 6379),
            "redis://:p%40ss@10.0.0.5:6380/2": RedisURL(
                "redis", "10.0.0.5", 6380, db=2, password="p@ss"
            ),
            "redis://user:pw@h/0?prefix=app1": RedisURL(
                "redis", "h", 6379, username="user", password="pw", prefix="app1"
            ),
            "redis://[::1]:7000?db=4": RedisURL("redis", "::1", 7000, db=4),
            "rediss://h:6390/1?ca=/etc/ca.pem": RedisURL(
                "rediss", "h", 6390, db=1, ca_file="/etc/ca.pem"
            ),
            "unix:///run/redis.sock": RedisURL("unix", path="/run/redis.sock"),
            "unix:///run/redis.sock?db=3&password=a%20b&user=u": RedisURL(
                "unix", path="/run/redis.sock", db=3, password="a b", username="u"
            ),
            "unix://:pw@/run/r.sock": RedisURL(
                "unix", path="/run/r.sock", password="pw"
            ),
            "REDIS://H": RedisURL("redis", "h", 6379),
        }
        for url, expected in cases.items():
            self.assertEqual(parse_backplane_url(url), expected, url)
        parsed = parse_backplane_url("rediss://h")
        assert parsed is not None
        self.assertTrue(parsed.tls)

    def test_invalid_forms(self) -> None:
        """Each bad form is a ConfigError that says what is wrong."""
        cases = {
            "http://h": "scheme",
            "redis:///0": "host is required",
            "redis://h:0": "port",
            "redis://h:99999": "port",
            "redis://h:x": "port",
            "redis://h/x": "database index",
            "redis://h/-1": "database index",
            "redis://h/1?db=2": "not both",
            "redis://h?db=1&db=2": "twice",
            "redis://h?timeout=3": "unknown option 'timeout'",
            "redis://h?ca=/x": "unknown option 'ca'",
            "redis://h#frag": "fragment",
            "redis://h?prefix=a/b": "prefix",
            "redis://:a@h?password=b": "password is given twice",
            "redis://u@h?user=v": "user is given twice",
            "redis://h?x": "key=value",
            "unix://host/run/r.sock": "three slashes",
            "unix://": "absolute",
            "unix:///": "absolute",
            "unix:///r.sock?db=a": "database index",
        }
        for url, words in cases.items():
            with self.assertRaises(ConfigError, msg=url) as caught:
                parse_backplane_url(url)
            self.assertIn(words, str(caught.exception), url)
        with self.assertRaises(ConfigError):
            parse_backplane_url(5)  # type: ignore[arg-type]

    def test_passwords_never_shown(self) -> None:
        """Neither repr, redacted() nor an error message shows a password."""
        url = parse_backplane_url("redis://u:hunter2@h:1/3")
        assert url is not None
        self.assertNotIn("hunter2", repr(url))
        self.assertEqual(url.redacted(), "redis://u:***@h:1/3")
        unix = parse_backplane_url("unix:///s.sock?password=hunter2")
        assert unix is not None
        self.assertEqual(unix.redacted(), "unix://:***@/s.sock?db=0")
        self.assertEqual(
            parse_backplane_url("redis://[::1]").redacted(),  # type: ignore[union-attr]
            "redis://[::1]:6379/0",
        )
        with self.assertRaises(ConfigError) as caught:
            parse_backplane_url("redis://:hunter2@h:x")
        self.assertNotIn("hunter2", str(caught.exception))
