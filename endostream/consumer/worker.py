"""Consumer stage 2: frame modality -> model, and the live worker that runs it on the newest
frame. Used by :mod:`endostream.consumer.app`."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from endostream.consumer.deadline import InFlight, Wait
from endostream.consumer.persistence import StreamFilters
from endostream.consumer.rooms import RoomStats, Timeline, fairness
from endostream.protocol.ratelog import RateLimitedLog
from endostream.types import Frame, Prediction

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ModalitySpec:
    """One ``configs/modality/*.yaml``: which model serves this kind of video, and how."""

    name: str
    model: str  # configs/model/<model>.yaml
    input_size: int
    fov: bool
    presence_threshold: float


def modality_spec(cfg: Any) -> ModalitySpec:
    return ModalitySpec(str(cfg["name"]), str(cfg["model"]), int(cfg["input_size"]),
                        bool(cfg["fov"]), float(cfg["presence_threshold"]))


def segmenter_kwargs(config_dir: Path, spec: ModalitySpec, overrides: dict[str, Any]) -> dict[str, Any]:
    """load_segmenter() keyword arguments for a modality: ``configs/model/<spec.model>.yaml``,
    the modality's presence gate and field-of-view switch, then the non-null ``overrides``."""
    from omegaconf import OmegaConf

    path = config_dir / "model" / f"{spec.model}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"modality {spec.name}: model config not found: {path}")
    kwargs = dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
    kwargs.update(presence_threshold=spec.presence_threshold, fov=spec.fov)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    if kwargs.get("threads") == "auto":
        # Leave a core each to the display path and the producer: intra-op threads that
        # compete with them for cores slow inference down more than they speed it up.
        kwargs["threads"] = max(1, min(4, (os.cpu_count() or 2) - 2))
    return kwargs


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

                self._specs[modality] = modality_spec(OmegaConf.load(path))
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
        from endostream.inference.segmenter import load_segmenter

        kwargs = segmenter_kwargs(self.config_dir, spec, self.overrides)
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

    def close(self) -> None:
        """Stop the models that run in their own process (the in-process ones need nothing)."""
        with self._lock:
            models = list(self._models.values())
        for seg in models:
            if hasattr(seg, "close"):
                seg.close()


# ============================================================================ inference


@dataclass
class SameFrameStats:
    """Live display path: how often a frame was shown with its own mask. The display waits for
    it up to ``overlay.wait_ms`` and otherwise shows the newest mask (the deadline missed)."""

    frames: int = 0  # frames the display path asked a mask for
    met: int = 0  # ... and got the frame's own mask by the deadline
    waited_ms: float = 0.0  # total time the display path spent waiting
    max_wait_ms: float = 0.0

    def add(self, met: bool, waited_ms: float) -> None:
        self.frames += 1
        self.met += bool(met)
        self.waited_ms += waited_ms
        self.max_wait_ms = max(self.max_wait_ms, waited_ms)

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "met": self.met, "missed": self.frames - self.met,
                "met_rate": round(self.met / self.frames, 4) if self.frames else None,
                "mean_wait_ms": round(self.waited_ms / self.frames, 3) if self.frames else None,
                "max_wait_ms": round(self.max_wait_ms, 3)}


class Inference:
    """Runs the modality's segmenter on frames: one (:meth:`run`) or one frame of each of several
    streams as a batch (:meth:`run_batch`). ``delay_ms`` adds a fixed wait per model call
    (simulates a slow accelerator in tests). Resets a stream's temporal memory when its
    producer epoch changes. Not thread-safe: one caller (the worker, or the lossless loop)."""

    def __init__(self, router: ModelRouter, *, delay_ms: float = 0.0,
                 record: Callable[[dict[str, Any]], None] | None = None,
                 filters: StreamFilters | None = None,
                 on_call: Callable[[int, float], None] | None = None) -> None:
        self.router, self.delay_s, self.record = router, delay_ms / 1000.0, record
        self.on_call = on_call  # (frames, ms) of each model call: the display's deadline learns them
        self.filters = filters  # persistence filter per stream (consumer/persistence.py); None: off
        self.processed: dict[tuple[int, int], int] = {}  # (stream, epoch) -> frames processed
        self.infer_ms: deque[float] = deque(maxlen=100_000)
        self.batches: deque[int] = deque(maxlen=100_000)  # frames per model call
        self.same_frame = SameFrameStats()  # filled by the live worker's wait_for
        self.rooms: dict[int, RoomStats] = {}  # live: per stream (room)
        self.timeline = Timeline()  # live: the segmenting thread, per frame
        self.errors = 0
        self._epoch: dict[int, int] = {}

    def reset(self, stream_id: int) -> None:
        self._epoch.pop(stream_id, None)
        self.router.reset(stream_id)

    @property
    def max_batch(self) -> int:
        """The largest batch any loaded model takes (1 before the first model is loaded)."""
        return max((int(info.get("max_batch", 1)) for info in self.router.infos()), default=1)

    def room(self, stream_id: int) -> RoomStats:
        room = self.rooms.get(stream_id)
        if room is None:
            room = self.rooms[stream_id] = RoomStats()
        return room

    def rooms_status(self) -> dict[str, Any]:
        """Per room only (what ``/status.json`` shows a few times a second: no timeline)."""
        return {str(sid): r.as_dict() for sid, r in sorted(self.rooms.items())}

    def rooms_report(self) -> dict[str, Any]:
        """Per room: mask rate, mask age, missed deadlines; and how evenly the model was shared."""
        rooms = self.rooms_status()
        return {"rooms": rooms, "fairness": fairness([r["mask_rate"] for r in rooms.values()]),
                "missed_deadlines": sum(r.missed for r in self.rooms.values()),
                "timeline": self.timeline.summary()}

    def batch_stats(self) -> dict[str, Any]:
        """Frames per model call: {mean, max, calls}."""
        b = list(self.batches)
        return {"mean": round(sum(b) / len(b), 3) if b else None, "max": max(b, default=None), "calls": len(b)}

    def run(self, frame: Frame, epoch: int, newest_seq: int | None = None,
            picked_ns: int | None = None) -> MaskResult | None:
        """Segment one frame. ``newest_seq`` / ``picked_ns`` (live): the newest seq the worker
        had for this stream when it picked this frame, and when; recorded so a test can prove
        that no older frame was ever processed."""
        return self.run_batch([(frame, epoch, newest_seq)], picked_ns)[0]

    def run_batch(self, items: list[tuple[Frame, int, int | None]],
                  picked_ns: int | None = None, submitted_ns: list[int] | None = None) -> list[MaskResult | None]:
        """Segment one frame of each of several streams: ``items`` = (frame, epoch, newest_seq).
        Frames of one model run as one batch (split at its ``max_batch``); None for a frame
        that failed. A model error on a batch retries its frames one by one, so one bad frame
        costs only its own mask."""
        results: list[MaskResult | None] = [None] * len(items)
        groups: dict[int, tuple[Any, list[int]]] = {}
        for i, (frame, epoch, _) in enumerate(items):
            self._check_epoch(frame.stream_id, epoch)
            try:
                seg, _ = self.router.get(frame.modality)
            except Exception as exc:  # noqa: BLE001 - a model that fails to load costs its frames only
                self._error(frame, exc)
                continue
            groups.setdefault(id(seg), (seg, []))[1].append(i)
        for seg, idx in groups.values():
            size = max(1, int(getattr(seg, "max_batch", 1)))
            for k in range(0, len(idx), size):
                chunk = idx[k:k + size]
                # A later chunk waited for the earlier ones: its model work starts now.
                chunk_picked = picked_ns if k == 0 else time.monotonic_ns()
                for i, result in zip(chunk, self._segment(seg, [items[i] for i in chunk], chunk_picked)):
                    results[i] = result
                    if result is not None:
                        self._timed(result, submitted_ns[i] if submitted_ns else 0, chunk_picked)
        return results

    def _segment(self, seg: Any, items: list[tuple[Frame, int, int | None]],
                 picked_ns: int | None) -> list[MaskResult | None]:
        frames = [f for f, _, _ in items]
        t0 = time.monotonic_ns()
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            preds = seg.segment_batch([np.asarray(f.image) for f in frames], [f.stream_id for f in frames])
        except Exception as exc:  # noqa: BLE001 - one bad frame or model error must not stop the stream
            if len(items) > 1:  # nothing was updated: each frame again on its own
                return [r for item in items for r in self._segment(seg, [item], picked_ns)]
            self._error(frames[0], exc)
            return [None]
        t1 = time.monotonic_ns()
        self.batches.append(len(frames))
        if self.on_call is not None:
            self.on_call(len(frames), (t1 - t0) / 1e6)
        return [self._result(frame, epoch, newest, pred, seg, t0, t1, picked_ns, len(frames))
                for (frame, epoch, newest), pred in zip(items, preds)]

    def _result(self, frame: Frame, epoch: int, newest_seq: int | None, pred: Prediction, seg: Any,
                t0: int, t1: int, picked_ns: int | None, batch: int) -> MaskResult:
        """One frame's finished prediction -> counters, its inference record, its MaskResult."""
        sid = frame.stream_id
        key = (sid, epoch)
        self.processed[key] = self.processed.get(key, 0) + 1
        if self.filters is not None:  # hide a detection until it persists (the mask is never invented)
            found = bool(pred.mask.any())
            if not self.filters.update(sid, found, pred.presence) and found:
                pred = replace(pred, mask=np.zeros_like(pred.mask), box=None, held_back=True)
        self.infer_ms.append((t1 - t0) / 1e6)
        if self.record is not None:
            self.record({"stream_id": sid, "epoch": epoch, "seq": frame.seq,
                         "newest_seq": frame.seq if newest_seq is None else newest_seq,
                         "t_capture_ns": frame.t_capture_ns, "picked": picked_ns or t0,
                         "infer_start": t0,
                         **dict(frame.stamps_ns), **pred.stages_ns,
                         "presence": round(pred.presence, 4), "gated": int(pred.gated), "batch": batch})
        return MaskResult(sid, epoch, frame.seq, frame.t_capture_ns, pred,
                          bool(seg.info.get("trained", False)), t0)

    def _timed(self, result: MaskResult, submitted_ns: int, picked_ns: int | None) -> None:
        now = time.monotonic_ns()
        self.room(result.stream_id).on_mask(now)
        if submitted_ns and picked_ns:
            self.timeline.add(submitted_ns, picked_ns, result.prediction.stages_ns)

    def _check_epoch(self, sid: int, epoch: int) -> None:
        if self._epoch.get(sid) != epoch:  # new stream or restarted producer: fresh memory
            if sid in self._epoch:
                self.router.reset(sid)
            if self.filters is not None:
                self.filters.reset(sid)
            self._epoch[sid] = epoch

    def _error(self, frame: Frame, exc: Exception) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 100 == 0:
            log.error("inference failed on stream %d seq %d (%d so far): %s", frame.stream_id, frame.seq,
                      self.errors, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    @property
    def total_processed(self) -> int:
        return sum(self.processed.values())


class InferenceWorker:
    """Live mode: the model in its own thread, always on the newest submitted frames.

    ``submit`` replaces a stream's pending frame (newest wins, never a queue). The worker takes
    the pending frame of every stream (oldest capture first, at most the model's ``max_batch``)
    and segments them as one batch; it never waits for a stream with nothing new. ``latest``
    returns a stream's newest finished result at once; ``wait_for`` waits for one frame's own
    result up to a deadline (same-frame masks), then returns the newest.
    """

    def __init__(self, inference: Inference) -> None:
        self.inference = inference
        self._cv = threading.Condition()
        self._pending: dict[int, tuple[Frame, int, int]] = {}  # stream -> (frame, epoch, submitted ns)
        self._served: dict[int, int] = {}  # stream -> when its last frame was picked (fair share)
        self._passed: dict[int, int] = {}  # stream -> picks it waited through unpicked (fair share's tie-break)
        self._newest: dict[int, tuple[int, int]] = {}  # stream -> (epoch, newest seq submitted)
        self._latest: dict[int, MaskResult] = {}
        self._done: dict[int, tuple[int, int]] = {}  # stream -> (epoch, seq) of its last finished frame
        self._inflight: set[int] = set()  # streams in the batch being segmented
        self._inflight_ns: int | None = None  # when that batch was picked
        self._calls = 0  # model calls started; the one in flight has this number
        self._finished_call = 0  # the number of the last call that ended
        self._resets: set[int] = set()
        # Stream ids come from peers: one limiter over all rooms, so a flood of ids (each
        # missing its first deadline) cannot become one log line per id.
        self._missed_log = RateLimitedLog(log)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    def submit(self, frame: Frame, epoch: int) -> None:
        self.submit_many([(frame, epoch)])

    def submit_many(self, frames: list[tuple[Frame, int]]) -> None:
        """Submit the newest frame of several streams at once, so the worker batches them all
        instead of starting on the first. A frame already submitted (same stream, epoch and seq
        or older) is ignored: it is pending, in flight or done."""
        now = time.monotonic_ns()
        with self._cv:
            for frame, epoch in frames:
                ep, seq = self._newest.get(frame.stream_id, (epoch, -1))
                if ep == epoch and frame.seq <= seq:
                    continue
                self._pending[frame.stream_id] = (frame, epoch, now)
                self._newest[frame.stream_id] = (epoch, frame.seq)
            self._cv.notify_all()

    def latest(self, stream_id: int) -> MaskResult | None:
        with self._cv:
            return self._latest.get(stream_id)

    def wait_for(self, stream_id: int, seq: int, epoch: int, deadline_ns: int,
                 since_ns: int | None = None) -> MaskResult | None:
        """The newest result of a stream once frame ``seq`` (of ``epoch``) is finished, or at
        ``deadline_ns`` (``time.monotonic_ns``) if that comes first; returns at once when the
        frame is neither pending nor being segmented (nothing to wait for). Counts in
        ``inference.same_frame`` whether the result is the frame's own, and the wait from
        ``since_ns`` (the pass's start: ``in_completion_order`` may have done the waiting) or now."""
        t0 = since_ns or time.monotonic_ns()
        with self._cv:
            while not self._finished(stream_id, seq, epoch) and (
                    stream_id in self._pending or stream_id in self._inflight):
                left_ns = deadline_ns - time.monotonic_ns()
                if left_ns <= 0:
                    break
                self._cv.wait(left_ns / 1e9)
            result = self._latest.get(stream_id)
            now = time.monotonic_ns()
            met = result is not None and result.seq == seq and result.epoch == epoch
            self.inference.same_frame.add(met, (now - t0) / 1e6)
            room = self.inference.room(stream_id)
            room.frames += 1
            room.missed += not met
            if result is not None:
                room.mask_age_ms.append((now - result.t_capture_ns) / 1e6)
        if not met and (room.missed == 1 or room.missed % 100 == 0):
            # Counted, and said: the frame is shown with an older mask (or none).
            self._missed_log("missed_deadline", f"room {stream_id}: frame {seq} shown without its own mask "
                             f"(deadline missed; {room.missed} of {room.frames} frames so far)")
        return result

    def in_completion_order(self, msgs: list[Any], wait: Wait) -> Iterator[Any]:
        """``msgs`` (each with ``.frame`` and ``.epoch``, submitted) in the order their masks
        finish: a room whose mask is ready is shown at once instead of waiting behind another
        room's frame; at ``wait.deadline_ns`` the rest come in their given order. With
        ``wait.inflight_call`` a room is ready when that call ends (or at once if not in it)."""
        left = list(msgs)
        while left:
            with self._cv:
                while True:
                    ready = [m for m in left if self._ready(m, wait)]
                    left_ns = wait.deadline_ns - time.monotonic_ns()
                    if ready or left_ns <= 0:
                        break
                    self._cv.wait(left_ns / 1e9)
            for m in ready or list(left):
                left.remove(m)
                yield m

    def _ready(self, msg: Any, wait: Wait) -> bool:
        if not self._waiting(msg.frame.stream_id, msg.frame.seq, msg.epoch):
            return True
        if wait.inflight_call is None:
            return False
        return msg.frame.stream_id not in wait.inflight_streams or self._finished_call >= wait.inflight_call

    def _waiting(self, stream_id: int, seq: int, epoch: int) -> bool:
        """Frame ``seq`` is still pending or being segmented (its own mask may yet come)."""
        return not self._finished(stream_id, seq, epoch) and (
            stream_id in self._pending or stream_id in self._inflight)

    def _finished(self, stream_id: int, seq: int, epoch: int) -> bool:
        done = self._done.get(stream_id)
        return done is not None and done[0] == epoch and done[1] >= seq

    def reset(self, stream_id: int) -> None:
        """End of a stream: forget its pending frame, result and memory (done in the worker)."""
        with self._cv:
            self._pending.pop(stream_id, None)
            self._latest.pop(stream_id, None)
            self._newest.pop(stream_id, None)
            self._done.pop(stream_id, None)
            self._served.pop(stream_id, None)
            self._passed.pop(stream_id, None)
            self._resets.add(stream_id)
            self._cv.notify_all()

    def inflight(self) -> InFlight | None:
        """The batch being segmented (None when idle): when picked, its size, number and rooms."""
        with self._cv:
            if self._inflight_ns is None:
                return None
            return InFlight(self._inflight_ns, len(self._inflight), self._calls, frozenset(self._inflight))

    @property
    def busy(self) -> bool:
        with self._cv:
            return bool(self._inflight or self._pending)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the inference in flight (not the pending ones) and end the thread."""
        with self._cv:
            self._stop = True
            self._pending.clear()
            self._cv.notify_all()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._pending or self._resets or self._stop):
                    self._cv.wait()
                if self._stop:
                    return
                resets, self._resets = self._resets, set()
                cap = max(1, self.inference.max_batch)
                # Fair share when more rooms wait than one call takes: the room served longest
                # ago goes first; among rooms served by the same call, the one passed over most
                # often, then the oldest frame. (The oldest frame alone favoured the rooms whose
                # frames come first in each interval: five rooms on four-frame calls got 15.6 to
                # 24.3 masks/s, docs/BENCH.md.)
                sids = sorted(self._pending, key=lambda s: (self._served.get(s, 0), -self._passed.get(s, 0),
                                                             self._pending[s][0].t_capture_ns))[:cap]
                for sid in self._pending.keys() - set(sids):
                    self._passed[sid] = self._passed.get(sid, 0) + 1
                picked_ns = time.monotonic_ns()
                taken = [self._pending.pop(sid) for sid in sids]
                items = [(frame, epoch, self._newest[frame.stream_id][1]) for frame, epoch, _ in taken]
                submitted = [t for _, _, t in taken]
                for sid in sids:
                    self._served[sid] = picked_ns
                self._inflight = set(sids)
                self._inflight_ns = picked_ns if sids else None
                self._calls += bool(sids)
                call = self._calls
            for sid in resets:
                self.inference.reset(sid)
            if not items:
                continue
            results = self.inference.run_batch(items, picked_ns, submitted)
            with self._cv:
                self._inflight, self._inflight_ns = set(), None
                self._finished_call = call
                for (frame, epoch, _), result in zip(items, results):
                    sid = frame.stream_id
                    if sid in self._resets or self._newest.get(sid, (epoch,))[0] != epoch:
                        continue  # the stream ended or restarted meanwhile
                    self._done[sid] = (epoch, frame.seq)
                    if result is not None:
                        self._latest[sid] = result
                self._cv.notify_all()
