"""An echo client on ``wsplugin.client``, for the Autobahn TestSuite's
fuzzingserver mode (``conformance/run.py --mode client`` starts it).

It walks the cases the way every Autobahn testee client does:

1. ``GET /getCaseCount``: the server sends the number of cases as a text
   message, then closes;
2. for N in 1..count, ``GET /runCase?case=N&agent=AGENT``: every message
   received is sent back unchanged (text as text, binary as binary) until the
   server closes; the suite judges what the client did;
3. ``GET /updateReports?agent=AGENT``: the server writes its reports (kosoku
   then exits).

Usage::

    .venv/bin/python conformance/echo_client.py ws://127.0.0.1:9001 \\
        [--agent NAME] [--compression]

Exit status 0 when every step ran (whatever the verdicts, which the reports
hold), 1 when the count could not be read or the reports not requested.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

# run from a checkout: the repository root holds the wsplugin package
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.defer import ensureDeferred  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from wsplugin.client import ClientConnection, connect  # noqa: E402
from wsplugin.errors import ConnectionClosed, WSPluginError  # noqa: E402

DEFAULT_AGENT = "wsplugin-client"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="conformance/echo_client.py",
        description="Echo client for kosoku -m fuzzingserver (Autobahn cases).",
    )
    parser.add_argument("url", help="the fuzzing server, e.g. ws://127.0.0.1:9001")
    parser.add_argument("--agent", default=DEFAULT_AGENT, help="agent name in reports")
    parser.add_argument(
        "--compression", action="store_true", help="offer permessage-deflate"
    )
    return parser.parse_args(argv)


async def echo(conn: ClientConnection) -> None:
    """Send every message back until the connection ends."""
    async for message in conn:
        try:
            conn.send(message)
        except ConnectionClosed:
            break
    await conn.wait_closed()


async def run(reactor: Any, args: argparse.Namespace) -> int:
    """Walk every case the fuzzing server offers; return the exit status."""
    base = args.url.rstrip("/")
    agent = quote(args.agent)
    options = {"compression": args.compression, "reactor": reactor}

    conn = await connect(f"{base}/getCaseCount", reactor=reactor)
    count = int(await conn.receive())
    await conn.wait_closed()
    print(f"{count} case(s) to run", flush=True)

    started = time.monotonic()
    for case in range(1, count + 1):
        try:
            conn = await connect(f"{base}/runCase?case={case}&agent={agent}", **options)
        except WSPluginError as error:
            # the suite records the failed case; go on with the next
            print(f"case {case}: {error}", flush=True)
            continue
        await echo(conn)
        if case % 50 == 0:
            elapsed = time.monotonic() - started
            print(f"{case}/{count} cases in {elapsed:.0f}s", flush=True)

    conn = await connect(f"{base}/updateReports?agent={agent}", reactor=reactor)
    await conn.wait_closed()
    print(f"ran {count} case(s) in {time.monotonic() - started:.0f}s", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Run the client; exits with its status."""
    args = parse_args(argv)

    def start(reactor: Any) -> Any:
        return ensureDeferred(run(reactor, args))

    react(start)


if __name__ == "__main__":
    main()
