"""False alarms per minute and time to first shown mask, with and without the persistence filter.

Synthesised 25 fps streams from the validation split (never trained on): each validation image
with a polyp gives a 1 s "polyp stretch" (smooth simulated camera motion, the same transform on
image and mask), preceded by a 2 s polyp-free stretch made of crops of validation images away
from any polyp, also moving. One stream runs through the segmenter frame by frame (temporal
memory on, as live), the raw per-frame decisions are recorded once, and each filter setting is
replayed on them.

    python tools/false_alarms.py --weights weights/polyp.pt --out out/false_alarms.json

A false alarm is the onset of a shown detection on a polyp-free frame (a run of shown frames
counts once). Time to first shown mask: from a polyp stretch's first frame to the first frame
whose shown mask overlaps the ground truth, in frame intervals of 40 ms (model latency not
included); a stretch with none is a miss.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from endostream.consumer.persistence import PersistenceFilter  # noqa: E402
from endostream.inference.segmenter import load_segmenter  # noqa: E402
from endostream.training.augment import camera_motion, warp  # noqa: E402
from endostream.training.clips import negative_crop  # noqa: E402
from endostream.training.dataset import load_splits  # noqa: E402

FPS = 25.0
SETTINGS = [(1, 1, 1), (2, 3, 2), (3, 4, 3), (3, 5, 3), (4, 6, 3), (5, 8, 4), (6, 8, 4)]  # (n, m, hold); (1,1,1) = off
# Gates applied to the raw decisions before the filter: the presence head's probability (the
# model's model.presence_threshold) and the mask's smallest area, as a fraction of the frame.
PRESENCE = [0.5, 0.7, 0.8, 0.9]
MIN_AREA = [0.0, 0.002, 0.005]


def build_stream(samples, rng: np.random.Generator, polyp_frames: int, negative_frames: int):
    """Yields (image, gt_mask, is_polyp_stretch, stretch_index) frame by frame."""
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


def gated(decisions: list[dict], presence: float, min_area: float) -> list[dict]:
    """The decisions as they would be with a stricter presence threshold and a smallest mask area."""
    out = []
    for d in decisions:
        keep = d["presence"] >= presence and d["area"] >= min_area
        out.append({**d, "present": d["present"] and keep, "hit": d["hit"] and keep})
    return out


def replay(decisions: list[dict], n: int, m: int, hold: int) -> dict:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--stretches", type=int, default=80, help="polyp stretches (validation images with a polyp)")
    ap.add_argument("--polyp-frames", type=int, default=25)
    ap.add_argument("--negative-frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/false_alarms.json")
    a = ap.parse_args()
    splits = load_splits(a.data, 320, val_only=True)
    rng = np.random.default_rng(a.seed)
    with_polyp = [s for s in splits.val if s.mask.any()]
    chosen = [with_polyp[i] for i in sorted(rng.permutation(len(with_polyp))[:a.stretches])]
    seg = load_segmenter(a.weights, backend="onnxruntime", steps=a.steps, warm_start=False, threads=a.threads)
    decisions = []
    t0 = time.time()
    for img, gt, polyp, k in build_stream(chosen, rng, a.polyp_frames, a.negative_frames):
        pred = seg.segment(img)
        present = bool(pred.mask.any())
        hit = bool(gt is not None and present and (pred.mask & (gt > 0)).any())
        decisions.append({"present": present, "polyp": polyp, "stretch": k, "hit": hit,
                          "presence": float(pred.presence), "area": float(pred.mask.mean())})
    rows = [replay(decisions, *s) for s in SETTINGS]
    gates = [{"presence_threshold": p, "min_area": a, **replay(gated(decisions, p, a), *s)}
             for p in PRESENCE for a in MIN_AREA for s in SETTINGS]
    result = {"weights": a.weights, "steps": a.steps, "stretches": len(chosen), "frames": len(decisions),
              "negative_minutes": sum(not d["polyp"] for d in decisions) / FPS / 60, "fps": FPS,
              "seconds": round(time.time() - t0, 1), "settings": rows, "gates": gates}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"{len(decisions)} frames, {result['negative_minutes']:.2f} polyp-free minutes, {len(chosen)} polyp stretches")
    print("| n of m, hold | false alarms / min | polyp-free frames shown | polyps found | first mask p50 | p90 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = "off" if r["n"] == 1 and r["m"] == 1 else f"{r['n']} of {r['m']}, {r['hold']}"
        p50 = "-" if r["first_mask_ms_median"] is None else f"{r['first_mask_ms_median']:.0f} ms"
        p90 = "-" if r["first_mask_ms_p90"] is None else f"{r['first_mask_ms_p90']:.0f} ms"
        print(f"| {name} | {r['false_alarms_per_min']:.2f} | {r['negative_frames_shown_pct']:.1f} % | "
              f"{r['detected_pct']:.0f} % | {p50} | {p90} |")
    print("\nwith stricter gates, settings meeting <= 1 alarm/min, >= 95 % of polyps found, first mask p90 <= 250 ms:")
    print("| presence >= | min area | n of m, hold | false alarms / min | polyps found | first mask p50 | p90 |")
    print("|---|---|---|---|---|---|---|")
    for r in gates:
        if (r["false_alarms_per_min"] <= 1.0 and r["detected_pct"] >= 95 and r["first_mask_ms_p90"] is not None
                and r["first_mask_ms_p90"] <= 250):
            print(f"| {r['presence_threshold']} | {r['min_area']} | {r['n']} of {r['m']}, {r['hold']} | "
                  f"{r['false_alarms_per_min']:.2f} | {r['detected_pct']:.0f} % | {r['first_mask_ms_median']:.0f} ms | "
                  f"{r['first_mask_ms_p90']:.0f} ms |")
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
