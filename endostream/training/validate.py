"""Validation through the same Segmenter loop as inference (torch backend on the live network),
with predictions compared at the ground truth's own size."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from endostream.training.metrics import dice_binary as dice
from endostream.runtime.torch_backend import TorchBackend
from endostream.inference.segmenter import Segmenter
from endostream.training.dataset import Sample, read_mask


@dataclass
class EvalItem:
    image: np.ndarray  # original BGR frame
    gt: np.ndarray  # original-size {0,1} mask
    group: str  # "kvasir" or "clinicdb"
    sequence: int  # -1: independent still (memory reset before it)


def load_eval_items(samples: list[Sample]) -> list[EvalItem]:
    items = []
    for s in samples:
        img = cv2.imread(s.original_path, cv2.IMREAD_COLOR)
        items.append(EvalItem(img, read_mask(s.mask_path), s.source, s.sequence))
    return items


def validate(model, items: list[EvalItem], *, steps: int = 2, warm_start: bool = True,
             use_temporal: bool = True, threads: int = 2) -> dict[str, float]:
    """Mean Dice per group (stills independent, sequences streamed in order) and their mean."""
    was_training = model.training
    seg = Segmenter(TorchBackend(model, threads=threads), steps=steps, warm_start=warm_start,
                    use_temporal=use_temporal, presence_threshold=0.0)
    scores: dict[str, list[float]] = {}
    last_seq = None
    for it in items:
        if it.sequence < 0 or it.sequence != last_seq:
            seg.reset()
        last_seq = it.sequence
        pred = seg.segment(it.image)
        scores.setdefault(it.group, []).append(dice(pred.mask, it.gt > 0))
    model.train(was_training)
    out = {f"{g}_dice": float(np.mean(v)) for g, v in scores.items()}
    out["mean_dice"] = float(np.mean(list(out.values())))
    return out
