"""Where one server connection is in its life: one enum, explicit transitions.

Autobahn keeps the state of the WebSocket close handshake on the wire
(``STATE_CONNECTING``, ``OPEN``, ``CLOSING``, ``CLOSED``). wsplugin needs
more than that, and less: whether the request head was read, whether the
connection was refused before it opened, whether the application still owes
the peer an answer to its close frame (``manual_close``), and whether it has
ended. Those used to be half a dozen booleans on the protocol, with
combinations that meant nothing (ended but never started, peer-closed but
never opened). Here they are one :class:`Phase`, changed only through
:meth:`Lifecycle.advance` along the table below (after h11's explicit state
tables): a transition the table does not list raises
:class:`LifecycleError`, so an impossible state cannot be reached silently.

::

    AWAITING_REQUEST --head read--> HANDSHAKE --101 sent--> OPEN --close sent--> CLOSING
           |                            |                    |
           +------refused or dropped----+--> REFUSED         +--peer's close
                                                         (manual_close)--> PEER_CLOSED
    any phase but ENDED --connectionLost--> ENDED

Pure Python: no reactor, no transport.
"""

from __future__ import annotations

import enum

__all__ = ["Event", "Lifecycle", "LifecycleError", "Phase", "TRANSITIONS"]


class Phase(enum.Enum):
    """The phases of a server connection."""

    AWAITING_REQUEST = "awaiting request"
    """TCP accepted; the request head is not complete (``on_connect`` may
    still be deciding)."""
    HANDSHAKE = "handshake"
    """The head was read and routed: validation, authentication, ``allow``."""
    REFUSED = "refused"
    """It will never open: ``on_connect`` refused it, or the handshake failed
    (an HTTP error answered, a timeout, the client left)."""
    OPEN = "open"
    """The 101 was sent; messages flow both ways."""
    PEER_CLOSED = "peer closed"
    """``manual_close``: the peer's close frame arrived and waits for the
    application's answer (``conn.close()``); it lasts until the end, the
    answer included (Autobahn's state says whether it was sent)."""
    CLOSING = "closing"
    """It was open; a close frame was sent (ours, or our answer to the
    peer's) or the TCP connection is being closed."""
    ENDED = "ended"
    """The TCP connection is gone and the end events have fired."""


class Event(enum.Enum):
    """What moves a connection from one phase to the next."""

    HEAD_READ = "head read"
    REFUSE = "refuse"
    OPEN = "open"
    PEER_CLOSE = "peer close"
    CLOSE = "close"
    END = "end"


P, E = Phase, Event

TRANSITIONS: dict[Phase, dict[Event, Phase]] = {
    P.AWAITING_REQUEST: {
        E.HEAD_READ: P.HANDSHAKE,
        E.REFUSE: P.REFUSED,
        E.CLOSE: P.REFUSED,
        E.END: P.ENDED,
    },
    P.HANDSHAKE: {
        E.OPEN: P.OPEN,
        E.REFUSE: P.REFUSED,
        E.CLOSE: P.REFUSED,
        E.END: P.ENDED,
    },
    P.REFUSED: {E.REFUSE: P.REFUSED, E.CLOSE: P.REFUSED, E.END: P.ENDED},
    P.OPEN: {E.PEER_CLOSE: P.PEER_CLOSED, E.CLOSE: P.CLOSING, E.END: P.ENDED},
    P.PEER_CLOSED: {E.CLOSE: P.PEER_CLOSED, E.END: P.ENDED},
    P.CLOSING: {E.CLOSE: P.CLOSING, E.END: P.ENDED},
    P.ENDED: {},
}
"""Every allowed transition: ``TRANSITIONS[phase][event]`` is the next phase.
``CLOSE`` (a close frame sent, or the TCP connection dropped by us) may come
more than once; it leaves a closing or refused connection where it is."""

del P, E

_OPENED = frozenset({Phase.OPEN, Phase.PEER_CLOSED, Phase.CLOSING})


class LifecycleError(RuntimeError):
    """A transition the table does not allow: a bug in wsplugin, never the
    peer's doing (the adapter checks the phase before it moves it)."""


class Lifecycle:
    """The phase of one connection; starts at :attr:`Phase.AWAITING_REQUEST`.

    One small object per connection (one slot). :attr:`phase` is read
    directly on hot paths; it changes only through :meth:`advance`.
    """

    __slots__ = ("phase",)

    def __init__(self, phase: Phase = Phase.AWAITING_REQUEST) -> None:
        self.phase = phase

    def advance(self, event: Event) -> Phase:
        """Apply ``event``; returns the phase before it.

        Raises:
            LifecycleError: ``event`` is not allowed in the current phase.
        """
        before = self.phase
        after = TRANSITIONS[before].get(event)
        if after is None:
            raise LifecycleError(f"{event.value!r} is not allowed when {before.value}")
        self.phase = after
        return before

    @property
    def opened(self) -> bool:
        """Whether the connection is open or was open and is closing (not
        after it ended: :meth:`advance` returns the phase it ended from)."""
        return self.phase in _OPENED

    @property
    def head_read(self) -> bool:
        """Whether the request head was consumed (or reading it was given up)."""
        return self.phase is not Phase.AWAITING_REQUEST

    def __repr__(self) -> str:
        return f"<Lifecycle {self.phase.value}>"
