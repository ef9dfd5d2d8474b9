"""Structured logs: one JSON object per line, with secrets scrubbed.

wsplugin logs through :mod:`twisted.logger` with PEP 3101 fields; this
module turns each event into one line of JSON for log shippers (Loki,
Elasticsearch, journald's ``MESSAGE``)::

    {"time": "2026-11-28T10:15:02.125Z", "level": "info",
     "namespace": "wsplugin.connections", "message": "connection ... closed: ...",
     "event": "connection.close", "conn_id": "...", "peer": "203.0.113.7",
     "route": "/chat", "duration": 12.5, "bytes_in": 2048, ..., "code": 1000}

The event's own fields are kept when they are plain values (strings,
numbers, booleans, None); other objects appear only through ``message``.
A failure adds ``traceback``.

``twistd ws --log-format json`` uses :func:`twistd_json_observer` for the
whole log (honouring twistd's ``--logfile``); ``twistd --logger
wsplugin.logs.twistd_json_observer ws ...`` does the same, to standard
output. In a program of your own: ``globalLogBeginner.beginLoggingTo(
[json_observer(sys.stdout)])``.

wsplugin never puts request headers, query strings or payloads in its log
events; :func:`scrub` also blanks what looks like a credential in any text
(``Authorization:``/``Cookie:`` values, ``Basic``/``Bearer`` tokens,
``token=``-like query parameters), for what other libraries log.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, formatEvent

__all__ = [
    "LOG_FORMATS",
    "event_as_json",
    "json_observer",
    "scrub",
    "twistd_json_observer",
    "use_for_twistd",
]

LOG_FORMATS = ("text", "json")
"""The values of ``twistd ws --log-format``."""

_SECRET_NAME = r"[\w-]*(?:auth|cookie|token|secret|passw|session|api[-_]?key|sig)[\w-]*"
_HEADER = re.compile(
    rf"(?i)\b({_SECRET_NAME})(\"?'?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"
)
_SCHEME = re.compile(r"(?i)\b(basic|bearer|digest)\s+[A-Za-z0-9+/=._~-]{6,}")
_SECRET_KEY = re.compile(rf"(?i){_SECRET_NAME}")
_HINT = re.compile(r"(?i)auth|cookie|token|secret|passw|session|api[-_]?key|sig|bearer")
"""A quick test first: most lines have none of these words."""
_MAX_FIELD = 2000

_twistd_target: dict[str, Any] = {}


def scrub(text: str) -> str:
    """``text`` with credential-looking values replaced by ``[redacted]``:
    ``Authorization: Basic ...``, ``Cookie: a=b``, ``?token=...``,
    ``api_key=...``, ``Bearer ...``."""
    if not _HINT.search(text) and not _SCHEME.search(text):
        return text
    text = _SCHEME.sub(lambda m: f"{m.group(1)} [redacted]", text)
    return _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value[:_MAX_FIELD])
    return value


def event_as_json(event: dict[str, Any]) -> str:
    """One log event as one line of JSON (no newline)."""
    when = event.get("log_time")
    stamp = (
        datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
        if isinstance(when, (int, float))
        else None
    )
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": stamp.replace("+00:00", "Z") if stamp else None,
        "level": getattr(level, "name", None),
        "namespace": event.get("log_namespace"),
        "message": scrub(formatEvent(event)),
    }
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in _LEGACY:
            continue
        if value is None or isinstance(value, (str, int, float, bool)):
            secret = (
                value not in (None, "")
                and _HINT.search(key) is not None
                and _SECRET_KEY.fullmatch(key) is not None
            )
            record[key] = "[redacted]" if secret else _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = scrub(failure.getTraceback())
        except Exception:
            record["traceback"] = repr(failure)
    return json.dumps(record, ensure_ascii=False, default=str)


_LEGACY = frozenset({"message", "format", "isError", "why", "failure", "time"})
"""Keys of events from ``twisted.python.log`` that ``message`` already says."""


def json_observer(out: IO[Any]) -> ILogObserver:
    """An observer writing each event to ``out`` as one JSON line."""
    return FileLogObserver(out, lambda event: event_as_json(event) + "\n")


def use_for_twistd(logfile: str | None, nodaemon: bool) -> None:
    """Where :func:`twistd_json_observer` writes: twistd's ``--logfile``
    (``-``: standard output) and ``--nodaemon``, as twistd's own text
    observer would. Called by ``twistd ws --log-format json``."""
    _twistd_target.clear()
    _twistd_target.update(logfile=logfile, nodaemon=nodaemon)


def twistd_json_observer() -> ILogObserver:
    """The log observer factory for ``twistd --logger``: JSON lines to the
    file :func:`use_for_twistd` named (``twistd.log`` for a daemon without
    ``--logfile``), or to standard output."""
    logfile = _twistd_target.get("logfile")
    nodaemon = _twistd_target.get("nodaemon", True)
    if logfile == "-" or (not logfile and nodaemon):
        return json_observer(sys.stdout)
    from twisted.python.logfile import LogFile

    return json_observer(LogFile.fromFullPath(logfile or "twistd.log"))
