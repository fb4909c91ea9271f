"""Flip test-time augmentation for offline runs (``model.tta=[h,v]``): each frame is also
segmented mirrored, and the mirrored probability maps are averaged back. It costs one full
model pass per flip, so it suits batch and predict, not the live default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from endostream.inference.segmenter import Segmenter
from endostream.types import Prediction

FLIPS = {"h": 1, "v": 0}  # flip name -> numpy axis of an HxWx3 frame


class FlipTTASegmenter:
    """Wraps a Segmenter; ``flips`` a subset of ``("h", "v")``. Each flip keeps its own
    per-stream memory (a mirrored stream is a stream of its own), sharing the one backend."""

    def __init__(self, base: Segmenter, flips: Sequence[str]) -> None:
        unknown = [f for f in flips if f not in FLIPS]
        if unknown or not flips:
            raise ValueError(f"model.tta: expected a non-empty subset of {sorted(FLIPS)}, got {list(flips)}")
        self.base = base
        kw = dict(steps=base.steps, warm_start=base.warm_start, warm_start_t=base.warm_start_t,
                  warm_steps=base.warm_steps, presence_threshold=base.presence_threshold,
                  mask_threshold=base.mask_threshold, use_temporal=base.use_temporal, fov=base.fov,
                  max_batch=base.max_batch)
        self.views = [(FLIPS[f], Segmenter(base.backend, **kw)) for f in flips]
        self.info = {**base.info, "tta": list(flips)}

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
            mirrored = [np.ascontiguousarray(np.flip(im, axis)) for im in images_bgr]
            for i, p in enumerate(seg.segment_batch(mirrored, stream_ids)):
                probs[i] += np.flip(p.prob, axis)
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
