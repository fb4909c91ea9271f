"""ZeroMQ socket wrappers for the two transport modes. Messages are wire protocol v1.

live      producer PUB (connect) -> consumer SUB (bind), default tcp://127.0.0.1:5555.
          The sender never blocks: a full queue refuses the frame (counted). The receiver
          drains everything queued and keeps only the newest frame per stream ("newest wins";
          ZMQ_CONFLATE cannot be used with multipart messages). Drops are counted from
          sequence gaps.
lossless  producer DEALER (connect) -> consumer ROUTER (bind), default tcp://127.0.0.1:5556.
          The consumer acks (cumulatively) what it has FINISHED; the producer keeps at most
          ``window`` unacked frames, resends them oldest first when acks stop coming, and the
          receiver delivers each seq once, in order, optionally persisting what it finished.

The consumer binds (one hub, many producers connect), to loopback unless allow_remote=True.
Every socket can be CURVE-encrypted and authenticated (endostream.protocol.security).
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import logging
import os
import time
import warnings
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from zmq.utils.monitor import parse_monitor_message

from endostream.protocol import wire
from endostream.protocol.security import (ClientKeys, ServerKeys, key_id, secure_client, secure_server,
                                          start_auth, stop_auth)
from endostream.protocol.wire import Ack, EndOfStream, FrameMessage, SourceLost, WireError
from endostream.types import Frame

log = logging.getLogger(__name__)

DEFAULT_LIVE_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_LOSSLESS_ENDPOINT = "tcp://127.0.0.1:5556"

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)
_buffers_retained: bool | None = None  # None: not tried yet


def retain_frame_buffers(trim_threshold: int = 256 << 20) -> bool:
    """Let this process reuse freed frame-sized heap memory instead of handing it back to
    the kernel. Returns True when in effect (Linux/glibc), False elsewhere (a no-op).

    libzmq allocates a fresh buffer for every large message it receives (a raw 640x480 frame
    is 0.9 MB, 1080p 6.2 MB) and frees it when the frame is dropped. With glibc's default
    dynamic thresholds those buffers are mmapped or trimmed back to the kernel, so every
    received frame page-faults its buffer in again and the kernel zeroes every page: on a
    loopback stream that cost more CPU than the TCP copy itself. Here mmap is used only for
    blocks above 32 MiB (a raw 4K frame, 24.9 MB, still comes from the heap) and at most
    ``trim_threshold`` bytes of free heap top are kept per arena. Process-wide and sticky
    (mallopt cannot be scoped); the receivers call it once unless ``retain_buffers=False``."""
    global _buffers_retained
    if _buffers_retained is not None:
        return _buffers_retained
    _buffers_retained = False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, ValueError, TypeError):  # not glibc / no confstr name
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _buffers_retained = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                             and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    return _buffers_retained


# Hot path: plain-int flags and a per-part loop instead of send_multipart/recv_multipart,
# whose per-call Python (part type checks, enum flag arithmetic, a getsockopt(RCVMORE) per
# part) cost more than the rest of a raw frame's handling.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)


def _send_parts(sock: zmq.Socket, parts: list, copy: bool = False) -> None:
    """One multipart message, never blocking; zmq.Again when it cannot be queued (then
    nothing was sent: ZeroMQ queues a multipart message whole or not at all). With
    ``copy=False`` a part of ``sock.copy_threshold`` (64 KiB) or more is sent zero-copy:
    libzmq reads the caller's buffer (a raw frame's pixels) until the send completed, so it
    must not change meanwhile; smaller parts (the 128-byte header) are copied at once."""
    last = len(parts) - 1
    for i, part in enumerate(parts):
        sock.send(part, _MORE_NOBLOCK if i < last else _NOBLOCK, copy=copy)


def _recv_parts(sock: zmq.Socket, copy: bool = False) -> list:
    """One queued multipart message, never blocking (zmq.Again when none is queued). With
    ``copy=False`` the parts are zmq.Frames owning libzmq's receive buffers: a raw payload
    is viewed, never copied (wire.decode_frame wraps it with np.frombuffer)."""
    if copy:
        return sock.recv_multipart(_NOBLOCK)
    frame = sock.recv(_NOBLOCK, copy=False)
    parts = [frame]
    while frame.more:  # the rest of a multipart message is already there: never Again
        frame = sock.recv(_NOBLOCK, copy=False)
        parts.append(frame)
    return parts


def check_bind_endpoint(endpoint: str, allow_remote: bool = False) -> None:
    """Refuse to bind beyond loopback (frames are patient data) unless allow_remote=True."""
    scheme, _, rest = endpoint.partition("://")
    if scheme not in ("tcp", "ipc", "inproc"):
        raise ValueError(f"endpoint {endpoint!r}: expected tcp://, ipc:// or inproc://")
    if scheme != "tcp":
        return
    host = rest.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name or a host name
        loopback = False
    if loopback:
        return
    if not allow_remote:
        raise ValueError(f"refusing to bind {endpoint}: not a loopback address; pass "
                         "allow_remote=True (transport.allow_remote=true) and enable security")
    warnings.warn(f"binding {endpoint} beyond loopback: enable CURVE security "
                  "(transport.security.enabled=true)", stacklevel=3)
    log.warning("binding %s beyond loopback", endpoint)


class RateLimitedLog:
    """One log line per key (a reject reason, a handshake failure), then at most one per
    ``interval_s`` per key, saying how many were not logged: a flood of one kind of garbage
    never hides a different problem, and never floods the log."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger, self.interval_s = logger, interval_s
        self.counts: dict[str, int] = {}
        self._last: dict[str, tuple[float, int]] = {}  # key -> (time logged, count then)

    def __call__(self, key: str, text: str, level: int = logging.WARNING) -> None:
        n = self.counts[key] = self.counts.get(key, 0) + 1
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            return
        skipped = n - (last[1] if last else 0) - 1
        self._last[key] = (now, n)
        more = f", {skipped} more since the last line" if skipped > 0 else ""
        self.logger.log(level, "%s (%s #%d%s)", text.splitlines()[0][:240] if text else key, key, n, more)


_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_FAILED = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no detail",
           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error",
           zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication refused"}


class _Socket:
    """One socket with its options, optional CURVE, and its context (owned unless given).
    A monitor socket reports ZMTP/CURVE handshakes, so a refused peer is logged on this side
    too (``handshakes_ok`` / ``handshakes_failed``), not only by the authenticator."""

    def __init__(self, kind: int, context: zmq.Context | None, *, linger_ms: int,
                 heartbeat_ivl_ms: int, heartbeat_timeout_ms: int):
        self._own_ctx = context is None
        self.context = context or zmq.Context()
        self.sock = self.context.socket(kind)
        self._auth = False
        self._allow = None  # the server's allow-list (its last refused key id), when CURVE
        self._curve: str | None = None  # "server" / "client" once CURVE is on
        self._my_key = self._server_key = ""
        self.handshakes_ok = 0
        self.handshakes_failed = 0
        self._hs_log = RateLimitedLog(log)
        self._monitor = self.sock.get_monitor_socket(_HANDSHAKE_EVENTS)
        s = self.sock
        s.linger = linger_ms
        s.reconnect_ivl = 100  # restarted peers are found again quickly...
        s.reconnect_ivl_max = 2000  # ...without hammering a peer that stays away
        # ZMTP heartbeats close dead TCP connections (peer power-off, cable pulled).
        s.heartbeat_ivl = heartbeat_ivl_ms
        s.heartbeat_timeout = heartbeat_timeout_ms
        s.heartbeat_ttl = heartbeat_timeout_ms

    def _bind(self, endpoint: str, allow_remote: bool, security: ServerKeys | None) -> None:
        check_bind_endpoint(endpoint, allow_remote)
        if security is not None:
            self._allow = start_auth(self.context, security)
            self._auth = True
            secure_server(self.sock, security)
            self._curve, self._my_key = "server", key_id(security.public)
        self.sock.bind(endpoint)

    def _connect(self, endpoint: str, security: ClientKeys | None) -> None:
        if security is not None:
            secure_client(self.sock, security)
            self._curve, self._my_key = "client", key_id(security.public)
            self._server_key = key_id(security.server_public)
        self.sock.connect(endpoint)

    def _drain_monitor(self) -> int:
        """Handle queued handshake events (never blocks); returns how many succeeded."""
        ok = 0
        # Runs once per received frame: ask EVENTS (cheap) before a recv that would raise.
        try:
            if self._monitor.closed or not self._monitor.get(zmq.EVENTS) & _POLLIN:
                return ok
        except zmq.ZMQError:
            return ok
        while not self._monitor.closed:
            try:
                ev = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            except (zmq.ZMQError, ValueError):
                break
            if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes_ok += 1
                ok += 1
            elif ev["event"] in _FAILED:
                self.handshakes_failed += 1
                self._log_handshake_failure(ev)
        return ok

    def _log_handshake_failure(self, ev: dict) -> None:
        what = _FAILED[ev["event"]]
        where = ev.get("endpoint", b"").decode(errors="replace")
        if self._curve == "server":
            refused = getattr(self._allow, "last_refused", None)
            who = (f"client key id {refused} not on the allow-list" if refused and
                   ev["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH else
                   "a client without CURVE or with another server key")
            text = f"CURVE handshake failed on {where} ({what}): {who}; its frames are refused"
        elif self._curve == "client":
            text = (f"CURVE handshake with {where} failed ({what}): this key id {self._my_key} is "
                    f"not on the peer's allow-list, or the peer is not server key id "
                    f"{self._server_key}; nothing sent is accepted")
        else:
            text = (f"handshake with {where} failed ({what}): the peer probably requires CURVE "
                    "(transport.security.enabled=true); nothing sent is accepted")
        self._hs_log(f"handshake_{what.replace(' ', '_')}", text)

    @property
    def endpoint(self) -> str:
        """The resolved endpoint (e.g. the real port after binding ``tcp://127.0.0.1:*``)."""
        return self.sock.last_endpoint.decode()

    def close(self) -> None:
        if self.sock.closed:
            return
        self._drain_monitor()
        self.sock.disable_monitor()
        self._monitor.close(linger=0)
        self.sock.close(linger=self.sock.linger)
        if self._auth:
            stop_auth(self.context)
        if self._own_ctx:
            self.context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ============================================================================= live


@dataclass
class SenderStats:
    sent: int = 0
    refused: int = 0  # live: the socket's queue was full, the frame was dropped at once
    resent: int = 0  # lossless: frames sent again after acks stopped coming
    acked: int = 0
    source_lost: int = 0  # source-lost notices sent


class LiveSender(_Socket):
    """PUB, connects to the consumer. ``send`` never blocks."""

    def __init__(self, endpoint: str = DEFAULT_LIVE_ENDPOINT, *, codec: str = "raw",
                 jpeg_quality: int = 90, sndhwm: int = 2, epoch: int | None = None,
                 context: zmq.Context | None = None, security: ClientKeys | None = None,
                 send_mask: bool = False, heartbeat_ivl_ms: int = 1000,
                 heartbeat_timeout_ms: int = 5000):
        super().__init__(zmq.PUB, context, linger_ms=0, heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms)
        self.sock.sndhwm = sndhwm  # small: a stale frame is worth nothing live
        self.sock.setsockopt(zmq.XPUB_NODROP, 1)  # full queue -> EAGAIN we can count
        self._connect(endpoint, security)
        self.codec, self.jpeg_quality, self.send_mask = codec, jpeg_quality, send_mask
        self.epoch = wire.new_epoch() if epoch is None else epoch
        self.stats = SenderStats()
        self._next_seq: dict[int, int] = {}

    @property
    def never_accepted(self) -> bool:
        """True when frames were sent but no consumer ever completed a handshake with this
        socket (refused by CURVE, or nobody there): PUB drops them silently otherwise."""
        self._drain_monitor()
        return self.stats.sent > 0 and self.handshakes_ok == 0

    def close(self) -> None:
        if not self.sock.closed and self.never_accepted:
            log.warning("%d frames sent but no consumer ever accepted this producer's connection "
                        "(%d failed handshakes): none of them was received", self.stats.sent,
                        self.handshakes_failed)
        super().close()

    def _send(self, parts: list) -> bool:
        parts[0] = wire.send_header(parts[0])
        try:
            _send_parts(self.sock, parts)
        except zmq.Again:
            return False
        return True

    def send(self, frame: Frame) -> bool:
        """Encode and send; False when the queue was full and the frame was dropped.
        The image must not be modified afterwards (raw frames are sent without a copy)."""
        parts = wire.encode_frame(frame, epoch=self.epoch, codec=self.codec,
                                  jpeg_quality=self.jpeg_quality, send_mask=self.send_mask)
        self._next_seq[frame.stream_id] = frame.seq + 1
        ok = self._send(parts)
        if ok:
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
class StreamStats:
    """Per stream id. ``dropped``: frames never delivered (seq gaps since the first seq seen,
    including frames superseded by a newer one); ``stale``: older or replayed seqs discarded;
    ``restarts``: new producer epochs; ``first_seq``: the first seq seen of the current epoch;
    ``lost``: a source-lost notice came and no frame since."""

    epoch: int | None = None
    last_seq: int | None = None
    first_seq: int | None = None
    received: int = 0
    delivered: int = 0
    dropped: int = 0
    stale: int = 0
    end_of_stream: int = 0
    ended: bool = False
    restarts: int = 0
    source_lost: int = 0
    lost: bool = False


@dataclass
class ReceiverStats:
    messages: int = 0  # every multipart message taken off the socket, valid or not
    malformed: int = 0  # rejected: sum of ``rejected``
    rejected: dict[str, int] = field(default_factory=dict)  # reason key -> count
    stale_discarded: int = 0  # well-formed but older than what was delivered (replay, reorder, resend)
    streams: dict[int, StreamStats] = field(default_factory=dict)
    # lossless only
    duplicates: int = 0
    out_of_window: int = 0

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.streams.values())


class _Receiver(_Socket):
    """Bound receiving socket: per-reason reject accounting and bounded per-stream stats."""

    def __init__(self, kind: int, endpoint: str, *, context, allow_remote, security,
                 max_width, max_height, max_streams, log_interval_s, linger_ms,
                 heartbeat_ivl_ms, heartbeat_timeout_ms, retain_buffers=True):
        if retain_buffers:
            retain_frame_buffers()  # received frames reuse heap memory: no page faults each
        super().__init__(kind, context, linger_ms=linger_ms, heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms)
        self.max_width, self.max_height = max_width, max_height
        self.max_streams = max_streams
        self._poller = zmq.Poller()  # kept: Socket.poll builds a new Poller every call
        self._poller.register(self.sock, zmq.POLLIN)
        self.stats = ReceiverStats()
        self._log = RateLimitedLog(log, log_interval_s)
        self._bind_args = (endpoint, allow_remote, security)

    def _reject(self, exc: Exception) -> None:
        """Count a malformed message under its reason and log one rate-limited line."""
        reason = exc.reason if isinstance(exc, WireError) else "internal"
        text = str(exc) if isinstance(exc, WireError) else f"{type(exc).__name__}: {exc}"
        self.stats.malformed += 1
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        self._log(reason, f"message rejected: {text}")

    def _stale(self, stream_id: int, epoch: int, seq: int, newest: int | None) -> None:
        self.stats.stale_discarded += 1
        st = self.stats.streams.get(stream_id)
        if st is not None:
            st.stale += 1
        self._log("stale", f"stream {stream_id} epoch {epoch:x}: seq {seq} discarded, not newer "
                  f"than {newest} (replayed or reordered)")

    def _stream(self, stream_id: int) -> StreamStats:
        """Stats of a stream, evicting the least recently seen when there are too many (a
        hostile peer inventing stream ids must not grow memory). Called only for valid
        messages: garbage never evicts a real stream."""
        st = self.stats.streams.pop(stream_id, None) or StreamStats()
        self.stats.streams[stream_id] = st  # re-insert: dict order = recency
        if len(self.stats.streams) > self.max_streams:
            self.stats.streams.pop(next(iter(self.stats.streams)))
        return st


@dataclass
class _Candidate:
    """A frame whose header and sizes are valid; its payload is checked (decoded) only when
    it is about to change state: delivered, or compared with an older frame."""

    h: wire.Header
    parts: list
    t_ns: int
    msg: FrameMessage | None = None


class LiveReceiver(_Receiver):
    """SUB, bound. ``recv_newest`` returns the newest frame of every stream that sent one;
    end-of-stream and source-lost show in ``stats.streams`` (``ended``, ``lost``) and as
    :class:`EndOfStream` / :class:`SourceLost` objects from ``take_events()``.

    No state (newest seq, epoch, counters of a stream) changes before a message is fully
    valid, JPEG decoded included: a frame with a garbage payload and a far-future seq is
    rejected and the frames after it are delivered."""

    def __init__(self, endpoint: str = DEFAULT_LIVE_ENDPOINT, *,
                 context: zmq.Context | None = None, allow_remote: bool = False,
                 security: ServerKeys | None = None, rcvhwm: int = 4, max_width: int = 8192,
                 max_height: int = 8192, max_streams: int = 64, max_batch: int = 1000,
                 log_interval_s: float = 10.0, heartbeat_ivl_ms: int = 1000,
                 heartbeat_timeout_ms: int = 5000, max_events: int = 1000,
                 retain_buffers: bool = True):
        super().__init__(zmq.SUB, endpoint, context=context, allow_remote=allow_remote,
                         security=security, max_width=max_width, max_height=max_height,
                         max_streams=max_streams, log_interval_s=log_interval_s, linger_ms=0,
                         heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms, retain_buffers=retain_buffers)
        self.sock.rcvhwm = rcvhwm
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
                parts = _recv_parts(self.sock)
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
                log.info("stream %d: new producer epoch (producer restarted)", sid)
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
            log.warning("stream %d: producer reports its source lost (after seq %d)", sid, h.seq - 1)


# ============================================================================= lossless


class LosslessSender(_Socket):
    """DEALER, connects to the consumer. Keeps up to ``window`` unacked messages (already
    encoded) and blocks in ``send`` while the window is full. Resends all unacked messages,
    oldest first, whenever a connection to a consumer is (re)established (a restarted
    consumer), and as a fallback when no ack arrived for ``ack_timeout_s``."""

    def __init__(self, endpoint: str = DEFAULT_LOSSLESS_ENDPOINT, *, window: int = 32,
                 ack_timeout_s: float = 10.0, codec: str = "raw", jpeg_quality: int = 90,
                 epoch: int | None = None, context: zmq.Context | None = None,
                 security: ClientKeys | None = None, send_mask: bool = False,
                 heartbeat_ivl_ms: int = 1000, heartbeat_timeout_ms: int = 5000):
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
                    _send_parts(self.sock, [hdr, *parts[1:]])
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
                    parts = _recv_parts(self.sock, copy=True)  # acks: 128 bytes, copied
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


@dataclass
class _LosslessStream:
    next_seq: int | None = None  # next seq to deliver
    finished: int | None = None  # last seq the consumer finished (acked)
    resumed_from: int | None = None  # finished seq loaded from the state file (earlier instance)
    identity: bytes = b""
    held: dict[int, Any] = field(default_factory=dict)  # out-of-order messages by seq
    lost: SourceLost | None = None  # a source-lost notice waiting for the frames before it
    lost_done: int | None = None  # seq of the last source-lost delivered (drops its resends)


class LosslessReceiver(_Receiver):
    """ROUTER, bound. ``recv`` returns each message of each (stream, epoch) once and in order
    (frames, :class:`EndOfStream`, :class:`SourceLost`); ``ack`` marks a message finished
    (call it after the sink wrote it). With ``state_file`` the finished seqs survive a
    restart, so a restarted consumer duplicates nothing.

    A message is decoded completely (JPEG included) before any state changes, so a bad frame
    never moves the window, the stream's identity or its counters."""

    def __init__(self, endpoint: str = DEFAULT_LOSSLESS_ENDPOINT, *,
                 context: zmq.Context | None = None, allow_remote: bool = False,
                 security: ServerKeys | None = None, state_file: str | Path | None = None,
                 max_hold: int = 256, max_width: int = 8192, max_height: int = 8192,
                 max_streams: int = 64, log_interval_s: float = 10.0,
                 heartbeat_ivl_ms: int = 1000, heartbeat_timeout_ms: int = 5000,
                 retain_buffers: bool = True):
        super().__init__(zmq.ROUTER, endpoint, context=context, allow_remote=allow_remote,
                         security=security, max_width=max_width, max_height=max_height,
                         max_streams=max_streams, log_interval_s=log_interval_s,
                         linger_ms=1000,  # let the final acks (end-of-stream) leave on close
                         heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms, retain_buffers=retain_buffers)
        self.sock.rcvhwm = 1000
        self.max_hold = max_hold
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
        while not self._ready:
            left = int((deadline - time.monotonic()) * 1000)
            if left < 0 or not self._poller.poll(max(left, 0)):
                break
            for _ in range(1000):
                try:
                    parts = _recv_parts(self.sock)
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
        st.finished = seq
        self._save_state()
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
            st.held = {s: m for s, m in st.held.items() if s >= h.window_start}
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
        if h.kind == "frame":
            stats.received += 1
        st.held[h.seq] = msg
        while st.next_seq in st.held:
            m = st.held.pop(st.next_seq)
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
        log.warning("stream %d: producer reports its source lost (after seq %d)", msg.stream_id,
                    msg.seq - 1)

    def _state(self, key: tuple[int, int]) -> _LosslessStream:
        st = self._streams.get(key)
        if st is not None:
            self._streams.move_to_end(key)  # most recent last...
            return st
        st = self._streams[key] = _LosslessStream()
        if len(self._streams) > self.max_streams:  # ...and the oldest evicted past max_streams
            self._streams.popitem(last=False)
        return st

    def _reply(self, identity: bytes, parts: list) -> None:
        try:
            _send_parts(self.sock, [identity, *parts], copy=True)
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
        tmp.write_text(json.dumps({"version": 1, "finished": rows}))
        os.replace(tmp, self.state_file)


# ============================================================================= re-publish


class Publisher(_Socket):
    """PUB, bound: wire messages out to any number of subscribers (remote viewers,
    recorders). Like the consumer's socket it binds to loopback unless ``allow_remote`` and
    is a CURVE server when ``security`` is given (subscribers need keys on the allow-list).
    ``publish`` never blocks: a slow subscriber loses messages (``sndhwm``)."""

    def __init__(self, endpoint: str, *, sndhwm: int = 4, context: zmq.Context | None = None,
                 allow_remote: bool = False, security: ServerKeys | None = None,
                 heartbeat_ivl_ms: int = 1000, heartbeat_timeout_ms: int = 5000):
        super().__init__(zmq.PUB, context, linger_ms=0, heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms)
        self.sock.sndhwm = sndhwm
        try:
            self._bind(endpoint, allow_remote, security)
        except Exception:
            self.close()
            raise

    def publish(self, parts: list) -> bool:
        """Queue one message; False when it could not be queued."""
        self._drain_monitor()
        try:
            _send_parts(self.sock, parts)
        except zmq.Again:
            return False
        return True


# ============================================================================= from config


def _security(cfg, server: bool) -> ServerKeys | ClientKeys | None:
    return security_keys(cfg.get("security"), server=server)


def security_keys(sec, *, server: bool) -> ServerKeys | ClientKeys | None:
    """Keys from a ``transport.security`` block (None when it is off or absent): the server
    side for a socket that binds (consumer, re-publish sink), the client side for one that
    connects (producer, subscriber)."""
    sec = sec or {}
    if not sec.get("enabled", False):
        return None
    from endostream.protocol.security import load_client_keys, load_server_keys

    if server:
        return load_server_keys(sec["keys_dir"], sec.get("server_key", "server"),
                                sec.get("allow_dir"))
    return load_client_keys(sec["keys_dir"], sec.get("client_key", "client"),
                            sec.get("server_key", "server"))


def resolve_endpoint(cfg) -> str:
    """``cfg.endpoint``, or the mode's default when it is null."""
    if cfg.get("endpoint"):
        return str(cfg["endpoint"])
    return DEFAULT_LIVE_ENDPOINT if cfg["mode"] == "live" else DEFAULT_LOSSLESS_ENDPOINT


def _check_mode(cfg) -> str:
    mode = cfg["mode"]
    if mode not in ("live", "lossless"):
        raise ValueError(f"transport.mode={mode!r}; expected live or lossless")
    return mode


def open_sender(cfg, *, codec: str = "raw", jpeg_quality: int = 90, send_mask: bool = False,
                context: zmq.Context | None = None) -> LiveSender | LosslessSender:
    """Build the producer side from a ``configs/transport`` block."""
    hb = dict(heartbeat_ivl_ms=int(cfg.get("heartbeat_ivl_ms", 1000)),
              heartbeat_timeout_ms=int(cfg.get("heartbeat_timeout_ms", 5000)))
    common = dict(codec=codec, jpeg_quality=jpeg_quality, send_mask=send_mask, context=context,
                  security=_security(cfg, server=False), **hb)
    if _check_mode(cfg) == "live":
        return LiveSender(resolve_endpoint(cfg), sndhwm=int(cfg["live"]["sndhwm"]), **common)
    ll = cfg["lossless"]
    return LosslessSender(resolve_endpoint(cfg), window=int(ll["window"]),
                          ack_timeout_s=float(ll["ack_timeout_s"]), **common)


def open_receiver(cfg, *, context: zmq.Context | None = None) -> LiveReceiver | LosslessReceiver:
    """Build the consumer side from a ``configs/transport`` block."""
    common = dict(context=context, allow_remote=bool(cfg.get("allow_remote", False)),
                  security=_security(cfg, server=True),
                  max_width=int(cfg.get("max_width", 8192)),
                  max_height=int(cfg.get("max_height", 8192)),
                  heartbeat_ivl_ms=int(cfg.get("heartbeat_ivl_ms", 1000)),
                  heartbeat_timeout_ms=int(cfg.get("heartbeat_timeout_ms", 5000)))
    if _check_mode(cfg) == "live":
        return LiveReceiver(resolve_endpoint(cfg), rcvhwm=int(cfg["live"]["rcvhwm"]), **common)
    state = cfg["lossless"].get("state_file")
    return LosslessReceiver(resolve_endpoint(cfg), state_file=state or None, **common)
