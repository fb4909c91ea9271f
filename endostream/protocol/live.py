"""Live mode: producer XPUB (connect) -> consumer SUB (bind), default tcp://127.0.0.1:5555.

The sender never blocks: a full queue refuses the frame (counted). A publisher silently discards
what it sends before the consumer's subscription reaches it (ZeroMQ's slow joiner), so the sender
is an XPUB that reads the subscription as it arrives: ``wait_for_consumer`` holds the first frame
until it has come, and a frame sent while no consumer is subscribed is counted as
``unsubscribed``, never as sent. The receiver drains
everything queued and keeps only the newest frame per stream ("newest wins"; ZMQ_CONFLATE
cannot be used with multipart messages). Drops are counted from sequence gaps."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import zmq

from endostream.protocol import wire
from endostream.protocol.limits import (DEFAULT_LIVE_ENDPOINT, DRAIN_BATCH, HEARTBEAT_IVL_MS,
                                        HEARTBEAT_TIMEOUT_MS, LIVE_MAX_EVENTS, LIVE_RCVHWM,
                                        LIVE_SNDHWM, LIVE_SUBSCRIBE_WAIT_S, LOG_INTERVAL_S, MAX_HEIGHT, MAX_STREAMS,
                                        MAX_WIDTH)
from endostream.protocol.security import ClientKeys, ServerKeys
from endostream.protocol.sockets import BaseReceiver, BaseSocket, recv_parts, send_parts
from endostream.protocol.stats import SenderStats, StreamStats
from endostream.protocol.wire import EndOfStream, FrameMessage, SourceLost, WireError
from endostream.types import Frame

log = logging.getLogger(__name__)


class LiveSender(BaseSocket):
    """XPUB, connects to the consumer. ``send`` never blocks."""

    def __init__(self, endpoint: str = DEFAULT_LIVE_ENDPOINT, *, codec: str = "raw",
                 jpeg_quality: int = 90, sndhwm: int = LIVE_SNDHWM, epoch: int | None = None,
                 context: zmq.Context | None = None, security: ClientKeys | None = None,
                 send_mask: bool = False, heartbeat_ivl_ms: int = HEARTBEAT_IVL_MS,
                 heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS):
        super().__init__(zmq.XPUB, context, linger_ms=0, heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms)
        self.sock.sndhwm = sndhwm  # small: a stale frame is worth nothing live
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)  # full queue -> EAGAIN we can count
        self.sock.rcvhwm = 16  # subscription notices only: one per consumer arriving or leaving
        # A pipe only while connected: a consumer that leaves withdraws its subscription (counted
        # from then on) and the frames sent meanwhile are not queued for its return, stale.
        self.sock.immediate = 1
        self.subscribed = False  # a consumer's subscription reached this socket and still holds
        self._connect(endpoint, security)
        self.codec, self.jpeg_quality, self.send_mask = codec, jpeg_quality, send_mask
        self.epoch = wire.new_epoch() if epoch is None else epoch
        self.stats = SenderStats()
        self._next_seq: dict[int, int] = {}

    @property
    def never_accepted(self) -> bool:
        """True when frames were offered but no consumer ever completed a handshake with this
        socket (refused by CURVE, or nobody there): a publisher drops them silently otherwise."""
        self._drain_monitor()
        return self.offered > 0 and self.handshakes_ok == 0

    @property
    def offered(self) -> int:
        """Frames handed to ``send``: sent, refused by the full queue, or with nobody subscribed."""
        return self.stats.sent + self.stats.refused + self.stats.unsubscribed

    def close(self) -> None:
        if not self.sock.closed and self.never_accepted:
            log.warning("%d frames offered but no consumer ever accepted this producer's connection "
                        "(%d failed handshakes): none of them was received", self.offered,
                        self.handshakes_failed)
        super().close()

    def _read_subscriptions(self) -> bool:
        """Apply queued (un)subscription notices (never blocks); returns ``subscribed``. Not
        verbose: the one topic (everything) is announced when its first subscriber arrives and
        withdrawn when its last one leaves, so the newest notice is the state."""
        while True:
            try:
                note = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.subscribed
            if note[:1] in (b"\x00", b"\x01"):
                self.subscribed = note[:1] == b"\x01"

    def wait_for_consumer(self, timeout_s: float = LIVE_SUBSCRIBE_WAIT_S) -> bool:
        """Wait up to ``timeout_s`` for a consumer's subscription; True once one holds. Called
        before a stream's first frame, so the frames a consumer is there for are not thrown away
        while its subscription is still on its way."""
        deadline = time.monotonic() + timeout_s
        while not self._read_subscriptions():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.poll(min(50, max(1, int(left * 1000))), zmq.POLLIN)
        return True

    def _send(self, parts: list) -> bool:
        parts[0] = wire.send_header(parts[0])
        try:
            send_parts(self.sock, parts)
        except zmq.Again:
            return False
        return True

    def send(self, frame: Frame) -> bool:
        """Encode and send; False when the queue was full and the frame was dropped.
        The image must not be modified afterwards (raw frames are sent without a copy)."""
        parts = wire.encode_frame(frame, epoch=self.epoch, codec=self.codec,
                                  jpeg_quality=self.jpeg_quality, send_mask=self.send_mask)
        self._next_seq[frame.stream_id] = frame.seq + 1
        if not self._read_subscriptions():  # the socket would discard it: say so, never "sent"
            self.stats.unsubscribed += 1
            ok = False
        elif ok := self._send(parts):
            self.stats.sent += 1
        else:
            self.stats.refused += 1
        if self.stats.sent + self.stats.refused <= 1 or not self.handshakes_ok:
            self._drain_monitor()  # until the first handshake: cheap, and failures get logged
        return ok

    def _send_control(self, parts: list, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while not self._send(list(parts)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def source_lost(self, stream_id: int, wait_s: float = 0.5) -> bool:
        """Tell the consumer this stream's source stopped (not end-of-stream): seq = last
        seq + 1, not consumed, so the next frame may carry it. False when the full queue
        refused it for ``wait_s``."""
        parts = wire.encode_source_lost(stream_id, self.epoch, self._next_seq.get(stream_id, 0))
        ok = self._send_control(parts, wait_s)
        self.stats.source_lost += ok
        return ok

    def end_stream(self, stream_id: int, wait_s: float = 0.5) -> bool:
        """Send end-of-stream (seq = last seq + 1), retrying briefly while the queue is full."""
        parts = wire.encode_end_of_stream(stream_id, self.epoch, self._next_seq.get(stream_id, 0))
        if not self._send_control(parts, wait_s):
            return False
        self.sock.linger = int(wait_s * 1000)  # linger 0 would discard the queued end-of-stream on close
        return True



@dataclass
class _Candidate:
    """A frame whose header and sizes are valid; its payload is checked (decoded) only when
    it is about to change state: delivered, or compared with an older frame."""

    h: wire.Header
    parts: list
    t_ns: int
    msg: FrameMessage | None = None


class LiveReceiver(BaseReceiver):
    """SUB, bound. ``recv_newest`` returns the newest frame of every stream that sent one;
    end-of-stream and source-lost show in ``stats.streams`` (``ended``, ``lost``) and as
    :class:`EndOfStream` / :class:`SourceLost` objects from ``take_events()``.

    No state (newest seq, epoch, counters of a stream) changes before a message is fully
    valid, JPEG decoded included: a frame with a garbage payload and a far-future seq is
    rejected and the frames after it are delivered."""

    def __init__(self, endpoint: str = DEFAULT_LIVE_ENDPOINT, *,
                 context: zmq.Context | None = None, allow_remote: bool = False,
                 security: ServerKeys | None = None, rcvhwm: int = LIVE_RCVHWM, max_width: int = MAX_WIDTH,
                 max_height: int = MAX_HEIGHT, max_streams: int = MAX_STREAMS,
                 max_batch: int = DRAIN_BATCH, log_interval_s: float = LOG_INTERVAL_S,
                 heartbeat_ivl_ms: int = HEARTBEAT_IVL_MS,
                 heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS, max_events: int = LIVE_MAX_EVENTS,
                 retain_buffers: bool = True):
        super().__init__(zmq.SUB, endpoint, context=context, allow_remote=allow_remote,
                         security=security, max_width=max_width, max_height=max_height,
                         max_streams=max_streams, log_interval_s=log_interval_s, linger_ms=0,
                         heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms, retain_buffers=retain_buffers)
        self.sock.rcvhwm = rcvhwm
        # ZMQ_MAXMSGSIZE stays as BaseReceiver sets it (the largest valid frame): a 1 GiB part is
        # refused by libzmq before it is allocated. An earlier round took it off after libzmq
        # 4.3.5 aborted a restarted consumer twice (assertion !_io_error); that abort is the
        # engine's heartbeat/PONG write after a peer left while the pipe was full (libzmq
        # #4841), not this option, and 32 runs of the live restart tests with it gave none.
        self.sock.subscribe(b"")
        self.max_batch = max_batch
        self._events: deque[EndOfStream | SourceLost] = deque(maxlen=max_events)
        self._bind(*self._bind_args)

    def take_events(self) -> list[EndOfStream | SourceLost]:
        """End-of-stream and source-lost messages accepted since the last call, in order."""
        out = list(self._events)
        self._events.clear()
        return out

    def recv_newest(self, timeout_ms: int = 100) -> list[FrameMessage]:
        """Wait up to ``timeout_ms`` for messages, drain what is queued (at most max_batch)
        and return the newest valid frame per stream, never one older than a frame this
        receiver already delivered from that stream and epoch. Rejects are counted."""
        self._drain_monitor()
        if not self._poller.poll(timeout_ms):
            return []
        pending: dict[int, list[_Candidate]] = {}  # per stream, ascending seq, top = newest
        seen: dict[int, int] = {}
        out: list[FrameMessage] = []
        for _ in range(self.max_batch):
            try:
                parts = recv_parts(self.sock)
            except zmq.Again:
                break
            self.stats.messages += 1
            try:
                self._account(parts, time.monotonic_ns(), pending, seen, out)
            except Exception as exc:  # noqa: BLE001 - bad input never kills the receiver
                self._reject(exc)
        for sid in list(pending):
            self._deliver(sid, pending, seen, out)
        return out

    # ---- internals
    def _valid(self, c: _Candidate, seen: dict[int, int]) -> bool:
        """Decode a candidate (once); a failure is a reject and un-counts it."""
        if c.msg is None:
            try:
                c.msg = wire.decode_frame(c.h, c.parts, c.t_ns)
            except WireError as exc:
                self._reject(exc)
                seen[c.h.stream_id] -= 1
                return False
        return True

    def _newest_valid(self, sid: int, pending: dict, seen: dict) -> _Candidate | None:
        """The newest candidate of a stream that decodes; invalid ones are dropped."""
        stack = pending.get(sid) or []
        while stack and not self._valid(stack[-1], seen):
            stack.pop()
        return stack[-1] if stack else None

    def _deliver(self, sid: int, pending: dict, seen: dict, out: list) -> None:
        """Commit the newest valid candidate of a stream (the others were superseded)."""
        c = self._newest_valid(sid, pending, seen)
        pending.pop(sid, None)
        n, seen[sid] = seen.get(sid, 0), 0
        if c is None:
            return
        st = self._switch_epoch(sid, c.h.epoch)
        st.received += n
        self._advance(st, c.h.seq)
        st.delivered += 1
        st.lost = False
        out.append(c.msg)

    def _switch_epoch(self, sid: int, epoch: int) -> StreamStats:
        st = self._stream(sid)
        if st.epoch != epoch:
            if st.epoch is not None:
                st.restarts += 1
                self._log("epoch", f"stream {sid}: new producer epoch (producer restarted)",
                          logging.INFO)
            st.epoch, st.last_seq, st.first_seq, st.ended, st.lost = epoch, None, None, False, False
        return st

    @staticmethod
    def _advance(st: StreamStats, seq: int) -> None:
        if st.last_seq is None:
            st.first_seq = seq  # counts start at the first seq seen, whatever it is
        else:
            st.dropped += max(0, seq - st.last_seq - 1)
        st.last_seq = seq

    def _committed(self, sid: int, epoch: int) -> int | None:
        """The newest delivered seq of (stream, epoch), without touching any state."""
        st = self.stats.streams.get(sid)
        return st.last_seq if st is not None and st.epoch == epoch else None

    def _account(self, parts: list, t_ns: int, pending: dict, seen: dict, out: list) -> None:
        h = wire.check_parts(parts, max_width=self.max_width, max_height=self.max_height)
        if h.kind == "heartbeat":
            return  # a PUB producer has no reply channel; nothing to do
        if h.kind == "ack":
            raise WireError("ack sent to the consumer (acks only go consumer -> producer)",
                            "ack_to_consumer")
        if h.kind == "frame" and h.codec == "jpeg":
            wire.check_jpeg(h, parts)  # cheap SOI/SOF check; decoding waits until needed
        sid = h.stream_id
        stack = pending.setdefault(sid, [])
        if stack and stack[-1].h.epoch != h.epoch:
            self._deliver(sid, pending, seen, out)  # the old epoch's newest frame first
            stack = pending.setdefault(sid, [])
        done = self._committed(sid, h.epoch)
        if done is not None and h.seq <= done:
            self._stale(sid, h.epoch, h.seq, done)
            return
        if h.kind == "frame":
            # An older seq than a pending frame: only stale if that frame is really valid.
            while stack and h.seq <= stack[-1].h.seq:
                if self._valid(stack[-1], seen):
                    self._stale(sid, h.epoch, h.seq, stack[-1].h.seq)
                    return
                stack.pop()
            if h.codec == "raw":
                stack.clear()  # fully valid already: nothing older can be needed as a fallback
            elif len(stack) > 1:
                del stack[:-1]  # keep one fallback in case this JPEG does not decode
            stack.append(_Candidate(h, parts, t_ns))
            seen[sid] = seen.get(sid, 0) + 1
            return
        # end-of-stream / source-lost: no payload, already fully valid; frames before it first
        newest = self._newest_valid(sid, pending, seen)
        if newest is not None and h.seq <= newest.h.seq:
            self._stale(sid, h.epoch, h.seq, newest.h.seq)
            return
        self._deliver(sid, pending, seen, out)
        st = self._switch_epoch(sid, h.epoch)
        if h.kind == "end_of_stream":
            if st.last_seq is not None:
                st.dropped += max(0, h.seq - st.last_seq - 1)
            st.last_seq = h.seq
            st.end_of_stream += 1
            st.ended, st.lost = True, False
            self._events.append(EndOfStream(sid, h.epoch, h.seq, h.window_start))
        else:  # source_lost: its seq is the next frame's; it consumes none
            st.source_lost += 1
            st.lost = True
            self._events.append(SourceLost(sid, h.epoch, h.seq, h.t_capture_ns))
            self._log("source_lost", f"stream {sid}: producer reports its source lost (after seq "
                      f"{h.seq - 1})")


# ============================================================================= lossless
