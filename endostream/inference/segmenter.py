"""The inference loop, written once above the backends: preprocess, encode the image once,
temporal memory, K denoising steps, heads, postprocess. No torch import here."""

from __future__ import annotations

import json
import time
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


class Segmenter:
    """Segments frames of one or more streams with a backend.

    ``steps`` K: 0 is the plain decoder pass (the discriminative aux head, no diffusion);
    K >= 1 runs K deterministic DDIM steps from noise. ``warm_start`` starts a stream's next
    frame from the previous mask noised to timestep ``warm_start_t`` instead of pure noise,
    running ``warm_steps`` steps from there. ``use_temporal=False`` never fills the memory
    (the no-temporal ablation). ``presence_threshold`` gates the mask: below it, no mask.
    ``fov=False`` skips the field-of-view crop (for sources without a black border).
    """

    def __init__(self, backend: Any, *, steps: int = 2, warm_start: bool = True, warm_start_t: int = 499,
                 warm_steps: int | None = None, presence_threshold: float = 0.5, mask_threshold: float = 0.5,
                 use_temporal: bool = True, fov: bool = True, info: dict[str, Any] | None = None) -> None:
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
        self.input_size = int(cfg["input_size"])
        self.grid = self.input_size // 4
        self.scheduler = MaskScheduler(int(cfg["num_train_steps"]), float(cfg["mask_scale"]))
        self._state_args = (int(cfg["memory_frames"]), int(cfg["neck_channels"]), self.input_size // 16)
        self.states: dict[int, StreamState] = {}
        self.info = {"backend": backend.name, "steps": self.steps, "warm_start": self.warm_start,
                     "input_size": self.input_size, **(info or {})}

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
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image_bgr.shape} {image_bgr.dtype}")
        stamps: dict[str, int] = {}
        st = self.state(stream_id)
        h, w = image_bgr.shape[:2]
        fov = find_fov(image_bgr) if self.fov else (0, 0, w, h)
        x = to_input(image_bgr, self.input_size, fov)
        stamps["preprocess"] = time.monotonic_ns()

        be = self.backend
        out = be.encode(x, st.memory, st.valid)
        stamps["encoder"] = time.monotonic_ns()
        prob_small = self._sample(out, st, stamps)
        presence = float(_sigmoid(be.to_numpy(out["presence_logit"]).reshape(-1)[0]))
        if self.use_temporal:
            st.push(be.to_numpy(out["memory_out"]), prob_small)
        else:
            st.prev_prob = prob_small

        prob = paste_prob(prob_small[0, 0], (h, w), fov)
        gated = presence < self.presence_threshold
        mask = np.zeros((h, w), bool) if gated else prob > self.mask_threshold
        box = None if gated else _box_to_frame(be.to_numpy(out["box"]).reshape(-1), fov)
        stamps["postprocess"] = time.monotonic_ns()
        return Prediction(prob=prob, mask=mask, presence=presence, box=box, gated=gated, stages_ns=stamps)

    def _sample(self, out: dict[str, Any], st: StreamState, stamps: dict[str, int]) -> np.ndarray:
        """The K-step loop; returns the clean-mask probability (1,1,g,g) float32."""
        be, sch = self.backend, self.scheduler
        if self.steps == 0:
            return _sigmoid(be.to_numpy(out["aux_logits"])).astype(np.float32)
        noise = st.noise((1, 1, self.grid, self.grid))
        if self.warm_start and st.prev_prob is not None:
            timesteps = sch.set_timesteps(self.warm_steps, start_t=self.warm_start_t)
            sample = sch.add_noise(sch.mask_to_signal(st.prev_prob), noise, timesteps[0])
        else:
            timesteps = sch.set_timesteps(self.steps)
            sample = noise
        sample = be.from_numpy(sample.astype(np.float32))
        prob = None
        for i, t in enumerate(timesteps):
            logits = be.denoise(out["feat"], sample, np.array([t], np.float32))
            sample, prob = sch.step(logits, t, sample)
            stamps[f"step{i + 1}"] = time.monotonic_ns()
        return be.to_numpy(prob).astype(np.float32)


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
                   backend_options: dict[str, Any] | None = None) -> Segmenter:
    """Build a Segmenter from shipped weights with the named backend (``auto`` picks the fastest
    available: TensorRT, ONNX Runtime CUDA, torch CUDA, ONNX Runtime CPU). ``backend_options``
    go to the backend (torch/tensorrt ``precision``, ``cuda_graphs``, ``compile`` ...)."""
    from endostream.runtime.registry import create_backend

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    be = create_backend(backend, path, threads=threads, device=device, **dict(backend_options or {}))
    side = read_weights_info(path)  # after the backend: a first use may have just written it
    meta = side.get("meta", {})
    info = {"weights": str(path), "weights_sha256": file_sha256(path),
            "trained": bool(meta.get("trained", False))}
    return Segmenter(be, steps=steps, warm_start=warm_start, warm_start_t=warm_start_t, warm_steps=warm_steps,
                     presence_threshold=presence_threshold, mask_threshold=mask_threshold,
                     use_temporal=use_temporal, fov=fov, info=info)
