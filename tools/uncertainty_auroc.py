"""Does the segmenter's uncertainty predict its failures? AUROC on the validation split.

    python tools/uncertainty_auroc.py --weights weights/polyp.pt --samples 4 --out out/uncertainty.json

For every validation frame (ClinicDB sequences streamed in order, Kvasir stills independent):
Dice of the shown mask, and per-image scores: the mean uncertainty over the mask's region
(``Prediction.mean_uncertainty``), 1 - presence, and the mean distance of the probability from
0.5 (a score that needs no sampling). A failure is Dice < 0.5. AUROC 0.5 = no better than chance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from endostream.inference.segmenter import load_segmenter  # noqa: E402
from endostream.training.dataset import load_splits  # noqa: E402
from endostream.training.metrics import dice_binary  # noqa: E402
from endostream.training.validate import load_eval_items  # noqa: E402


def auroc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Probability that a random failure scores higher than a random success (ties count half)."""
    pos, neg = scores[positives], scores[~positives]
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/uncertainty.json")
    a = ap.parse_args()
    items = load_eval_items(load_splits(a.data, 320, val_only=True).val)
    seg = load_segmenter(a.weights, backend="onnxruntime", steps=a.steps, uncertainty_samples=a.samples,
                         warm_start=False, threads=a.threads)
    plain = load_segmenter(a.weights, backend="onnxruntime", steps=a.steps, warm_start=False, threads=a.threads)
    rows, last, t_plain, t_unc = [], None, [], []
    for it in items:
        if it.sequence < 0 or it.sequence != last:
            seg.reset()
            plain.reset()
        last = it.sequence
        t0 = time.perf_counter()
        plain.segment(it.image)
        t1 = time.perf_counter()
        p = seg.segment(it.image)
        t_plain.append(t1 - t0)
        t_unc.append(time.perf_counter() - t1)
        margin = float(np.abs(p.prob[p.prob > 0.1] - 0.5).mean()) if (p.prob > 0.1).any() else 0.5
        rows.append({"dice": dice_binary(p.mask, it.gt > 0), "uncertainty": p.mean_uncertainty,
                     "presence": p.presence, "margin": margin, "group": it.group})
    dice = np.array([r["dice"] for r in rows])
    fail = dice < 0.5
    result = {"weights": a.weights, "steps": a.steps, "samples": a.samples, "frames": len(rows),
              "failures": int(fail.sum()),
              "auroc": {"mean_uncertainty": auroc(np.array([r["uncertainty"] for r in rows]), fail),
                        "one_minus_presence": auroc(1.0 - np.array([r["presence"] for r in rows]), fail),
                        "low_margin": auroc(-np.array([r["margin"] for r in rows]), fail)},
              "spearman_uncertainty_vs_dice": float(np.corrcoef(
                  np.argsort(np.argsort([r["uncertainty"] for r in rows])), np.argsort(np.argsort(dice)))[0, 1]),
              "latency_ms_p50": {"without": 1000 * float(np.median(t_plain)), "with": 1000 * float(np.median(t_unc))},
              "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
