"""The ``wsplugin.channels.v1`` wire format: channels over one WebSocket.

Plain Python (:mod:`json`, :mod:`base64`), shared by the server
(:mod:`wsplugin.channels`, and the fan-out that wraps publications for the
connections that asked for it) and the client
(:class:`wsplugin.client.ChannelSubscriptions`), and simple enough for a
browser page to speak in a few lines of JavaScript (docs/scaling.md).

Every message is one JSON object in a text frame, with a ``"type"``.

Client to server::

    {"type": "subscribe", "channel": "chat",
     "since": {"epoch": "3fa1c09b2d4e", "offset": 41}}
    {"type": "unsubscribe", "channel": "chat"}
    {"type": "publish", "channel": "chat", "data": "hello"}

``since`` is optional (null, absent, or with a null epoch and offset: no
recovery). A binary payload is
``"data": "<base64>", "binary": true``.

Server to client::

    {"type": "publication", "channel": "chat",
     "epoch": "3fa1c09b2d4e", "offset": 42, "data": "hello"}
    {"type": "subscribed", "channel": "chat", "status": "recovered",
     "epoch": "3fa1c09b2d4e", "offset": 45, "missed": 3}
    {"type": "unsubscribed", "channel": "chat"}
    {"type": "error", "error": "...", "channel": "chat"}

A ``publication`` carries the place it has in its channel's history
(``epoch``, ``offset``; both null for a broadcast to every connection, and
for one delivered while the backplane could not number it). The client
keeps the position of the last publication it *processed* and sends it as
``since`` when it subscribes again. ``subscribed`` ends the batch of missed
publications (they come first, oldest first): its ``status`` is
``recovered`` (nothing was missed beyond the batch), ``not_requested`` (no
``since``), or ``epoch_changed`` / ``too_old`` / ``unavailable``
(recovery impossible: reload the state, then go on from here). Its
``epoch``/``offset`` are where the client now stands.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_REQUEST",
    "SUBPROTOCOL",
    "EnvelopeError",
    "Request",
    "encode_error",
    "encode_publication",
    "encode_request",
    "encode_subscribed",
    "encode_unsubscribed",
    "parse_request",
    "parse_server_message",
]

SUBPROTOCOL = "wsplugin.channels.v1"
"""The subprotocol name a client offers to speak this format."""

MAX_REQUEST = 1 << 20
"""Longest client request parsed, in characters (1 MiB): JSON parsing
costs memory in proportion; a route's ``max_message_size`` usually bounds
it sooner."""

_CLIENT_TYPES = frozenset({"subscribe", "unsubscribe", "publish"})


class EnvelopeError(ValueError):
    """A message that is not valid ``wsplugin.channels.v1``; ``str()`` says
    what is wrong, without quoting the message."""


@dataclass(frozen=True, slots=True)
class Request:
    """One client request.

    Attributes:
        type: ``"subscribe"``, ``"unsubscribe"`` or ``"publish"``.
        channel: The channel it is about.
        since: ``(epoch, offset)`` to recover from (``subscribe`` only).
        data: The payload (``publish`` only): ``str``, or ``bytes`` when the
            client sent ``"binary": true``.
    """

    type: str
    channel: str
    since: tuple[str, int] | None = None
    data: str | bytes | None = None


def _payload(obj: dict[str, Any]) -> str | bytes:
    data = obj.get("data")
    if not isinstance(data, str):
        raise EnvelopeError("'data' must be a string")
    if obj.get("binary") is True:
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error:
            raise EnvelopeError("'data' is not valid base64") from None
    return data


def _since(value: Any) -> tuple[str, int] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        epoch, offset = value.get("epoch"), value.get("offset")
        if epoch is None and offset is None:
            return None  # a page that has no position yet
    elif isinstance(value, list) and len(value) == 2:
        epoch, offset = value
    else:
        raise EnvelopeError('\'since\' must be {"epoch": str, "offset": int}')
    if not isinstance(epoch, str) or not epoch or len(epoch) > 64:
        raise EnvelopeError("'since.epoch' must be a string of 1 to 64 characters")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise EnvelopeError("'since.offset' must be an integer >= 0")
    return epoch, offset


def _object(text: str) -> dict[str, Any]:
    if len(text) > MAX_REQUEST:
        raise EnvelopeError(f"message longer than {MAX_REQUEST} characters")
    try:
        obj = json.loads(text)
    except ValueError:
        raise EnvelopeError("not JSON") from None
    if not isinstance(obj, dict):
        raise EnvelopeError("not a JSON object")
    return obj


def parse_request(text: str) -> Request:
    """A client's message as a :class:`Request`.

    Raises:
        EnvelopeError: not JSON, an unknown ``type``, a missing or
            malformed field.
    """
    obj = _object(text)
    kind = obj.get("type")
    if kind not in _CLIENT_TYPES:
        raise EnvelopeError(
            "'type' must be subscribe, unsubscribe or publish"
            if isinstance(kind, str)
            else "'type' missing"
        )
    channel = obj.get("channel")
    if not isinstance(channel, str) or not channel:
        raise EnvelopeError("'channel' must be a non-empty string")
    if kind == "subscribe":
        return Request(kind, channel, since=_since(obj.get("since")))
    if kind == "publish":
        return Request(kind, channel, data=_payload(obj))
    return Request(kind, channel)


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _with_data(obj: dict[str, Any], data: str | bytes) -> dict[str, Any]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        obj["data"] = base64.b64encode(bytes(data)).decode("ascii")
        obj["binary"] = True
    else:
        obj["data"] = data
    return obj


def encode_publication(
    channel: str | None,
    data: bytes,
    is_binary: bool,
    epoch: str | None,
    offset: int | None,
) -> bytes:
    """A ``publication`` message as UTF-8 bytes (a text frame's payload).

    ``data`` is the payload as the fan-out has it: UTF-8 text unless
    ``is_binary``.
    """
    obj: dict[str, Any] = {
        "type": "publication",
        "channel": channel,
        "epoch": epoch,
        "offset": offset,
    }
    if is_binary:
        _with_data(obj, data)
    else:
        obj["data"] = data.decode("utf-8")
    return _dumps(obj).encode("utf-8")


def encode_subscribed(
    channel: str,
    status: str,
    position: tuple[str, int] | None,
    missed: int,
) -> str:
    """The ``subscribed`` message that ends a subscription's missed batch."""
    epoch, offset = position if position is not None else (None, None)
    return _dumps(
        {
            "type": "subscribed",
            "channel": channel,
            "status": status,
            "epoch": epoch,
            "offset": offset,
            "missed": missed,
        }
    )


def encode_unsubscribed(channel: str) -> str:
    """The ``unsubscribed`` answer."""
    return _dumps({"type": "unsubscribed", "channel": channel})


def encode_error(error: str, channel: str | None = None) -> str:
    """An ``error`` message: a refused request (about ``channel``)."""
    return _dumps({"type": "error", "error": error, "channel": channel})


def encode_request(
    kind: str,
    channel: str,
    *,
    since: tuple[str, int] | None = None,
    data: str | bytes | None = None,
) -> str:
    """A client request (what :func:`parse_request` reads)."""
    if kind not in _CLIENT_TYPES:
        raise ValueError(f"unknown request type {kind!r}")
    obj: dict[str, Any] = {"type": kind, "channel": channel}
    if kind == "subscribe" and since is not None:
        obj["since"] = {"epoch": since[0], "offset": since[1]}
    if kind == "publish":
        if data is None:
            raise ValueError("a publish request needs data")
        _with_data(obj, data)
    return _dumps(obj)


def parse_server_message(text: str) -> dict[str, Any]:
    """A server message as a dict with its fields checked; a
    ``publication``'s ``data`` is ``str``, or ``bytes`` when binary.

    Raises:
        EnvelopeError: not a message of this format.
    """
    obj = _object(text)
    kind = obj.get("type")
    if kind == "publication":
        channel = obj.get("channel")
        if channel is not None and not isinstance(channel, str):
            raise EnvelopeError("'channel' must be a string or null")
        epoch, offset = obj.get("epoch"), obj.get("offset")
        if (epoch is None) != (offset is None):
            raise EnvelopeError("'epoch' and 'offset' come together")
        if epoch is not None:
            obj["epoch"], obj["offset"] = _since([epoch, offset]) or (None, None)
        obj["data"] = _payload(obj)
        return obj
    if kind in ("subscribed", "unsubscribed"):
        if not isinstance(obj.get("channel"), str):
            raise EnvelopeError("'channel' must be a string")
        if kind == "subscribed":
            if not isinstance(obj.get("status"), str):
                raise EnvelopeError("'status' must be a string")
            epoch, offset = obj.get("epoch"), obj.get("offset")
            obj["position"] = (
                None if epoch is None or offset is None else _since([epoch, offset])
            )
        return obj
    if kind == "error":
        return obj
    raise EnvelopeError("unknown 'type'")
