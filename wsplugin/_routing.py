"""Host and path routing with default host and default path (pure).

The semantics are those of the FPC websockets ``RegisterHandler(host, path,
handler, DefaultHost, DefaultPath)``:

* a request's host (port removed, case-insensitive) picks a host entry; when no
  entry has that name, the entry registered with ``default_host=True`` serves;
* within the host entry an exact path match wins; otherwise the route
  registered there with ``default_path=True`` serves;
* otherwise there is no route, and the server answers 404 before any upgrade.

``"*"`` has no special meaning as a host or path: it matches only itself. Use
``default_host`` / ``default_path`` for catch-alls.

A :class:`Route` computes what its connections need per message once, when it
is made: its :class:`RouteSettings` and its handler's bound event methods.
Nothing is cached elsewhere, so a route made per request (``upgrade()``) is
freed with its last connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wsplugin._events import bind_events
from wsplugin._frames import payload_size_for_frame
from wsplugin.config import ServerConfig
from wsplugin.errors import ConfigError
from wsplugin.handshake import split_host

__all__ = ["Route", "RouteSettings", "Router"]


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """What a connection needs per message from its route's config, computed
    once per route and shared by its connections (not copied into each).

    Attributes:
        frame_by_frame: Deliver each data frame (``on_fragment``).
        assemble_messages: With ``frame_by_frame``, also deliver each whole
            message (``on_message`` / ``on_binary``).
        manual_pong: Leave pings for the application to answer.
        manual_close: Leave the peer's close frame for the application.
        fragment_size: Payload bytes per outgoing frame (``split_message``
            and ``frame_size``); 0 sends each message as one frame.
        send_limit: ``max_send_buffer``: queued bytes past which
            ``send_policy`` applies (0: no limit).
        send_policy: ``"close"``, ``"drop"`` or ``"wait"``.
        plain_key: The fan-out's key for the frames of a connection that
            compresses nothing: ``(fragment_size, None)``, one shared tuple.
    """

    frame_by_frame: bool = False
    assemble_messages: bool = False
    manual_pong: bool = False
    manual_close: bool = False
    fragment_size: int = 0
    send_limit: int = 0
    send_policy: str = "close"
    plain_key: tuple[int, None] = (0, None)

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> RouteSettings:
        """The settings ``cfg`` gives (the frame size turned into payload)."""
        size = payload_size_for_frame(cfg.frame_size) if cfg.split_message else 0
        return cls(
            frame_by_frame=cfg.frame_by_frame,
            assemble_messages=cfg.assemble_messages,
            manual_pong=cfg.manual_pong,
            manual_close=cfg.manual_close,
            fragment_size=size,
            send_limit=cfg.max_send_buffer,
            send_policy=cfg.send_buffer_policy,
            plain_key=(size, None),
        )


DEFAULT_SETTINGS = RouteSettings()
"""The settings of a connection that has no route yet."""


@dataclass(frozen=True)
class Route:
    """A registered handler with the options that apply to its connections.

    Attributes:
        host: Host name registered (lowercase).
        path: Path registered.
        handler: The object whose event methods are called.
        config: The server config with this route's overrides applied.
        auth: An authenticator checked before ``allow`` (see
            :mod:`wsplugin.auth`), or None for a public route.
        settings: The per-message :class:`RouteSettings` of ``config``.
        events: The handler's event methods by name (see
            :data:`~wsplugin._events.ROUTE_EVENTS`), looked up once; absent
            ones are left out. Read only.

    Raises:
        TypeError: an event name of ``handler`` is not callable.
    """

    host: str
    path: str
    handler: Any
    config: ServerConfig
    auth: Any = None
    settings: RouteSettings = field(init=False, repr=False, compare=False)
    events: dict[str, Callable[..., Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # frozen: computed fields are set the way dataclasses set fields
        object.__setattr__(self, "settings", RouteSettings.from_config(self.config))
        object.__setattr__(self, "events", bind_events(self.handler))


@dataclass
class _HostEntry:
    paths: dict[str, Route] = field(default_factory=dict)
    default: Route | None = None


class Router:
    """Maps a request's host and path to a :class:`Route`."""

    def __init__(self) -> None:
        self._hosts: dict[str, _HostEntry] = {}
        self._default_host: str | None = None

    def register(
        self,
        host: str,
        path: str,
        handler: Any,
        config: ServerConfig,
        *,
        default_host: bool = False,
        default_path: bool = False,
        auth: Any = None,
    ) -> Route:
        """Register ``handler`` for ``host`` and ``path``.

        Raises:
            ConfigError: a path not starting with ``/`` (other than ``"*"``),
                or a second default host.
        """
        if not isinstance(path, str) or not (path.startswith("/") or path == "*"):
            raise ConfigError(f"a route path must start with '/', not {path!r}")
        key = split_host(host) if host != "*" else "*"
        if default_host and self._default_host not in (None, key):
            raise ConfigError(
                f"host {self._default_host!r} is already the default host; "
                "only one host can be"
            )
        route = Route(key, path, handler, config, auth)
        entry = self._hosts.setdefault(key, _HostEntry())
        replaced = entry.paths.get(path)
        entry.paths[path] = route
        if default_path or (replaced is not None and entry.default is replaced):
            entry.default = route
        if default_host:
            self._default_host = key
        return route

    def unregister(self, host: str, path: str) -> None:
        """Remove the route for ``host`` and ``path`` (no error if absent).

        A host left without routes is forgotten: its requests go to the
        default host again, and if it was the default host there is none.
        """
        key = split_host(host) if host != "*" else "*"
        entry = self._hosts.get(key)
        if entry is None:
            return
        route = entry.paths.pop(path, None)
        if route is not None and entry.default is route:
            entry.default = None
        if not entry.paths:
            del self._hosts[key]
            if self._default_host == key:
                self._default_host = None

    def resolve(self, host: str, path: str) -> Route | None:
        """The route serving ``host`` (a Host header value) and ``path``."""
        entry = self._hosts.get(split_host(host))
        if entry is None and self._default_host is not None:
            entry = self._hosts.get(self._default_host)
        if entry is None:
            return None
        return entry.paths.get(path) or entry.default

    def routes(self) -> list[Route]:
        """Every registered route."""
        return [r for e in self._hosts.values() for r in e.paths.values()]

    def __bool__(self) -> bool:
        return any(e.paths for e in self._hosts.values())
