"""Test-time augmentation for offline runs: flips (``model.tta=[h,v]``) and other input sizes
(``model.tta_sizes=[288,352]``). Each frame is also segmented mirrored and/or at the other sizes
(the same weights: every layer is size-agnostic), and the probability maps, which come back at
the frame's own resolution, are averaged. Each view costs one full model pass, so it suits
batch, predict and eval, not the live default."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from endostream.inference.segmenter import Segmenter
from endostream.types import Prediction

FLIPS = {"h": 1, "v": 0}  # flip name -> numpy axis of an HxWx3 frame
# Input sizes a view may run at: the stride-32 encoder needs a multiple of 32; the network was
# trained at 288-352 (weights/MODEL_CARD.md), and far from that it loses Dice.
MIN_SIZE, MAX_SIZE = 192, 640


def check_tta(flips: Sequence[str], sizes: Sequence[int], base_size: int) -> None:
    """One clear error for a flip or size this module cannot run."""
    unknown = [f for f in flips if f not in FLIPS]
    if unknown:
        raise ValueError(f"model.tta: expected a subset of {sorted(FLIPS)}, got {list(flips)}")
    bad = [s for s in sizes if not (MIN_SIZE <= int(s) <= MAX_SIZE and int(s) % 32 == 0)]
    if bad:
        raise ValueError(f"model.tta_sizes: sizes must be multiples of 32 within [{MIN_SIZE}, {MAX_SIZE}], got {bad}")
    if base_size in [int(s) for s in sizes] or len(set(sizes)) != len(sizes):
        raise ValueError(f"model.tta_sizes: {list(sizes)} repeats a size (the weights' own {base_size} always runs)")


class TTASegmenter:
    """Wraps a Segmenter. Views: the base at its own size, each flip of it, and for each extra size
    a Segmenter built by ``at_size(size)`` (a backend of the same weights at that size) with the
    same flips. Each view keeps its own per-stream memory (a mirrored or rescaled stream is a
    stream of its own)."""

    def __init__(self, base: Segmenter, flips: Sequence[str], sizes: Sequence[int] = (),
                 at_size: Callable[[int], Segmenter] | None = None) -> None:
        check_tta(flips, sizes, int(base.input_size))
        if not flips and not sizes:
            raise ValueError("model.tta / model.tta_sizes: nothing to augment (both empty)")
        self.base = base
        kw = dict(steps=base.steps, warm_start=base.warm_start, warm_start_t=base.warm_start_t,
                  warm_steps=base.warm_steps, presence_threshold=base.presence_threshold,
                  mask_threshold=base.mask_threshold, use_temporal=base.use_temporal, fov=base.fov,
                  max_batch=base.max_batch)
        self.views: list[tuple[int | None, Segmenter]] = [(FLIPS[f], Segmenter(base.backend, **kw)) for f in flips]
        for size in sizes:
            if at_size is None:
                raise ValueError("model.tta_sizes needs a way to build the other sizes")
            scaled = at_size(int(size))
            self.views.append((None, scaled))
            self.views += [(FLIPS[f], Segmenter(scaled.backend, **kw)) for f in flips]
        self.info = {**base.info, "tta": list(flips), "tta_sizes": [int(s) for s in sizes]}
        self.resized: ResizedWeights | None = None  # set by load_segmenter: keeps the other sizes' files

    def __getattr__(self, name: str) -> Any:  # steps, max_batch, input_size... as the base has them
        return getattr(self.base, name)

    def reset(self, stream_id: int | None = None) -> None:
        self.base.reset(stream_id)
        for _, seg in self.views:
            seg.reset(stream_id)

    def segment(self, image_bgr: np.ndarray, stream_id: int = 0) -> Prediction:
        return self.segment_batch([image_bgr], [stream_id])[0]

    def segment_batch(self, images_bgr: Sequence[np.ndarray], stream_ids: Sequence[int]) -> list[Prediction]:
        preds = self.base.segment_batch(images_bgr, stream_ids)
        probs = [p.prob.astype(np.float32) for p in preds]
        presence = [p.presence for p in preds]
        for axis, seg in self.views:
            seen = images_bgr if axis is None else [np.ascontiguousarray(np.flip(im, axis)) for im in images_bgr]
            for i, p in enumerate(seg.segment_batch(seen, stream_ids)):
                probs[i] += p.prob if axis is None else np.flip(p.prob, axis)
                presence[i] += p.presence
        n = 1 + len(self.views)
        out = []
        for p, prob, pres in zip(preds, probs, presence):
            prob = prob / n
            pres = pres / n
            gated = pres < self.base.presence_threshold
            mask = np.zeros(prob.shape, bool) if gated else prob > self.base.mask_threshold
            out.append(Prediction(prob=prob, mask=mask, presence=float(pres), box=None if gated else p.box,
                                  gated=gated, stages_ns=p.stages_ns, uncertainty=p.uncertainty))
        return out


class ResizedWeights:
    """The weights file at other input sizes, written to a folder that lives as long as this object
    (each backend exports its graphs beside the file on first use)."""

    def __init__(self, weights: str | Path) -> None:
        self.weights = Path(weights)
        self._dir = tempfile.TemporaryDirectory(prefix="endostream_tta_")

    def at(self, size: int) -> Path:
        from endostream.runtime.benchmark import weights_at_size  # torch: only when sizes are asked for

        return weights_at_size(self.weights, size, Path(self._dir.name))
