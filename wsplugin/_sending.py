"""The sending side of the server's Autobahn adapter: frames out.

* the transport's push producer: while the transport is full, writes wait
  in the connection's :class:`~wsplugin._sendqueue.SendQueue` (made on first
  need), control frames first, bounded by the send-buffer policy;
* per-turn batching on plain TCP (:mod:`wsplugin._batching`);
* a graceful TCP close waits for what is queued, at most the close-handshake
  timeout (at least 1 s), then aborts a peer that does not read;
* reading pauses, by reason (receive queue, async handler, ``allow``...);
* the send methods of the :class:`~wsplugin._connbase.ConnectionEngine`
  (``conn.send_text`` and friends) and of the
  :class:`~wsplugin._fanout.FanoutTarget` (broadcasts).

A mixin of :class:`~wsplugin.protocol.WebSocketServerProtocol`, kept apart
so that the send path can be read on its own. Autobahn private names used:
the ``_closeConnection`` hook (flush the batch before a TCP close, bound a
graceful one), ``maxMessagePayloadSize`` lifted around ``sendMessage``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.websocket.protocol import WebSocketProtocol as _WSP
from twisted.internet.defer import Deferred, succeed

from wsplugin._batching import BATCH_LIMIT, send_now
from wsplugin._codec import encode_frame as codec_encode_frame
from wsplugin._codec import encode_message as codec_encode_message
from wsplugin._codec import frame_header
from wsplugin._frames import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    encode_message,
)
from wsplugin._lifecycle import Phase
from wsplugin._sendqueue import Admission, SendQueue, admission
from wsplugin._transport import transport_buffered, writes_now
from wsplugin.errors import ConnectionClosed, FragmentedSendError, WSPluginError

if TYPE_CHECKING:
    from wsplugin._fanout import FrameKey
    from wsplugin._lifecycle import Lifecycle
    from wsplugin._routing import RouteSettings
    from wsplugin.connection import Connection
    from wsplugin.factory import WebSocketServerFactory

__all__ = ["LARGE_FRAME", "AutobahnSending"]

LARGE_FRAME = 16384
"""Payload bytes from which a single-frame message is written as header and
payload side by side (:meth:`AutobahnSending._send_large`) instead of being
joined into one ``bytes`` first: a 64 KiB message then costs no copy before
the socket."""

_OPEN = Phase.OPEN
_PEER_CLOSED = Phase.PEER_CLOSED
_ENDED = Phase.ENDED
_CONNECTING = (Phase.AWAITING_REQUEST, Phase.HANDSHAKE)


class AutobahnSending:
    """The transport's producer, the send queue, batching and send methods."""

    # set by the protocol (see WebSocketServerProtocol)
    factory: WebSocketServerFactory
    lifecycle: Lifecycle
    settings: RouteSettings
    connection: Connection | None
    outbox: SendQueue | None = None
    frame_key: FrameKey | None = None
    _read_pauses: set[str] | None = None
    # writes of this reactor turn, sent with one send() at its end (plain
    # TCP only; see sendData)
    _batch: list[bytes] | None = None
    _batch_size = 0
    _direct = False
    _linger_call: Any = None
    bytes_out = 0  # written or queued (the connection log's bytes_out)

    # Autobahn's (the protocol this class is mixed into)
    state: int
    peer: str
    transport: Any
    closeHandshakeTimeout: float
    maxMessagePayloadSize: int

    # -- the outgoing side (IPushProducer for the transport) -----------------

    def pauseProducing(self) -> None:
        """The transport's buffer is full: queue further writes here."""
        self._outbox().pause()

    def resumeProducing(self) -> None:
        """The transport drained: write what is queued."""
        self._outbox().resume()

    def stopProducing(self) -> None:
        """The transport is gone: free the queue."""
        self._outbox().pause()
        self._drop_queue()

    def _outbox(self) -> SendQueue:
        queue = self.outbox
        if queue is None:
            queue = self.outbox = SendQueue(self.transport.write, self._outbox_empty)
        return queue

    def _outbox_empty(self) -> None:
        self.resume_reading("send buffer")
        queue = self.outbox
        if queue is not None and queue.closing:
            queue.closing = False
            self.transport.unregisterProducer()

    def sendData(
        self, data: bytes, sync: bool = False, chopsize: int | None = None
    ) -> None:
        """Write to the transport, or queue while it is full.

        On a plain TCP connection whose transport holds nothing, the writes
        of one reactor turn are collected and sent with a single ``send()``
        at its end (:mod:`wsplugin._batching`); past
        :data:`~wsplugin._batching.BATCH_LIMIT` bytes the collected writes go
        out at once and the transport's flow control applies as usual.
        """
        batch = self._batch
        if batch is not None:
            if self._batch_size + len(data) <= BATCH_LIMIT:
                batch.append(data)
                self._batch_size += len(data)
                return
            self.flush_batch()
        queue = self.outbox
        if queue is None or not (queue.paused or queue.queuing):
            transport = self.transport
            if (
                self._direct
                and len(data) <= BATCH_LIMIT
                and not transport.TLS
                and writes_now(transport)
            ):
                self._batch = [data]
                self._batch_size = len(data)
                self.factory.batcher.add(self)
                return
            self.bytes_out += len(data)
            transport.write(data)
            return
        self.bytes_out += len(data)
        queue.push(data)

    @property
    def pending_writes(self) -> int:
        """Bytes written this reactor turn and waiting for its end (the
        batcher's), 0 when none."""
        return self._batch_size if self._batch is not None else 0

    def flush_batch(self) -> None:
        """Send the writes collected this turn (the batcher calls this at the
        turn's end): as much as the socket takes now, the rest through the
        transport (which then owns ordering)."""
        batch = self._batch
        if batch is None:
            return
        self._batch = None
        self.bytes_out += self._batch_size
        transport = self.transport
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        send_now(transport, data, writes_now(transport))

    def _send_control(self, opcode: int, payload: bytes) -> None:
        """A ping or pong: ahead of queued data, so keep-alive is not starved."""
        frame = codec_encode_frame(opcode, payload)
        queue = self.outbox
        if queue is None or not (queue.paused or queue.queuing):
            self.sendData(frame)
        else:
            queue.push_control(frame)

    def _drop_queue(self) -> None:
        queue = self.outbox
        if queue is not None:
            conn = self.connection
            queue.clear(
                ConnectionClosed(
                    conn.close_code if conn else None, conn.close_reason if conn else ""
                )
            )

    def unregisterProducer(self) -> None:
        """Autobahn unregisters when it closes; wait until the queue is out."""
        queue = self.outbox
        if queue is not None and queue.queuing and queue.queued:
            queue.closing = True
        else:
            self.transport.unregisterProducer()

    def _closeConnection(self, abort: bool = False) -> None:
        if abort:
            self._batch = None
            self._drop_queue()
        else:
            self.flush_batch()  # before the transport starts closing
        if not abort and self._linger_call is None:
            # A graceful close waits for queued data to reach the peer; one
            # that never reads is aborted after the close-handshake timeout.
            self._linger_call = self.factory.clock.callLater(
                max(self.closeHandshakeTimeout, 1.0), self._linger_expired
            )
        super()._closeConnection(abort)

    def _linger_expired(self) -> None:
        self._linger_call = None
        if self.lifecycle.phase is not _ENDED:
            self._drop_queue()
            self.transport.abortConnection()

    def _admit(self, queue: SendQueue) -> bool:
        """Whether one more data message may be queued (the send-buffer
        policy of :func:`~wsplugin._sendqueue.admission`)."""
        settings = self.settings
        verdict = admission(queue.queued, settings.send_limit, settings.send_policy)
        if verdict is Admission.SEND:
            return True
        if verdict is Admission.DROP:
            if self.connection is not None:
                self.connection.dropped_messages += 1
            self.send_buffer_overflow("drop")
            return False
        if verdict is Admission.WAIT:
            self.pause_reading("send buffer")
            return True
        self.factory.log_limited(
            "closing {peer}: {queued} bytes queued, over max_send_buffer {limit}",
            peer=self.peer,
            queued=queue.queued,
            limit=settings.send_limit,
        )
        queue.drop_data()
        self.send_buffer_overflow("close")
        self._close_with(
            _WSP.CLOSE_STATUS_CODE_POLICY_VIOLATION, "send buffer overflow"
        )
        return False

    def send_buffer_overflow(self, action: str) -> None:
        """The send-buffer policy acted: ``"drop"`` (a message skipped) or
        ``"close"`` (the connection closes with 1008). Nothing by default;
        :mod:`wsplugin.metrics` counts them (called only over the limit, so
        the normal send path pays nothing for it)."""

    # -- reading pauses ------------------------------------------------------

    def pause_reading(self, reason: str = "receive queue") -> None:
        """Stop reading from the socket for ``reason`` (the receive queue is
        full, an async handler or ``allow`` is pending, the send buffer is
        over its limit with the "wait" policy...)."""
        if self._read_pauses is None:
            self._read_pauses = set()
        if not self._read_pauses and self.lifecycle.phase is not _ENDED:
            self.transport.pauseProducing()
        self._read_pauses.add(reason)

    def resume_reading(self, reason: str = "receive queue") -> None:
        """``reason`` to pause is gone: read again once none is left."""
        pauses = self._read_pauses
        if not pauses or reason not in pauses:
            return
        pauses.discard(reason)
        if (
            not pauses
            and self.lifecycle.phase is not _ENDED
            and self.state != _WSP.STATE_CLOSED
        ):
            self.transport.resumeProducing()

    # -- ConnectionEngine: sending (what the Connection facade calls) -----

    def _not_open(self) -> Exception:
        if self.lifecycle.phase in _CONNECTING:
            return WSPluginError(
                "the connection is not open yet: send from on_open or later "
                "(allow() and on_connect() run before the handshake completes)"
            )
        conn = self.connection
        return ConnectionClosed(
            conn.close_code if conn else None, conn.close_reason if conn else ""
        )

    def send_message(
        self, payload: bytes, is_binary: bool, fragment_size: int | None = None
    ) -> None:
        """Send a whole data message (see ``ConnectionEngine``)."""
        if self.lifecycle.phase is not _OPEN:
            raise self._not_open()
        queue = self.outbox
        if queue is not None:
            if queue.fragmenting:
                raise FragmentedSendError(
                    "finish the message started with send_frame() (fin=True) first"
                )
            if queue.queued and not self._admit(queue):
                return
        self._send_own(payload, is_binary, fragment_size)

    def _send_own(
        self, payload: bytes, is_binary: bool, size: int | None = None
    ) -> None:
        """Frame and send one message: ``size`` payload bytes per frame (0:
        one frame; None: the route's ``split_message`` setting)."""
        key = self.frame_key
        if size is None:
            size = self.settings.fragment_size
        if key is None:
            # Autobahn compresses, with its context: it applies the
            # *incoming* message limit to outgoing messages too; a server may
            # send what it likes, so lift it for this call.
            limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
            try:
                self.sendMessage(payload, is_binary, fragmentSize=size or None)
            finally:
                self.maxMessagePayloadSize = limit
        elif key[1] is not None:
            self.sendData(encode_message(payload, is_binary, size, key[1]))
        elif size and len(payload) > size:
            self.sendData(codec_encode_message(payload, is_binary, size))
        elif len(payload) >= LARGE_FRAME:
            self._send_large(
                frame_header(OP_BINARY if is_binary else OP_TEXT, len(payload)),
                payload,
            )
        else:
            self.sendData(
                codec_encode_frame(OP_BINARY if is_binary else OP_TEXT, payload)
            )

    def _send_large(self, header: bytes, payload: bytes) -> None:
        """A large frame, without joining header and payload: on plain TCP
        with nothing held, one ``sendmsg()`` (writev) of both; what the
        socket does not take, or any other transport, through
        ``writeSequence``. Twisted's transports take ``bytes`` only, so the
        part left over after a partial send is a slice (a copy of that
        part), and a transport that buffers joins its pieces when it
        writes."""
        if self._batch is not None:
            self.flush_batch()  # what was written before goes first
        queue = self.outbox
        if queue is not None and (queue.paused or queue.queuing):
            queue.push(header + payload)
            return
        transport = self.transport
        if self._direct and not transport.TLS and writes_now(transport):
            try:
                sent = transport.socket.sendmsg((header, payload))
            except OSError:
                # EAGAIN, or a dead socket: the transport retries, or finds
                # the error and reports the connection lost as usual
                sent = 0
            head = len(header)
            if sent < head:
                transport.writeSequence([header[sent:] if sent else header, payload])
            elif sent - head < len(payload):
                transport.write(payload[sent - head :] if sent > head else payload)
            return
        transport.writeSequence([header, payload])

    def send_data_frame(self, payload: bytes, is_binary: bool, fin: bool) -> None:
        """Send one data frame (see ``ConnectionEngine``); prepared frames of
        a broadcast wait until its message is finished."""
        queue = self.outbox
        fragmenting = queue is not None and queue.fragmenting
        if not (fragmenting and self.lifecycle.phase is _PEER_CLOSED):
            # after the peer's close (manual_close) only the message already
            # under way may be finished (RFC 6455 5.5.1)
            if self.lifecycle.phase is not _OPEN:
                raise self._not_open()
        if fragmenting:
            opcode = OP_CONTINUATION
        else:
            opcode = OP_BINARY if is_binary else OP_TEXT
        self.sendData(codec_encode_frame(opcode, payload, fin))
        if not fin:
            self._outbox().fragmenting = True
        elif queue is not None and fragmenting:
            for data in queue.finish_message():
                self.sendData(data)

    def send_ping(self, payload: bytes) -> None:
        """Send a ping (at most 125 bytes) ahead of queued data."""
        if self.lifecycle.phase is not _OPEN:
            raise self._not_open()
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        self._send_control(OP_PING, payload)

    def send_pong(self, payload: bytes) -> None:
        """Send a pong (at most 125 bytes), while the WebSocket is open."""
        if len(payload) > 125:
            raise ValueError("a pong payload is at most 125 bytes")
        if self.state == _WSP.STATE_OPEN:
            self._send_control(OP_PONG, payload)

    def buffered_amount(self) -> int:
        """Bytes of data frames queued here (not yet given to the transport)."""
        queue = self.outbox
        return queue.queued if queue is not None else 0

    def drain(self) -> Deferred[None]:
        """Fires once nothing is queued here."""
        queue = self.outbox
        if queue is None:
            return succeed(None)
        ended = None
        if self.lifecycle.phase is _ENDED:
            conn = self.connection
            ended = ConnectionClosed(conn.close_code if conn else None)
        return queue.drain(ended)

    # -- FanoutTarget (what the server's fan-out calls) --------------------

    def offer_prepared(self, data: bytes) -> bool:
        """A broadcast's ready-made frames: sent now, after the message this
        connection is in the middle of (``send_frame``), or not at all (not
        open, or refused by the send-buffer policy)."""
        if self.lifecycle.phase is not _OPEN:
            return False
        queue = self.outbox
        if queue is not None:
            if queue.queued and not self._admit(queue):
                return False
            if queue.fragmenting:
                queue.hold(data)
                return True
        self.sendData(data)
        return True

    def offer_message(self, payload: bytes, is_binary: bool) -> bool:
        """A broadcast's message, compressed with this connection's own
        context (or, behind a ``send_frame`` message, held uncompressed)."""
        if self.lifecycle.phase is not _OPEN:
            return False
        queue = self.outbox
        if queue is not None:
            if queue.queued and not self._admit(queue):
                return False
            if queue.fragmenting:
                size = self.settings.fragment_size
                queue.hold(encode_message(payload, is_binary, size))
                return True
        self._send_own(payload, is_binary)
        return True

    def held_bytes(self) -> int:
        """Outgoing bytes held for this connection: queued here, and not yet
        written by the transport."""
        return self.buffered_amount() + transport_buffered(self.transport)
