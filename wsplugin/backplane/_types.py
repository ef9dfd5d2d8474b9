"""The backplane contract: values, identities, the wire codec and the interface.

Everything here is plain Python with no reactor and no I/O, so both engines
(:mod:`._memory` and :mod:`._redis`) and the factory share one vocabulary.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol, runtime_checkable

from wsplugin.errors import ConfigError, WSPluginError

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

__all__ = [
    "Backplane",
    "BackplaneReceiver",
    "BackplaneStats",
    "BackplaneUnavailable",
    "Command",
    "Publication",
    "Recovery",
    "RecoveryStatus",
    "StreamPosition",
    "holder_of",
    "make_node_id",
    "new_connection_id",
]

#: A node name: letters, digits, ``_`` and ``-`` (no ``.``, which separates the
#: parts of a connection id; no ``:``, which separates Redis key parts).
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_NODE = re.compile(r"([A-Za-z0-9_-]{1,64})\.(0|[1-9][0-9]{0,5})\Z")
_CONN = re.compile(r"([A-Za-z0-9_-]{1,64}\.(?:0|[1-9][0-9]{0,5}))\.[0-9a-f]{32}\Z")

#: The longest channel name a backplane accepts, in characters. Channel names
#: become parts of Redis keys and topics; 1 KiB keeps keys small.
MAX_CHANNEL_LENGTH = 1024


class BackplaneUnavailable(WSPluginError):
    """The backplane's engine cannot be reached, so a cluster-wide answer
    (a count) cannot be given. Local delivery is never affected."""


class StreamPosition(NamedTuple):
    """A place in a channel's history: the stream's ``epoch`` and the
    ``offset`` of the last publication seen there.

    A plain ``(epoch, offset)`` tuple is accepted wherever a position is, so
    a client can send back the pair it stored as JSON.
    """

    epoch: str
    offset: int


class RecoveryStatus(str, enum.Enum):
    """The outcome of :meth:`Backplane.subscribe`."""

    #: No ``since`` was given: nothing to recover; ``position`` says where the
    #: subscriber starts (None if the engine could not be asked).
    NOT_REQUESTED = "not_requested"
    #: Every publication after ``since`` is in ``publications``, in order.
    RECOVERED = "recovered"
    #: The history was lost since ``since`` (stream expired, deleted, or the
    #: engine restarted empty): the application must reload its state.
    EPOCH_CHANGED = "epoch_changed"
    #: ``since`` is older than the oldest publication still kept.
    TOO_OLD = "too_old"
    #: The engine could not be reached; nothing could be recovered.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class Publication:
    """One message published to a channel (or to all connections).

    The filters (``protocol``, ``ids``, ``exclude``) travel with the message
    and are applied by each receiving node to its own connections, so a
    broadcast crosses the engine once, not once per receiver.

    Attributes:
        channel: The channel, or None for a broadcast to every connection.
        data: The payload bytes (UTF-8 text when ``is_binary`` is false).
        is_binary: Send as a binary message rather than text.
        offset: The publication's place in the channel's history (1, 2, ...);
            None for broadcasts to all and when it could not be assigned
            (delivered locally while the engine was unreachable).
        epoch: The history's epoch the offset belongs to.
        protocol: Only connections that negotiated this subprotocol.
        ids: Only connections with these ids (None: no id filter).
        exclude: Never connections with these ids.
        origin: The node id of the publisher.
    """

    channel: str | None
    data: bytes
    is_binary: bool = False
    offset: int | None = None
    epoch: str | None = None
    protocol: str | None = None
    ids: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    origin: str = ""

    @property
    def position(self) -> StreamPosition | None:
        """``(epoch, offset)`` of this publication, or None if it has none."""
        if self.epoch is None or self.offset is None:
            return None
        return StreamPosition(self.epoch, self.offset)

    @property
    def message(self) -> str | bytes:
        """The payload as the application sent it: ``str`` or ``bytes``."""
        return self.data if self.is_binary else self.data.decode("utf-8")


@dataclass(frozen=True, slots=True)
class Command:
    """A targeted order for the node that holds a connection.

    Attributes:
        kind: ``"send"`` (``data`` to ``conn_id``), ``"close"`` (close
            ``conn_id`` with ``code``/``reason``) or ``"close_all"`` (every
            connection of every node).
        conn_id: The connection, for ``send`` and ``close``.
        data: The payload, for ``send``.
        is_binary: Send as binary, for ``send``.
        code: Close code, for ``close`` and ``close_all``.
        reason: Close reason, for ``close`` and ``close_all``.
        origin: The node id of the sender.
    """

    kind: Literal["send", "close", "close_all"]
    conn_id: str | None = None
    data: bytes = b""
    is_binary: bool = False
    code: int = 1000
    reason: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Recovery:
    """What :meth:`Backplane.subscribe` found.

    Attributes:
        status: See :class:`RecoveryStatus`.
        publications: The publications the subscriber missed, oldest first,
            when ``status`` is ``RECOVERED`` (also the few that arrived while
            the subscription was being set up, when ``NOT_REQUESTED``).
        position: Where the subscriber stands once ``publications`` are
            delivered: store it and pass it as ``since`` next time. None when
            the engine could not be asked.
    """

    status: RecoveryStatus
    publications: tuple[Publication, ...] = ()
    position: StreamPosition | None = None

    @property
    def recovered(self) -> bool:
        """True when every missed publication is in ``publications``."""
        return self.status is RecoveryStatus.RECOVERED


@dataclass(slots=True)
class BackplaneStats:
    """Counters for metrics and logs; they only grow, except ``queued``.

    Attributes:
        published: Publications and commands handed to the backplane.
        received: Publications and commands received from other nodes.
        publish_failures: Publications and commands that could not be sent
            when they were made (queued, dropped, or lost in flight).
        queued: Publications and commands waiting for the engine now.
        queue_dropped: Those dropped because the queue was full.
        queue_flushed: Those sent late, after the engine came back.
        reconnects: Times the link to the engine was re-established.
        rollbacks: Channels whose epoch this node replaced because the
            engine came back from older data (its top offset below one the
            node had seen; see docs/scaling.md).
        recoveries: Outcomes of :meth:`Backplane.subscribe`, by status value.
        catch_ups: Outcomes of a node's own catch-ups after its subscriber
            link to the engine came back, by status value.
    """

    published: int = 0
    received: int = 0
    publish_failures: int = 0
    queued: int = 0
    queue_dropped: int = 0
    queue_flushed: int = 0
    reconnects: int = 0
    rollbacks: int = 0
    recoveries: dict[str, int] = field(default_factory=dict)
    catch_ups: dict[str, int] = field(default_factory=dict)

    def count_recovery(self, status: RecoveryStatus) -> None:
        """Add one outcome to ``recoveries``."""
        self.recoveries[status.value] = self.recoveries.get(status.value, 0) + 1

    def count_catch_up(self, status: RecoveryStatus) -> None:
        """Add one outcome to ``catch_ups``."""
        self.catch_ups[status.value] = self.catch_ups.get(status.value, 0) + 1


@runtime_checkable
class BackplaneReceiver(Protocol):
    """The local side a backplane delivers to: the server's factory.

    Both methods are called from the reactor thread, in order, and must not
    raise (a backplane logs and swallows what they raise).
    """

    def deliver(self, publication: Publication) -> None:
        """Send ``publication`` to this node's open connections that match it:
        subscribed to its channel (all, if None), then ``protocol``, ``ids``
        and ``exclude``; encode once, write to each."""

    def command(self, command: Command) -> None:
        """Carry out ``command`` on this node's connections; an unknown
        ``conn_id`` is ignored (the connection closed meanwhile)."""


@runtime_checkable
class Backplane(Protocol):
    """What a server needs from an engine to act as one server over many
    processes and machines.

    An engine delivers publications and commands to the receiver given to
    :meth:`start`, including those this node made itself, so the factory has
    one receive path. Nothing here raises because the engine is unreachable:
    publications are counted, queued (bounded) and local delivery goes on.

    Implementations: :class:`~wsplugin.backplane.LocalBackplane` (one process,
    the default) and :class:`~wsplugin.backplane.RedisBackplane`.
    """

    #: This node's id, ``<name>.<worker>``: the prefix of its connection ids.
    node_id: str
    #: Counters for metrics.
    stats: BackplaneStats

    @property
    def state(self) -> str:
        """``"stopped"``, ``"connecting"``, ``"connected"``,
        ``"disconnected"`` (reconnecting) or ``"failed"`` (gave up: bad
        password, ...). The in-process engine is ``"connected"`` once
        started."""

    def start(self, receiver: BackplaneReceiver) -> Deferred[None]:
        """Begin delivering to ``receiver``; fires at once (the engine may
        connect later: see :attr:`state`)."""

    def stop(self) -> Deferred[None]:
        """Stop delivering, withdraw this node's counts, close links."""

    def new_connection_id(self) -> str:
        """A fresh connection id that names this node as its holder."""

    def publish(
        self,
        channel: str | None,
        data: bytes,
        is_binary: bool = False,
        *,
        protocol: str | None = None,
        ids: Iterable[str] | None = None,
        exclude: Iterable[str] = (),
        history_size: int | None = None,
        history_ttl: float | None = None,
    ) -> None:
        """Publish once to ``channel`` (None: every connection of every node).

        ``history_size`` (publications kept) and ``history_ttl`` (seconds
        kept after the last publication) override the engine's defaults for
        this channel.
        """

    def send(self, conn_id: str, data: bytes, is_binary: bool = False) -> None:
        """Send to the connection ``conn_id`` on whichever node holds it."""

    def disconnect(self, conn_id: str, code: int = 1000, reason: str = "") -> None:
        """Close the connection ``conn_id`` on whichever node holds it."""

    def disconnect_all(self, code: int = 1001, reason: str = "") -> None:
        """Close every connection of every node."""

    def subscribe(
        self,
        channel: str,
        since: StreamPosition | tuple[str, int] | None = None,
    ) -> Deferred[Recovery]:
        """One more local subscriber for ``channel``; recover from ``since``.

        Contract for the caller: until the Deferred fires, keep the new
        subscriber out of the channel's local fan-out; when it fires, in the
        same reactor turn, send it ``recovery.publications`` and add it to
        the fan-out. It then gets every publication after ``since`` once, in
        order (when the status is ``RECOVERED``).
        """

    def unsubscribe(self, channel: str) -> None:
        """One local subscriber less for ``channel``."""

    def connection_opened(self) -> None:
        """One more local connection (for cluster-wide counts)."""

    def connection_closed(self) -> None:
        """One local connection less."""

    def connection_count(self) -> Deferred[int]:
        """Open connections on every live node."""

    def channel_count(self, channel: str) -> Deferred[int]:
        """Subscribers of ``channel`` on every live node."""


# -- identities -------------------------------------------------------------


def _default_name() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "node"
    return f"{host}-{secrets.token_hex(3)}"


def make_node_id(name: str | None = None, worker: int = 0) -> str:
    """The id of one worker process of one node: ``<name>.<worker>``.

    Args:
        name: The node's name (letters, digits, ``_``, ``-``; at most 64).
            By default the host name plus 6 random hex digits, so two
            processes never share an id by accident.
        worker: The worker's index on the node (0 to 999999).

    Raises:
        ConfigError: a name or worker index outside those forms.
    """
    if name is None:
        name = _default_name()
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"node name {name!r} must be 1-64 letters, digits, '_' or '-'"
        )
    if isinstance(worker, bool) or not isinstance(worker, int):
        raise ConfigError(f"worker must be an int, not {type(worker).__name__}")
    if not 0 <= worker <= 999_999:
        raise ConfigError(f"worker must be 0-999999, not {worker}")
    return f"{name}.{worker}"


def check_node_id(node_id: str) -> str:
    """Return ``node_id`` if it has the ``<name>.<worker>`` form, else raise
    :class:`ConfigError`."""
    if not isinstance(node_id, str) or not _NODE.match(node_id):
        raise ConfigError(
            f"node id {node_id!r} must look like 'name.0' (see make_node_id)"
        )
    return node_id


def new_connection_id(node_id: str) -> str:
    """A connection id held by ``node_id``: ``<name>.<worker>.<32 hex>``.

    The random part is a UUID4, as the ids wsplugin used before; the prefix
    lets any node route ``write_data``/``disconnect`` without a lookup.
    """
    return f"{node_id}.{uuid.uuid4().hex}"


def holder_of(conn_id: str) -> str | None:
    """The node id that holds ``conn_id``, or None if the id does not have
    the ``<name>.<worker>.<hex>`` form (an id the application assigned)."""
    m = _CONN.match(conn_id) if isinstance(conn_id, str) else None
    return m.group(1) if m else None


def check_channel(channel: str) -> str:
    """Return ``channel`` if it is a usable channel name, else raise."""
    if not isinstance(channel, str):
        raise TypeError(f"a channel name is a str, not {type(channel).__name__}")
    if not channel or len(channel) > MAX_CHANNEL_LENGTH:
        raise ValueError(
            f"a channel name has 1 to {MAX_CHANNEL_LENGTH} characters, "
            f"not {len(channel)}"
        )
    return channel


def check_payload(data: bytes, is_binary: bool) -> bytes:
    """Return ``data`` as bytes; text payloads must be valid UTF-8."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"a payload is bytes, not {type(data).__name__}")
    data = bytes(data)
    if not is_binary:
        data.decode("utf-8")  # UnicodeDecodeError: a text frame must be UTF-8
    return data


def coerce_position(
    since: StreamPosition | tuple[str, int] | None,
) -> StreamPosition | None:
    """``since`` as a :class:`StreamPosition`; raises ValueError if malformed."""
    if since is None:
        return None
    try:
        epoch, offset = since
    except (TypeError, ValueError):
        raise ValueError(
            f"since must be an (epoch, offset) pair, not {since!r}"
        ) from None
    if not isinstance(epoch, str) or not epoch:
        raise ValueError(f"since's epoch must be a non-empty str, not {epoch!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"since's offset must be an int >= 0, not {offset!r}")
    return StreamPosition(epoch, offset)


# -- wire codec -------------------------------------------------------------
#
# One message on the engine: a JSON header line, then the payload bytes.
#   {"k":"p", ...}\n<payload>   a publication (k = kind)
#   {"k":"c", ...}\n<payload>   a command
# Header keys are one letter (o origin, b binary, p protocol, i ids,
# x exclude, l "already delivered on the origin node", c channel, t type,
# n conn id, d code, r reason); defaults are left out. Offsets and epochs are
# not in it: the engine prepends them (Redis) or keeps them (history entries).

_WIRE_VERSION = "1"


def encode_publication(pub: Publication, *, local_done: bool = False) -> bytes:
    """The bytes that carry ``pub`` (without offset and epoch)."""
    head: dict[str, object] = {"v": _WIRE_VERSION, "k": "p", "o": pub.origin}
    if pub.channel is not None:
        head["c"] = pub.channel
    if pub.is_binary:
        head["b"] = 1
    if pub.protocol is not None:
        head["p"] = pub.protocol
    if pub.ids is not None:
        head["i"] = list(pub.ids)
    if pub.exclude:
        head["x"] = list(pub.exclude)
    if local_done:
        head["l"] = 1
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + pub.data


def encode_command(cmd: Command, *, local_done: bool = False) -> bytes:
    """The bytes that carry ``cmd``."""
    head: dict[str, object] = {"v": _WIRE_VERSION, "k": "c", "o": cmd.origin}
    head["t"] = cmd.kind
    if cmd.conn_id is not None:
        head["n"] = cmd.conn_id
    if cmd.is_binary:
        head["b"] = 1
    if cmd.kind != "send":
        head["d"] = cmd.code
        head["r"] = cmd.reason
    if local_done:
        head["l"] = 1
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + cmd.data


class WireError(ValueError):
    """Bytes on the engine that are not a message of this wire format."""


def decode(
    raw: bytes, *, offset: int | None = None, epoch: str | None = None
) -> tuple[Publication | Command, bool]:
    """Parse bytes made by :func:`encode_publication`/:func:`encode_command`.

    Returns:
        The message, and whether its origin node already delivered it
        locally (so that node skips it).

    Raises:
        WireError: malformed bytes (another program published on our topic).
    """
    head_raw, sep, data = bytes(raw).partition(b"\n")
    if not sep:
        raise WireError("no header line")
    try:
        head = json.loads(head_raw)
    except ValueError as e:
        raise WireError(f"bad header: {e}") from None
    if not isinstance(head, dict) or head.get("v") != _WIRE_VERSION:
        raise WireError("unknown wire version")
    try:
        local_done = bool(head.get("l", 0))
        origin = str(head.get("o", ""))
        is_binary = bool(head.get("b", 0))
        if head["k"] == "p":
            ids = head.get("i")
            return (
                Publication(
                    channel=head.get("c"),
                    data=data,
                    is_binary=is_binary,
                    offset=offset,
                    epoch=epoch,
                    protocol=head.get("p"),
                    ids=None if ids is None else tuple(str(i) for i in ids),
                    exclude=tuple(str(i) for i in head.get("x", ())),
                    origin=origin,
                ),
                local_done,
            )
        if head["k"] == "c" and head["t"] in ("send", "close", "close_all"):
            return (
                Command(
                    kind=head["t"],
                    conn_id=head.get("n"),
                    data=data,
                    is_binary=is_binary,
                    code=int(head.get("d", 1000)),
                    reason=str(head.get("r", "")),
                    origin=origin,
                ),
                local_done,
            )
    except (KeyError, TypeError, ValueError) as e:
        raise WireError(f"bad header field: {e}") from None
    raise WireError("unknown message kind")


def validate_publish_args(
    channel: str | None,
    data: bytes,
    is_binary: bool,
    protocol: str | None,
    ids: Iterable[str] | None,
    exclude: Iterable[str],
    origin: str,
) -> Publication:
    """Check a ``publish`` call's arguments (misuse raises at once) and build
    the :class:`Publication` without offset."""
    if channel is not None:
        check_channel(channel)
    data = check_payload(data, is_binary)
    if protocol is not None and not isinstance(protocol, str):
        raise TypeError("protocol is a str or None")
    id_tuple = None if ids is None else tuple(dict.fromkeys(ids))
    ex_tuple = tuple(dict.fromkeys(exclude))
    for i in (id_tuple or ()) + ex_tuple:
        if not isinstance(i, str):
            raise TypeError(f"connection ids are str, not {type(i).__name__}")
    return Publication(
        channel=channel,
        data=data,
        is_binary=bool(is_binary),
        protocol=protocol,
        ids=id_tuple,
        exclude=ex_tuple,
        origin=origin,
    )


def check_history(size: int, ttl: float) -> None:
    """Raise :class:`ConfigError` for an unusable history size or TTL."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"history_size must be an int >= 0, not {size!r}")
    if size > 1_000_000:
        raise ConfigError(f"history_size is at most 1000000, not {size}")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ConfigError(f"history_ttl must be seconds > 0, not {ttl!r}")
