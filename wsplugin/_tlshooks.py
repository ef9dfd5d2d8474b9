"""Hooks around the TLS of a server: a route handler's ``verify_peer``
before its authenticator (:class:`PeerCheck`, :func:`with_peer_check`)
and certificate reload on SIGHUP (:func:`on_hangup`). Public through
:mod:`wsplugin.tls`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from wsplugin._events import as_deferred
from wsplugin.errors import HandshakeRejected, Reject

if TYPE_CHECKING:
    from wsplugin.tls import PeerCertificate

__all__ = ["PeerCheck", "on_hangup", "with_peer_check"]

# operators filter on the public module's name
_log = Logger(namespace="wsplugin.tls")


class PeerCheck:
    """A route handler's ``verify_peer`` run before the route's authenticator.

    It fires after the TLS handshake and the HTTP request head are in, and
    before authentication and ``allow`` (seed sgc ``OnSSLVerifyPeer``):
    ``verify_peer(conn, certificate)`` gets ``conn.request.peer_certificate``
    (None for a client without a certificate or a connection without TLS),
    and returns True/None to go on, False to refuse with 403, or a
    :class:`~wsplugin.Reject` (returned or raised) for another status. It
    may return a Deferred or be a coroutine.

    Args:
        verify: The handler's ``verify_peer``.
        auth: The route's authenticator, run after it (or None).
    """

    def __init__(self, verify: Callable[..., Any], auth: Any) -> None:
        self.verify = verify
        self.auth = auth

    def authenticate(self, conn: Any) -> Any:
        """Ask ``verify_peer``, then the route's authenticator."""
        certificate = conn.request.peer_certificate
        d = as_deferred(self.verify(conn, certificate))
        d.addCallback(self._verdict, conn, certificate)
        return d

    def _verdict(
        self, verdict: Any, conn: Any, certificate: PeerCertificate | None
    ) -> Any:
        if isinstance(verdict, HandshakeRejected):
            raise verdict
        if verdict is False:
            _log.info(
                "verify_peer refused {peer} ({subject})",
                peer=conn.request.peer_address,
                subject=certificate.subject if certificate else "no certificate",
            )
            raise Reject(403, "Forbidden")
        if verdict not in (True, None):
            raise TypeError(
                "verify_peer() must return True, False, None or a Reject, "
                f"not {verdict!r}"
            )
        return self.auth.authenticate(conn) if self.auth is not None else None


def on_hangup(callback: Callable[[], Any], reactor: Any) -> Callable[[], None] | None:
    """Call ``callback`` in the reactor thread on each SIGHUP.

    Returns a function that puts the previous SIGHUP handler back, or None
    where there is no SIGHUP (Windows) or when not called from the main
    thread (only it may set signal handlers). The handler only schedules
    the call: a signal handler may run between any two bytecodes.
    """
    import signal
    import threading

    if not hasattr(signal, "SIGHUP"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None

    def hangup(signum: int, frame: Any) -> None:
        reactor.callFromThread(callback)

    previous = signal.signal(signal.SIGHUP, hangup)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore


def with_peer_check(handler: Any, auth: Any) -> Any:
    """The route's authenticator, preceded by ``handler.verify_peer`` if any."""
    verify = getattr(handler, "verify_peer", None)
    return auth if verify is None else PeerCheck(verify, auth)
