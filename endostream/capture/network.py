"""Network video sources: which URLs are network streams, the FFmpeg options they get by
default, errors that name their cause, and :class:`LiveFeed`, the reader thread that keeps
a live stream open and reconnects it with back-off.

Why a thread: FFmpeg blocks inside C while it waits for network data, where Python cannot
run a signal handler (Ctrl-C would wait for the read timeout) and where a burst of frames
cannot be stamped as it arrives. The thread reads and decodes; the caller's thread takes
frames off a short queue, paces them (``capture.jitter``) and does all the sending, so a
ZeroMQ socket is never touched from two threads.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from endostream.capture.errors import SourceError

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "rtp", "srt", "tcp", "http", "https")

# Live streams by default start decoding after 0.5 s of data instead of FFmpeg's 5 s: the
# frames read while probing come out as one burst afterwards, which a live consumer drops.
# A stream whose parameters are not known by then still opens; its size is checked per frame.
_LIVE_OPTIONS = {"analyzeduration": "500000"}
_SCHEME_OPTIONS = {
    # A UDP receive-buffer overrun (a stalled reader) skips data instead of ending the input.
    "udp": {"overrun_nonfatal": "1"},
}


def scheme(uri: str) -> str:
    """``rtsp`` for ``rtsp://host/path``; ``""`` for a plain path."""
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else ""


def is_network(uri: str) -> bool:
    """A URL FFmpeg reads over the network (rtsp, udp, srt, http, tcp, ...)."""
    return scheme(uri) in NETWORK_SCHEMES


def ffmpeg_options(uri: str, options: dict[str, Any] | None) -> dict[str, str]:
    """FFmpeg demuxer/protocol options for ``uri``: the defaults for network URLs, then
    ``options`` (which win). Values become strings as FFmpeg expects (True -> "1")."""
    out: dict[str, str] = {}
    if is_network(uri):
        out.update(_LIVE_OPTIONS)
        out.update(_SCHEME_OPTIONS.get(scheme(uri), {}))
    for key, value in (options or {}).items():
        out[str(key)] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return out


def describe_error(exc: BaseException, uri: str, timeout_s: float) -> str:
    """One line naming why FFmpeg failed on ``uri``: connection refused, timeout, HTTP
    status, unsupported protocol or transport, corrupt data..."""
    import av

    reason = str(getattr(exc, "strerror", None) or exc).strip().splitlines()
    reason_text = reason[0] if reason else type(exc).__name__
    code = getattr(exc, "errno", None)
    if isinstance(exc, av.error.ExitError):  # PyAV's timeout interrupts FFmpeg this way
        what = "no data arrived" if scheme(uri) in ("udp", "rtp") else "no answer"
        return f"timed out after {timeout_s:g} s ({what}: is the sender running and sending to this address?)"
    if isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return "connection refused (nothing listens there: is the camera or server running, and the port right?)"
    if isinstance(exc, ConnectionResetError) or code == errno.ECONNRESET:
        return "connection reset by the sender"
    if isinstance(exc, TimeoutError) or code == errno.ETIMEDOUT:
        return f"timed out after {timeout_s:g} s"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"host or network unreachable ({reason_text})"
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return f"the {scheme(uri)}:// protocol is not supported by this FFmpeg build"
    if code == errno.EPROTONOSUPPORT and scheme(uri) in ("rtsp", "rtsps"):
        return ("the RTSP server refused the transport (try source.options.rtsp_transport="
                "udp or tcp)")
    if isinstance(exc, av.error.HTTPError):
        return f"the server answered: {reason_text}"
    if isinstance(exc, av.error.InvalidDataError):
        return "corrupt data or not a video (FFmpeg: invalid data found when processing input)"
    if isinstance(exc, av.error.OptionNotFoundError):
        return f"unknown FFmpeg option ({reason_text}); check source.options"
    return reason_text


# --------------------------------------------------------------------------- reader thread


@dataclass
class SourceStats:
    """Counts of a source's life, read by the producer for its progress line and summary."""

    dropped: int = 0  # live: decoded frames discarded because the sender fell behind
    corrupt_packets: int = 0  # network: undecodable packets skipped
    losses: int = 0  # times the stream was lost
    reconnects: int = 0  # times it came back
    lost: bool = False  # lost right now


FeedItem = tuple  # ("frame", image, gt_mask, pts_s, arrival_ns) | ("lost", reason) | ("back", down_s) | ("end",) | ("error", exc)


class LiveFeed:
    """Reads ``frames()`` on a daemon thread into a short queue; on a loss (error or, for a
    stream without end, end of data) reopens with back-off when ``reconnect``.

    ``frames``: called once per connection; yields ``(image, gt_mask, pts_s)`` and raises
    ``SourceError`` for a failure (the first call may reuse an already open stream).
    """

    def __init__(self, frames: Callable[[], Iterator[tuple[np.ndarray, Any, float | None]]], *,
                 uri: str, reconnect: bool, min_backoff_s: float = 0.25,
                 max_backoff_s: float = 2.0, max_queued: int = 32,
                 stats: SourceStats | None = None) -> None:
        self.uri, self.reconnect = uri, reconnect
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max(min_backoff_s, max_backoff_s)
        self.max_queued = max_queued  # frames; beyond it the oldest goes (live wants the newest)
        self.stats = stats or SourceStats()
        self._frames = frames
        self._items: deque[FeedItem] = deque()
        self._n_frames = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="endostream-source", daemon=True)
        self._thread.start()

    # ---- consumer side (the caller's thread)
    def get(self, timeout_s: float) -> FeedItem | None:
        """The next item, or None when nothing came within ``timeout_s``."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout_s)  # interruptible: a signal handler runs here
            if not self._items:
                return None
            item = self._items.popleft()
            self._n_frames -= item[0] == "frame"
            return item

    def close(self) -> None:
        """Stop reading. Does not wait for a read blocked in FFmpeg (it ends at its timeout)."""
        self._stop.set()
        with self._cond:
            self._items.clear()
            self._n_frames = 0

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the reader thread to end; whether it has."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    # ---- reader thread
    def _put(self, item: FeedItem) -> None:
        with self._cond:
            if item[0] == "frame" and self._n_frames >= self.max_queued:
                for i, old in enumerate(self._items):
                    if old[0] == "frame":
                        del self._items[i]
                        break
                self._n_frames -= 1
                self.stats.dropped += 1
            self._items.append(item)
            self._n_frames += item[0] == "frame"
            self._cond.notify()

    def _run(self) -> None:
        backoff, lost_at, attempts, last_note = self.min_backoff_s, None, 0, 0.0
        while not self._stop.is_set():
            try:
                for image, gt_mask, pts_s in self._frames():
                    now_ns = time.monotonic_ns()
                    if lost_at is not None:
                        down_s = time.monotonic() - lost_at
                        self.stats.reconnects += 1
                        self.stats.lost = False
                        log.info("%s: source back after %.1f s (%d attempts)", self.uri, down_s, attempts)
                        self._put(("back", down_s))
                        backoff, lost_at, attempts = self.min_backoff_s, None, 0
                    self._put(("frame", image, gt_mask, pts_s, now_ns))
                    if self._stop.is_set():
                        return
                if not self.reconnect:
                    self._put(("end",))
                    return
                reason = f"{self.uri}: the stream ended (a live stream has no end: sender stopped?)"
            except SourceError as exc:
                if not self.reconnect or self._stop.is_set():
                    self._put(("error", exc))
                    return
                reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - reported to the caller, never lost in a thread
                self._put(("error", exc))
                return
            attempts += 1
            if lost_at is None:
                lost_at = last_note = time.monotonic()
                self.stats.losses += 1
                self.stats.lost = True
                log.warning("source lost: %s; reconnecting", reason)
                self._put(("lost", reason))
            elif time.monotonic() - last_note > 10:  # a long outage: a line every 10 s, not per attempt
                last_note = time.monotonic()
                log.warning("still reconnecting after %.0f s (%d attempts; last: %s)",
                            last_note - lost_at, attempts, reason)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
