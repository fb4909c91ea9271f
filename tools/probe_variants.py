"""Training-free variants of the shipped weights, scored on the validation split as training scores
checkpoints (torch, per frame, presence gate off, Dice at 0.5, K=0 and K=1): the model card's
"Tried without training" rows.

    python tools/probe_variants.py sizes --sizes 288 320 352        # another input size, same weights
    python tools/probe_variants.py soup runs/gen8/best.pt runs/gen7/final.pt   # weights averaged (a model soup)
    python tools/probe_variants.py components                        # drop mask components outside the box head's box

Each prints one JSON line per variant and writes them all to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from endostream.cli import compose  # noqa: E402
from endostream.inference.segmenter import Segmenter  # noqa: E402
from endostream.model.io import load_weights  # noqa: E402
from endostream.runtime.torch_backend import TorchBackend  # noqa: E402
from endostream.training.metrics import dice_binary  # noqa: E402
from endostream.training.train import training_splits  # noqa: E402
from endostream.training.evaluate import size_bin  # noqa: E402
from endostream.training.validate import EvalItem, load_eval_items, stream_items, validate  # noqa: E402


def both_k(model, items: list[EvalItem], threads: int) -> dict[str, dict[str, float]]:
    return {f"K{k}": validate(model, items, steps=k, warm_start=False, threads=threads) for k in (0, 1)}


def soup(paths: list[str]):
    """The uniform average of weights files sharing one architecture (float tensors; integer
    buffers such as BatchNorm's step counter come from the first)."""
    models = [load_weights(p)[0] for p in paths]
    states = [m.state_dict() for m in models]
    avg = {k: (sum(s[k] for s in states) / len(states)) if v.is_floating_point() else v for k, v in states[0].items()}
    models[0].load_state_dict(avg)
    return models[0]


def outside_box(mask: np.ndarray, box: tuple[int, int, int, int] | None, pad: float) -> np.ndarray:
    """The mask without the components that lie wholly outside the box grown by ``pad`` of its size."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if box is None or n <= 2:  # background plus at most one component: nothing to choose between
        return mask
    x0, y0, x1, y1 = box
    gx, gy = pad * (x1 - x0), pad * (y1 - y0)
    keep = mask.copy()
    for c in range(1, n):
        cx, cy, cw, ch = stats[c, :4]
        if cx + cw < x0 - gx or cx > x1 + gx or cy + ch < y0 - gy or cy > y1 + gy:
            keep[labels == c] = False
    return keep


def components(model, items: list[EvalItem], threads: int, pads: tuple[float, ...] = (0.0, 0.25, 0.5)) -> dict:
    seg = Segmenter(TorchBackend(model, threads=threads), steps=0, warm_start=False, presence_threshold=0.0)
    rows: list[dict] = []
    for it, p in stream_items(seg, items):
        gt = it.gt > 0
        row = {"group": it.group, "small": size_bin(gt) == "small", "as shipped": dice_binary(p.mask, gt)}
        row.update({f"outside box + {pad:.2f}": dice_binary(outside_box(p.mask, p.box, pad), gt) for pad in pads})
        rows.append(row)
    out = {}
    for key in [k for k in rows[0] if k not in ("group", "small")]:
        per = {g: float(np.mean([r[key] for r in rows if r["group"] == g])) for g in ("kvasir", "clinicdb")}
        out[key] = {**{f"{g}_dice": v for g, v in per.items()}, "mean_dice": float(np.mean(list(per.values()))),
                    "small_dice": float(np.mean([r[key] for r in rows if r["small"]]))}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["sizes", "soup", "components"])
    ap.add_argument("weights", nargs="*", help="soup: the files to average (default: the shipped weights alone)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[288, 320, 352])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/probe_variants.json")
    a = ap.parse_args()
    items = load_eval_items(training_splits(compose("train", []), val_only=True).val)
    weights = a.weights or ["weights/polyp.pt"]
    results = {}
    if a.what == "sizes":
        for size in a.sizes:
            model = load_weights(weights[0])[0]
            model.cfg.input_size = size  # fully convolutional; the memory grid follows the size
            results[f"input {size}"] = both_k(model, items, a.threads)
    elif a.what == "soup":
        results["first alone"] = both_k(load_weights(weights[0])[0], items, a.threads)
        results[f"average of {len(weights)}"] = both_k(soup(weights), items, a.threads)
    else:
        results = components(load_weights(weights[0])[0], items, a.threads)
    for name, r in results.items():
        print(json.dumps({"variant": name, **r}))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"weights": weights, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
