"""wsplugin.logs: one JSON object per line, credentials scrubbed, and how
``twistd ws --log-format json`` sets twistd's log observer."""

from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.logger import Logger, LogPublisher
from twisted.python import usage
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from wsplugin import logs
from wsplugin.logs import event_as_json, json_observer, scrub, twistd_json_observer


def emit(*calls: tuple[str, str, dict]) -> list[dict]:
    """Log through a Logger into a JSON observer; the parsed lines."""
    out = io.StringIO()
    publisher = LogPublisher(json_observer(out))
    log = Logger(namespace="test.ns", observer=publisher)
    for level, fmt, fields in calls:
        getattr(log, level)(fmt, **fields)
    return [json.loads(line) for line in out.getvalue().splitlines()]


class ScrubTests(SynchronousTestCase):
    """Credential-looking values are blanked in any text."""

    def test_headers_and_schemes(self) -> None:
        """Authorization, Cookie and API key headers, Basic/Bearer tokens."""
        for text, secret in [
            ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
            ("authorization=Bearer abc.def.ghi", "abc.def.ghi"),
            ("Cookie: sid=s3cr3t; theme=dark", "s3cr3t"),
            ("X-API-Key: k-123456", "k-123456"),
            ("headers {'cookie': 'sid=zzz999'}", "zzz999"),
        ]:
            self.assertNotIn(secret, scrub(text), text)
            self.assertIn("[redacted]", scrub(text), text)

    def test_query_tokens(self) -> None:
        """token=, access_token=, api_key=, password= in a query."""
        for text in [
            "GET /ws?token=SECRET1 HTTP/1.1",
            "/ws?room=1&access_token=SECRET1&x=2",
            "/ws?api_key=SECRET1",
            "/login?user=ann&password=SECRET1",
            "/ws?session=SECRET1",
        ]:
            self.assertNotIn("SECRET1", scrub(text), text)
        self.assertEqual(scrub("/ws?room=1"), "/ws?room=1")

    def test_plain_text_kept(self) -> None:
        """Ordinary log text is left alone."""
        line = "connection 1 closed: 127.0.0.1 on /chat, code 1000 'bye', 0.003 s"
        self.assertEqual(scrub(line), line)


class EventAsJSONTests(SynchronousTestCase):
    """One event, one line of JSON."""

    def test_fields(self) -> None:
        """Time (UTC, ms), level, namespace, the formatted message, and the
        event's plain fields; objects only through the message."""
        (record,) = emit(
            ("info", "hello {who} {n}", {"who": "ann", "n": 3, "obj": object()})
        )
        self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "test.ns")
        self.assertEqual(record["message"], "hello ann 3")
        self.assertEqual((record["who"], record["n"]), ("ann", 3))
        self.assertNotIn("obj", record)
        self.assertFalse([k for k in record if k.startswith("log_")])

    def test_secrets_scrubbed(self) -> None:
        """A field named like a credential is redacted; credentials inside
        the message and other fields are scrubbed."""
        (record,) = emit(
            (
                "warn",
                "request {uri} with {header}",
                {
                    "uri": "/ws?token=T0KEN",
                    "header": "Authorization: Basic QWxhZGRpbjpvcGVu",
                    "token": "T0KEN",
                },
            )
        )
        line = json.dumps(record)
        self.assertNotIn("T0KEN", line)
        self.assertNotIn("QWxhZGRpbjpvcGVu", line)
        self.assertEqual(record["token"], "[redacted]")
        self.assertEqual(record["level"], "warn")

    def test_failure(self) -> None:
        """A logged failure adds its traceback."""
        out = io.StringIO()
        log = Logger(namespace="t", observer=LogPublisher(json_observer(out)))
        try:
            raise ValueError("boom")
        except ValueError:
            log.failure("it failed")
        record = json.loads(out.getvalue())
        self.assertEqual(record["level"], "critical")
        self.assertIn("ValueError: boom", record["traceback"])

    def test_one_line(self) -> None:
        """Newlines in fields stay inside the JSON string: one event, one line."""
        out = io.StringIO()
        log = Logger(namespace="t", observer=LogPublisher(json_observer(out)))
        log.info("{reason}", reason="a\nb")
        self.assertEqual(len(out.getvalue().splitlines()), 1)
        self.assertEqual(json.loads(out.getvalue())["reason"], "a\nb")

    def test_without_time(self) -> None:
        """An event without log_time still serialises."""
        record = json.loads(event_as_json({"log_format": "x"}))
        self.assertIsNone(record["time"])
        self.assertEqual(record["message"], "x")


class TwistdTests(SynchronousTestCase):
    """``twistd ws --log-format json`` and ``twistd --logger``."""

    def setUp(self) -> None:
        self.addCleanup(logs.use_for_twistd, None, True)

    def parse(self, *argv: str) -> ServerOptions:
        config = ServerOptions()
        config.parseOptions(list(argv))
        return config

    def test_json_to_logfile(self) -> None:
        """--log-format json makes twistd's observer the JSON one, writing to
        twistd's --logfile."""
        path = Path(self.mktemp())
        config = self.parse("--logfile", str(path), "ws", "--log-format", "json")
        self.assertIs(config["logger"], twistd_json_observer)
        observer = config["logger"]()
        Logger(namespace="n", observer=observer).info("{x}", x=1)
        observer._outFile.close()  # the LogFile twistd would keep open
        (record,) = [json.loads(line) for line in path.read_text().splitlines()]
        self.assertEqual(record["x"], 1)

    def test_json_to_stdout(self) -> None:
        """-n without --logfile (or --logfile -): standard output, as twistd."""
        import sys

        self.parse("-n", "ws", "--log-format", "json")
        self.assertIs(twistd_json_observer()._outFile, sys.stdout)
        self.parse("-n", "--logfile", "-", "ws", "--log-format", "json")
        self.assertIs(twistd_json_observer()._outFile, sys.stdout)

    def test_text_leaves_twistd_alone(self) -> None:
        """The default, text, keeps twistd's own observer."""
        config = self.parse("ws", "--log-format", "text")
        self.assertIsNone(config["logger"])

    def test_conflicts(self) -> None:
        """json with twistd's --syslog or --logger, or an unknown format,
        is a usage error naming the problem."""
        for argv, words in [
            (["--syslog", "ws", "--log-format", "json"], "--syslog"),
            (
                ["--logger", "wsplugin.logs.twistd_json_observer", "ws"]
                + ["--log-format", "json"],
                "--logger",
            ),
            (["ws", "--log-format", "xml"], "text or json"),
        ]:
            with self.assertRaises(usage.UsageError) as e:
                self.parse(*argv)
            self.assertIn(words, str(e.exception), argv)

    def test_logger_option(self) -> None:
        """``twistd --logger wsplugin.logs.twistd_json_observer`` resolves."""
        config = self.parse("--logger", "wsplugin.logs.twistd_json_observer", "ws")
        self.assertIs(config["logger"], twistd_json_observer)
