"""Lossless mode, consumer side: ROUTER, bound. The consumer acks (cumulatively) what it has
FINISHED, and the receiver delivers each seq once, in order, optionally persisting what was
finished so a restarted consumer duplicates nothing."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from endostream.protocol import wire
from endostream.protocol.limits import (DEFAULT_LOSSLESS_ENDPOINT, DRAIN_BATCH, HEARTBEAT_IVL_MS,
                                        HEARTBEAT_TIMEOUT_MS, LOG_INTERVAL_S, LOSSLESS_MAX_HOLD,
                                        LOSSLESS_MAX_HOLD_BYTES, LOSSLESS_MAX_HOLD_S,
                                        LOSSLESS_RCVHWM, MAX_HEIGHT, MAX_STREAMS, MAX_WIDTH)
from endostream.protocol.memory import TRIM_AFTER_BYTES, trim_heap
from endostream.protocol.security import ServerKeys
from endostream.protocol.sockets import BaseReceiver, recv_parts, send_parts
from endostream.protocol.stats import StreamStats
from endostream.protocol.wire import EndOfStream, FrameMessage, SourceLost, WireError

log = logging.getLogger(__name__)


@dataclass
class _LosslessStream:
    next_seq: int | None = None  # next seq to deliver
    finished: int | None = None  # last seq the consumer finished (acked)
    resumed_from: int | None = None  # finished seq loaded from the state file (earlier instance)
    identity: bytes = b""
    held: dict[int, Any] = field(default_factory=dict)  # out-of-order messages by seq
    sizes: dict[int, int] = field(default_factory=dict)  # bytes of each message counted as held
    held_bytes: int = 0
    held_since: float = 0.0  # when the oldest message now held arrived (time.monotonic)
    lost: SourceLost | None = None  # a source-lost notice waiting for the frames before it
    lost_done: int | None = None  # seq of the last source-lost delivered (drops its resends)


class LosslessReceiver(BaseReceiver):
    """ROUTER, bound. ``recv`` returns each message of each (stream, epoch) once and in order
    (frames, :class:`EndOfStream`, :class:`SourceLost`); ``ack`` marks a message finished
    (call it after the sink wrote it). With ``state_file`` the finished seqs survive a
    restart, so a restarted consumer duplicates nothing.

    A message is decoded completely (JPEG included) before any state changes, so a bad frame
    never moves the window, the stream's identity or its counters."""

    def __init__(self, endpoint: str = DEFAULT_LOSSLESS_ENDPOINT, *,
                 context: zmq.Context | None = None, allow_remote: bool = False,
                 security: ServerKeys | None = None, state_file: str | Path | None = None,
                 max_hold: int = LOSSLESS_MAX_HOLD, max_hold_bytes: int = LOSSLESS_MAX_HOLD_BYTES,
                 max_hold_s: float = LOSSLESS_MAX_HOLD_S, max_width: int = MAX_WIDTH,
                 max_height: int = MAX_HEIGHT, max_streams: int = MAX_STREAMS,
                 log_interval_s: float = LOG_INTERVAL_S, heartbeat_ivl_ms: int = HEARTBEAT_IVL_MS,
                 heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS,
                 retain_buffers: bool = True):
        super().__init__(zmq.ROUTER, endpoint, context=context, allow_remote=allow_remote,
                         security=security, max_width=max_width, max_height=max_height,
                         max_streams=max_streams, log_interval_s=log_interval_s,
                         linger_ms=1000,  # let the final acks (end-of-stream) leave on close
                         heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms, retain_buffers=retain_buffers)
        self.sock.rcvhwm = LOSSLESS_RCVHWM
        self.max_hold, self.max_hold_bytes, self.max_hold_s = max_hold, max_hold_bytes, max_hold_s
        self.held_bytes = 0  # all streams' reorder buffers together
        self._next_expiry = 0.0
        self.state_file = Path(state_file) if state_file else None
        self._streams: OrderedDict[tuple[int, int], _LosslessStream] = OrderedDict()
        self._ready: deque[FrameMessage | EndOfStream | SourceLost] = deque()
        self._load_state()
        self._bind(*self._bind_args)

    # ---- public
    def recv(self, timeout_ms: int = 100) -> FrameMessage | EndOfStream | SourceLost | None:
        """The next in-order message of any stream, or None after ``timeout_ms``."""
        self._drain_monitor()
        deadline = time.monotonic() + timeout_ms / 1000
        self._expire_held(time.monotonic())
        while not self._ready:
            left = int((deadline - time.monotonic()) * 1000)
            if left < 0 or not self._poller.poll(max(left, 0)):
                break
            for _ in range(DRAIN_BATCH):
                try:
                    parts = recv_parts(self.sock)
                except zmq.Again:
                    break
                self.stats.messages += 1
                try:
                    self._handle(parts)
                except Exception as exc:  # noqa: BLE001 - bad input never kills the receiver
                    self._reject(exc)
        return self._ready.popleft() if self._ready else None

    def resumed_from(self, stream_id: int, epoch: int) -> int | None:
        """The last seq of (stream, epoch) finished by an earlier instance (state file)."""
        st = self._streams.get((stream_id, epoch))
        return None if st is None else st.resumed_from

    def ack(self, stream_id: int, epoch: int, seq: int) -> None:
        """Everything of (stream_id, epoch) up to ``seq`` is finished: persist, then tell
        the producer, which may then forget those messages."""
        st = self._streams.get((stream_id, epoch))
        if st is None:
            return
        prev, st.finished = st.finished, seq
        try:
            self._save_state()
        except OSError:
            st.finished = prev  # not persisted: not acknowledged either (nor by a heartbeat's repair)
            raise
        self._reply(st.identity, wire.encode_ack(stream_id, epoch, seq))

    def ack_message(self, msg: FrameMessage | EndOfStream | SourceLost) -> None:
        """Ack a delivered message; a SourceLost needs none (it consumes no seq): no-op."""
        if isinstance(msg, SourceLost):
            return
        self.ack(msg.stream_id, msg.epoch, msg.seq)

    # ---- internals
    def _handle(self, parts: list) -> None:
        if len(parts) < 2:
            raise WireError("message without a ROUTER identity", "part_count")
        identity, body = parts[0].bytes, parts[1:]
        h = wire.check_parts(body, max_width=self.max_width, max_height=self.max_height)
        key = (h.stream_id, h.epoch)
        if h.kind == "heartbeat":
            self._reply(identity, wire.encode_heartbeat(h.stream_id, h.epoch))
            st = self._streams.get(key)
            if st is not None and st.finished is not None:  # repairs a lost ack
                self._reply(identity, wire.encode_ack(h.stream_id, h.epoch, st.finished))
            return
        if h.kind == "ack":
            raise WireError("ack sent to the consumer (acks only go consumer -> producer)",
                            "ack_to_consumer")
        # Validate completely (pixels decoded) before touching any state.
        if h.kind == "frame":
            msg = wire.decode_frame(h, body, time.monotonic_ns())
        elif h.kind == "end_of_stream":
            msg = EndOfStream(h.stream_id, h.epoch, h.seq, h.window_start)
        else:
            msg = SourceLost(h.stream_id, h.epoch, h.seq, h.t_capture_ns)
        st, stats = self._state(key), self._stream(h.stream_id)
        st.identity = identity
        if stats.epoch != h.epoch:
            stats.restarts += stats.epoch is not None
            stats.epoch, stats.first_seq, stats.last_seq, stats.ended = h.epoch, None, None, False
        if st.next_seq is None:
            st.next_seq = h.window_start
        if h.window_start > st.next_seq:  # all below were acked, by an earlier consumer
            st.next_seq = h.window_start
            for s in [s for s in st.held if s < h.window_start]:
                self._unhold(st, s)
        if stats.first_seq is None:
            stats.first_seq = st.next_seq  # counts start here, whatever the first seq is
        if isinstance(msg, SourceLost):
            self._source_lost(st, stats, msg)
            return
        if h.seq < st.next_seq or h.seq in st.held:
            self.stats.duplicates += 1
            self.stats.stale_discarded += 1
            stats.stale += 1
            self._log("duplicate", f"stream {h.stream_id}: seq {h.seq} already delivered or held "
                      f"(a resend)", logging.INFO)
            if st.finished is not None:
                self._reply(identity, wire.encode_ack(h.stream_id, h.epoch, st.finished))
            return
        if h.seq - st.next_seq >= self.max_hold:
            self.stats.out_of_window += 1
            self._log("out_of_window", f"stream {h.stream_id}: seq {h.seq} is {self.max_hold}+ "
                      f"ahead of the next expected {st.next_seq}; dropped (it will be resent)")
            return
        if h.seq != st.next_seq and not self._hold(st, h.seq, msg):
            return
        if h.kind == "frame":
            stats.received += 1
        if h.seq == st.next_seq:
            st.held[h.seq] = msg  # delivered at once below: not counted as held
        while st.next_seq in st.held:
            m = self._unhold(st, st.next_seq)
            self._deliver_lost(st, stats, before=st.next_seq)
            self._ready.append(m)
            st.next_seq += 1
            stats.last_seq = m.seq
            if isinstance(m, EndOfStream):
                stats.end_of_stream += 1
                stats.ended, stats.lost = True, False
            else:
                stats.delivered += 1
                stats.lost = False
        self._deliver_lost(st, stats, before=st.next_seq)

    def _source_lost(self, st: _LosslessStream, stats: StreamStats, msg: SourceLost) -> None:
        """Deliver a source-lost notice after every frame before it; drop resent copies."""
        if (st.lost_done is not None and msg.seq <= st.lost_done) or msg.seq < st.next_seq:
            self.stats.stale_discarded += 1
            return
        if st.lost is None or msg.seq > st.lost.seq:
            st.lost = msg
        self._deliver_lost(st, stats, before=st.next_seq)

    def _deliver_lost(self, st: _LosslessStream, stats: StreamStats, before: int) -> None:
        if st.lost is None or st.lost.seq > before:
            return
        msg, st.lost = st.lost, None
        st.lost_done = msg.seq
        stats.source_lost += 1
        stats.lost = True
        self._ready.append(msg)
        self._log("source_lost", f"stream {msg.stream_id}: producer reports its source lost "
                  f"(after seq {msg.seq - 1})")

    def _state(self, key: tuple[int, int]) -> _LosslessStream:
        st = self._streams.get(key)
        if st is not None:
            self._streams.move_to_end(key)  # most recent last...
            return st
        st = self._streams[key] = _LosslessStream()
        if len(self._streams) > self.max_streams:  # ...and the oldest evicted past max_streams
            self._release(self._streams.popitem(last=False)[1], "stream evicted")
        return st

    # ---- the reorder buffer: bounded in frames (max_hold, checked by the caller), bytes, seconds
    def _hold(self, st: _LosslessStream, seq: int, msg: Any) -> bool:
        size = _nbytes(msg)
        if self.held_bytes + size > self.max_hold_bytes:
            self.stats.hold_dropped += 1
            self._log("hold_full", f"stream {msg.stream_id}: seq {seq} not held, the reorder "
                      f"buffer is full ({self.held_bytes >> 20} MiB); it will be resent")
            return False
        if not st.held:
            st.held_since = time.monotonic()
        st.held[seq] = msg
        st.sizes[seq] = size
        st.held_bytes += size
        self.held_bytes += size
        return True

    def _unhold(self, st: _LosslessStream, seq: int) -> Any:
        size = st.sizes.pop(seq, 0)
        st.held_bytes -= size
        self.held_bytes -= size
        return st.held.pop(seq)

    def _release(self, st: _LosslessStream, why: str) -> None:
        """Drop a stream's held messages (their producer resends every unacked one)."""
        if not st.held:
            return
        self.stats.hold_dropped += len(st.held)
        self._log("hold_released", f"{len(st.held)} held out-of-order messages dropped ({why}); "
                  "their producer resends them", logging.INFO)
        freed = st.held_bytes
        self.held_bytes -= freed
        st.held.clear()
        st.sizes.clear()
        st.held_bytes = 0
        if freed >= TRIM_AFTER_BYTES:
            trim_heap()  # hand the frames' memory back to the kernel now, not at some later free

    def _expire_held(self, now: float) -> None:
        if now < self._next_expiry:
            return
        self._next_expiry = now + min(self.max_hold_s / 4, 0.5)
        for st in self._streams.values():
            if st.held and now - st.held_since > self.max_hold_s:
                self._release(st, f"held over {self.max_hold_s:g} s: the gap before them never "
                              "came (its producer went or resends later)")

    def _reply(self, identity: bytes, parts: list) -> None:
        try:
            send_parts(self.sock, [identity, *parts], copy=True)
        except zmq.ZMQError:
            pass  # producer gone; it will resend and we will re-ack

    def _load_state(self) -> None:
        if not self.state_file or not self.state_file.exists():
            return
        try:
            rows = json.loads(self.state_file.read_text())["finished"]
            for sid, epoch, seq in rows:
                st = self._state((int(sid), int(epoch)))
                st.finished = st.resumed_from = int(seq)
                st.next_seq = int(seq) + 1
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"lossless state file {self.state_file} is unreadable: {exc}") from None

    def _save_state(self) -> None:
        """Atomic (temp file + os.replace): a crash leaves the old or the new state, never a
        torn file. No fsync: this guards against process crashes, not power loss."""
        if not self.state_file:
            return
        rows = [[k[0], k[1], st.finished] for k, st in self._streams.items()
                if st.finished is not None]
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"version": 1, "finished": rows}))
            os.replace(tmp, self.state_file)
        except OSError as exc:  # the caller stops acknowledging; the message names the file
            raise OSError(exc.errno, f"cannot write lossless state file {self.state_file}: "
                                     f"{exc.strerror or exc}") from None


# ============================================================================= re-publish


def _nbytes(msg: Any) -> int:
    """Memory a held message keeps alive (its pixels and mask; a control message: 0)."""
    frame = getattr(msg, "frame", None)
    if frame is None:
        return 0
    return frame.image.nbytes + (0 if frame.gt_mask is None else frame.gt_mask.nbytes)
