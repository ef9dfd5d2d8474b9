"""``twistd ws --log-format json`` with authentication: one JSON object per
line, a connection event at each open and close, and no credential or
payload anywhere in the log (nor in the text log)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.integration.support import Twistd, in_thread

SECRETS = {
    "password": "PW-SECRET-1",
    "wrong password": "PW-WRONG-SECRET-2",
    "token": "TOKEN-SECRET-3",
    "bad token": "TOKEN-BAD-SECRET-4",
    "api key": "KEY-SECRET-77",
    "bad api key": "KEY-BAD-SECRET-5",
    "query": "QUERY-SECRET-6",
    "cookie": "COOKIE-SECRET-7",
    "bearer": "BEARER-SECRET-8",
    "404 token": "TOKEN-SECRET-9",
    "payload": "PAYLOAD-SECRET-A",
    "binary payload": "PAYLOAD-SECRET-B",
    "bad utf-8 payload": "PAYLOAD-SECRET-C",
}


def check_token(token: str) -> str | None:
    """The token route's checker (``auth = { token = ... }``)."""
    return "tester" if token == SECRETS["token"] else None


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def config_file(directory: Path) -> Path:
    """A --config file: the echo app on /open, and three routes, one per
    kind of credential (Basic, query token, API key)."""
    digest = base64.b64encode(hashlib.sha1(SECRETS["password"].encode()).digest())
    (directory / "users").write_text(f"ann:{{SHA}}{digest.decode()}\n")
    path = directory / "ws.toml"
    path.write_text(
        'app = "echo"\n'
        'path = "/open"\n'
        "[[route]]\n"
        'path = "/basic"\n'
        'handler = "echo"\n'
        'auth = { htpasswd = "users" }\n'
        "[[route]]\n"
        'path = "/token"\n'
        'handler = "echo"\n'
        'auth = { token = "tests.integration.test_logs:check_token" }\n'
        "[[route]]\n"
        'path = "/key"\n'
        'handler = "echo"\n'
        f'auth = {{ api_keys = {{ "{SECRETS["api key"]}" = "svc" }} }}\n'
    )
    return path


def traffic(base: str) -> dict[str, Any]:
    """Every way a credential or a payload reaches the server."""
    seen: dict[str, Any] = {}

    def echo(url: str, message: Any, **kw: Any) -> Any:
        with connect(url, open_timeout=10, **kw) as ws:
            ws.send(message)
            return ws.recv(timeout=10)

    def status(url: str, **kw: Any) -> int:
        try:
            with connect(url, open_timeout=10, **kw):
                return 101
        except InvalidStatus as e:
            return e.response.status_code

    s = SECRETS
    seen["basic"] = echo(
        base + "/basic", s["payload"], additional_headers=basic("ann", s["password"])
    )
    seen["basic, wrong"] = status(
        base + "/basic", additional_headers=basic("ann", s["wrong password"])
    )
    seen["token"] = echo(f"{base}/token?token={s['token']}", s["payload"])
    seen["token, bad"] = status(f"{base}/token?token={s['bad token']}")
    seen["key"] = echo(
        base + "/key",
        s["binary payload"].encode(),
        additional_headers={"X-API-Key": s["api key"]},
    )
    seen["key, bad"] = status(
        base + "/key", additional_headers={"X-API-Key": s["bad api key"]}
    )
    seen["open"] = echo(
        f"{base}/open?room=1&access_token={s['query']}",
        s["payload"],
        additional_headers={
            "Cookie": f"sid={s['cookie']}",
            "Authorization": f"Bearer {s['bearer']}",
        },
    )
    seen["404"] = status(f"{base}/nowhere?token={s['404 token']}")
    with connect(base + "/open", open_timeout=10) as ws:  # invalid UTF-8: 1007
        ws.send(b"\xff" + s["bad utf-8 payload"].encode(), text=True)
        try:
            ws.recv(timeout=10)
        except Exception:
            pass
        seen["bad utf-8"] = ws.close_code
    return seen


class SecretsNotLoggedTests(TestCase):
    """A server with auth and query tokens, its whole log scanned."""

    timeout = 120

    @inlineCallbacks
    def run_server(self, *args: str) -> Any:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        server = Twistd(
            self, "--config", str(config_file(directory)), "--connection-log", *args
        )
        yield in_thread(server.wait_listening)
        seen = yield in_thread(traffic, f"ws://127.0.0.1:{server.port}")
        self.assertEqual(
            seen,
            {
                "basic": SECRETS["payload"],
                "basic, wrong": 401,
                "token": SECRETS["payload"],
                "token, bad": 403,
                "key": SECRETS["binary payload"].encode(),
                "key, bad": 403,
                "open": SECRETS["payload"],
                "404": 404,
                "bad utf-8": 1007,
            },
        )
        server.stop()  # the log is complete once it has exited
        return server.read_log()

    def assert_no_secret(self, log: str) -> None:
        for what, secret in SECRETS.items():
            self.assertNotIn(secret, log, what)
        # nor the Basic credentials as sent
        for password in (SECRETS["password"], SECRETS["wrong password"]):
            encoded = base64.b64encode(f"ann:{password}".encode()).decode()
            self.assertNotIn(encoded, log)

    @inlineCallbacks
    def test_json_log(self) -> None:
        """--log-format json: every line is one JSON object; each opened
        connection has an open and a close event with its fields; no
        password, token, API key, cookie, query secret or payload in it."""
        log = yield self.run_server("--log-format", "json")
        records = [json.loads(line) for line in log.splitlines()]  # all JSON
        self.assertGreater(len(records), 10)
        for record in records:
            self.assertEqual(
                set(record) >= {"time", "level", "namespace", "message"}, True
            )
        opened = [r for r in records if r.get("event") == "connection.open"]
        closed = [r for r in records if r.get("event") == "connection.close"]
        self.assertEqual(
            sorted(r["route"] for r in opened),
            ["/basic", "/key", "/open", "/open", "/token"],
        )
        self.assertEqual(len(closed), len(opened))
        by_id = {r["conn_id"]: r for r in closed}
        for record in opened:
            end = by_id[record["conn_id"]]
            self.assertEqual(end["peer"], "127.0.0.1")
            self.assertGreater(end["bytes_in"], 0)
            self.assertGreater(end["bytes_out"], 0)
            self.assertGreaterEqual(end["duration"], 0)
            self.assertIn(end["code"], (1000, 1007))
        self.assertTrue([r for r in records if r["level"] == "warn"])  # auth
        self.assert_no_secret(log)

    @inlineCallbacks
    def test_text_log(self) -> None:
        """The default text log carries the connection events too, and no
        secret either."""
        log = yield self.run_server()
        self.assertIn("[wsplugin.connections#info] connection ", log)
        self.assert_no_secret(log)
