"""Microbenchmark of the frame codec: server CPU per received message.

Per-message cost of parsing one masked client message, for the compiled
codec (``wsplugin._speedups``), the pure-Python one (``wsplugin._pycodec``)
and, for comparison, Autobahn's parser as the server runs it today:

- ``autobahn``: a plain Autobahn ``WebSocketServerProtocol`` whose
  ``onMessage`` does nothing, fed through ``dataReceived`` after a real
  handshake on a ``StringTransport`` (its whole receive path: buffering,
  frame parsing, unmasking with NVX, UTF-8 validation, assembly);
- ``wsplugin protocol``: the same through wsplugin's protocol up to a
  handler whose ``on_message`` does nothing: since issue 16 the active
  codec's path (``WSPLUGIN_NO_EXTENSIONS=1``: the Python codec's), before
  it Autobahn's parser with wsplugin's small-frame unmasker.

Workloads: a 64-byte text message and a 64 KiB binary message, each in one
frame, each fed as one read; and the 64 KiB one cut across two reads at
65,536 bytes, as a 64 KiB socket read delivers it.

Not a test and not part of ``make bench``: run it on an idle core::

    .venv/bin/python benchmarks/codec_bench.py [--repeat 7]

It prints a Markdown table of microseconds per message (best of the
repeats) and which codec ``wsplugin._codec`` picks here.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autobahn.twisted.websocket import (  # noqa: E402
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import MemoryReactorClock, StringTransport  # noqa: E402

from wsplugin import WebSocketServer, _codec, _pycodec  # noqa: E402
from wsplugin import _frames as frames  # noqa: E402
from wsplugin.testing import ServerHarness, handshake_request  # noqa: E402

try:
    from wsplugin import _speedups
except ImportError:
    _speedups = None  # type: ignore[assignment]

MASK = b"\x37\xfa\x21\x3d"


def masked(opcode: int, payload: bytes) -> bytes:
    """One masked client frame."""
    return _pycodec.encode_frame(opcode, payload, mask=MASK)


def workloads() -> list[tuple[str, list[bytes], int]]:
    """(name, reads of one message, messages per timing loop)."""
    small = masked(1, b"x" * 64)
    big = masked(2, os.urandom(65536))
    return [
        ("64 B text, 1 read", [small], 200_000),
        ("64 KiB binary, 1 read", [big], 3_000),
        ("64 KiB binary, 2 reads", [big[:65536], big[65536:]], 3_000),
    ]


def codec_feeder(module: Any) -> Callable[[list[bytes]], None]:
    reader = module.FrameReader(16 << 20, 16 << 20)
    feed = reader.feed

    def run(reads: list[bytes]) -> None:
        for data in reads:
            feed(data)

    return run


class _Sink(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass


def autobahn_feeder() -> Callable[[list[bytes]], None]:
    factory = WebSocketServerFactory("ws://localhost:9000")
    # no timers: they would run on txaio's global loop
    factory.setProtocolOptions(
        openHandshakeTimeout=0,
        closeHandshakeTimeout=0,
        autoPingInterval=0,
        maxFramePayloadSize=16 << 20,
        maxMessagePayloadSize=16 << 20,
    )
    factory.protocol = _Sink
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(handshake_request())
    if not transport.value().startswith(b"HTTP/1.1 101"):
        raise RuntimeError("Autobahn refused the handshake")
    received = proto.dataReceived

    def run(reads: list[bytes]) -> None:
        for data in reads:
            received(data)

    return run


class _Nothing:
    def on_message(self, conn: Any, text: str) -> None:
        pass

    def on_binary(self, conn: Any, data: bytes) -> None:
        pass


def wsplugin_feeder() -> Callable[[list[bytes]], None]:
    server = WebSocketServer(_Nothing(), reactor=MemoryReactorClock())
    client = ServerHarness(server).open()
    received = client.protocol.dataReceived

    def run(reads: list[bytes]) -> None:
        for data in reads:
            received(data)

    return run


def per_message(
    make: Callable[[], Callable[[list[bytes]], None]],
    reads: list[bytes],
    count: int,
    repeat: int,
) -> float:
    """Best microseconds per message over ``repeat`` loops of ``count``."""
    run = make()
    for _ in range(max(count // 10, 10)):
        run(reads)
    best = float("inf")
    for _ in range(repeat):
        gc.disable()
        start = time.perf_counter_ns()
        for _ in range(count):
            run(reads)
        elapsed = time.perf_counter_ns() - start
        gc.enable()
        best = min(best, elapsed / count / 1000)
    return best


def encode_cost(
    encode: Callable[..., bytes], args: tuple[Any, ...], count: int, repeat: int
) -> float:
    """Best microseconds per call of ``encode(*args)``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(count):
            encode(*args)
        best = min(best, (time.perf_counter_ns() - start) / count / 1000)
    return best


def encode_table(repeat: int, scale: float) -> None:
    """The send side: encoding a message, against wsplugin._frames today."""
    big = os.urandom(65536)
    size = frames.payload_size_for_frame(4096)
    loads = [
        ("64 B text", (b"x" * 64, False), 200_000),
        ("64 KiB binary", (big, True), 20_000),
        ("64 KiB binary in 4 KiB frames", (big, True, size), 5_000),
    ]
    encoders: list[tuple[str, Callable[..., bytes]]] = []
    if _speedups is not None:
        encoders.append(("C codec", _speedups.encode_message))
    encoders.append(("Python codec", _pycodec.encode_message))
    encoders.append(("wsplugin._frames today", frames.encode_message))
    print("\n| encode_message | " + " | ".join(n for n, _, _ in loads) + " |")
    print("|---|" + "---:|" * len(loads))
    for label, encode in encoders:
        cells = [
            f"{encode_cost(encode, args, max(int(n * scale), 1), repeat):.2f}"
            for _, args, n in loads
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the loop counts"
    )
    args = parser.parse_args()

    parsers: list[tuple[str, Callable[[], Callable[[list[bytes]], None]]]] = []
    if _speedups is not None:
        parsers.append(("C codec", lambda: codec_feeder(_speedups)))
    parsers.append(("Python codec", lambda: codec_feeder(_pycodec)))
    parsers.append(("Autobahn", autobahn_feeder))
    parsers.append(("wsplugin protocol", wsplugin_feeder))

    print(
        f"Python {platform.python_version()} on {platform.machine()}; "
        f"wsplugin._codec.IMPLEMENTATION = {_codec.IMPLEMENTATION!r}; "
        f"best of {args.repeat}, microseconds per message\n"
    )
    loads = workloads()
    print("| parser | " + " | ".join(name for name, _, _ in loads) + " |")
    print("|---|" + "---:|" * len(loads))
    for label, make in parsers:
        cells = []
        for _, reads, count in loads:
            n = max(int(count * args.scale), 1)
            if label != "C codec":
                n = max(n // 10, 1)
            cells.append(f"{per_message(make, reads, n, args.repeat):.2f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    encode_table(args.repeat, args.scale)


if __name__ == "__main__":
    main()
