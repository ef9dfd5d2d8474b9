"""Reference-leak check of the compiled frame codec (not a test).

Runs every path of ``wsplugin._speedups`` (messages, fragments, controls,
each protocol error, feeds after an error, readers dropped half-way,
encoders, bad arguments) many times and prints how much the interpreter's
total reference count (debug builds only), its allocated blocks and the
traced memory grew. A leak of one reference per call shows as thousands;
a clean build shows a small constant, whatever the loop count.

Needs nothing but the built extension, so it runs under a debug CPython
(``sys.gettotalrefcount``) without wsplugin's dependencies; docs/codec.md
gives the commands::

    # with the extension built against the running interpreter:
    .venv/bin/python benchmarks/codec_leakcheck.py 200
    # under Debian's debug build (apt-get install python3.11-dbg):
    gcc -O1 -g -fPIC -shared $(python3.11-dbg-config --includes) \\
        wsplugin/_speedups.c -o build/dbg/_speedups$(python3.11-dbg -c \\
        "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
    python3.11-dbg benchmarks/codec_leakcheck.py 200 --path build/dbg
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import struct
import sys
import tracemalloc
from typing import Any


def frame(
    op: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
    width: int | None = None,
) -> bytes:
    """One client frame (masked unless ``mask`` is None)."""
    n = len(payload)
    if width is None:
        width = 0 if n <= 125 else 2 if n <= 0xFFFF else 8
    b0 = (0x80 if fin else 0) | rsv << 4 | op
    m = 0x80 if mask is not None else 0
    if width == 0:
        head = bytes((b0, m | n))
    elif width == 2:
        head = bytes((b0, m | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, m | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    key = (mask * (n // 4 + 1))[:n]
    return head + mask + bytes(a ^ b for a, b in zip(payload, key, strict=True))


BIG = os.urandom(70000)
STREAMS = [
    frame(1, b"hello"),
    frame(2, BIG),
    frame(1, "é€😀".encode() * 50),
    frame(1, b"he", False) + frame(9, b"p") + frame(0, b"llo"),
    frame(2, b"x" * 3000, False) + frame(0, b"y" * 3000),
    frame(8, b"\x03\xe8bye") + frame(10, b""),
    frame(1, b"\xed\xa0\x80"),
    frame(1, b"\xe2\x82"),
    frame(1, b"x", rsv=1),
    frame(1, b"x", mask=None),
    frame(0, b"x"),
    frame(9, b"x", False),
    frame(2, b"x" * 5, width=2),
    bytes((0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1)) + b"abcd",
    frame(2, b"x" * 200),
    frame(1, b"a", False) + frame(0, b"\xff"),
    frame(1, b"abc\xffdef" * 300),
]
OPTIONS: list[dict[str, bool]] = [
    {},
    {"frame_by_frame": True},
    {"utf8_validation": False},
    {"require_mask": False},
]


def exercise(codec: Any) -> None:
    """Every path of the codec once."""
    for data in STREAMS:
        for options in OPTIONS:
            for limits in ((0, 0), (100, 150)):
                reader = codec.FrameReader(*limits, **options)
                reader.feed(data)
                _ = reader.error, reader.buffered
                try:
                    reader.feed(b"\x81")
                except RuntimeError:
                    pass
                reader = codec.FrameReader(*limits, **options)
                for i in range(0, len(data), 7):
                    if reader.error is not None:
                        break
                    reader.feed(memoryview(data)[i : i + 7])
                reader = codec.FrameReader(*limits, **options)
                reader.feed(data[: len(data) // 2])  # dropped with a buffer
    codec.encode_frame(1, "é€")
    codec.encode_frame(2, BIG, False, 4)
    codec.encode_frame(1, b"abc", mask=b"abcd")
    codec.encode_message(BIG, True, 1000)
    codec.encode_message("text" * 100, False)
    codec.encode_message(bytearray(b"x"), True, 1)
    codec.frame_header(2, 2**40)
    for call in (
        lambda: codec.encode_frame(1, b"x", mask=b"abc"),
        lambda: codec.encode_message(b"x", True, -1),
        lambda: codec.encode_message(5, True),
        lambda: codec.frame_header(1, -1),
        lambda: codec.frame_header(1, 2**64),
        lambda: codec.FrameReader(-1, 0),
        lambda: codec.FrameReader(0, "x"),
        lambda: codec.FrameReader(0, 0).feed("str"),
        lambda: codec.FrameReader(0, 0, True),
    ):
        try:
            call()
        except (ValueError, TypeError):
            pass


def growth(codec: Any, loops: int) -> dict[str, int]:
    """How much references, blocks and traced bytes grew over ``loops``."""
    for _ in range(3):
        exercise(codec)
    tracemalloc.start()
    gc.collect()
    refs = getattr(sys, "gettotalrefcount", lambda: 0)()
    blocks = sys.getallocatedblocks()
    traced = tracemalloc.get_traced_memory()[0]
    for _ in range(loops):
        exercise(codec)
    gc.collect()
    result = {
        "references": getattr(sys, "gettotalrefcount", lambda: 0)() - refs,
        "blocks": sys.getallocatedblocks() - blocks,
        "traced bytes": tracemalloc.get_traced_memory()[0] - traced,
    }
    tracemalloc.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("loops", type=int, nargs="?", default=200)
    parser.add_argument(
        "--path", help="import _speedups from this directory, not wsplugin"
    )
    args = parser.parse_args()
    if args.path:
        sys.path.insert(0, args.path)
        codec = importlib.import_module("_speedups")
    else:
        codec = importlib.import_module("wsplugin._speedups")
    print(codec.__file__)
    debug = hasattr(sys, "gettotalrefcount")
    print(f"{args.loops} loops, debug build: {debug}: {growth(codec, args.loops)}")


if __name__ == "__main__":
    main()
