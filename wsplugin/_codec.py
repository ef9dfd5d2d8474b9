"""The WebSocket frame codec: compiled when it is built, pure Python if not.

Import the codec from here, never from its two implementations:

- ``wsplugin._speedups``, in C, built by ``pip install .`` when a C
  compiler is present (an optional extension: a failed build leaves it out);
- ``wsplugin._pycodec``, pure Python, the reference semantics and the
  fallback.

Setting the environment variable ``WSPLUGIN_NO_EXTENSIONS`` to a non-empty
value other than ``0`` before the import forces the Python codec.
:data:`IMPLEMENTATION` says which one is active (``"c"`` or ``"python"``), so
the server can log it. Both give the same events, errors and close codes for
the same bytes, however they are cut (tests/test_codec.py fuzzes them against
each other); docs/codec.md describes the API and the design.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Final

import wsplugin._pycodec as _pycodec
from wsplugin._pycodec import (
    BINARY,
    CLOSE,
    CLOSE_INVALID_PAYLOAD,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    ERROR,
    FRAGMENT,
    PING,
    PONG,
    TEXT,
    Event,
    close_payload_problem,
)

__all__ = [
    "BINARY",
    "CLOSE",
    "CLOSE_INVALID_PAYLOAD",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_PROTOCOL_ERROR",
    "ERROR",
    "FRAGMENT",
    "IMPLEMENTATION",
    "PING",
    "PONG",
    "TEXT",
    "Event",
    "FrameReader",
    "close_payload_problem",
    "describe",
    "encode_frame",
    "encode_message",
    "extensions_disabled",
    "frame_header",
    "load_speedups",
]


def extensions_disabled(environ: Any = None) -> bool:
    """Whether ``WSPLUGIN_NO_EXTENSIONS`` asks for the pure-Python codec.

    Any non-empty value but ``0`` does (``1``, ``yes``, ``true``).
    """
    value = (os.environ if environ is None else environ).get(
        "WSPLUGIN_NO_EXTENSIONS", ""
    )
    return value.strip() not in ("", "0")


def load_speedups(environ: Any = None) -> Any:
    """The compiled codec module, or None when it is disabled or not built."""
    if extensions_disabled(environ):
        return None
    try:
        return importlib.import_module("wsplugin._speedups")
    except ImportError:  # not built, or built for another interpreter
        return None


_impl: Any = load_speedups()

IMPLEMENTATION: Final[str] = "python" if _impl is None else "c"
"""``"c"`` when the compiled codec is active, ``"python"`` otherwise."""

if _impl is None:
    _impl = _pycodec


def describe(environ: Any = None) -> str:
    """One line for the server's start-up log: which codec reads and writes
    frames, and, for the Python one, why (about 8 times the CPU per small
    message, docs/codec.md)."""
    if IMPLEMENTATION == "c":
        return "compiled (wsplugin._speedups)"
    if extensions_disabled(environ):
        return "pure Python (WSPLUGIN_NO_EXTENSIONS is set)"
    return (
        "pure Python (wsplugin._speedups is not built: reinstall with a C "
        "compiler for the compiled one)"
    )


if TYPE_CHECKING:
    # both implementations have the pure-Python one's signatures
    from wsplugin._pycodec import (
        FrameReader,
        encode_frame,
        encode_message,
        frame_header,
    )
else:
    FrameReader = _impl.FrameReader
    encode_frame = _impl.encode_frame
    encode_message = _impl.encode_message
    frame_header = _impl.frame_header
