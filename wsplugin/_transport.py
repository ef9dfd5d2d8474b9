"""What wsplugin reads of a Twisted transport's write buffer.

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

__all__ = ["transport_buffered", "writes_now"]


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
