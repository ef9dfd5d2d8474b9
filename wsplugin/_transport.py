"""What wsplugin reads of a Twisted transport's write buffer, and closing a
transport without reading from it again (:func:`close_without_reading`).

Twisted has no public way to ask a transport how many bytes it holds
unwritten, or whether a write now would go straight to the socket. Both are
needed: the first for ``buffered_bytes()`` and the client's
``buffered_amount``, the second for batched writes (``wsplugin._batching``).
They read ``dataBuffer`` and Twisted's private ``_tempDataLen`` (bytes of
writes not yet joined into ``dataBuffer``), which ``twisted.internet.abstract
.FileDescriptor`` has had since Twisted 8; this module is the only place that
does, so a Twisted upgrade that changes them is fixed here.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol

__all__ = ["close_without_reading", "transport_buffered", "writes_now"]


def writes_now(transport: Any) -> bool:
    """Whether bytes sent on ``transport``'s socket now would go out in order:
    it is connected, not closing, and holds nothing unwritten."""
    return (
        transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        # Twisted private: writes not yet joined into dataBuffer (see above)
        and not transport._tempDataLen
    )


def transport_buffered(transport: Any) -> int:
    """Bytes a Twisted transport holds unwritten (TCP, or TLS over TCP)."""
    size = 0
    while transport is not None:
        size += len(getattr(transport, "dataBuffer", b"")) + getattr(
            transport, "_tempDataLen", 0
        )
        transport = getattr(transport, "transport", None)
    return size


def close_without_reading(transport: Any) -> None:
    """Close ``transport`` once what was written to it is sent, and read
    nothing more from it: what a refusal (413, 408, 431, 400...) needs.

    Twisted's TCP transport already does this on ``loseConnection()``: it
    stops reading at once. Its TLS layer does not: it sends its
    ``close_notify`` and keeps reading (and decrypting) until the peer's
    ``close_notify`` arrives, which a client that keeps uploading never
    sends; an adversarial run measured 870 MB read in 5 s after a 413, and
    up to 2.9 GB after an over-long header line. Here, over TLS, the TLS
    layer queues its ``close_notify`` behind the answer (a producer still
    registered with it would hold that back, so it is unregistered) and
    the TCP connection underneath is closed as Twisted closes plain TCP:
    reading stops now, the queued bytes go out, then the socket closes (TLS
    1.3 and 1.2 let the side that sent ``close_notify`` close without
    waiting for the other's). Both of Twisted's TLS transports are
    handled: ``TLSMemoryBIOProtocol`` (``tls=``, wrapping endpoints) is the
    transport itself; an ``ssl:`` endpoint's TCP transport runs one as its
    ``protocol``.
    """
    if not ISSLTransport.providedBy(transport):
        transport.loseConnection()
        return
    tls = transport
    if not isinstance(tls, TLSMemoryBIOProtocol):
        tls = getattr(transport, "protocol", None)
    if not isinstance(tls, TLSMemoryBIOProtocol):
        transport.pauseProducing()  # another TLS transport: read no more
        transport.loseConnection()
        return
    transport.loseConnection()  # TLS: the queued answer, then close_notify
    tls.unregisterProducer()  # no-op without one; else close_notify goes now
    under = tls.transport
    if under is not None:
        under.loseConnection()
