"""wsplugin._portguard: a listening port destroyed or closed underneath
leaves the reactor at once, through the number it was registered with,
without a traceback, a loop, or touching whatever takes that number next.

The reactor here is a task.Clock with readers kept as Twisted's epoll
reactor keeps them (by descriptor number) over a real epoll set, so a
removal through a closed number fails as it does there."""

from __future__ import annotations

import os
import select
import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from wsplugin._portguard import ListenerGuard, guard_of


class EpollReadersClock(Clock):
    """Readers by descriptor number over a real epoll set (Twisted's epoll
    reactor: ``_add`` skips a number it knows; ``_remove`` unregisters
    through the number the reader's ``fileno()`` gives, or, for -1, the
    number it was registered under)."""

    def __init__(self) -> None:
        super().__init__()
        self.epoll = select.epoll()
        self.readers: dict[int, Any] = {}

    def addReader(self, reader: Any) -> None:
        fd = reader.fileno()
        if fd not in self.readers:
            self.epoll.register(fd, select.EPOLLIN)
            self.readers[fd] = reader

    def removeReader(self, reader: Any) -> None:
        fd = reader.fileno()
        if fd == -1:
            fd = next((n for n, r in self.readers.items() if r is reader), -1)
        if self.readers.get(fd) is reader:
            self.epoll.unregister(fd)  # raises for a closed number
            del self.readers[fd]

    def removeWriter(self, writer: Any) -> None:
        pass  # a listening port never writes

    def ready(self) -> list[Any]:
        """The readers epoll reports readable now."""
        return [self.readers[fd] for fd, _ in self.epoll.poll(0)]


class Lost:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, str]] = []

    def __call__(self, port: Any, why: str) -> None:
        self.calls.append((port, why))


class GuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = EpollReadersClock()
        self.addCleanup(self.clock.epoll.close)
        self.port = tcp.Port(
            0, Factory.forProtocol(Protocol), interface="127.0.0.1", reactor=self.clock
        )
        self.port.startListening()
        self.addCleanup(self._stop)
        self.lost = Lost()
        guard = ListenerGuard.install(self.port, self.lost)
        assert guard is not None
        self.guard = guard
        self.fd = self.port.fileno()

    def _stop(self) -> None:
        if self.port.connected:
            self.port.stopListening()
            self.clock.advance(0)

    def test_installed(self) -> None:
        """The guard holds a spare of the socket; a healthy port accepts."""
        self.assertIs(guard_of(self.port), self.guard)
        self.assertIsNone(self.guard.problem())
        with socket.create_connection(("127.0.0.1", self.port.getHost().port)):
            self.assertEqual(self.clock.ready(), [self.port])
            self.port.doRead()
        self.assertEqual(self.lost.calls, [])
        self.assertIsNone(ListenerGuard.install(object(), self.lost))

    def test_destroyed(self) -> None:
        """A listener destroyed in place (readable for ever, accept EINVAL):
        the first read takes it out of the reactor and reports it once; no
        accept is tried, so nothing is logged by Twisted."""
        duplicate = socket.socket(fileno=os.dup(self.fd))
        duplicate.shutdown(socket.SHUT_RDWR)
        try:
            duplicate.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        duplicate.close()
        self.assertEqual(self.clock.ready(), [self.port])
        self.port.doRead()
        self.assertEqual(
            self.lost.calls, [(self.port, "its socket no longer accepts connections")]
        )
        self.assertEqual((self.clock.readers, self.clock.ready()), ({}, []))
        self.port.doRead()
        self.assertEqual(len(self.lost.calls), 1)
        self.port.stopListening()
        self.clock.advance(0)
        self.assertIsNone(self.guard.spare)

    def test_closed_underneath(self) -> None:
        """The descriptor closed underneath: the socket lives on in the
        spare (epoll still reports it), the first read reports it, and the
        reactor forgets it through the number it knew; the number is closed
        again and the socket object no longer holds it."""
        number = self.port.getHost().port
        client = socket.socket()  # made first: it must not take the number
        self.addCleanup(client.close)
        os.close(self.fd)
        self.assertEqual(self.guard.problem(), "its descriptor was closed underneath")
        client.connect(("127.0.0.1", number))
        self.assertEqual(self.clock.ready(), [self.port])
        self.port.doRead()
        (call,) = self.lost.calls
        self.assertIn("Bad file descriptor", call[1])
        self.assertEqual(self.clock.readers, {})
        self.assertRaises(OSError, os.fstat, self.fd)  # closed again
        self.assertEqual(self.port.socket.fileno(), -1)  # detached
        self.port.stopListening()
        self.clock.advance(0)
        self.assertFalse(self.port.connected)
        self.assertIsNone(self.guard.spare)

    def test_number_taken_meanwhile(self) -> None:
        """Another file took the number before the port was stopped: the
        reactor forgets the port, and the number stays with that file, even
        after the port's socket is closed."""
        os.close(self.fd)
        null = os.open(os.devnull, os.O_RDONLY)
        if null != self.fd:
            os.dup2(null, self.fd)
            os.close(null)
        self.addCleanup(os.close, self.fd)
        taken = os.fstat(self.fd).st_ino
        self.assertEqual(
            self.guard.problem(), "its descriptor was closed underneath and reused"
        )
        self.port.stopListening()
        self.clock.advance(0)
        self.assertEqual(self.clock.readers, {})
        self.assertEqual(os.fstat(self.fd).st_ino, taken)
        self.assertIsNone(self.guard.spare)
        # a new socket added now is really registered (the number is free of
        # the old port in the reactor's tables)
        fresh = socket.socket()
        self.addCleanup(fresh.close)
        fresh.bind(("127.0.0.1", 0))
        fresh.listen()
        self.clock.addReader(fresh)
        self.assertIs(self.clock.readers[fresh.fileno()], fresh)
        self.clock.removeReader(fresh)

    def test_ordinary_stop(self) -> None:
        """A healthy port stops as Twisted stops it; the spare goes too, so
        the address is free again."""
        number = self.port.getHost().port
        self.port.stopListening()
        self.clock.advance(0)
        self.assertIsNone(self.guard.spare)
        again = socket.socket()
        self.addCleanup(again.close)
        again.bind(("127.0.0.1", number))

    def test_spare_closed_underneath(self) -> None:
        """Something closing descriptors may close the spare instead: the
        port goes on accepting, and at its stop the spare's number (now
        another file's) is not closed again."""
        spare = self.guard.spare
        assert spare is not None
        os.close(spare)
        null = os.open(os.devnull, os.O_RDONLY)
        if null != spare:
            os.dup2(null, spare)
            os.close(null)
        self.addCleanup(os.close, spare)
        taken = os.fstat(spare).st_ino
        self.assertIsNone(self.guard.problem())
        self.port.stopListening()
        self.clock.advance(0)
        self.assertEqual(os.fstat(spare).st_ino, taken)
        self.assertEqual(self.clock.readers, {})
