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

from endostream.inference.segmenter import load_segmenter  # noqa: E402
from endostream.training.dataset import load_splits  # noqa: E402
from endostream.training.false_alarms import FPS, build_stream, choose_stretches, gated, record_decisions, replay  # noqa: E402

SETTINGS = [(1, 1, 1), (2, 3, 2), (3, 4, 3), (3, 5, 3), (4, 6, 3), (5, 8, 4), (6, 8, 4)]  # (n, m, hold); (1,1,1) = off
# Gates applied to the raw decisions before the filter: the presence head's probability (the
# model's model.presence_threshold) and the mask's smallest area, as a fraction of the frame.
PRESENCE = [0.5, 0.7, 0.8, 0.9]
MIN_AREA = [0.0, 0.002, 0.005]


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
    chosen = choose_stretches(splits.val, a.stretches, rng)
    seg = load_segmenter(a.weights, backend="onnxruntime", steps=a.steps, warm_start=False, threads=a.threads)
    t0 = time.time()
    decisions = record_decisions(seg, build_stream(chosen, rng, a.polyp_frames, a.negative_frames))
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
