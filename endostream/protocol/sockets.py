"""The socket base shared by every sender, receiver and the publisher: options, CURVE,
handshake monitoring, loopback-only binding, and the non-blocking multipart send/receive."""

from __future__ import annotations

import ipaddress
import logging
import warnings

import zmq

from zmq.utils.monitor import parse_monitor_message

from endostream.protocol.limits import CONTROL_MAXMSGSIZE, RECONNECT_IVL_MAX_MS, RECONNECT_IVL_MS, max_message_bytes
from endostream.protocol.memory import retain_frame_buffers
from endostream.protocol.ratelog import RateLimitedLog
from endostream.protocol.security import (ClientKeys, ServerKeys, key_id, secure_client, secure_server,
                                          start_auth, stop_auth)
from endostream.protocol.stats import ReceiverStats, StreamStats
from endostream.protocol.wire import WireError

log = logging.getLogger(__name__)

# Hot path: plain-int flags and a per-part loop instead of send_multipart/recv_multipart,
# whose per-call Python (part type checks, enum flag arithmetic, a getsockopt(RCVMORE) per
# part) cost more than the rest of a raw frame's handling.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_POLLIN = int(zmq.POLLIN)


def send_parts(sock: zmq.Socket, parts: list, copy: bool = False) -> None:
    """One multipart message, never blocking; zmq.Again when it cannot be queued (then
    nothing was sent: ZeroMQ queues a multipart message whole or not at all). With
    ``copy=False`` a part of ``sock.copy_threshold`` (64 KiB) or more is sent zero-copy:
    libzmq reads the caller's buffer (a raw frame's pixels) until the send completed, so it
    must not change meanwhile; smaller parts (the 128-byte header) are copied at once."""
    last = len(parts) - 1
    for i, part in enumerate(parts):
        sock.send(part, _MORE_NOBLOCK if i < last else _NOBLOCK, copy=copy)


def recv_parts(sock: zmq.Socket, copy: bool = False) -> list:
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


_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_FAILED = {zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no detail",
           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error",
           zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication refused"}


class BaseSocket:
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
        s.maxmsgsize = CONTROL_MAXMSGSIZE  # receivers of frames raise it (BaseReceiver)
        s.reconnect_ivl = RECONNECT_IVL_MS  # restarted peers are found again quickly...
        s.reconnect_ivl_max = RECONNECT_IVL_MAX_MS  # ...without hammering a peer that stays away
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



class BaseReceiver(BaseSocket):
    """Bound receiving socket: per-reason reject accounting and bounded per-stream stats."""

    def __init__(self, kind: int, endpoint: str, *, context, allow_remote, security,
                 max_width, max_height, max_streams, log_interval_s, linger_ms,
                 heartbeat_ivl_ms, heartbeat_timeout_ms, retain_buffers=True):
        if retain_buffers:
            retain_frame_buffers()  # received frames reuse heap memory: no page faults each
        super().__init__(kind, context, linger_ms=linger_ms, heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms)
        self.max_width, self.max_height = max_width, max_height
        self.sock.maxmsgsize = max_message_bytes(max_width, max_height)
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
