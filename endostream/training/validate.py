"""Validation through the same Segmenter loop as inference (torch backend on the live network),
with predictions compared at the ground truth's own size."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from endostream.training.metrics import dice_binary as dice
from endostream.types import Prediction
from endostream.runtime.torch_backend import TorchBackend
from endostream.inference.segmenter import Segmenter
from endostream.training.dataset import Sample, read_mask
from endostream.training.false_alarms import build_stream, choose_stretches, record_decisions, shipped_false_alarms


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


def stream_items(seg: Segmenter, items: list[EvalItem]) -> Iterator[tuple[EvalItem, Prediction]]:
    """Each item's prediction: stills independent (memory reset), sequences streamed in order."""
    last_seq = None
    for it in items:
        if it.sequence < 0 or it.sequence != last_seq:
            seg.reset()
        last_seq = it.sequence
        yield it, seg.segment(it.image)


def _device_of(model) -> str:
    """Where the model is (cpu, or cuda while training on a GPU): the backend must not move it."""
    return str(next(model.parameters()).device)


def validate(model, items: list[EvalItem], *, steps: int = 2, warm_start: bool = True,
             use_temporal: bool = True, threads: int = 2) -> dict[str, float]:
    """Mean Dice per group (stills independent, sequences streamed in order) and their mean."""
    was_training = model.training
    seg = Segmenter(TorchBackend(model, device=_device_of(model), threads=threads), steps=steps, warm_start=warm_start,
                    use_temporal=use_temporal, presence_threshold=0.0)
    scores: dict[str, list[float]] = {}
    for it, pred in stream_items(seg, items):
        scores.setdefault(it.group, []).append(dice(pred.mask, it.gt > 0))
    model.train(was_training)
    out = {f"{g}_dice": float(np.mean(v)) for g, v in scores.items()}
    out["mean_dice"] = float(np.mean(list(out.values())))
    return out


def false_alarms(model, val: list[Sample], *, stretches: int, negative_frames: int, threads: int = 2,
                 seed: int = 0) -> dict[str, float]:
    """False alarms per polyp-free minute with the live persistence filter, K=0, temporal memory on,
    on the same synthesised stream every time (seeded): checkpoint selection's second criterion."""
    was_training = model.training
    seg = Segmenter(TorchBackend(model, device=_device_of(model), threads=threads), steps=0, warm_start=False, use_temporal=True,
                    presence_threshold=0.0)  # the shipped presence gate (>= 0.9) is applied in the replay
    rng = np.random.default_rng(seed)
    decisions = record_decisions(seg, build_stream(choose_stretches(val, stretches, rng), rng, 25, negative_frames))
    model.train(was_training)
    r = shipped_false_alarms(decisions)
    return {"false_alarms_per_min": r["false_alarms_per_min"], "negative_shown_pct": r["negative_frames_shown_pct"],
            "polyps_found_pct": r["detected_pct"]}
