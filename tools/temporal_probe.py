"""Does the temporal memory hold the mask through a corrupted frame? (weights/MODEL_CARD.md)

The ClinicDB validation sequences are streamed in order; in each, every frame with a polyp
after the second is, in turn, replaced by a corrupted copy (strong motion blur, a specular
flash, bubbles). The Dice of the corrupted frame is scored three ways: streamed with the
memory of the frames before it, with the memory reset just before it, and clean. Also the
flicker of the clean stream (1 - IoU of consecutive masks). Frames of these sequences are
sparsely sampled (not adjacent 25 fps frames), so this is a lower bound on what memory can do.

A cut (another sequence's frames in the memory, as after a scene change or a stream switched
to another video) is scored too: each frame with a polyp after two frames of the next sequence,
against a reset memory; and how alike consecutive frames are (the normalised correlation of 32x32
grey thumbnails) for neighbours in a sequence and across such a cut: whether a similarity check
could tell when the memory (or a warm start) does not belong to the frame.

    .venv/bin/python tools/temporal_probe.py --weights weights/polyp.pt --steps 1 --out out/temporal.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from endostream.inference.segmenter import load_segmenter  # noqa: E402
from endostream.training.dataset import load_splits  # noqa: E402
from endostream.training.metrics import dice_binary  # noqa: E402
from endostream.training.validate import load_eval_items  # noqa: E402


def corrupt(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    if kind == "motion_blur":
        k = max(9, w // 12) | 1
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        m = cv2.getRotationMatrix2D((k / 2, k / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, m, (k, k))
        return cv2.filter2D(image, -1, kernel / max(kernel.sum(), 1e-6))
    if kind == "flash":  # a specular flash: a large saturated patch and global over-exposure
        out = cv2.convertScaleAbs(image, alpha=1.6, beta=40)
        cv2.ellipse(out, (int(rng.uniform(0.3, 0.7) * w), int(rng.uniform(0.3, 0.7) * h)),
                    (w // 6, h // 8), float(rng.uniform(0, 180)), 0, 360, (255, 255, 255), -1)
        return out
    if kind == "bubbles":
        out = image.copy()
        for _ in range(12):
            c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            r = int(rng.uniform(0.03, 0.09) * w)
            cv2.circle(out, c, r, (220, 230, 230), 2, cv2.LINE_AA)
            cv2.circle(out, (c[0] - r // 3, c[1] - r // 3), max(1, r // 5), (255, 255, 255), -1)
        return out
    raise ValueError(kind)


def likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two frames' 32x32 grey thumbnails, in [-1, 1]."""
    ta, tb = (cv2.resize(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
              .astype(np.float32).ravel() for x in (a, b))
    ta, tb = ta - ta.mean(), tb - tb.mean()
    return float(ta @ tb / (np.linalg.norm(ta) * np.linalg.norm(tb) + 1e-6))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="out/temporal.json")
    args = ap.parse_args()
    items = [it for it in load_eval_items(load_splits(args.data, val_only=True).val) if it.sequence >= 0]
    seqs: dict[int, list] = {}
    for it in items:
        seqs.setdefault(it.sequence, []).append(it)
    seg = load_segmenter(args.weights, backend=args.backend, steps=args.steps, warm_start=False,
                         presence_threshold=0.0, threads=2)
    rng = np.random.default_rng(0)
    rows: dict[str, dict[str, list[float]]] = {}
    flick = []
    for frames in seqs.values():
        seg.reset()
        prev = None
        for it in frames:  # the clean stream: flicker
            m = seg.segment(it.image).mask
            if prev is not None:
                union = (m | prev).sum()
                flick.append(1.0 - (m & prev).sum() / union if union else 0.0)
            prev = m
        for j in range(2, len(frames)):
            if not frames[j].gt.any():
                continue
            for kind in ("motion_blur", "flash", "bubbles"):
                bad = corrupt(frames[j].image, kind, rng)
                r = rows.setdefault(kind, {"streamed": [], "no_memory": [], "clean_streamed": []})
                seg.reset()
                for it in frames[j - 2:j]:  # the memory holds the last T=2 frames: the rest cannot matter
                    seg.segment(it.image)
                r["streamed"].append(dice_binary(seg.segment(bad).mask, frames[j].gt > 0))
                seg.reset()
                r["no_memory"].append(dice_binary(seg.segment(bad).mask, frames[j].gt > 0))
                seg.reset()
                for it in frames[j - 2:j]:
                    seg.segment(it.image)
                r["clean_streamed"].append(dice_binary(seg.segment(frames[j].image).mask, frames[j].gt > 0))
    cut = {"foreign_memory": [], "no_memory": []}
    alike = {"neighbours": [], "across_cut": []}
    order = list(seqs)
    for n, key in enumerate(order):
        frames, other = seqs[key], seqs[order[(n + 1) % len(order)]]
        alike["neighbours"] += [likeness(a.image, b.image) for a, b in zip(frames, frames[1:])]
        for j in range(2, len(frames)):
            if not frames[j].gt.any():
                continue
            seg.reset()
            for it in other[:2]:
                seg.segment(it.image)
            cut["foreign_memory"].append(dice_binary(seg.segment(frames[j].image).mask, frames[j].gt > 0))
            seg.reset()
            cut["no_memory"].append(dice_binary(seg.segment(frames[j].image).mask, frames[j].gt > 0))
            alike["across_cut"].append(likeness(other[1].image, frames[j].image))
    result = {"weights": args.weights, "steps": args.steps, "sequences": len(seqs),
              "flicker_clean": float(np.mean(flick)),
              "corrupted": {k: {m: round(float(np.mean(v)), 4) for m, v in r.items()} | {"frames": len(r["streamed"])}
                            for k, r in rows.items()},
              "cut": {m: round(float(np.mean(v)), 4) for m, v in cut.items()} | {"frames": len(cut["no_memory"])},
              "likeness": {k: {"min": round(float(np.min(v)), 3), "p5": round(float(np.percentile(v, 5)), 3),
                               "median": round(float(np.median(v)), 3), "p95": round(float(np.percentile(v, 95)), 3),
                               "max": round(float(np.max(v)), 3), "pairs": len(v)} for k, v in alike.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
