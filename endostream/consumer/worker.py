"""Consumer stage 2: frame modality -> model, and the live worker that runs it on the newest
frame. Used by :mod:`endostream.consumer.app`."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
