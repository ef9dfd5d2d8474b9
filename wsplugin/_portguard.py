"""A listening port guarded against its socket being destroyed or closed
underneath the server (:class:`ListenerGuard`).

Twisted's TCP and UNIX ports (``tcp.Port`` and its subclasses) have no
event for "this socket stopped accepting", and two ways of losing one went
wrong (an adversarial run against the watchdog found both):

* **Destroyed in place** (``ss -K``, or ``shutdown()`` through another
  descriptor of the socket): ``accept()`` fails with ``EINVAL``; Twisted
  logs a traceback and keeps the socket in the reactor, which reports it
  readable again at once. With the watchdog off that loop never ended:
  37,190 tracebacks (22 MB of log) and 88% of a core in 5 s.
* **Closed underneath** (``close()`` on its descriptor, from a debugger or
  a library gone wrong): the kernel drops the socket from the epoll set,
  but the reactor still maps the descriptor's number to the port. Removing
  the port then fails (``epoll_ctl`` on a closed number), the next socket
  given that number is never read (the reactor believes it knows it, so a
  new listener there never accepted), shutdown fails with ``KeyError``, and
  the dead socket object's ``close()`` would close whatever has the number
  by then.

A guard installed on a port answers both:

* it holds a spare descriptor of the listening socket (``os.dup``): the
  socket, and its place in the epoll set, outlive whatever happens to the
  port's own descriptor;
* before each ``doRead`` it asks the port's descriptor ``SO_ACCEPTCONN``
  (one ``getsockopt``, once per readiness event, not per connection): a
  destroyed or closed listener is found before ``accept()`` fails, the port
  is taken out of the reactor at once, and ``on_lost`` is told once (no
  traceback, no loop);
* taking the port out of the reactor (:meth:`ListenerGuard.forget`, also
  run by the port's ``stopListening``) goes through the descriptor number
  the reactor registered: when that number was closed, the spare is put
  back on it for the moment the removal takes, then the number is given
  back (closed again, or returned to the file that took it meanwhile), and
  the port's socket object is detached, so that its ``close()`` never
  reaches that number again;
* the spare is closed when the port's ``connectionLost`` runs.

The guard replaces the port's ``doRead``, ``stopListening``,
``loseConnection`` and ``connectionLost`` on that one instance (as the
connection gate replaces a protocol's ``connectionLost``); the reactor and
every caller find them there.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["ListenerGuard", "guard_of"]

_SO_ACCEPTCONN = getattr(socket, "SO_ACCEPTCONN", None)

_log = Logger()


def guard_of(port: Any) -> ListenerGuard | None:
    """The guard installed on ``port``, or None."""
    guard = getattr(getattr(port, "doRead", None), "__self__", None)
    return guard if isinstance(guard, ListenerGuard) else None


class ListenerGuard:
    """Guards one listening port (see the module's description).

    Args:
        port: A listening ``tcp.Port`` (or subclass: UNIX, systemd).
        on_lost: Called once, as ``on_lost(port, why)``, when a read finds
            the listener destroyed or closed; the port is out of the
            reactor by then. Whoever owns the port still stops it.

    Use :meth:`install`, which leaves ports without a socket alone.
    """

    def __init__(self, port: Any, on_lost: Callable[[Any, str], None]) -> None:
        self.port = port
        self.on_lost = on_lost
        self.fd: int = port.fileno()
        self.spare: int | None = os.dup(self.fd)  # not inherited by children
        self.identity = _identity(os.fstat(self.spare))
        self.reported = False
        self.forgotten = False
        self._read = port.doRead
        self._stop = port.stopListening
        self._lost = port.connectionLost
        port.doRead = self.doRead
        port.stopListening = port.loseConnection = self.stopListening
        port.connectionLost = self.connectionLost

    @classmethod
    def install(
        cls, port: Any, on_lost: Callable[[Any, str], None]
    ) -> ListenerGuard | None:
        """Guard ``port`` if it is a listening socket the reactor reads."""
        if _SO_ACCEPTCONN is None or getattr(port, "socket", None) is None:
            return None
        if not all(hasattr(port, n) for n in ("doRead", "fileno", "reactor")):
            return None
        try:
            return cls(port, on_lost)
        except OSError as e:
            _log.warn("cannot guard listening port {port}: {e}", port=port, e=e)
            return None

    def problem(self) -> str | None:
        """Why the port no longer accepts connections, or None: its
        descriptor is closed, or now names another file, or its socket does
        not listen (shut down, destroyed)."""
        try:
            same = _identity(os.fstat(self.fd)) == self.identity
        except OSError:
            return "its descriptor was closed underneath"
        if not same:
            return "its descriptor was closed underneath and reused"
        return self._accept_problem()

    def _accept_problem(self) -> str | None:
        try:
            accepting = self.port.socket.getsockopt(socket.SOL_SOCKET, _SO_ACCEPTCONN)
        except OSError as e:
            return f"its socket is unusable: {e.strerror or e}"
        return None if accepting else "its socket no longer accepts connections"

    # -- what the port's own methods become --------------------------------

    def doRead(self) -> Any:
        """Accept, unless the listener is gone: then leave the reactor now."""
        if self.forgotten:
            return None
        why = self._accept_problem()
        if why is None:
            return self._read()
        self.forget()
        if not self.reported:
            self.reported = True
            self.on_lost(self.port, why)
        return None

    def stopListening(self, *args: Any) -> Any:
        """The port's own ``stopListening``, after :meth:`forget`."""
        self.forget()
        return self._stop(*args)

    def connectionLost(self, reason: Any) -> Any:
        """The port's own ``connectionLost``, then the spare is closed."""
        try:
            return self._lost(reason)
        finally:
            self.close_spare()

    # -- leaving the reactor -----------------------------------------------

    def forget(self) -> None:
        """Take the port out of the reactor's readers, through the number it
        was registered with, even if that number was closed underneath."""
        if self.forgotten:
            return
        self.forgotten = True
        port, fd, reactor = self.port, self.fd, self.port.reactor
        try:
            ours = _identity(os.fstat(fd)) == self.identity
            taken = not ours  # the number names another file now
        except OSError:
            ours = taken = False
        if ours or not self._spare_ok():
            reactor.removeReader(port)
            return
        # Closed underneath. epoll removes a registration only through the
        # number it was made with, naming the same file: put the listening
        # socket (the spare) back on that number for the removal.
        held = os.dup(fd) if taken else None
        inheritable = os.get_inheritable(fd) if taken else False
        os.dup2(self.spare, fd, inheritable=False)
        try:
            reactor.removeReader(port)
        except OSError:
            _log.failure("could not remove a lost listener from the reactor")
        finally:
            # the socket object must never close (or use) the number again
            port.socket.detach()
            if held is not None:  # the number goes back to the file that had it
                os.dup2(held, fd, inheritable=inheritable)
                os.close(held)
            else:
                os.close(fd)

    def _spare_ok(self) -> bool:
        """Whether the spare still names the listening socket (something
        that closes descriptors underneath may close it too)."""
        if self.spare is None:
            return False
        try:
            return _identity(os.fstat(self.spare)) == self.identity
        except OSError:
            return False

    def close_spare(self) -> None:
        """Release the spare descriptor (the socket closes with the last),
        unless it was closed underneath: its number may name another file."""
        ok = self._spare_ok()
        spare, self.spare = self.spare, None
        if spare is not None and ok:
            os.close(spare)


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino
