"""Producer: source -> wire -> transport. `endostream produce ...` runs ``run(cfg)``.

Live mode never blocks (a frame the socket refuses is dropped and counted); lossless mode
waits while its window of unacknowledged frames is full, and at the end waits until the
consumer acknowledged everything, end-of-stream included.

End-of-stream is sent when the source really ended (a file's end, ``max_frames``) and on
SIGINT/SIGTERM (a second signal quits at once); never when a network source drops: then the
consumer is told ``source_lost`` (and, in live mode, the source reconnects).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TextIO

from endostream.capture.sources import FrameSource, SourceError, open_source
from endostream.protocol.factory import open_sender, resolve_endpoint
from endostream.protocol.limits import LIVE_SUBSCRIBE_WAIT_S
from endostream.protocol.live import LiveSender
from endostream.protocol.lossless_sender import LosslessSender
from endostream.types import Frame

log = logging.getLogger(__name__)


class StopRequested(BaseException):
    """Raised out of a blocking source read when SIGINT/SIGTERM asks the producer to stop.
    A BaseException so that no ``except Exception`` on the way swallows it."""


class StopSignals:
    """SIGINT/SIGTERM -> a graceful stop: ``requested`` names the signal, the send loop ends
    and end-of-stream goes out. A read blocked in the source is interrupted (only there: a
    half-sent frame would be worse than a short wait). A second signal quits at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._in_source = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def request(self, reason: str) -> None:
        """Ask for a graceful stop from code (another thread, a test): the loop ends after
        the frame being read; end-of-stream is sent."""
        self.requested = self.requested or reason

    def _handle(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is None:
            self.requested = name
            log.info("%s: stopping; sending end-of-stream (%s again quits at once)", name, name)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt -> exit 130
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if self._in_source:
                raise StopRequested(name)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """The block (a source read) may be interrupted by a stop request."""
        if self.requested:
            raise StopRequested(self.requested)
        self._in_source = True
        try:
            yield
        finally:
            self._in_source = False


READER_EXIT_WAIT_S = 1.0  # at exit, how long a network reader may take to end before the process leaves without it
NOBODY_FIRST_S = 3.0    # no consumer has taken a frame this long after the first: say so...
NOBODY_REPEAT_S = 30.0  # ...and again this often while that lasts


class NobodyListening:
    """Warns when no consumer has taken this producer's connection ``first_s`` after the first
    frame, and again every ``repeat_s`` while that lasts (a tower started before the consumer
    otherwise streams into the void in silence); one line when a consumer does connect."""

    def __init__(self, sender: LiveSender | LosslessSender, endpoint: str,
                 first_s: float = NOBODY_FIRST_S, repeat_s: float = NOBODY_REPEAT_S) -> None:
        self.sender, self.endpoint = sender, endpoint
        self.first_s, self.repeat_s = first_s, repeat_s
        self.warnings = 0
        self._t0: float | None = None
        self._next = 0.0

    def check(self, now: float) -> None:
        """Call after each frame sent; cheap until a check is due."""
        if self._t0 is None:
            self._t0, self._next = now, now + self.first_s
        if now < self._next:
            return
        if not self.sender.never_accepted:  # a consumer took the connection: nothing more to say
            if self.warnings:
                log.info("a consumer at %s is taking the frames now", self.endpoint)
            self._next = float("inf")
            return
        self.warnings += 1
        self._next = now + self.repeat_s
        log.warning("no consumer at %s has taken this producer's frames in %.0f s (%d sent, all "
                    "dropped): start `endostream consume` there, or check transport.endpoint",
                    self.endpoint, now - self._t0, getattr(self.sender, "offered", self.sender.stats.sent))


class Progress:
    """One status line (frames, fps, drops) rewritten at most once per ``interval_s``, only
    when ``stream`` is a terminal. ``log_filter`` wipes it before a log line is printed."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 1.0,
                 enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last_t: float | None = None  # the first update starts the clock
        self._last_n = 0
        self._shown = False

    def update(self, frames: int, drops: int, lost: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled:
            return
        if self._last_t is None:
            self._last_t, self._last_n = now, frames
        if now - self._last_t < self.interval_s:
            return
        fps = (frames - self._last_n) / (now - self._last_t)
        self._last_t, self._last_n = now, frames
        state = "  SOURCE LOST, reconnecting" if lost else ""
        self.stream.write(f"\rframes {frames}  {fps:.1f} fps  drops {drops}{state}\x1b[K")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def log_filter(self, _record: logging.LogRecord) -> bool:
        self.clear()
        return True


def run_producer(frames: Iterable[Frame], sender: LiveSender | LosslessSender, *,
                 pace_fps: float | None = None, drain_timeout_s: float = 60.0,
                 eos_wait_s: float = 5.0, stream_ids: Iterable[int] = (),
                 stop: StopSignals | None = None, progress: Progress | None = None,
                 listening: NobodyListening | None = None,
                 subscribe_wait_s: float = LIVE_SUBSCRIBE_WAIT_S) -> dict:
    """Send every frame, then end each stream. Returns counts and rates.

    ``pace_fps``: sleep to this rate (for sources that are not paced themselves); frames
    are due at t0 + i / fps, so a late frame does not shift all later ones.
    ``drain_timeout_s``: lossless: how long one frame or the final acknowledgement may wait
    for the consumer before TimeoutError.
    ``eos_wait_s``: live: how long end-of-stream is retried while the send queue is full (a
    slow consumer of large frames); then it is given up with a warning.
    ``stream_ids``: streams that get end-of-stream even if none of their frames was sent
    (a network source stopped before its first frame).
    ``stop``: a stop request ends the loop early; end-of-stream is still sent.
    ``listening``: checked after every frame (warns while no consumer takes them).
    ``subscribe_wait_s``: live: how long the first frame waits for the consumer's subscription
    (frames sent before it arrives would be discarded; after the wait they are counted as
    ``frames_unsubscribed``, not sent).
    A source that fails (``SourceError``) is reported to the consumer as lost, not ended.
    """
    lossless = isinstance(sender, LosslessSender)
    streams: set[int] = set(stream_ids)
    source_stats = getattr(frames, "stats", None)
    if isinstance(frames, FrameSource):  # a lost live source: tell the consumer, not "ended"
        frames.on_lost = _lost_notice(frames, sender, frames.on_lost)
        streams.add(frames.stream_id)
    if not lossless:  # a publisher discards frames sent before the consumer's subscription arrives
        sender.wait_for_consumer(subscribe_wait_s)
    it = iter(frames)
    t0 = time.monotonic()
    n = 0
    try:
        while stop is None or not stop.requested:
            try:
                with stop.interruptible() if stop is not None else nullcontext():
                    frame = next(it)
            except (StopIteration, StopRequested):
                break
            n += 1
            if pace_fps:
                delay = t0 + (n - 1) / pace_fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            streams.add(frame.stream_id)
            if lossless:
                sender.send(frame, timeout_s=drain_timeout_s)
            else:
                sender.send(frame)
            if listening is not None:
                listening.check(time.monotonic())
            if progress is not None:
                drops = (sender.stats.refused + sender.stats.unsubscribed
                         + (source_stats.dropped if source_stats else 0))
                progress.update(n, drops, lost=bool(source_stats and source_stats.lost))
    except SourceError:
        if lossless:  # what was captured still reaches the consumer
            sender.flush(timeout_s=drain_timeout_s)
        for sid in sorted(streams):
            sender.source_lost(sid)
        raise
    finally:
        if progress is not None:
            progress.clear()
        close = getattr(it, "close", None)
        if close is not None:
            close()  # a network source's reader stops now, not at its read timeout
    for sid in sorted(streams):
        if lossless:
            if not sender.end_stream(sid, timeout_s=drain_timeout_s):
                raise TimeoutError(f"consumer did not acknowledge stream {sid} within "
                                   f"{drain_timeout_s:.0f} s ({sender.outstanding} outstanding)")
        elif not sender.end_stream(sid, wait_s=eos_wait_s):
            log.warning("stream %d: end-of-stream refused by the full send queue for %.1f s; "
                        "the consumer will stop on its idle timeout", sid, eos_wait_s)
    seconds = time.monotonic() - t0
    st = sender.stats
    summary = {"frames": n, "frames_sent": n if lossless else st.sent,
               "frames_refused": st.refused, "frames_unsubscribed": st.unsubscribed,
               "frames_resent": st.resent,
               "seconds": round(seconds, 3), "fps": round(n / seconds, 2) if seconds > 0 else 0.0,
               "epoch": sender.epoch, "peer_accepted": not getattr(sender, "never_accepted", False)}
    if source_stats is not None:
        summary.update(source_dropped=source_stats.dropped, source_losses=source_stats.losses,
                       source_reconnects=source_stats.reconnects)
    if stop is not None and stop.requested:
        summary["stopped_by"] = stop.requested
    # No warning here when no peer accepted anything: the sender logs it as it closes.
    return summary


def _lost_notice(source, sender: LiveSender | LosslessSender,
                 then: Callable[[str], None] | None) -> Callable[[str], None]:
    """``source.on_lost``: send ``source_lost`` for the source's stream, then call ``then``."""

    def on_lost(reason: str) -> None:
        sender.source_lost(source.stream_id)
        if then is not None:
            then(reason)

    return on_lost


def _source_kwargs(cfg) -> dict:
    """The source group's open_source() kwargs, with the command's top-level overrides."""
    from omegaconf import OmegaConf

    kw = OmegaConf.to_container(cfg.source, resolve=True)
    if kw.get("uri") in (None, "???", ""):
        raise ValueError("no source: pass source.uri=<file, URL, device or folder>")
    if cfg.get("pace") is not None:
        if cfg.pace not in ("native", "fast"):
            raise ValueError(f"pace={cfg.pace!r}; expected native or fast")
        kw["pace"] = cfg.pace == "native"
    for key in ("loop", "stream_id", "modality", "max_frames"):
        if cfg.get(key) is not None:
            kw[key] = cfg[key]
    if kw.get("reconnect") is None and cfg.transport.mode != "live":
        kw["reconnect"] = False  # lossless: a reconnected live stream has a gap anyway; fail loudly
    if not isinstance(kw.get("options") or {}, dict):
        raise ValueError(f"source.options={kw['options']!r}; expected a mapping, e.g. "
                         "+source.options.rtsp_transport=udp")
    return kw


def run(cfg) -> int:
    """`endostream produce source.uri=... transport.mode=live|lossless codec=raw|jpeg ...`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from omegaconf import OmegaConf

    OmegaConf.set_readonly(cfg, False)

    kw = _source_kwargs(cfg)
    progress = Progress()
    for handler in logging.getLogger().handlers:
        handler.addFilter(progress.log_filter)
    with StopSignals() as stop:
        frames = open_source(**kw)  # a missing/corrupt file fails here, one line
        with open_sender(cfg.transport, codec=cfg.codec, jpeg_quality=int(cfg.jpeg_quality),
                         send_mask=bool(cfg.send_gt)) as sender:
            summary = run_producer(frames, sender, stop=stop,
                                   progress=progress,
                                   listening=NobodyListening(sender, resolve_endpoint(cfg.transport)),
                                   drain_timeout_s=float(cfg.transport.lossless.drain_timeout_s))
    summary["mode"] = cfg.transport.mode
    print(json.dumps(summary))
    if not frames.reader_stopped(timeout_s=READER_EXIT_WAIT_S):
        # A network reader still blocked inside FFmpeg (it ends at its read timeout) must not see
        # the interpreter shut down around it: that crashed the process (SIGSEGV) after a clean
        # run. Everything is sent, acknowledged where asked and printed: leave now.
        log.info("the network reader is still waiting in FFmpeg; exiting without it")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
