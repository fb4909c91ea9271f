"""`endostream eval`: score a segmenter configuration on the validation split or on a folder.

Metrics follow the SUN-SEG video protocol (endostream.training.metrics). Stills are scored one by one
with the memory reset; sequences are streamed in order, so temporal memory and warm start act
as they do live. Also reported: Dice by polyp size, CPU latency per frame, and mask flicker on
clips synthesised from the validation stills.

SIGINT/SIGTERM: stops after the image in hand and says how far it got; no scores are written
(they would cover part of the set only).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from endostream.interrupt import Interrupted, StopRequest
from endostream.training.metrics import VideoMetrics, dice_binary
from endostream.inference.segmenter import Segmenter, load_segmenter

SIZE_BINS = (("small", 0.0, 0.02), ("medium", 0.02, 0.10), ("large", 0.10, 1.01))  # polyp area / frame area


def size_bin(gt: np.ndarray) -> str:
    frac = float((gt > 0).mean())
    return next(name for name, lo, hi in SIZE_BINS if lo <= frac < hi)


def score_items(seg: Segmenter, items, group_of=lambda it: it.group,
                should_stop: Callable[[], bool] | None = None) -> dict:
    """items: objects with .image (BGR), .gt (0/1), .group, .sequence (-1 = independent still).
    Raises :class:`Interrupted` when ``should_stop`` says so (asked before every image)."""
    by_group: dict[str, VideoMetrics] = {}
    by_size: dict[str, list[float]] = {}
    times: list[float] = []
    last = None
    for i, it in enumerate(items):
        if should_stop is not None and should_stop():
            raise Interrupted(i, len(items))
        key = f"still{i}" if it.sequence < 0 else f"seq{it.sequence}"
        if key != last:
            seg.reset()
        last = key
        t0 = time.perf_counter()
        pred = seg.segment(it.image)
        times.append(time.perf_counter() - t0)
        prob = np.where(pred.mask, np.maximum(pred.prob, 0.5001), np.minimum(pred.prob, 0.4999))
        by_group.setdefault(group_of(it), VideoMetrics()).add(key, prob, it.gt)
        if it.gt.any():
            by_size.setdefault(size_bin(it.gt), []).append(dice_binary(pred.mask, it.gt > 0))
    out = {g: m.summary() for g, m in by_group.items()}
    out["dice_by_size"] = {k: {"dice": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_size.items())}
    t = np.array(times[min(5, len(times) - 1):]) * 1000
    out["latency_ms"] = {"p50": float(np.percentile(t, 50)), "mean": float(t.mean())}
    return out


def flicker(seg: Segmenter, items, *, clips: int = 30, length: int = 8, seed: int = 0,
            should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Mean 1 - Dice between consecutive predicted masks where the ground truth barely moves
    (consecutive GT Dice > 0.95), on clips made from stills with smooth simulated camera motion."""
    from endostream.training.augment import camera_motion, warp  # eval-only dependency

    rng = np.random.default_rng(seed)
    stills = [it for it in items if it.sequence < 0]
    values: list[float] = []
    for c in range(min(clips, len(stills))):
        if should_stop is not None and should_stop():  # every image was scored; the clips were not
            raise Interrupted(len(items), len(items))
        it = stills[int(rng.integers(len(stills)))]
        img = cv2.resize(it.image, (384, 320))
        gt = cv2.resize(it.gt.astype(np.uint8), (384, 320), interpolation=cv2.INTER_NEAREST)
        seg.reset()
        prev_p = prev_g = None
        for m in camera_motion(rng, length, 320):
            m = m.copy()
            fi, fg = warp(img, gt, m)
            pred = seg.segment(fi).mask
            if prev_p is not None and dice_binary(fg > 0, prev_g > 0) > 0.95:
                values.append(1.0 - dice_binary(pred, prev_p))
            prev_p, prev_g = pred, fg
    return {"flicker": float(np.mean(values)) if values else float("nan"), "pairs": len(values)}


def ablation_markdown(rows: list[dict], first_col: str = "setting") -> str:
    """Markdown table of scored rows (``score_items`` results + ``flicker`` + ``name``)."""
    lines = [f"| {first_col} | Kvasir Dice | ClinicDB Dice | mean | small / medium / large | flicker | CPU ms/frame (p50) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        k, c = r["kvasir"]["dice@0.5"], r["clinicdb"]["dice@0.5"]
        sz = " / ".join(f"{r['dice_by_size'].get(b, {}).get('dice', float('nan')):.3f}" for b, _, _ in SIZE_BINS)
        lines.append(f"| {r['name']} | {k:.4f} | {c:.4f} | {(k + c) / 2:.4f} | {sz} | "
                     f"{r['flicker']['flicker']:.4f} | {r['latency_ms']['p50']:.1f} |")
    return "\n".join(lines) + "\n"


def run(cfg) -> int:
    with StopRequest() as stop:
        try:
            return _run(cfg, stop)
        except Interrupted as exc:
            print(f"eval: stopped by {stop.requested} after {exc.done} of {exc.total} images; "
                  "no scores written (they would cover part of the set)", flush=True)
            return stop.exit_code


def _run(cfg, stop: StopRequest) -> int:
    # A folder given by the user is read before the model loads, so a wrong path is one line at once.
    items = _folder_items(cfg.images, cfg.masks, bool(cfg.sequence)) if cfg.images else None
    seg = load_segmenter(**cfg.model)
    if items is None:
        from endostream.training.dataset import load_splits
        from endostream.training.validate import load_eval_items

        items = load_eval_items(load_splits(cfg.data.root, val_only=True, holdout=cfg.data.holdout).val)
    result = {"config": {k: seg.info.get(k) for k in ("backend", "steps", "warm_start", "input_size",
                                                         "weights_sha256", "trained", "tta", "tta_sizes")},
              "use_temporal": bool(cfg.model.use_temporal),
              **score_items(seg, items, should_stop=stop.is_set)}
    if stop.requested:  # between the last image and here
        raise Interrupted(len(items), len(items))
    if cfg.flicker:
        result["flicker"] = flicker(seg, items, should_stop=stop.is_set)
    text = json.dumps(result, indent=2)
    print(text)
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(text + "\n")
    return 0


class _Item:
    def __init__(self, image, gt, group, sequence):
        self.image, self.gt, self.group, self.sequence = image, gt, group, sequence


def _folder_items(images_arg: str, masks_arg: str | None, sequence: bool) -> list[_Item]:
    from endostream.inference.predict import list_images

    if not masks_arg:
        raise ValueError("images= needs masks=DIR: a ground-truth mask per image, same file name")
    images, masks = Path(images_arg), Path(masks_arg)
    paths = list_images(images, key="images")
    if not masks.is_dir():
        raise FileNotFoundError(f"masks folder not found: {masks} (masks= takes the folder of "
                                "ground-truth masks for images=)")
    items = []
    for p in paths:
        mp = next((q for q in (masks / p.name, masks / (p.stem + ".png"), masks / (p.stem + ".jpg")) if q.is_file()), None)
        if mp is None:
            raise FileNotFoundError(f"no ground-truth mask for {p.name} in {masks}")
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        gt = (cv2.imread(str(mp), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
        items.append(_Item(img, gt, images.name, 0 if sequence else -1))
    return items
