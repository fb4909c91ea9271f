"""The inference loop, written once above the backends: preprocess, encode the image once,
temporal memory, K denoising steps, heads, postprocess. No torch import here."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from endostream.fileutil import file_sha256
from endostream.model.scheduler import MaskScheduler
from endostream.inference.preprocess import find_fov, paste_prob, to_input
from endostream.inference.stream_state import StreamState
from endostream.types import Prediction


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def check_images(images_bgr: Sequence[np.ndarray], stream_ids: Sequence[int]) -> None:
    """The segmenter's input contract, checked before anything runs (one line on failure)."""
    if len(images_bgr) != len(stream_ids) or not images_bgr:
        raise ValueError(f"expected one stream id per image, got {len(images_bgr)} images and "
                         f"{len(stream_ids)} stream ids")
    if len(set(stream_ids)) != len(stream_ids):
        raise ValueError(f"a batch holds at most one frame per stream (each frame updates the "
                         f"stream's memory), got stream ids {list(stream_ids)}")
    for image_bgr in images_bgr:
        if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3 \
                or image_bgr.dtype != np.uint8:
            shape = getattr(image_bgr, "shape", None)
            raise ValueError(f"expected an HxWx3 uint8 image, got {shape} {getattr(image_bgr, 'dtype', type(image_bgr))}")


class Segmenter:
    """Segments frames of one or more streams with a backend.

    ``steps`` K: 0 is the plain decoder pass (the discriminative aux head, no diffusion);
    K >= 1 runs K deterministic DDIM steps from noise. ``warm_start`` starts a stream's next
    frame from the previous mask noised to timestep ``warm_start_t`` instead of pure noise,
    running ``warm_steps`` steps from there. ``use_temporal=False`` never fills the memory
    (the no-temporal ablation). ``presence_threshold`` gates the mask: below it, no mask.
    ``fov=False`` skips the field-of-view crop (for sources without a black border).
    ``uncertainty_samples`` S >= 2 also runs the denoiser from S fresh noise samples in one
    batched call per step (max(1, K) steps) and reports the per-pixel spread of their masks as
    ``Prediction.uncertainty``; the shown mask is unchanged by it. ``max_batch``: the most
    frames (one per stream) a caller should hand :meth:`segment_batch` at once (the live worker
    reads it; a TensorRT engine is built for at most this many).
    """

    def __init__(self, backend: Any, *, steps: int = 2, warm_start: bool = True, warm_start_t: int = 499,
                 warm_steps: int | None = None, presence_threshold: float = 0.5, mask_threshold: float = 0.5,
                 use_temporal: bool = True, fov: bool = True, uncertainty_samples: int = 0,
                 max_batch: int = 1, info: dict[str, Any] | None = None) -> None:
        cfg = backend.config
        self.backend = backend
        self.steps = int(steps)
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.warm_start = bool(warm_start) and self.steps > 0
        self.warm_start_t = int(warm_start_t)
        self.warm_steps = int(warm_steps) if warm_steps else max(1, self.steps)
        self.presence_threshold = float(presence_threshold)
        self.mask_threshold = float(mask_threshold)
        self.use_temporal = bool(use_temporal)
        self.fov = bool(fov)
        self.uncertainty_samples = int(uncertainty_samples)
        if self.uncertainty_samples == 1 or self.uncertainty_samples < 0:
            raise ValueError(f"uncertainty_samples must be 0 (off) or >= 2, got {uncertainty_samples}")
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        # A backend with a fixed batch range (a TensorRT engine's profile) caps it further.
        self.max_batch = min(int(max_batch), int(getattr(backend, "max_batch", max_batch)))
        self.input_size = int(cfg["input_size"])
        self.grid = self.input_size // 4
        self.scheduler = MaskScheduler(int(cfg["num_train_steps"]), float(cfg["mask_scale"]))
        self._state_args = (int(cfg["memory_frames"]), int(cfg["neck_channels"]), self.input_size // 16)
        self.states: dict[int, StreamState] = {}
        self.info = {"backend": backend.name, "steps": self.steps, "warm_start": self.warm_start,
                     "input_size": self.input_size,
                     "max_batch": self.max_batch, **(info or {})}

    def reset(self, stream_id: int | None = None) -> None:
        """Forget a stream's temporal memory (all streams when ``stream_id`` is None)."""
        if stream_id is None:
            self.states.clear()
        else:
            self.states.pop(stream_id, None)

    def state(self, stream_id: int) -> StreamState:
        if stream_id not in self.states:
            self.states[stream_id] = StreamState(*self._state_args, seed=int(stream_id))
        return self.states[stream_id]

    def segment(self, image_bgr: np.ndarray, stream_id: int = 0) -> Prediction:
        """image_bgr: HxWx3 uint8 -> Prediction in the frame's pixel grid."""
        return self.segment_batch([image_bgr], [stream_id])[0]

    def segment_batch(self, images_bgr: Sequence[np.ndarray], stream_ids: Sequence[int]) -> list[Prediction]:
        """One frame of each of B distinct streams -> B Predictions, run as one batch: one
        encoder call on (B,3,S,S) and one denoiser call per step over the streams that share a
        schedule. Each stream keeps its own memory, noise and warm start, so every stream's
        result equals ``segment`` on that frame alone (within float tolerance of the batched
        kernels). B = 1 is exactly the one-frame path. Every image is checked before the model
        runs, so a bad one fails the call without touching any stream's memory.
        """
        check_images(images_bgr, stream_ids)
        stamps: dict[str, int] = {}
        states = [self.state(sid) for sid in stream_ids]
        fovs, inputs = [], []
        for image_bgr in images_bgr:
            h, w = image_bgr.shape[:2]
            fovs.append(find_fov(image_bgr) if self.fov else (0, 0, w, h))
            inputs.append(to_input(image_bgr, self.input_size, fovs[-1]))
        stamps["preprocess"] = time.monotonic_ns()

        be = self.backend
        out = be.encode(_stack(inputs), _stack([st.memory for st in states]), _stack([st.valid for st in states]))
        stamps["encoder"] = time.monotonic_ns()
        step_stamps = [dict(stamps) for _ in states]  # streams on different schedules step apart
        # The uncertainty pass feeds the denoiser other inputs: copy the features out first
        # (a backend may reuse the encoder's output buffer as the denoiser's input).
        feat_np = be.to_numpy(out["feat"]) if self.uncertainty_samples else None
        prob_small = self._sample(out, states, step_stamps)
        spreads = ([self._spread(feat_np[i:i + 1], st) for i, st in enumerate(states)]
                   if feat_np is not None else [None] * len(states))
        presence = _sigmoid(be.to_numpy(out["presence_logit"]).reshape(-1))
        boxes = be.to_numpy(out["box"]).reshape(len(states), -1)
        memory_out = be.to_numpy(out["memory_out"]) if self.use_temporal else None
        for i, st in enumerate(states):
            if memory_out is not None:
                st.push(memory_out[i:i + 1], prob_small[i:i + 1].copy())
            else:
                st.prev_prob = prob_small[i:i + 1].copy()

        preds = []
        for i, image_bgr in enumerate(images_bgr):
            h, w = image_bgr.shape[:2]
            prob = paste_prob(prob_small[i, 0], (h, w), fovs[i])
            gated = float(presence[i]) < self.presence_threshold
            mask = np.zeros((h, w), bool) if gated else prob > self.mask_threshold
            box = None if gated else _box_to_frame(boxes[i], fovs[i])
            uncertainty = None if spreads[i] is None else paste_prob(spreads[i], (h, w), fovs[i])
            step_stamps[i]["postprocess"] = time.monotonic_ns()
            preds.append(Prediction(prob=prob, mask=mask, presence=float(presence[i]), box=box, gated=gated,
                                    stages_ns=step_stamps[i], uncertainty=uncertainty))
        return preds

    def _sample(self, out: dict[str, Any], states: list[StreamState],
                stamps: list[dict[str, int]]) -> np.ndarray:
        """The K-step loop over a batch; returns the clean-mask probability (B,1,g,g) float32.
        Streams that start cold (pure noise) and warm (the previous mask, noised) follow
        different timesteps, so each group steps as its own batch."""
        be, sch = self.backend, self.scheduler
        if self.steps == 0:
            return _sigmoid(be.to_numpy(out["aux_logits"])).astype(np.float32)
        groups: dict[bool, list[int]] = {}
        for i, st in enumerate(states):
            groups.setdefault(self.warm_start and st.prev_prob is not None, []).append(i)
        # One group (always at B = 1) feeds the encoder's output as it is; otherwise each group
        # takes its rows from a host copy (a backend may reuse that buffer as its input).
        feat_np = be.to_numpy(out["feat"]) if len(groups) > 1 else None
        g = self.grid
        result = np.empty((len(states), 1, g, g), np.float32)
        for warm, idx in groups.items():
            noise = [states[i].noise((1, 1, g, g)) for i in idx]
            if warm:
                timesteps = sch.set_timesteps(self.warm_steps, start_t=self.warm_start_t)
                sample = _stack([sch.add_noise(sch.mask_to_signal(states[i].prev_prob), n, timesteps[0])
                                 for i, n in zip(idx, noise)])
            else:
                timesteps = sch.set_timesteps(self.steps)
                sample = _stack(noise)
            feat = out["feat"] if feat_np is None else be.from_numpy(feat_np[idx])
            sample = be.from_numpy(sample.astype(np.float32))
            prob = None
            for k, t in enumerate(timesteps):
                logits = be.denoise(feat, sample, np.full(len(idx), t, np.float32))
                sample, prob = sch.step(logits, t, sample)
                now = time.monotonic_ns()
                for i in idx:
                    stamps[i][f"step{k + 1}"] = now
            result[idx] = be.to_numpy(prob).astype(np.float32)
        return result

    def _spread(self, feat: np.ndarray, st: StreamState) -> np.ndarray:
        """Per-pixel standard deviation (g, g) of the clean-mask probability over S noise samples,
        all S denoised together as one batch per step. ``feat``: one stream's (1,F,g,g)."""
        be, sch, n = self.backend, self.scheduler, self.uncertainty_samples
        feat = be.from_numpy(np.repeat(feat, n, axis=0))
        sample = be.from_numpy(st.sample_noise((n, 1, self.grid, self.grid)))
        prob = None
        for t in sch.set_timesteps(max(1, self.steps)):
            logits = be.denoise(feat, sample, np.full(n, t, np.float32))
            sample, prob = sch.step(logits, t, sample)
        return be.to_numpy(prob)[:, 0].std(axis=0).astype(np.float32)


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """Concatenate along the batch axis; one array is passed through (no copy at B = 1)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)


def _box_to_frame(box: np.ndarray, fov: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """Normalised (cx, cy, w, h) in the FOV crop -> (x0, y0, x1, y1) frame pixels."""
    x0, y0, x1, y1 = fov
    cw, ch = x1 - x0, y1 - y0
    cx, cy, bw, bh = (float(v) for v in box[:4])
    if bw <= 0.0 or bh <= 0.0:
        return None
    return (int(x0 + (cx - bw / 2) * cw), int(y0 + (cy - bh / 2) * ch),
            int(x0 + (cx + bw / 2) * cw), int(y0 + (cy + bh / 2) * ch))


def read_weights_info(weights: str | Path) -> dict[str, Any]:
    """The JSON sidecar beside the weights (``<stem>.json``): config, meta, sha256. {} if absent."""
    side = Path(weights).with_suffix(".json")
    return json.loads(side.read_text()) if side.is_file() else {}


def load_segmenter(weights: str = "weights/polyp.pt", backend: str = "auto", steps: int = 2,
                   warm_start: bool = True, warm_start_t: int = 499, warm_steps: int | None = None,
                   threads: int = 2, device: str = "cpu", presence_threshold: float = 0.5,
                   mask_threshold: float = 0.5, use_temporal: bool = True, fov: bool = True,
                   uncertainty_samples: int = 0, max_batch: int = 1,
                   backend_options: dict[str, Any] | None = None, tta: Sequence[str] = (),
                   tta_sizes: Sequence[int] = (), kind: str = "diffusion",
                   graph: dict[str, Any] | None = None, process: bool = False) -> Any:
    """Build a Segmenter from shipped weights with the named backend (``auto`` picks the fastest
    available: TensorRT, ONNX Runtime CUDA, torch CUDA, ONNX Runtime CPU). ``backend_options``
    go to the backend (torch/tensorrt ``precision``, ``cuda_graphs``, ``compile`` ...); the
    backend is sized for batches up to ``max_batch`` unless they name their own. ``tta`` (offline
    quality: ``["h", "v"]``) also segments mirrored copies, ``tta_sizes`` (``[288, 352]``) the frame
    at other input sizes, and averages them all (tta.py).

    ``kind``: ``diffusion`` (the shipped model) or ``onnx``: a single-pass graph described by
    ``graph`` (configs/model/onnx.yaml), run by ``inference.single_pass`` behind the same
    surface; the shipped model's keys are then ignored. ``process``: the same model served by a
    child process through shared memory (``inference.process_segmenter``), same surface."""
    if process:
        from endostream.inference.process_segmenter import ProcessSegmenter

        # every argument but this one, so the child builds exactly this model (nothing to keep in step)
        args = {k: v for k, v in locals().items() if k in inspect.signature(load_segmenter).parameters}
        return ProcessSegmenter({**args, "process": False})
    if kind == "onnx":
        from endostream.inference.single_pass import load_single_pass

        return load_single_pass(graph, backend=backend, threads=threads, device=device, fov=fov,
                                max_batch=max_batch, backend_options=backend_options)
    if kind != "diffusion":
        raise ValueError(f"model.kind must be diffusion or onnx, got {kind!r}")
    if graph:
        raise ValueError("model.graph describes a single-pass graph: set model.kind=onnx (or model=onnx)")
    from endostream.runtime.registry import create_backend

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    # A TensorRT engine's (or EP's) batch profile must cover the batches the worker sends.
    options = {"max_batch": int(max_batch), **dict(backend_options or {})}
    if int(steps) == 0 and int(uncertainty_samples) < 2:
        # Only the encode graph runs: its threads may spin (ort_backend.session_options), and its
        # ``feat`` output, the denoiser's input, is never computed (onnx_passes.drop_outputs).
        # Several sessions (tta_sizes) must not spin: their idle threads would starve each other.
        if backend in ("auto", "onnxruntime") and not tta_sizes:
            options.setdefault("spin", True)
        if backend in ("auto", "onnxruntime", "openvino"):
            options.setdefault("feat", False)
    def build(file: Path) -> Segmenter:
        be = create_backend(backend, file, threads=threads, device=device, **options)
        return Segmenter(be, steps=steps, warm_start=warm_start, warm_start_t=warm_start_t, warm_steps=warm_steps,
                         presence_threshold=presence_threshold, mask_threshold=mask_threshold,
                         use_temporal=use_temporal, fov=fov, uncertainty_samples=uncertainty_samples,
                         max_batch=max_batch)

    seg = build(path)
    side = read_weights_info(path)  # after the backend: a first use may have just written it
    meta = side.get("meta", {})
    seg.info.update({"weights": str(path), "weights_sha256": file_sha256(path),
                     "trained": bool(meta.get("trained", False))})
    if tta or tta_sizes:
        from endostream.inference.tta import ResizedWeights, TTASegmenter

        resized = ResizedWeights(path)  # TTASegmenter checks the sizes before building any of them
        wrapped = TTASegmenter(seg, list(tta), [int(s) for s in tta_sizes], lambda n: build(resized.at(n)))
        wrapped.resized = resized  # the folder of the other sizes' graphs lives as long as the segmenter
        return wrapped  # same surface
    return seg
