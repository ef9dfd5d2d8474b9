"""Server configuration: one frozen, keyword-only, validated object.

:class:`ServerConfig` holds every server-wide option. A route can override
most of them (``server.register_handler(..., max_message_size=1024)``): the
route then gets ``config.for_route(**overrides)``, validated the same way;
the few in :data:`SERVER_ONLY` act before a route is known and are refused.

Defaults are safe: the handshake, each message, each frame, the request head
and the number of connections are all bounded. A limit is switched off only on
purpose, with ``0``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from wsplugin._frames import MIN_FRAME_SIZE
from wsplugin.errors import ConfigError

__all__ = ["SEND_BUFFER_POLICIES", "SERVER_ONLY", "MiB", "ServerConfig"]

MiB = 1024 * 1024

SEND_BUFFER_POLICIES = ("close", "drop", "wait")

SERVER_ONLY = frozenset(
    {
        "open_handshake_timeout",
        "max_request_head",
        "max_headers",
        "max_connections",
        "max_connections_per_ip",
        "per_ip_exempt",
        "max_request_body",
        "request_body_timeout",
        "shutdown_timeout",
        "watchdog_interval",
        "watchdog_attempts",
        "server_header",
    }
)
"""Options a route cannot override: they act before routing, or server-wide."""

_LEAST = {"max_queue": 1}
"""Integer options whose smallest value is not 0 (one message must fit)."""


def _tuple_of_str(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(f"{name} takes a list of strings, not the string {value!r}")
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"{name} takes a list of strings, not {value!r}") from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{name} takes non-empty strings, not {item!r}")
    return items


def _networks(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(f"{name} takes a list of networks, not the string {value!r}")
    try:
        items = tuple(value)
    except TypeError:
        raise ConfigError(f"{name} takes a list of networks, not {value!r}") from None
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except (TypeError, ValueError):
            raise ConfigError(
                f"{name}: {item!r} is not an IP network (e.g. '10.0.0.0/8', '::1')"
            ) from None
    return tuple(networks)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Every option of a :class:`~wsplugin.WebSocketServer`.

    Component options (TMS ``Options``):

    Attributes:
        frame_by_frame: Deliver each received data frame to ``on_fragment``
            instead of assembling messages. UTF-8 is still validated across
            the frames of a text message.
        assemble_messages: With ``frame_by_frame``, also assemble each
            message and deliver it whole to ``on_message`` / ``on_binary``
            after its last frame went to ``on_fragment`` (sgc
            ``FragmentedMessages = frgAll``). ``max_message_size`` then
            bounds the whole message, as without ``frame_by_frame``.
        skip_upgrade_check: Accept a handshake whose ``Upgrade``/``Connection``
            headers are missing or wrong.
        skip_version_check: Accept a handshake whose ``Sec-WebSocket-Version``
            is missing or not 13 (the connection then speaks version 13).
        manual_pong: Do not answer pings; ``on_ping`` may call ``conn.pong``.
        manual_close: Do not answer a peer's close frame; ``on_close`` (or any
            later code) answers with ``conn.close``. An unanswered close is
            dropped after ``close_handshake_timeout``.
        split_message: Send each data message in frames of at most
            ``frame_size`` bytes, header included.
        frame_size: Largest frame on the wire, header included, when
            ``split_message`` is on (at least 3: 2 header bytes + 1 payload).

    Limits (``0`` switches a limit off):

    Attributes:
        max_message_size: Largest message accepted, in payload bytes after
            decompression; larger closes with 1009.
        max_frame_size: Largest frame payload accepted; larger closes with 1009.
        max_request_head: Largest HTTP request line plus headers, in bytes
            (431 when exceeded).
        max_headers: Most header lines in the handshake request (431).
        open_handshake_timeout: Seconds for the whole opening handshake.
        close_handshake_timeout: Seconds to wait for the peer's close reply.
        max_connections: Most open TCP connections, HTTP and WebSocket alike
            (connections still in their handshake, and idle keep-alive HTTP
            connections on a same-port server, count). A connection accepted
            over the limit gets 503 and is closed.
        max_connections_per_ip: Most open TCP connections from one IPv4
            address or one IPv6 /64 network (where one host usually gets a
            whole /64); over it, 503 and closed. 1000 by default: one
            address cannot take more than a twentieth of the default
            ``max_connections``, while a NAT with a few hundred users
            behind one address still fits. Raise it to the largest crowd
            you serve behind a single address.
        per_ip_exempt: Networks (``"10.0.0.0/8"``, ``"::1/128"``) that
            ``max_connections_per_ip`` does not apply to. Loopback by default,
            because a reverse proxy on the same machine connects from there
            for every client; add your proxies' addresses, or pass ``()``
            to limit loopback too.
        max_request_body: Largest HTTP request body, in bytes, on a server that
            serves HTTP on the same port (1 MiB). A declared
            ``Content-Length`` over it gets 413 before any body byte is read;
            a chunked body is cut with 413 where it crosses it. A resource can
            raise (or lower) it for itself with a ``max_request_body``
            attribute (see :mod:`wsplugin.web`).
        request_body_timeout: Seconds for a whole HTTP request body to
            arrive, from the end of its head; a slower one gets 408 and the
            connection is closed. Resources may override it with a
            ``request_body_timeout`` attribute.
        max_queue: Messages buffered for ``conn.receive()`` before reading from
            the socket pauses (at least 1).
        max_send_buffer: Bytes of outgoing data queued for one connection
            (beyond what the socket and Twisted's transport hold) before
            ``send_buffer_policy`` applies. A single message is always
            accepted while the queue is under the limit.
        send_buffer_policy: What happens to a connection whose outgoing queue
            is over ``max_send_buffer`` when another message is sent:
            ``"close"`` (queue freed, close 1008), ``"drop"`` (the message is
            skipped for that connection and counted in
            ``conn.dropped_messages``), or ``"wait"`` (the message is queued,
            reading from that peer pauses until the queue drains, and
            ``await conn.drain()`` waits; past 8 times the limit the
            connection is closed as with ``"close"``).
        idle_timeout: Close (1001 "idle timeout") a connection that sent no
            message for this many seconds (0: off; pings and pongs do not
            count, so it sheds clients that are alive but unused). Checked
            every ``idle_timeout`` seconds: it acts within one to two periods.
            Dead peers are the heartbeat's job.
        shutdown_timeout: Seconds ``stop()`` waits for clients to close.

    Keep-alive (sgc ``HeartBeat``), on by default as in ``websockets``:

    Attributes:
        heartbeat_interval: A client that sent nothing for this many seconds
            gets a ping (0: off); busy connections are never pinged. A
            handler's ``before_heartbeat(conn)`` may send its own keep-alive
            instead: returning True skips the ping.
        heartbeat_timeout: Seconds to wait for any answer (a pong or any other
            data) before closing the connection with 1011 (0: never). Unused
            when ``heartbeat_interval`` is 0.

    Listener restart (sgc ``WatchDog``):

    Attributes:
        watchdog_interval: Seconds between attempts to listen on an endpoint
            that failed at start, and between checks of the running
            listeners: one found lost (its socket no longer accepts) is
            listened on again, open connections untouched (0: off).
        watchdog_attempts: Attempts before giving up (0: forever).

    Negotiation:

    Attributes:
        allowed_origins: ``Origin`` patterns accepted (``*`` wildcards;
            ``"same-origin"`` for the origin whose host and port are the
            ``Host`` header's); others get 403. Requests without ``Origin``
            (non-browser clients) are not checked. None, the default, accepts
            any origin on a public route but only the same origin on a route
            with an authenticator: a browser sends its cached Basic
            credentials and cookies with an upgrade any site's page starts.
            ``("*",)`` accepts any origin everywhere (the server warns when
            an authenticated route gets it).
        subprotocols: Subprotocols this route speaks. The first subprotocol in
            the client's offer that is in this list is chosen (client order,
            as RFC 6455 expects); ``allow`` may choose another offered one.
        compression: Accept permessage-deflate (RFC 7692) offers.
        compression_context_takeover: Keep the server's compressor between
            messages (better ratio for streams of similar messages). Off by
            default: each outgoing message is compressed on its own, so no
            zlib state (about 256 KiB) stays with a connection, and a
            broadcast is compressed once for all receivers that negotiated
            the same window size. Clients cannot tell the difference.
        utf8_validation: Validate incoming text as UTF-8 (close 1007 if not).
        server_header: Value of the ``Server`` response header; ``""`` omits it.
        trusted_proxies: How many reverse proxies in front of the server add
            to ``X-Forwarded-For``. ``conn.request.peer`` and ``peer_address``
            are then the address that many entries from the end of the header
            (the one the outermost trusted proxy added); entries before it may
            be forged. 0 (the default) ignores the header.
        connection_log: Log one event when each connection opens and one when
            it ends (``wsplugin.connections``: id, peer, route, subprotocol,
            duration, bytes, close code; docs/logging.md). Off by default:
            formatted by a file observer the two cost about half of a
            handshake's CPU, and before logging begins Twisted keeps the
            last 65,536 events in memory.
    """

    frame_by_frame: bool = False
    assemble_messages: bool = False
    skip_upgrade_check: bool = False
    skip_version_check: bool = False
    manual_pong: bool = False
    manual_close: bool = False
    split_message: bool = False
    frame_size: int = 4096

    max_message_size: int = 16 * MiB
    max_frame_size: int = 16 * MiB
    max_request_head: int = 16 * 1024
    max_headers: int = 100
    open_handshake_timeout: float = 10.0
    close_handshake_timeout: float = 5.0
    max_connections: int = 20_000
    max_connections_per_ip: int = 1000
    per_ip_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    max_request_body: int = 1 * MiB
    request_body_timeout: float = 30.0
    max_queue: int = 32
    max_send_buffer: int = 1 * MiB
    send_buffer_policy: str = "close"
    idle_timeout: float = 0.0
    shutdown_timeout: float = 5.0

    heartbeat_interval: float = 20.0
    heartbeat_timeout: float = 20.0

    watchdog_interval: float = 0.0
    watchdog_attempts: int = 0

    trusted_proxies: int = 0
    connection_log: bool = False
    allowed_origins: tuple[str, ...] | None = None
    subprotocols: tuple[str, ...] = field(default=())
    compression: bool = False
    compression_context_takeover: bool = False
    utf8_validation: bool = True
    server_header: str = "wsplugin"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise ConfigError(f"{f.name} must be True or False, not {value!r}")
            least = _LEAST.get(f.name, 0)
            if f.type == "int" and (
                isinstance(value, bool) or not isinstance(value, int) or value < least
            ):
                raise ConfigError(
                    f"{f.name} must be an integer >= {least}, not {value!r}"
                )
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"{f.name} must be a number, not {value!r}")
                try:
                    number = float(value)
                except OverflowError:
                    raise ConfigError(f"{f.name} is too large: {value!r}") from None
                if number < 0 or number != number:
                    raise ConfigError(f"{f.name} must be >= 0, not {value!r}")
                object.__setattr__(self, f.name, number)
        for name in ("allowed_origins", "subprotocols"):
            value = getattr(self, name)
            if value is None and name == "allowed_origins":
                continue  # the default policy (see the docstring)
            object.__setattr__(self, name, _tuple_of_str(name, value))
        object.__setattr__(
            self, "per_ip_exempt", _networks("per_ip_exempt", self.per_ip_exempt)
        )
        if self.split_message and self.frame_size < MIN_FRAME_SIZE:
            raise ConfigError(
                f"frame_size must be at least {MIN_FRAME_SIZE} bytes (a 2-byte "
                f"header and 1 payload byte), not {self.frame_size}"
            )
        if self.assemble_messages and not self.frame_by_frame:
            raise ConfigError(
                "assemble_messages needs frame_by_frame (without it every "
                "message is delivered whole already)"
            )
        if self.send_buffer_policy not in SEND_BUFFER_POLICIES:
            raise ConfigError(
                f"send_buffer_policy must be one of {', '.join(SEND_BUFFER_POLICIES)},"
                f" not {self.send_buffer_policy!r}"
            )
        if not isinstance(self.server_header, str) or any(
            c in self.server_header for c in "\r\n"
        ):
            raise ConfigError("server_header must be a single-line string")

    def for_route(self, **overrides: Any) -> ServerConfig:
        """This config with a route's ``overrides`` applied.

        Raises:
            ConfigError: an option that only the server as a whole can have
                (see :data:`SERVER_ONLY`), an unknown name, or a bad value.
        """
        server_only = sorted(set(overrides) & SERVER_ONLY)
        if server_only:
            raise ConfigError(
                f"{', '.join(server_only)} apply to the whole server (they act "
                "before a route is known); set them on WebSocketServer instead"
            )
        return self.replace(**overrides)

    def replace(self, **changes: Any) -> ServerConfig:
        """Return a copy with ``changes`` applied and validated.

        Raises:
            ConfigError: an unknown option name or a bad value.
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(
                f"unknown option(s): {', '.join(sorted(unknown))}; "
                f"see wsplugin.ServerConfig for the valid names"
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_options(cls, **options: Any) -> ServerConfig:
        """Build a config from keyword options, rejecting unknown names."""
        return cls().replace(**options)

    @classmethod
    def option_names(cls) -> Iterable[str]:
        """The names of every option, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]
