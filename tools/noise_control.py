"""Does the K=1 step use its noise? The same weights at K=1, once from the usual noise and once
from a zero sample (a deterministic head of the same size and weights), on the validation split.

    .venv/bin/python tools/noise_control.py --weights weights/polyp.pt --out out/noise_control.json

Equal scores mean the step acts as a deterministic refinement head on the K=0 mask and the image;
its sampled spread (``model.uncertainty_samples``) then shows how much the noise still moves it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from endostream.inference.segmenter import load_segmenter  # noqa: E402
from endostream.inference.stream_state import StreamState  # noqa: E402
from endostream.training.dataset import load_splits  # noqa: E402
from endostream.training.evaluate import score_items  # noqa: E402
from endostream.training.validate import load_eval_items  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="out/noise_control.json")
    args = ap.parse_args()
    items = load_eval_items(load_splits(args.data, val_only=True).val)
    result = {}
    for name in ("noise", "zeros"):
        if name == "zeros":
            StreamState.noise = lambda self, shape: np.zeros(shape, np.float32)  # the control
        seg = load_segmenter(args.weights, backend=args.backend, steps=args.steps, warm_start=False, threads=2)
        r = score_items(seg, items)
        result[name] = {"kvasir": r["kvasir"]["dice@0.5"], "clinicdb": r["clinicdb"]["dice@0.5"],
                        "mean": (r["kvasir"]["dice@0.5"] + r["clinicdb"]["dice@0.5"]) / 2,
                        "small": r["dice_by_size"]["small"]["dice"]}
        print(name, result[name])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"weights": args.weights, "steps": args.steps, **result}, indent=2))


if __name__ == "__main__":
    main()
