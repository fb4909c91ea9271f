"""Lossless mode, producer side: DEALER (connect) -> consumer ROUTER (bind), default
tcp://127.0.0.1:5556. The producer keeps at most ``window`` unacked frames and resends them
oldest first when acks stop coming or a consumer (re)connects."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque

import zmq

from endostream.protocol import wire
from endostream.protocol.limits import (DEFAULT_LOSSLESS_ENDPOINT, HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS,
                                        LOSSLESS_ACK_TIMEOUT_S, LOSSLESS_WINDOW)
from endostream.protocol.security import ClientKeys
from endostream.protocol.sockets import BaseSocket, recv_parts, send_parts
from endostream.protocol.stats import SenderStats
from endostream.protocol.wire import Ack, WireError
from endostream.types import Frame

log = logging.getLogger(__name__)


class LosslessSender(BaseSocket):
    """DEALER, connects to the consumer. Keeps up to ``window`` unacked messages (already
    encoded) and blocks in ``send`` while the window is full. Resends all unacked messages,
    oldest first, whenever a connection to a consumer is (re)established (a restarted
    consumer), and as a fallback when no ack arrived for ``ack_timeout_s``."""

    def __init__(self, endpoint: str = DEFAULT_LOSSLESS_ENDPOINT, *, window: int = LOSSLESS_WINDOW,
                 ack_timeout_s: float = LOSSLESS_ACK_TIMEOUT_S, codec: str = "raw", jpeg_quality: int = 90,
                 epoch: int | None = None, context: zmq.Context | None = None,
                 security: ClientKeys | None = None, send_mask: bool = False,
                 heartbeat_ivl_ms: int = HEARTBEAT_IVL_MS,
                 heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS):
        super().__init__(zmq.DEALER, context, linger_ms=0, heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms)
        self.sock.sndhwm = window + 8
        # Not ZMQ_IMMEDIATE: with it, acks not yet read are discarded when the consumer
        # disconnects (e.g. the final end-of-stream ack of a consumer that then exits).
        # Handshake events (the monitor) tell us when a consumer (re)appears: resend what it
        # may lack; failed handshakes (CURVE refused) are logged.
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._connect(endpoint, security)
        self.window, self.ack_timeout_s = window, ack_timeout_s
        self.codec, self.jpeg_quality, self.send_mask = codec, jpeg_quality, send_mask
        self.epoch = wire.new_epoch() if epoch is None else epoch
        self.stats = SenderStats()
        self._hb_ivl_s = heartbeat_ivl_ms / 1000
        self._peer_timeout_s = heartbeat_timeout_ms / 1000
        self._unacked: OrderedDict[tuple[int, int], list] = OrderedDict()  # (sid, seq) -> parts
        self._pending: deque[tuple[int, int]] = deque()  # to (re)send, oldest first
        self._lost: dict[int, list] = {}  # sid -> source-lost parts, resent on reconnect
        self._next_seq: dict[int, int] = {}
        self._last_progress = time.monotonic()
        self._last_sent = 0.0
        self._last_heard = 0.0

    @property
    def outstanding(self) -> int:
        """Messages sent (or queued to send) and not yet acknowledged."""
        return len(self._unacked)

    @property
    def peer_alive(self) -> bool:
        """True when the consumer answered (ack or heartbeat) within the heartbeat timeout."""
        return time.monotonic() - self._last_heard < self._peer_timeout_s

    @property
    def never_accepted(self) -> bool:
        """True when messages were sent but the consumer acknowledged none (refused by
        CURVE, or nobody there)."""
        return self.stats.sent > 0 and self.stats.acked == 0

    def close(self) -> None:
        if not self.sock.closed and self.never_accepted:
            log.warning("%d messages sent but the consumer acknowledged none (%d failed "
                        "handshakes): none of them was received", self.stats.sent,
                        self.handshakes_failed)
        super().close()

    def send(self, frame: Frame, timeout_s: float | None = None) -> None:
        """Queue one frame, waiting while the window is full. Seqs of a stream must be
        consecutive. Raises TimeoutError when ``timeout_s`` passes with the window full."""
        expected = self._next_seq.get(frame.stream_id, frame.seq)
        if frame.seq != expected:
            raise ValueError(f"lossless stream {frame.stream_id}: seq {frame.seq}, "
                             f"expected {expected} (seqs must be consecutive)")
        if len(self._unacked) >= self.window:
            self._wait(lambda: len(self._unacked) < self.window, timeout_s)
        parts = wire.encode_frame(frame, epoch=self.epoch, codec=self.codec,
                                  jpeg_quality=self.jpeg_quality, send_mask=self.send_mask)
        self._lost.pop(frame.stream_id, None)  # the source is back
        self._queue(frame.stream_id, frame.seq, parts)

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until ``send`` would not block (the window has room); False on timeout.
        A producer that grabs frames on demand calls this before grabbing, so waiting for
        the consumer does not count as the frame's latency."""
        if len(self._unacked) < self.window:
            return True
        try:
            self._wait(lambda: len(self._unacked) < self.window, timeout_s)
        except TimeoutError:
            return False
        return True

    def source_lost(self, stream_id: int) -> bool:
        """Tell the consumer this stream's source stopped (not end-of-stream). Never blocks
        and is not acknowledged: seq = next frame's seq (not consumed), window_start = the
        current floor; resent on every reconnect until the stream's next frame. False when
        no consumer could take it right now (it goes out on the next connection)."""
        seq = self._next_seq.get(stream_id, 0)
        floor = self._floor(stream_id) if any(s == stream_id for s, _ in self._unacked) else seq
        parts = wire.encode_source_lost(stream_id, self.epoch, seq, window_start=floor)
        self._lost[stream_id] = parts
        self.stats.source_lost += 1
        return self._send_lost(parts)

    def _send_lost(self, parts: list) -> bool:
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        self._last_sent = time.monotonic()
        return True

    def end_stream(self, stream_id: int, timeout_s: float | None = None) -> bool:
        """Send end-of-stream (acked like a frame) and wait until everything is acked."""
        seq = self._next_seq.get(stream_id, 0)
        self._wait(lambda: len(self._unacked) < self.window, timeout_s)
        self._lost.pop(stream_id, None)
        self._queue(stream_id, seq, wire.encode_end_of_stream(stream_id, self.epoch, seq))
        return self.flush(timeout_s)

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every message is acknowledged; False on timeout."""
        try:
            self._wait(lambda: not self._unacked, timeout_s)
        except TimeoutError:
            return False
        return True

    def _queue(self, sid: int, seq: int, parts: list) -> None:
        self._next_seq[sid] = seq + 1
        if not self._unacked:
            self._last_progress = time.monotonic()  # the ack clock starts with the first
        self._unacked[(sid, seq)] = parts
        self._pending.append((sid, seq))
        self._flush_pending()

    def _floor(self, sid: int) -> int:
        # _unacked holds each stream's seqs in ascending order (queued in order, acked
        # cumulatively from the front), so its first key of the stream is the lowest.
        return next(seq for s, seq in self._unacked if s == sid)

    def _flush_pending(self) -> None:
        while self._pending:
            key = self._pending[0]
            parts = self._unacked.get(key)
            if parts is not None:
                hdr = wire.send_header(parts[0], self._floor(key[0]))
                try:
                    send_parts(self.sock, [hdr, *parts[1:]])
                except zmq.Again:
                    return  # no consumer connected or its queue is full: retry later
                self._last_sent = time.monotonic()
                self.stats.sent += 1
            self._pending.popleft()

    def _wait(self, done, timeout_s: float | None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"lossless: {len(self._unacked)} messages unacknowledged "
                                   f"after {timeout_s:.1f} s (is the consumer running?)")
            self.service(50)

    def service(self, timeout_ms: int = 0) -> None:
        """Handle acks, heartbeats and reconnects for up to ``timeout_ms``; resend if needed."""
        events = dict(self._poller.poll(timeout_ms))
        if self._monitor in events:
            first = self.handshakes_ok == 0
            ok = self._drain_monitor()
            if ok and not (first and ok == 1):  # a reconnect, not the first contact
                if self._unacked:
                    log.info("consumer connected: resending %d unacked messages", len(self._unacked))
                    self.stats.resent += len(self._unacked)
                    self._pending = deque(self._unacked)
                for parts in self._lost.values():
                    self._send_lost(parts)
        if self.sock in events:
            while True:
                try:
                    parts = recv_parts(self.sock, copy=True)  # acks: 128 bytes, copied
                except zmq.Again:
                    break
                self._on_reply(parts)
        now = time.monotonic()
        if self._unacked and now - self._last_progress > self.ack_timeout_s:
            self.stats.resent += len(self._unacked)
            log.info("no ack for %.1f s: resending %d unacked messages", self.ack_timeout_s,
                     len(self._unacked))
            self._pending = deque(self._unacked)
            self._last_progress = now
        self._flush_pending()
        if now - self._last_sent > self._hb_ivl_s and self._next_seq:
            sid = next(iter(self._next_seq))
            try:
                self.sock.send_multipart(wire.encode_heartbeat(sid, self.epoch), zmq.NOBLOCK)
                self._last_sent = now
            except zmq.Again:
                pass

    def _on_reply(self, parts: list) -> None:
        try:
            msg = wire.decode_message(parts)
        except WireError as exc:
            self._hs_log(exc.reason, f"malformed reply from consumer ignored: {exc}")
            return
        self._last_heard = time.monotonic()
        if isinstance(msg, Ack) and msg.epoch == self.epoch:
            done = []
            for k in self._unacked:  # each stream's seqs ascending: stop past msg.seq
                if k[0] == msg.stream_id:
                    if k[1] > msg.seq:
                        break
                    done.append(k)
            for k in done:
                del self._unacked[k]
            if done:
                self.stats.acked += len(done)
                self._last_progress = time.monotonic()

