"""Every program in examples/ runs and does what its docstring says."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.integration.support import (
    ROOT,
    VENV_BIN,
    free_port,
    in_thread,
    wait_for_port,
)

EXAMPLES = ROOT / "examples"


class Example:
    """An example program running as a subprocess on a free port."""

    def __init__(
        self,
        test: TestCase,
        *cmd: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"
        endpoint = f"tcp:{self.port}:interface=127.0.0.1"
        args = [a.replace("{endpoint}", endpoint) for a in cmd]
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, **(env or {}), "WSPLUGIN_ENDPOINT": endpoint},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        test.addCleanup(self.stop)

    def stop(self) -> str:
        """SIGTERM the program (bounded wait); returns all it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            output, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        except ValueError:  # already collected by an earlier stop()
            output = ""
        return output or ""


def python(name: str) -> tuple[str, str, str]:
    return (sys.executable, str(EXAMPLES / name), "{endpoint}")


class ExamplesTests(TestCase):
    """Run each example against a real client."""

    timeout = 120

    @inlineCallbacks
    def test_echo_server(self) -> None:
        """echo_server.py echoes text and binary."""
        example = Example(self, *python("echo_server.py"))

        def client() -> tuple[Any, Any]:
            wait_for_port(example.port)
            with connect(example.url, open_timeout=10) as ws:
                ws.send("hi")
                ws.send(b"\x00")
                return ws.recv(timeout=10), ws.recv(timeout=10)

        self.assertEqual((yield in_thread(client)), ("hi", b"\x00"))
        output = yield in_thread(example.stop)
        self.assertEqual(example.proc.returncode, 0, output)
        self.assertNotIn("Traceback", output)

    @inlineCallbacks
    def test_port_taken(self) -> None:
        """Every example server on a port that is taken prints why and exits
        with status 1 (they used to run forever without listening)."""
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        for script in (
            "echo_server.py",
            "broadcast_server.py",
            "user_data.py",
            "awaitable_echo.py",
            "chat_server.py",
            "sparkle_echo.py",
            "auth_basic.py",
            "session_server.py",
            "guarded_server.py",
            "http2_server.py",
        ):
            example = Example(self, *python(script), port=blocker.getsockname()[1])

            def wait(example: Example = example) -> tuple[int, str]:
                output, _ = example.proc.communicate(timeout=30)
                return example.proc.returncode, output

            status, output = yield in_thread(wait)
            self.assertEqual(status, 1, f"{script}: {output}")
            self.assertIn("cannot start: Couldn't listen on 127.0.0.1:", output)
            self.assertIn("Address already in use", output)
            self.assertNotIn("Traceback", output)

    @inlineCallbacks
    def test_broadcast_server(self) -> None:
        """broadcast_server.py sends a message to the others, not the sender,
        and announces joins and leaves."""
        example = Example(self, *python("broadcast_server.py"))

        def client() -> tuple[list[str], list[str]]:
            wait_for_port(example.port)
            with connect(example.url, open_timeout=10) as a:
                a_seen = [a.recv(timeout=10)]  # its own join
                with connect(example.url, open_timeout=10) as b:
                    b_seen = [b.recv(timeout=10)]
                    a_seen.append(a.recv(timeout=10))  # b joined
                    a.send("hello")
                    b_seen.append(b.recv(timeout=10))
                a_seen.append(a.recv(timeout=10))  # b left
            return a_seen, b_seen

        a_seen, b_seen = yield in_thread(client)
        self.assertTrue(all(line.startswith("* ") for line in a_seen), a_seen)
        self.assertEqual([s.split()[-1] for s in a_seen], ["joined", "joined", "left"])
        self.assertTrue(b_seen[1].endswith(": hello"), b_seen)

    @inlineCallbacks
    def test_user_data(self) -> None:
        """user_data.py keeps a session per connection and releases it."""
        example = Example(self, *python("user_data.py"))

        def client() -> list[str]:
            wait_for_port(example.port)
            with connect(example.url, open_timeout=10) as ws:
                ws.send("whoami")
                first = ws.recv(timeout=10)
                ws.send("name ada")
                ws.recv(timeout=10)
                ws.send("whoami")
                return [first, ws.recv(timeout=10)]

        replies = yield in_thread(client)
        self.assertTrue(replies[0].startswith("guest-"), replies)
        self.assertEqual(replies[1], "ada")
        output = yield in_thread(self._stop_after_release, example)
        self.assertIn("(ada) released", output)

    def _stop_after_release(self, example: Example) -> str:
        time.sleep(0.5)  # let the server process the close before SIGTERM
        return example.stop()

    @inlineCallbacks
    def test_awaitable_echo(self) -> None:
        """awaitable_echo.py answers through an async for loop."""
        example = Example(self, *python("awaitable_echo.py"))

        def client() -> str:
            wait_for_port(example.port)
            with connect(example.url, open_timeout=10) as ws:
                ws.send("loop")
                return ws.recv(timeout=10)

        self.assertEqual((yield in_thread(client)), "Echo: loop")

    @inlineCallbacks
    def test_tac(self) -> None:
        """twistd -ny examples/echo.tac serves the echo."""
        example = Example(
            self,
            str(VENV_BIN / "twistd"),
            "-ny",
            str(EXAMPLES / "echo.tac"),
            "--pidfile=",
        )

        def client() -> str:
            wait_for_port(example.port)
            with connect(example.url, open_timeout=10) as ws:
                ws.send("tac")
                return ws.recv(timeout=10)

        self.assertEqual((yield in_thread(client)), "tac")


class FragmentsExampleTests(TestCase):
    """examples/fragments_server.py (issue 15 item 6)."""

    timeout = 120

    @inlineCallbacks
    def test_fragments_server(self) -> None:
        """A message sent in three frames (and websockets' empty last one)
        is counted frame by frame, then answered whole, in frames of at
        most 14 payload bytes."""
        example = Example(self, *python("fragments_server.py"))

        def client() -> tuple[list[str], str]:
            wait_for_port(example.port)
            with connect(example.url, open_timeout=10) as ws:
                ws.send(iter(["ab", "cd", "ef"]))
                frames = list(ws.recv_streaming())
                ws.send("whole")
                return frames, ws.recv(timeout=10)

        frames, second = yield in_thread(client)
        self.assertEqual("".join(frames), "4 frames: abcdef")
        self.assertEqual([len(f) for f in frames], [14, 2])
        self.assertEqual(second, "1 frames: whole")
        output = yield in_thread(example.stop)
        self.assertEqual(example.proc.returncode, 0, output)
        self.assertNotIn("Traceback", output)


class WebExamplesTests(TestCase):
    """The same-port, Sparkle and authentication examples."""

    timeout = 120

    @inlineCallbacks
    def test_chat_server(self) -> None:
        """chat_server.py serves chat_client.html at / and a named chat at /chat."""
        example = Example(self, *python("chat_server.py"))
        base = f"127.0.0.1:{example.port}"

        def client() -> tuple[bytes, list[str]]:
            wait_for_port(example.port)
            with urllib.request.urlopen(f"http://{base}/", timeout=10) as page:
                html = page.read()
            with connect(f"ws://{base}/chat?name=ann", open_timeout=10) as ann:
                seen = [ann.recv(timeout=10)]
                with connect(f"ws://{base}/chat?name=ben", open_timeout=10) as ben:
                    seen.append(ann.recv(timeout=10))
                    ben.send("hi ann")
                    seen.append(ann.recv(timeout=10))
            return html, seen

        html, seen = yield in_thread(client)
        self.assertIn(b"new WebSocket", html)
        self.assertEqual(seen, ["* ann joined", "* ben joined", "ben: hi ann"])

    @inlineCallbacks
    def test_sparkle_echo(self) -> None:
        """sparkle_echo.py upgrades inside a resource; plain GET gets 400."""
        example = Example(self, *python("sparkle_echo.py"))

        def client() -> tuple[str, int]:
            wait_for_port(example.port)
            with connect(f"ws://127.0.0.1:{example.port}/echo", open_timeout=10) as ws:
                ws.send("hello")
                echoed = ws.recv(timeout=10)
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{example.port}/echo", timeout=10
                )
            except urllib.error.HTTPError as e:
                return echoed, e.code
            return echoed, 200

        self.assertEqual((yield in_thread(client)), ("Echo: hello", 400))

    @inlineCallbacks
    def test_auth_basic(self) -> None:
        """auth_basic.py lets alice in and refuses a wrong password with 401."""
        example = Example(self, *python("auth_basic.py"))

        def client() -> tuple[str, int]:
            wait_for_port(example.port)
            url = f"ws://alice:secret@127.0.0.1:{example.port}/"
            with connect(url, open_timeout=10) as ws:
                welcome = ws.recv(timeout=10)
            try:
                with connect(
                    f"ws://alice:nope@127.0.0.1:{example.port}/", open_timeout=10
                ):
                    return welcome, 101
            except InvalidStatus as e:
                return welcome, e.response.status_code

        self.assertEqual((yield in_thread(client)), ("welcome, alice", 401))


def http(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection: status, headers (lower-cased
    names), body."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


class HTTPHalfExamplesTests(TestCase):
    """The examples of docs/web.md for sessions, guards and HTTP/2."""

    timeout = 120

    @inlineCallbacks
    def test_session_server(self) -> None:
        """session_server.py: log in, the cart page and the WebSocket see the
        session, a login with the old cookie rotates it (the old id gets
        401), logging out closes the WebSocket with 1008; the events are
        printed."""
        example = Example(self, *python("session_server.py"))
        form = {"Content-Type": "application/x-www-form-urlencoded"}

        def client() -> list[Any]:
            wait_for_port(example.port)
            port = example.port
            seen: list[Any] = [http(port, "GET", "/cart")[0]]
            status, headers, _ = http(
                port, "POST", "/login", form, b"username=alice&password=secret"
            )
            first = {"Cookie": headers["set-cookie"].split(";")[0]}
            seen.append(http(port, "GET", "/cart", first)[2])
            seen.append(http(port, "GET", "/members", first)[2])
            _, headers, _ = http(
                port,
                "POST",
                "/login",
                {**form, **first},
                b"username=alice&password=secret",
            )
            second = {"Cookie": headers["set-cookie"].split(";")[0]}
            seen.append(http(port, "GET", "/cart", first)[0])
            seen.append(http(port, "GET", "/cart", second)[2])
            with connect(
                f"ws://127.0.0.1:{port}/ws", additional_headers=second, open_timeout=10
            ) as ws:
                seen.append(ws.recv(timeout=10))
                seen.append(http(port, "DELETE", "/login", second)[0])
                try:
                    ws.recv(timeout=10)
                except Exception as e:  # ConnectionClosed
                    seen.append(e.rcvd.code if getattr(e, "rcvd", None) else repr(e))
            return seen

        seen = yield in_thread(client)
        self.assertEqual(
            seen,
            [
                401,
                b"alice: visit 1\n",
                b"members only, alice\n",
                401,
                b"alice: visit 2\n",
                "hello alice",
                204,
                1008,
            ],
        )
        output = yield in_thread(example.stop)
        for line in (
            "session started for alice",
            "invalid session presented for /cart",
            "session of alice ended: logout",
        ):
            self.assertIn(line, output)
        self.assertNotIn("Traceback", output)

    @inlineCallbacks
    def test_guarded_server(self) -> None:
        """guarded_server.py: Basic, API key and token guards answer 401 /
        403 / 200; a 3 MiB upload without credentials is refused from its
        head, with them it is stored (its resource allows 8 MiB)."""
        import base64

        example = Example(self, *python("guarded_server.py"))
        alice = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}

        def client() -> list[Any]:
            wait_for_port(example.port)
            port = example.port
            status, headers, _ = http(port, "GET", "/reports/")
            seen: list[Any] = [(status, headers.get("www-authenticate"))]
            seen.append(http(port, "GET", "/reports/", alice)[2])
            seen.append(http(port, "GET", "/api/status")[0])
            seen.append(http(port, "GET", "/api/status", {"X-API-Key": "k-9"})[0])
            seen.append(http(port, "GET", "/api/status", {"X-API-Key": "k-123"})[2])
            seen.append(http(port, "GET", "/feed?token=t-4f9a")[2])
            body = b"x" * (3 * 1024 * 1024)
            seen.append(http(port, "POST", "/reports/upload", None, body)[0])
            seen.append(http(port, "POST", "/reports/upload", alice, body)[2])
            return seen

        self.assertEqual(
            (yield in_thread(client)),
            [
                (401, 'Basic realm="reports"'),
                b"the reports for alice\n",
                401,
                403,
                b"status: fine for ops\n",
                b"the feed for carol\n",
                401,
                b"stored 3145728 bytes\n",
            ],
        )

    @inlineCallbacks
    def test_http2_server(self) -> None:
        """http2_server.py offers h2 and http/1.1; the page comes over
        HTTP/2 (h2 client) and the chat over wss:// on the same port."""
        import ssl

        example = Example(self, *python("http2_server.py"))

        def client() -> tuple[str | None, int, bytes, str]:
            wait_for_port(example.port)
            context = ssl.create_default_context()  # the example's cert is
            context.check_hostname = False  # self-signed: this test checks
            context.verify_mode = ssl.CERT_NONE  # the protocols, not trust
            answer = _h2_get(example.port, context, "/")
            # the same context, now offering h2 first: the server still
            # reads the upgrade as HTTP/1.1
            with connect(
                f"wss://localhost:{example.port}/", ssl=context, open_timeout=10
            ) as a:
                a.send("over wss")
                echoed = a.recv(timeout=10)
            return answer[0], answer[1], answer[2], str(echoed)

        alpn, status, body, echoed = yield in_thread(client)
        self.assertEqual((alpn, status, echoed), ("h2", 200, "over wss"))
        self.assertIn(b"new WebSocket", body)
        output = yield in_thread(example.stop)
        self.assertIn("offering h2, http/1.1 on tcp:", output)


def _h2_get(port: int, context: Any, path: str) -> tuple[str | None, int, bytes]:
    """GET ``path`` over HTTP/2 with ``context`` (ALPN h2, http/1.1)."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    context.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        alpn = sock.selected_alpn_protocol()
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "GET"),
                (":path", path),
                (":scheme", "https"),
                (":authority", "localhost"),
            ],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        status, body, ended = 0, b"", False
        deadline = time.monotonic() + 10
        while not ended and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
        return alpn, status, body


class LiveFeedTests(TestCase):
    """examples/live_feed.py: a client that comes back misses no item."""

    timeout = 60

    @inlineCallbacks
    def test_recover_missed_items(self) -> None:
        """Subscribe, note the position, leave for 2.5 s, come back with it:
        the items published meanwhile arrive first, in order, then
        ``subscribed`` (recovered); the page is served at /."""
        import json

        example = Example(self, *python("live_feed.py"))

        def client() -> tuple[list[str], dict[str, Any], bytes]:
            wait_for_port(example.port)
            proto = ["wsplugin.channels.v1"]
            with connect(example.url, subprotocols=proto, open_timeout=10) as ws:
                ws.send(json.dumps({"type": "subscribe", "channel": "feed"}))
                json.loads(ws.recv(timeout=10))
                item = json.loads(ws.recv(timeout=10))
            time.sleep(2.5)
            since = {"epoch": item["epoch"], "offset": item["offset"]}
            with connect(example.url, subprotocols=proto, open_timeout=10) as ws:
                ws.send(
                    json.dumps({"type": "subscribe", "channel": "feed", "since": since})
                )
                missed = []
                while True:
                    msg = json.loads(ws.recv(timeout=10))
                    if msg["type"] == "subscribed":
                        break
                    missed.append(msg["data"])
            page = urllib.request.urlopen(
                f"http://127.0.0.1:{example.port}/", timeout=10
            ).read()
            return [item["data"], *missed], msg, page

        items, answer, page = yield in_thread(client)
        numbers = [int(i.split()[1]) for i in items]
        self.assertGreaterEqual(len(numbers), 3)
        self.assertEqual(numbers, list(range(numbers[0], numbers[0] + len(numbers))))
        self.assertEqual(
            (answer["status"], answer["missed"]), ("recovered", len(items) - 1)
        )
        self.assertIn(b"wsplugin.channels.v1", page)
