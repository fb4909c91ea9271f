"""False alarms per polyp-free minute on synthesised 25 fps streams, shared by
`tools/false_alarms.py` (the model card's figure) and training's checkpoint selection.

Each validation image with a polyp gives a polyp stretch (smooth simulated camera motion, the
same transform on image and mask), preceded by a polyp-free stretch of moving crops of validation
images away from any polyp. One stream runs through a segmenter frame by frame (temporal memory
on, as live); its raw decisions are recorded once and any filter setting replayed on them. A false
alarm is the onset of a shown detection on a polyp-free frame (a run of shown frames counts once).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from endostream.consumer.persistence import PersistenceFilter
from endostream.training.augment import camera_motion, warp
from endostream.training.clips import negative_crop
from endostream.training.dataset import Sample

FPS = 25.0


def shipped_persistence() -> dict:
    """The live consumer's persistence setting (configs/overlay/default.yaml), the one place it is defined."""
    from omegaconf import OmegaConf

    from endostream.cli import config_dir

    p = OmegaConf.to_container(OmegaConf.load(config_dir() / "overlay" / "default.yaml").persistence)
    return {"n": int(p["n"]), "m": int(p["m"]), "hold": int(p["hold"]), "min_presence": float(p["min_presence"])}


def choose_stretches(val: list[Sample], count: int, rng: np.random.Generator) -> list[Sample]:
    with_polyp = [s for s in val if s.mask.any()]
    return [with_polyp[i] for i in sorted(rng.permutation(len(with_polyp))[:count])]


def build_stream(samples: list[Sample], rng: np.random.Generator, polyp_frames: int,
                 negative_frames: int) -> Iterator[tuple[np.ndarray, np.ndarray | None, bool, int]]:
    """Yields (image, gt_mask or None, is_polyp_stretch, stretch_index) frame by frame."""
    for k, s in enumerate(samples):
        neg = None
        for _ in range(4):
            donor = samples[int(rng.integers(len(samples)))]
            neg = negative_crop(donor, rng)
            if neg is not None:
                break
        if neg is not None:
            for m in camera_motion(rng, negative_frames, neg.image.shape[0]):
                img, _ = warp(neg.image, neg.mask, m)
                yield img, None, False, k
        for m in camera_motion(rng, polyp_frames, s.image.shape[0])[::-1]:
            img, gt = warp(s.image, s.mask, m)
            yield img, gt, True, k


def record_decisions(seg, stream) -> list[dict]:
    """Runs the stream through a segmenter (anything with .segment(image) -> Prediction) once."""
    decisions = []
    for img, gt, polyp, k in stream:
        pred = seg.segment(img)
        present = bool(pred.mask.any())
        hit = bool(gt is not None and present and (pred.mask & (gt > 0)).any())
        decisions.append({"present": present, "polyp": polyp, "stretch": k, "hit": hit,
                          "presence": float(pred.presence), "area": float(pred.mask.mean())})
    return decisions


def gated(decisions: list[dict], presence: float, min_area: float) -> list[dict]:
    """The decisions as they would be with a stricter presence threshold and a smallest mask area."""
    out = []
    for d in decisions:
        keep = d["presence"] >= presence and d["area"] >= min_area
        out.append({**d, "present": d["present"] and keep, "hit": d["hit"] and keep})
    return out


def replay(decisions: list[dict], n: int, m: int, hold: int) -> dict:
    """False alarms per polyp-free minute, polyp-free frames shown, polyps found and time to the
    first shown mask, with a persistence filter of n of m frames and hold (1, 1, 1: off)."""
    f = PersistenceFilter(n, m, hold)
    alarms, neg_frames, neg_shown, shown_prev = 0, 0, 0, False
    first: dict[int, int] = {}
    start: dict[int, int] = {}
    for i, d in enumerate(decisions):
        shown = f.update(d["present"])
        if d["polyp"]:
            start.setdefault(d["stretch"], i)
            if shown and d["hit"] and d["stretch"] not in first:
                first[d["stretch"]] = i - start[d["stretch"]]
        else:
            neg_frames += 1
            neg_shown += shown
            alarms += shown and not shown_prev
        shown_prev = shown
    delays = [first.get(k) for k in start]
    found = [x for x in delays if x is not None]
    minutes = neg_frames / FPS / 60
    return {"n": n, "m": m, "hold": hold, "false_alarms_per_min": alarms / minutes if minutes else 0.0,
            "negative_frames_shown_pct": 100.0 * neg_shown / max(1, neg_frames),
            "detected_pct": 100.0 * len(found) / max(1, len(delays)),
            "first_mask_ms_median": float(np.median(found)) * 1000 / FPS if found else None,
            "first_mask_ms_p90": float(np.percentile(found, 90)) * 1000 / FPS if found else None}


def shipped_false_alarms(decisions: list[dict]) -> dict:
    """replay() with the live consumer's persistence setting and its presence gate."""
    p = shipped_persistence()
    return replay(gated(decisions, p["min_presence"], 0.0), p["n"], p["m"], p["hold"])
