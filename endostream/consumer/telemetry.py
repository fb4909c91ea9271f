"""Consumer bookkeeping: counters behind the HUD and summary (fps, latency, drops, Dice) and
the per-frame records (CSV files / callback) that benchmarks read and lossless mode journals."""

from __future__ import annotations

import csv
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endostream.consumer.stages import Shown
from endostream.types import Frame

log = logging.getLogger(__name__)

RecordCallback = Callable[[str, dict[str, Any]], None]  # (kind: "shown" | "inference", row)


def dice(pred: np.ndarray | None, gt: np.ndarray) -> float:
    """Dice of a HxW bool mask (None = empty) against a HxW uint8 {0,255} mask; 1.0 when both
    are empty (a correct 'no polyp')."""
    g = gt > 127
    p = np.zeros_like(g) if pred is None else pred
    if p.shape != g.shape:
        import cv2

        p = cv2.resize(p.astype(np.uint8), (g.shape[1], g.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    denom = int(p.sum()) + int(g.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(p, g).sum()) / denom


@dataclass
class StreamInfo:
    """Per stream id: the current producer epoch and what was seen of it."""

    epoch: int
    first_capture_ns: int
    last_seq: int = -1
    ended: bool = False
    restarts: int = 0
    gaps: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))  # the last 20
    last_seen: float = field(default_factory=time.monotonic)


class Telemetry:
    """Counters behind the HUD and the summary. Bounded: percentiles over the last 100k."""

    def __init__(self) -> None:
        self.streams: dict[int, StreamInfo] = {}
        self.sent: dict[tuple[int, int], int] = {}  # (stream, epoch) -> highest seq + 1 seen
        self.first: dict[tuple[int, int], int] = {}  # (stream, epoch) -> first seq seen (any start)
        self.shown = 0
        self.paused = 0
        self.latency_ms: deque[float] = deque(maxlen=100_000)
        self.mask_age_ms: deque[float] = deque(maxlen=100_000)
        self.dice_sum, self.dice_n = 0.0, 0
        self.t_first: float | None = None
        self.t_last = 0.0
        self._fps_times: dict[int, deque[float]] = {}
        self._retired_sent = 0  # frames_sent of forgotten streams

    def on_frame(self, frame: Frame, epoch: int) -> tuple[StreamInfo, bool]:
        """Account a received frame; returns its stream and whether the epoch is new."""
        sid, now = frame.stream_id, time.monotonic()
        st = self.streams.get(sid)
        new = st is None or st.epoch != epoch
        if st is None:
            st = self.streams[sid] = StreamInfo(epoch, frame.t_capture_ns)
        elif new:
            gap = {"old_epoch_last_seq": st.last_seq, "ended": st.ended,
                   "silence_ms": round((now - st.last_seen) * 1000, 1)}
            st.gaps.append(gap)
            st.restarts += 1
            # The signal tracker logs the return in one line; the details are for debugging.
            log.debug("stream %d: producer restarted (new epoch) after %.0f ms silence; "
                        "previous epoch %s at seq %d", sid, gap["silence_ms"],
                        "ended" if st.ended else "stopped without end-of-stream", st.last_seq)
            st.epoch, st.first_capture_ns, st.last_seq, st.ended = epoch, frame.t_capture_ns, -1, False
        st.last_seq, st.last_seen = max(st.last_seq, frame.seq), now
        key = (sid, epoch)
        self.sent[key] = max(self.sent.get(key, 0), frame.seq + 1)
        self.first[key] = min(self.first.get(key, frame.seq), frame.seq)
        return st, new

    def forget(self, stream_id: int) -> None:
        """An evicted stream: its frames stay counted (``frames_sent``), its state goes."""
        self.streams.pop(stream_id, None)
        self._fps_times.pop(stream_id, None)
        for key in [k for k in self.sent if k[0] == stream_id]:
            self._retired_sent += self.sent.pop(key) - self.first.pop(key, 0)

    def on_end(self, stream_id: int, epoch: int, eos_seq: int) -> None:
        key = (stream_id, epoch)
        self.sent[key] = max(self.sent.get(key, 0), eos_seq)
        st = self.streams.get(stream_id)
        if st is not None and st.epoch == epoch:
            st.ended = True

    def on_shown(self, frame: Frame, shown: Shown) -> float:
        """Account a frame the sinks wrote; returns its end-to-end latency in ms."""
        now = time.monotonic()
        self.t_first = self.t_first or now
        self.t_last = now
        self.shown += 1
        self.paused += shown.paused
        lat = (frame.stamps_ns["sink"] - frame.t_capture_ns) / 1e6
        self.latency_ms.append(lat)
        if shown.mask_age_ms is not None:
            self.mask_age_ms.append(shown.mask_age_ms)
        times = self._fps_times.setdefault(frame.stream_id, deque(maxlen=64))
        times.append(now)
        return lat

    def add_dice(self, value: float) -> None:
        self.dice_sum += value
        self.dice_n += 1

    @property
    def dice_mean(self) -> float | None:
        return self.dice_sum / self.dice_n if self.dice_n else None

    def fps(self, stream_id: int) -> float | None:
        """Displayed frames per second of a stream over its last ~1 s (64 frames at most)."""
        times = self._fps_times.get(stream_id)
        if not times or len(times) < 2:
            return None
        now = times[-1]
        recent = [t for t in times if now - t <= 1.0]
        if len(recent) < 2:
            return None
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    @property
    def frames_sent(self) -> int:
        """Frames from the first seq seen to the highest (docs/PROTOCOL.md: any first seq)."""
        return self._retired_sent + sum(n - self.first.get(k, 0) for k, n in self.sent.items())


def percentiles(values: Any, qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float] | None:
    if not len(values):
        return None
    arr = np.asarray(values, dtype=np.float64)
    out = {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}
    out["max"] = round(float(arr.max()), 2)
    return out


SHOWN_COLUMNS = ["stream_id", "epoch", "seq", "t_capture_ns", "grab", "encode", "send", "receive",
                 "decode", "infer_start", "preprocess", "encoder", "postprocess", "wait", "overlay", "sink",
                 "latency_ms", "mask_seq", "mask_age_ms", "paused", "dice"]
INFER_COLUMNS = ["stream_id", "epoch", "seq", "newest_seq", "t_capture_ns", "receive", "decode",
                 "picked", "infer_start", "preprocess", "encoder", "postprocess", "presence", "gated"]


class Records:
    """Per-frame records: ``frames.csv`` (one row per shown frame, stamps at every stage
    boundary; in lossless mode also the journal of what the sinks wrote) and
    ``inference.csv`` (one row per model run). Rows are flushed at once (a crash loses none)
    and also handed to ``callback``. Step stamps (step1..stepK) get their own columns."""

    def __init__(self, folder: Path | None, *, append: bool, steps: int,
                 callback: RecordCallback | None = None) -> None:
        self.callback = callback
        steps_cols = [f"step{i}" for i in range(1, max(steps, 1) + 1)]
        self._files: dict[str, tuple[Any, csv.DictWriter]] = {}
        self._paths: dict[str, Path] = {}
        if folder is None:
            return
        for kind, name, cols in (("shown", "frames.csv", SHOWN_COLUMNS),
                                 ("inference", "inference.csv", INFER_COLUMNS)):
            i = cols.index("postprocess")
            cols = cols[:i] + steps_cols + cols[i:]
            path = folder / name
            exists = append and path.is_file() and path.stat().st_size > 0
            fh = open(path, "a" if exists else "w", newline="")
            writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            if not exists:
                writer.writeheader()
            self._files[kind] = (fh, writer)
            self._paths[kind] = path

    def write(self, kind: str, row: dict[str, Any]) -> None:
        entry = self._files.get(kind)
        if entry is not None:
            try:
                entry[1].writerow(row)
                entry[0].flush()
            except OSError as exc:  # the message names the file: a full disk is not a riddle
                raise OSError(exc.errno, f"cannot write {self._paths[kind]}: "
                                         f"{exc.strerror or exc}") from None
        if self.callback is not None:
            self.callback(kind, row)

    def close(self) -> None:
        for fh, _ in self._files.values():
            fh.close()


def read_journal(path: Path) -> dict[tuple[int, int], int]:
    """Highest seq per (stream, epoch) already written by the sinks (``frames.csv``)."""
    done: dict[tuple[int, int], int] = {}
    if not path.is_file():
        return done
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                key, seq = (int(row["stream_id"]), int(row["epoch"])), int(row["seq"])
            except (KeyError, TypeError, ValueError):
                continue  # a torn last line from a kill: that frame was never acked either
            done[key] = max(done.get(key, -1), seq)
    return done
