"""Consumer: transport -> decode -> segment -> overlay -> sinks.

The stages are small classes with typed inputs and outputs, wired in one place
(:class:`Consumer`), in the style of a Holoscan app:

    Receiver (transport; decodes, stamps receive/decode)
      -> Inference (modality -> model; segmenter stamps)      live: worker thread, newest frame
      -> OverlayStage (newest mask + age, "AI paused")        every received frame
      -> SinkStage (video, masks, viewer...; stamps overlay/sink)
      -> Telemetry (fps, latency, drops, Dice) + Records (per-frame CSV / callback)

live      The display path (receive -> overlay -> sinks) never waits for the model: every
          frame the receiver delivers is drawn with the newest mask available and its age, and
          the model runs in a worker thread on the newest frame only. A mask older than
          ``overlay.stale_ms`` (capture-time difference to the shown frame) is hidden and
          "AI paused" is shown, while the video keeps flowing.
lossless  One thread: each frame is segmented, drawn, written by the sinks, journalled in
          ``frames.csv`` and only then acknowledged. The receiver's state file and the journal
          live in ``out``, so a killed and restarted consumer neither loses nor duplicates.

Run-time controls: a JSON file (``control_file``, default ``<out>/control.json``) polled a few
times a second, e.g. ``{"show_mask": false}`` or ``{"opacity": 0.7}``. See docs/CONSUMER.md.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endostream.overlay import HudInfo, draw_overlay
from endostream.types import Frame, Prediction

log = logging.getLogger(__name__)

RecordCallback = Callable[[str, dict[str, Any]], None]  # (kind: "shown" | "inference", row)


@dataclass
class MaskResult:
    """One finished inference: the prediction for frame ``seq`` of ``(stream_id, epoch)``."""

    stream_id: int
    epoch: int
    seq: int
    t_capture_ns: int
    prediction: Prediction
    trained: bool
    infer_start_ns: int = 0


# ============================================================================ models


@dataclass(frozen=True)
class ModalitySpec:
    """One ``configs/modality/*.yaml``: which model serves this kind of video, and how."""

    name: str
    model: str  # configs/model/<model>.yaml
    input_size: int
    fov: bool
    presence_threshold: float


def _modality_spec(cfg: Any) -> ModalitySpec:
    return ModalitySpec(str(cfg["name"]), str(cfg["model"]), int(cfg["input_size"]),
                        bool(cfg["fov"]), float(cfg["presence_threshold"]))


class ModelRouter:
    """Frame modality -> segmenter. Models load lazily (the first frame of a modality) and are
    cached; ``overrides`` (non-null ``model.*`` keys of the consume config) apply to all."""

    def __init__(self, default: ModalitySpec, overrides: dict[str, Any], config_dir: Path) -> None:
        self.default, self.overrides, self.config_dir = default, overrides, config_dir
        self._specs: dict[str, ModalitySpec] = {default.name: default}
        self._models: dict[tuple, Any] = {}
        self._lock = threading.Lock()  # the display thread reads infos while the worker loads

    def spec(self, modality: str) -> ModalitySpec:
        if modality not in self._specs:
            path = self.config_dir / "modality" / f"{modality}.yaml"
            if modality == "other" or not path.is_file():
                log.warning("no modality config for %r (%s): using %s", modality, path, self.default.name)
                self._specs[modality] = self.default
            else:
                from omegaconf import OmegaConf

                self._specs[modality] = _modality_spec(OmegaConf.load(path))
        return self._specs[modality]

    def get(self, modality: str) -> tuple[Any, ModalitySpec]:
        """The segmenter for a modality (loading it on first use) and its spec."""
        spec = self.spec(modality)
        key = (spec.model, spec.presence_threshold, spec.fov)
        seg = self._models.get(key)
        if seg is None:
            seg = self._load(spec)
            with self._lock:
                self._models[key] = seg
        return seg, spec

    def _load(self, spec: ModalitySpec) -> Any:
        from omegaconf import OmegaConf

        from endostream.segmenter import load_segmenter

        path = self.config_dir / "model" / f"{spec.model}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"modality {spec.name}: model config not found: {path}")
        kwargs = dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
        kwargs.update(presence_threshold=spec.presence_threshold, fov=spec.fov)
        kwargs.update({k: v for k, v in self.overrides.items() if v is not None})
        if kwargs.get("threads") == "auto":
            # Leave a core each to the display path and the producer: intra-op threads that
            # compete with them for cores slow inference down more than they speed it up.
            kwargs["threads"] = max(1, min(4, (os.cpu_count() or 2) - 2))
        seg = load_segmenter(**kwargs)
        size = int(seg.info.get("input_size", spec.input_size))
        if size != spec.input_size:
            raise ValueError(f"modality {spec.name}: input_size {spec.input_size} but model "
                             f"{spec.model} ({kwargs.get('weights')}) takes {size}")
        log.info("model for %s: %s", spec.name, {k: seg.info.get(k) for k in
                                                  ("backend", "steps", "trained", "weights")})
        return seg

    def reset(self, stream_id: int) -> None:
        with self._lock:
            models = list(self._models.values())
        for seg in models:
            seg.reset(stream_id)

    def infos(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(seg.info) for seg in self._models.values()]


# ============================================================================ inference


class Inference:
    """Runs the modality's segmenter on one frame. ``delay_ms`` adds a fixed wait per
    inference (simulates a slow accelerator in tests). Resets a stream's temporal memory when
    its producer epoch changes. Not thread-safe: one caller (the worker, or the lossless loop)."""

    def __init__(self, router: ModelRouter, *, delay_ms: float = 0.0,
                 record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.router, self.delay_s, self.record = router, delay_ms / 1000.0, record
        self.processed: dict[tuple[int, int], int] = {}  # (stream, epoch) -> frames processed
        self.infer_ms: deque[float] = deque(maxlen=100_000)
        self.errors = 0
        self._epoch: dict[int, int] = {}

    def reset(self, stream_id: int) -> None:
        self._epoch.pop(stream_id, None)
        self.router.reset(stream_id)

    def run(self, frame: Frame, epoch: int, newest_seq: int | None = None,
            picked_ns: int | None = None) -> MaskResult | None:
        """Segment one frame. ``newest_seq`` / ``picked_ns`` (live): the newest seq the worker
        had for this stream when it picked this frame, and when; recorded so a test can prove
        that no older frame was ever processed."""
        sid = frame.stream_id
        if self._epoch.get(sid) != epoch:  # new stream or restarted producer: fresh memory
            if sid in self._epoch:
                self.router.reset(sid)
            self._epoch[sid] = epoch
        t0 = time.monotonic_ns()
        try:
            seg, _ = self.router.get(frame.modality)
            if self.delay_s:
                time.sleep(self.delay_s)
            pred = seg.segment(np.asarray(frame.image), sid)
        except Exception as exc:  # noqa: BLE001 - one bad frame or model error must not stop the stream
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.error("inference failed on stream %d seq %d (%d so far): %s", sid, frame.seq,
                          self.errors, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None
        t1 = time.monotonic_ns()
        key = (sid, epoch)
        self.processed[key] = self.processed.get(key, 0) + 1
        self.infer_ms.append((t1 - t0) / 1e6)
        if self.record is not None:
            self.record({"stream_id": sid, "epoch": epoch, "seq": frame.seq,
                         "newest_seq": frame.seq if newest_seq is None else newest_seq,
                         "t_capture_ns": frame.t_capture_ns, "picked": picked_ns or t0,
                         "infer_start": t0,
                         **dict(frame.stamps_ns), **pred.stages_ns,
                         "presence": round(pred.presence, 4), "gated": int(pred.gated)})
        return MaskResult(sid, epoch, frame.seq, frame.t_capture_ns, pred,
                          bool(seg.info.get("trained", False)), t0)

    @property
    def total_processed(self) -> int:
        return sum(self.processed.values())


class InferenceWorker:
    """Live mode: the model in its own thread, always on the newest submitted frame.

    ``submit`` replaces a stream's pending frame (newest wins, never a queue); ``latest``
    returns the newest finished result. The display thread never waits on the model.
    """

    def __init__(self, inference: Inference) -> None:
        self.inference = inference
        self._cv = threading.Condition()
        self._pending: dict[int, tuple[Frame, int]] = {}
        self._newest: dict[int, tuple[int, int]] = {}  # stream -> (epoch, newest seq submitted)
        self._latest: dict[int, MaskResult] = {}
        self._resets: set[int] = set()
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    def submit(self, frame: Frame, epoch: int) -> None:
        with self._cv:
            self._pending[frame.stream_id] = (frame, epoch)
            ep, seq = self._newest.get(frame.stream_id, (epoch, -1))
            self._newest[frame.stream_id] = (epoch, frame.seq if ep != epoch else max(seq, frame.seq))
            self._cv.notify()

    def latest(self, stream_id: int) -> MaskResult | None:
        with self._cv:
            return self._latest.get(stream_id)

    def reset(self, stream_id: int) -> None:
        """End of a stream: forget its pending frame, result and memory (done in the worker)."""
        with self._cv:
            self._pending.pop(stream_id, None)
            self._latest.pop(stream_id, None)
            self._newest.pop(stream_id, None)
            self._resets.add(stream_id)
            self._cv.notify()

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._busy or bool(self._pending)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the inference in flight (not the pending ones) and end the thread."""
        with self._cv:
            self._stop = True
            self._pending.clear()
            self._cv.notify()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._pending or self._resets or self._stop):
                    self._cv.wait()
                if self._stop:
                    return
                resets, self._resets = self._resets, set()
                item, newest, picked_ns = None, None, 0
                if self._pending:  # the stream whose frame waited longest goes first (fairness)
                    sid = min(self._pending, key=lambda s: self._pending[s][0].t_capture_ns)
                    item = self._pending.pop(sid)
                    newest, picked_ns = self._newest[sid][1], time.monotonic_ns()
                self._busy = item is not None
            for sid in resets:
                self.inference.reset(sid)
            if item is None:
                continue
            frame, epoch = item
            result = self.inference.run(frame, epoch, newest_seq=newest, picked_ns=picked_ns)
            with self._cv:
                self._busy = False
                if result is not None and frame.stream_id not in self._resets:
                    self._latest[frame.stream_id] = result


# ============================================================================ overlay


@dataclass
class Controls:
    """Run-time overlay switches, read from a JSON file whenever it changes."""

    show_mask: bool = True
    opacity: float = 0.4
    path: Path | None = None
    poll_s: float = 0.25
    _mtime: float = 0.0
    _checked: float = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < self.poll_s:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            data = json.loads(self.path.read_text())
            show = bool(data.get("show_mask", self.show_mask))
            opacity = float(data.get("opacity", self.opacity))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("control file %s ignored: %s (expected {\"show_mask\": bool, "
                        "\"opacity\": 0..1})", self.path, exc)
            return
        self.show_mask, self.opacity = show, min(max(opacity, 0.0), 1.0)
        log.info("controls: show_mask=%s opacity=%.2f", self.show_mask, self.opacity)


@dataclass
class Shown:
    """What the display path decided for one frame."""

    image: np.ndarray
    prediction: Prediction | None  # the mask drawn (None: none yet, or paused)
    mask_seq: int | None
    mask_age_ms: float | None
    paused: bool


class OverlayStage:
    """Frame + newest result -> overlay image, applying the staleness rule."""

    def __init__(self, *, stale_ms: float, color: Any, controls: Controls) -> None:
        self.stale_ms, self.color, self.controls = float(stale_ms), tuple(int(c) for c in color), controls

    def draw(self, frame: Frame, result: MaskResult | None, hud: HudInfo,
             ref_capture_ns: int) -> Shown:
        """``ref_capture_ns``: capture time of the stream's first frame, the reference age when
        no mask exists yet (a model that never answers also ends in "AI paused")."""
        ref = result.t_capture_ns if result is not None else ref_capture_ns
        age_ms = max(0.0, (frame.t_capture_ns - ref) / 1e6)
        paused = age_ms > self.stale_ms
        pred = result.prediction if result is not None and not paused else None
        hud.mask_age_ms = age_ms if result is not None else None
        hud.paused = paused
        image = draw_overlay(np.asarray(frame.image), pred, hud=hud, opacity=self.controls.opacity,
                             show_mask=self.controls.show_mask, color=self.color)
        frame.stamps_ns["overlay"] = time.monotonic_ns()
        return Shown(image, pred, result.seq if result is not None else None,
                     hud.mask_age_ms, paused)


class SinkStage:
    """Writes a shown frame to every sink (each guarded: a failing sink is disabled, the
    others and the display path go on)."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks

    def write(self, frame: Frame, shown: Shown) -> None:
        for sink in self.sinks:
            sink.write(frame, shown.image, shown.prediction)
        frame.stamps_ns["sink"] = time.monotonic_ns()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def errors(self) -> dict[str, str]:
        return {s.name: s.error for s in self.sinks if getattr(s, "error", None)}


# ============================================================================ telemetry


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
        self.shown = 0
        self.paused = 0
        self.latency_ms: deque[float] = deque(maxlen=100_000)
        self.mask_age_ms: deque[float] = deque(maxlen=100_000)
        self.dice_sum, self.dice_n = 0.0, 0
        self.t_first: float | None = None
        self.t_last = 0.0
        self._fps_times: dict[int, deque[float]] = {}

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
            log.warning("stream %d: producer restarted (new epoch) after %.0f ms silence; "
                        "previous epoch %s at seq %d", sid, gap["silence_ms"],
                        "ended" if st.ended else "stopped without end-of-stream", st.last_seq)
            st.epoch, st.first_capture_ns, st.last_seq, st.ended = epoch, frame.t_capture_ns, -1, False
        st.last_seq, st.last_seen = max(st.last_seq, frame.seq), now
        key = (sid, epoch)
        self.sent[key] = max(self.sent.get(key, 0), frame.seq + 1)
        return st, new

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
        return sum(self.sent.values())


def percentiles(values: Any, qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float] | None:
    if not len(values):
        return None
    arr = np.asarray(values, dtype=np.float64)
    out = {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}
    out["max"] = round(float(arr.max()), 2)
    return out


# ============================================================================ records


SHOWN_COLUMNS = ["stream_id", "epoch", "seq", "t_capture_ns", "grab", "encode", "send", "receive",
                 "decode", "infer_start", "preprocess", "encoder", "postprocess", "overlay", "sink",
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

    def write(self, kind: str, row: dict[str, Any]) -> None:
        entry = self._files.get(kind)
        if entry is not None:
            entry[1].writerow(row)
            entry[0].flush()
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


# ============================================================================ the app


@dataclass
class ConsumerOptions:
    mode: str = "live"  # live | lossless
    max_frames: int | None = None  # live: frames shown; lossless: frames processed
    idle_timeout_s: float = 30.0  # exit when no message arrived this long
    min_streams: int = 1  # end-of-stream ends the run once this many streams have ended
    stale_ms: float = 500.0
    note: str = ""  # extra HUD text


class Consumer:
    """The pipeline, wired once. ``run()`` returns the summary dict."""

    def __init__(self, receiver: Any, router: ModelRouter, overlay: OverlayStage, sinks: SinkStage,
                 records: Records, options: ConsumerOptions, *, infer_delay_ms: float = 0.0,
                 journal: dict[tuple[int, int], int] | None = None) -> None:
        self.rx, self.router, self.overlay, self.sinks = receiver, router, overlay, sinks
        self.records, self.opt = records, options
        self.tel = Telemetry()
        self.inference = Inference(router, delay_ms=infer_delay_ms,
                                   record=lambda row: records.write("inference", row))
        self.journal = journal or {}
        self.duplicates_skipped = 0
        self.superseded = 0  # live: delivered by the receiver, then replaced by a newer frame
        self.errors = 0
        self.exit_reason = ""
        self.stop_requested = False
        self._ends_seen: set[tuple[int, int]] = set()
        infos = router.infos()
        self.default_trained = bool(infos[0].get("trained", False)) if infos else True
        self._t_start = time.monotonic()

    # ---- shared display path: overlay -> sinks -> telemetry -> records
    def _show(self, frame: Frame, epoch: int, result: MaskResult | None, st: StreamInfo) -> None:
        sid = frame.stream_id
        trained = result.trained if result is not None else self.default_trained
        note = " | ".join(n for n in ("" if trained else "UNTRAINED WEIGHTS", self.opt.note) if n)
        hud = HudInfo(fps=self.tel.fps(sid), latency_ms=(time.monotonic_ns() - frame.t_capture_ns) / 1e6,
                      dropped=max(0, self.tel.sent.get((sid, epoch), 0)
                                  - self.inference.processed.get((sid, epoch), 0) - 1),
                      dice=self.tel.dice_mean, note=note,
                      stream_id=sid if len(self.tel.streams) > 1 else None)
        shown = self.overlay.draw(frame, result, hud, st.first_capture_ns)
        self.sinks.write(frame, shown)
        lat = self.tel.on_shown(frame, shown)
        d = None
        if frame.gt_mask is not None:
            d = dice(shown.prediction.mask if shown.prediction is not None else None, frame.gt_mask)
            self.tel.add_dice(d)
        self.records.write("shown", {
            "stream_id": sid, "epoch": epoch, "seq": frame.seq, "t_capture_ns": frame.t_capture_ns,
            **frame.stamps_ns, "latency_ms": round(lat, 3), "mask_seq": shown.mask_seq,
            "mask_age_ms": None if shown.mask_age_ms is None else round(shown.mask_age_ms, 1),
            "paused": int(shown.paused), "dice": None if d is None else round(d, 4)})

    def _idle(self, last_activity: float) -> bool:
        if time.monotonic() - last_activity > self.opt.idle_timeout_s:
            self.exit_reason = f"idle for {self.opt.idle_timeout_s:g} s"
            return True
        return False

    def _all_ended(self) -> bool:
        streams = self.tel.streams
        if len(streams) >= self.opt.min_streams and all(s.ended for s in streams.values()):
            self.exit_reason = "end of stream"
            return True
        return False

    # ---- live
    def run_live(self) -> None:
        worker = InferenceWorker(self.inference)
        last_msgs, last_activity = self.rx.stats.messages, time.monotonic()
        try:
            while not self.stop_requested:
                self.overlay.controls.poll()
                for msg in self._newest_frames():
                    self._live_frame(worker, msg)
                if self.rx.stats.messages != last_msgs:
                    last_msgs, last_activity = self.rx.stats.messages, time.monotonic()
                self._live_ends(worker)
                if self.opt.max_frames is not None and self.tel.shown >= self.opt.max_frames:
                    self.exit_reason = f"max_frames={self.opt.max_frames}"
                    break
                if self._all_ended() or self._idle(last_activity):
                    break
        finally:
            worker.stop()

    def _newest_frames(self) -> list[Any]:
        """The newest frame per stream. After a stall (SIGSTOP, a slow sink) the socket's
        io thread is still pulling a backlog out of the kernel's TCP buffers, a few messages
        at a time (rcvhwm): keep draining while more arrives within 1 ms, so the backlog is
        skipped instead of played back in slow motion. Costs 1 ms per displayed frame."""
        newest = {m.stream_id: m for m in self.rx.recv_newest(50)}
        for _ in range(1000) if newest else ():
            more = self.rx.recv_newest(1)
            if not more:
                break
            for m in more:
                self.superseded += m.stream_id in newest
                newest[m.stream_id] = m
        return list(newest.values())

    def _live_frame(self, worker: InferenceWorker, msg: Any) -> None:
        frame, epoch = msg.frame, msg.epoch
        try:
            st, _ = self.tel.on_frame(frame, epoch)
            worker.submit(frame, epoch)
            result = worker.latest(frame.stream_id)
            if result is not None and result.epoch != epoch:
                result = None  # a mask from before the producer restarted
            self._show(frame, epoch, result, st)
        except Exception as exc:  # noqa: BLE001 - one bad frame never stops the video
            self._error(frame, exc)

    def _live_ends(self, worker: InferenceWorker) -> None:
        """The live receiver reports end-of-stream in its stats, not as a message."""
        for sid, rs in list(self.rx.stats.streams.items()):
            if not rs.ended or rs.epoch is None or (sid, rs.epoch) in self._ends_seen:
                continue
            self._ends_seen.add((sid, rs.epoch))
            self.tel.on_end(sid, rs.epoch, rs.last_seq or 0)
            worker.reset(sid)
            log.info("stream %d: end of stream at seq %s", sid, rs.last_seq)

    # ---- lossless
    def run_lossless(self) -> None:
        from endostream.wire import EndOfStream

        last_activity = time.monotonic()
        last_msgs = self.rx.stats.messages
        while not self.stop_requested:
            self.overlay.controls.poll()
            msg = self.rx.recv(100)
            if self.rx.stats.messages != last_msgs:
                last_msgs, last_activity = self.rx.stats.messages, time.monotonic()
            if msg is None:
                if self._all_ended() or self._idle(last_activity):
                    break
                continue
            if isinstance(msg, EndOfStream):
                self.tel.on_end(msg.stream_id, msg.epoch, msg.seq)
                self.inference.reset(msg.stream_id)
                self.rx.ack_message(msg)
                log.info("stream %d: end of stream at seq %d", msg.stream_id, msg.seq)
                if self._all_ended():
                    break
                continue
            self._lossless_frame(msg)
            if self.opt.max_frames is not None and self.inference.total_processed >= self.opt.max_frames:
                self.exit_reason = f"max_frames={self.opt.max_frames}"
                break

    def _lossless_frame(self, msg: Any) -> None:
        frame, epoch = msg.frame, msg.epoch
        st, _ = self.tel.on_frame(frame, epoch)
        if frame.seq <= self.journal.get((frame.stream_id, epoch), -1):
            # Written by a previous run that was killed before its ack: ack, never rewrite.
            self.duplicates_skipped += 1
            self.rx.ack_message(msg)
            return
        try:
            result = self.inference.run(frame, epoch)
            if result is not None:
                frame.stamps_ns["infer_start"] = result.infer_start_ns
                frame.stamps_ns.update(result.prediction.stages_ns)
            self._show(frame, epoch, result, st)
        except Exception as exc:  # noqa: BLE001
            self._error(frame, exc)
        self.rx.ack_message(msg)  # after the sinks and the journal: finished means written

    def _error(self, frame: Frame, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 100 == 0:
            log.error("stream %d seq %d not shown (%d errors so far): %s: %s", frame.stream_id,
                      frame.seq, self.errors, type(exc).__name__, str(exc).splitlines()[0][:200])

    # ---- all
    def run(self) -> dict[str, Any]:
        try:
            if self.opt.mode == "live":
                self.run_live()
            else:
                self.run_lossless()
        finally:
            if self.stop_requested and not self.exit_reason:
                self.exit_reason = "stopped by signal"
            self.sinks.close()
            self.records.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        tel, inf = self.tel, self.inference
        infos = self.router.infos()
        main = infos[0] if infos else {}
        sent, processed = tel.frames_sent, inf.total_processed
        span = (tel.t_last - tel.t_first) if tel.t_first else 0.0
        rs = self.rx.stats
        return {
            "mode": self.opt.mode,
            "frames_sent": sent,
            "frames_received": (rs.total("delivered") - self.superseded if self.opt.mode == "live"
                                else rs.total("received")),
            "frames_shown": tel.shown,
            "frames_processed": processed,
            "frames_dropped": max(0, sent - processed),
            "frames_paused": tel.paused,
            "malformed_messages": rs.malformed,
            "duplicates_skipped": self.duplicates_skipped + getattr(rs, "duplicates", 0),
            "errors": self.errors + inf.errors,
            "latency_ms": percentiles(tel.latency_ms),
            "inference_ms": percentiles(inf.infer_ms),
            "mask_age_ms": percentiles(tel.mask_age_ms),
            "fps": round((tel.shown - 1) / span, 2) if span > 0 else None,
            "dice_mean": None if tel.dice_mean is None else round(tel.dice_mean, 4),
            "dice_frames": tel.dice_n,
            "weights_sha256": main.get("weights_sha256"),
            "backend": main.get("backend"),
            "steps": main.get("steps"),
            "trained": main.get("trained"),
            "models": infos,
            "hud_note": " | ".join(n for n in ("" if self.default_trained else "UNTRAINED WEIGHTS",
                                              self.opt.note) if n),
            "streams": {str(sid): {"epoch_restarts": s.restarts, "ended": s.ended,
                                   "last_seq": s.last_seq, "gaps": list(s.gaps)}
                        for sid, s in tel.streams.items()},
            "sink_errors": self.sinks.errors(),
            "elapsed_s": round(time.monotonic() - self._t_start, 2),
            "exit_reason": self.exit_reason,
        }


# ============================================================================ from config


def _prepare_out(out: Path) -> str | None:
    """Create the output folder; the reason when it is not writable (None when it is)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"output folder {out} is not writable: {exc.strerror or exc}"
    return None


def _next_free(path: Path) -> Path:
    """``overlay.mp4`` -> ``overlay.1.mp4``... the first name not taken (a resumed run must not
    overwrite what the killed one wrote)."""
    i = 1
    while path.exists():
        path = path.with_name(f"{path.stem.split('.')[0]}.{i}{path.suffix}")
        i += 1
    return path


def build(cfg: Any, *, on_record: RecordCallback | None = None) -> tuple[Consumer, Path, str | None]:
    """Build the consumer from the ``consume`` config. Returns (consumer, out, out_error)."""
    from omegaconf import OmegaConf

    from endostream.cli import config_dir
    from endostream.sinks import make_sinks
    from endostream.transport import open_receiver

    mode = str(cfg.transport.mode)
    out = Path(str(cfg.out))
    out_error = _prepare_out(out)
    tcfg = OmegaConf.to_container(cfg.transport, resolve=True)
    resume = False
    if mode == "lossless":
        if out_error:
            raise OSError(f"lossless mode needs its output folder for the resume state: {out_error}")
        if not tcfg["lossless"].get("state_file"):
            tcfg["lossless"]["state_file"] = str(out / "lossless_state.json")
        resume = Path(tcfg["lossless"]["state_file"]).is_file()
    elif out_error:
        log.error("%s; continuing without records and summary file", out_error)

    router = ModelRouter(_modality_spec(cfg.modality),
                         dict(OmegaConf.to_container(cfg.model, resolve=True) or {}), config_dir())
    seg, _ = router.get(cfg.modality.name)  # load now, not on the first frame
    steps = max(int(getattr(seg, "steps", 1)), int(getattr(seg, "warm_steps", 1)))

    sink_specs = OmegaConf.to_container(cfg.sink, resolve=True) or {}
    if resume:  # never overwrite the video of the run we resume
        for spec in sink_specs.values():
            if isinstance(spec, dict) and spec.get("path") and Path(spec["path"]).exists():
                spec["path"] = str(_next_free(Path(spec["path"])))
    sinks = SinkStage(make_sinks(sink_specs))

    control = cfg.get("control_file") or (None if out_error else str(out / "control.json"))
    controls = Controls(show_mask=bool(cfg.overlay.show_mask), opacity=float(cfg.overlay.opacity),
                        path=Path(control) if control else None)
    overlay = OverlayStage(stale_ms=float(cfg.overlay.stale_ms), color=cfg.overlay.color,
                           controls=controls)
    records = Records(None if (out_error or not cfg.records) and mode == "live" else out,
                      append=resume, steps=steps, callback=on_record)
    journal = read_journal(out / "frames.csv") if resume else {}
    receiver = open_receiver(tcfg)
    opts = ConsumerOptions(mode=mode, max_frames=cfg.max_frames,
                           idle_timeout_s=float(cfg.idle_timeout_s), min_streams=int(cfg.min_streams),
                           stale_ms=float(cfg.overlay.stale_ms), note=str(cfg.get("note") or ""))
    consumer = Consumer(receiver, router, overlay, sinks, records, opts,
                        infer_delay_ms=float(cfg.infer_delay_ms), journal=journal)
    log.info("consumer %s on %s, output %s%s", mode, receiver.endpoint, out,
             " (resuming)" if resume else "")
    return consumer, out, out_error


def format_summary(s: dict[str, Any]) -> str:
    lat = s.get("latency_ms") or {}
    lines = [
        f"frames: sent {s['frames_sent']}  shown {s['frames_shown']}  processed "
        f"{s['frames_processed']}  dropped {s['frames_dropped']}  malformed {s['malformed_messages']}",
        f"latency (capture -> written) ms: p50 {lat.get('p50')}  p95 {lat.get('p95')}  "
        f"p99 {lat.get('p99')}   fps {s['fps']}   Dice {s['dice_mean']}",
        f"model: {s['backend']} steps={s['steps']} trained={s['trained']} "
        f"sha256={str(s['weights_sha256'])[:12]}   exit: {s['exit_reason']}",
    ]
    if s.get("sink_errors"):
        lines.append(f"sink errors: {s['sink_errors']}")
    return "\n".join(lines)


def run(cfg: Any, *, on_record: RecordCallback | None = None) -> int:
    """``endostream consume``: receive until end-of-stream from all producers, max_frames, an
    idle timeout or SIGTERM/SIGINT; write ``<out>/summary.json`` and print a short summary.
    Returns 0, or 1 when output could not be written (the overlay itself kept running)."""
    logging.basicConfig(level=str(cfg.get("log_level", "INFO")).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    consumer, out, out_error = build(cfg, on_record=on_record)

    def _stop(signum: int, _frame: Any) -> None:
        consumer.stop_requested = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        summary = consumer.run()
    finally:
        consumer.rx.close()
    print(format_summary(summary), flush=True)
    if not out_error:
        try:
            from endostream.fileutil import atomic_write_bytes

            atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
        except OSError as exc:
            out_error = f"cannot write {out / 'summary.json'}: {exc.strerror or exc}"
    if out_error:
        print(f"endostream consume: error: {out_error}", flush=True)
    return 1 if out_error or summary["sink_errors"] else 0
