"""A single-pass segmentation model behind the same surface as the shipped ``Segmenter``
(``segment``, ``segment_batch``, ``reset``, ``info``, ``max_batch``, ``steps``), so the live
consumer, ``predict``, ``batch`` and the bench run it unchanged: field-of-view crop, the graph's
own input preparation (its contract), one call, the polyp probability pasted back into the frame.

What the shipped model has and a single-pass graph has not: temporal memory, the presence gate
and boxes. ``info["absent"]`` names them (the HUD note and ``/status.json`` show it). The
``presence`` a Prediction carries is the largest pixel probability of the mask (there is no
presence head), so the live persistence filter's ``min_presence`` reads as "a confident pixel".
No torch import here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from endostream.fileutil import file_sha256
from endostream.inference.preprocess import find_fov, paste_prob
from endostream.runtime.graph_contract import ContractError, GraphContract, GraphSpec, check_graph, check_output_channels
from endostream.types import Prediction

ABSENT = ("temporal memory", "presence gate", "boxes")
HUD_NOTE = "single-pass model: no temporal memory, presence gate or boxes"
# Keys of the shipped model's config a single-pass model has no use for: ignored, so one
# ``model.*`` block (the modality's, with bench/consume overrides) can name either kind.
DIFFUSION_ONLY = frozenset({"weights", "steps", "warm_start", "warm_start_t", "warm_steps", "presence_threshold",
                            "mask_threshold", "use_temporal", "uncertainty_samples", "tta",
                            "tta_sizes"})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


class InputPrep:
    """Frame crop -> the graph's input: resize, colour order, scale, mean/std, layout."""

    def __init__(self, spec: GraphSpec) -> None:
        c = spec.contract
        self.hw, self.rgb, self.nchw = (spec.height, spec.width), c.color == "rgb", c.layout == "NCHW"
        std = np.asarray(c.std, np.float32)
        # (x * scale - mean) / std as one multiply-add per pixel
        self.mul = (np.float32(c.scale) / std).astype(np.float32)
        self.add = (-np.asarray(c.mean, np.float32) / std).astype(np.float32)

    def __call__(self, image_bgr: np.ndarray, fov: tuple[int, int, int, int]) -> np.ndarray:
        x0, y0, x1, y1 = fov
        crop = cv2.resize(image_bgr[y0:y1, x0:x1], (self.hw[1], self.hw[0]), interpolation=cv2.INTER_AREA)
        if self.rgb:
            crop = crop[:, :, ::-1]
        x = crop.astype(np.float32) * self.mul + self.add
        return (x.transpose(2, 0, 1) if self.nchw else x)[None]


def polyp_probability(out: np.ndarray, contract: GraphContract) -> np.ndarray:
    """The graph's output batch -> (B, h, w) float32 polyp probability."""
    if out.ndim == 3:  # (N, H, W): one map per frame
        maps = out[:, None]
    elif out.ndim == 4:
        maps = out.transpose(0, 3, 1, 2) if (contract.output_layout or contract.layout) == "NHWC" else out
    else:
        raise ContractError(f"output {contract.output!r} came back with shape {list(out.shape)}; expected rank 3 or 4")
    check_output_channels(contract, int(maps.shape[1]), list(out.shape))
    if contract.output_type == "logits":
        prob = _sigmoid(maps[:, 0])
    elif contract.output_type == "probabilities":
        prob = maps[:, 0]
    else:
        scores = maps.astype(np.float32)
        if contract.output_type == "class_logits":
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        prob = scores[:, int(contract.polyp_channel)]
    return np.ascontiguousarray(prob, np.float32)


class SinglePassSegmenter:
    """Segments frames with a single-pass graph; every frame on its own (no memory)."""

    steps = 0  # no denoising steps: the records and HUD of the consumer read this

    def __init__(self, backend: Any, spec: GraphSpec, *, fov: bool = True, max_batch: int = 1,
                 info: dict[str, Any] | None = None) -> None:
        if int(max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend, self.spec, self.contract = backend, spec, spec.contract
        self.fov = bool(fov)
        self.max_batch = min(int(max_batch), int(getattr(backend, "max_batch", max_batch)))
        self.prep = InputPrep(spec)
        # No "input_size": the consumer checks that key against the modality's (the shipped
        # model's size); a graph of any size serves a modality.
        self.info = {"kind": "onnx", "backend": backend.name, "steps": 0, "warm_start": False,
                     "input_hw": [spec.height, spec.width],
                     "max_batch": self.max_batch, "absent": list(ABSENT), "hud_note": HUD_NOTE, **(info or {})}

    def reset(self, stream_id: int | None = None) -> None:
        """Nothing to forget: a single-pass model keeps no state between frames."""

    def segment(self, image_bgr: np.ndarray, stream_id: int = 0) -> Prediction:
        return self.segment_batch([image_bgr], [stream_id])[0]

    def segment_batch(self, images_bgr: Sequence[np.ndarray], stream_ids: Sequence[int]) -> list[Prediction]:
        """One frame of each of B streams -> B Predictions, as one graph call (or one call per
        frame for a graph with a fixed batch of 1). Every image is checked before the model runs."""
        if len(images_bgr) != len(stream_ids) or not images_bgr:
            raise ValueError(f"expected one stream id per image, got {len(images_bgr)} images and "
                             f"{len(stream_ids)} stream ids")
        for image_bgr in images_bgr:
            if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
                raise ValueError(f"expected an HxWx3 uint8 image, got {image_bgr.shape} {image_bgr.dtype}")
        fovs = [find_fov(im) if self.fov else (0, 0, im.shape[1], im.shape[0]) for im in images_bgr]
        x = np.concatenate([self.prep(im, fov) for im, fov in zip(images_bgr, fovs)], axis=0)
        stamps = {"preprocess": time.monotonic_ns()}
        out = self.backend.run(x)
        stamps["encoder"] = time.monotonic_ns()  # the whole graph (the bench's model stage)
        probs = polyp_probability(out, self.contract)
        preds = []
        for i, image_bgr in enumerate(images_bgr):
            prob = paste_prob(probs[i], image_bgr.shape[:2], fovs[i])
            mask = prob > float(self.contract.threshold)
            st = dict(stamps, postprocess=time.monotonic_ns())
            preds.append(Prediction(prob=prob, mask=mask, presence=float(probs[i].max(initial=0.0)), box=None,
                                    gated=False, stages_ns=st))
        return preds


def load_single_pass(graph: Mapping[str, Any] | None = None, backend: str = "auto", threads: int = 2,
                     device: str = "cpu", fov: bool = True, max_batch: int = 1,
                     backend_options: Mapping[str, Any] | None = None, kind: str = "onnx",
                     **ignored: Any) -> SinglePassSegmenter:
    """Check the graph against its contract (``graph``: configs/model/onnx.yaml's block), build
    the backend, wrap both. Keys of the shipped model's config (``DIFFUSION_ONLY``) are ignored;
    any other unknown key is an error."""
    unknown = sorted(set(ignored) - DIFFUSION_ONLY)
    if unknown:
        raise ValueError(f"model.kind=onnx takes no key {', '.join(unknown)}")
    from endostream.runtime.single_pass import create_single_pass

    contract = GraphContract.from_mapping(dict(graph or {}))
    spec = check_graph(contract)
    options = {"max_batch": int(max_batch), **dict(backend_options or {})}
    be = create_single_pass(str(backend), spec, threads=int(threads), device=str(device), **options)
    path = Path(contract.path)
    info = {"weights": str(path), "weights_sha256": file_sha256(path), "trained": True,
            "graph": contract.to_dict()}
    return SinglePassSegmenter(be, spec, fov=fov, max_batch=max_batch, info=info)
