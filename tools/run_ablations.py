"""Ablation table for the model card, measured on the validation split in one run.

    .venv/bin/python tools/run_ablations.py --weights weights/polyp.pt --backend onnxruntime --out out/ablation

Rows: K = 0 (plain decoder pass) / 1 / 2 / 4 / 8 from noise; K=2 with warm starts from two
noise levels; without the temporal memory; without the presence gate; K=0 at larger input
sizes (the same weights; their ONNX graphs are exported to a temporary folder). Each row: Kvasir Dice, ClinicDB (sequence) Dice,
their mean, Dice by polyp size, flicker on synthesised clips, CPU latency per frame.
Writes ablation.json and ablation.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from endostream.bench.report import machine
from endostream.training.evaluate import ablation_markdown, flicker, score_items
from endostream.fileutil import file_sha256
from endostream.runtime.benchmark import weights_at_size
from endostream.inference.segmenter import load_segmenter
from endostream.training.dataset import load_splits
from endostream.training.validate import load_eval_items

ROWS = [
    ("K=0 (decoder pass, discriminative)", dict(steps=0, warm_start=False)),
    ("K=1 cold", dict(steps=1, warm_start=False)),
    ("K=2 cold", dict(steps=2, warm_start=False)),
    ("K=4 cold", dict(steps=4, warm_start=False)),
    ("K=8 cold", dict(steps=8, warm_start=False)),
    ("K=2 warm start from t=499", dict(steps=2, warm_start=True, warm_start_t=499)),
    ("K=2 warm start from t=899", dict(steps=2, warm_start=True, warm_start_t=899)),
    ("K=0, no temporal memory", dict(steps=0, warm_start=False, use_temporal=False)),
    ("K=2 cold, no temporal memory", dict(steps=2, warm_start=False, use_temporal=False)),
    ("K=0, no presence gate", dict(steps=0, warm_start=False, presence_threshold=0.0)),
    ("K=2 cold, no presence gate", dict(steps=2, warm_start=False, presence_threshold=0.0)),
]
# The same weights at other input sizes (every layer is size-agnostic): does resolution recover
# small polyps, and what does it cost? Sizes from --sizes (the trained size is row 0).


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="out/ablation")
    ap.add_argument("--only", nargs="*", help="row numbers to run (default: all)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[320, 384], help="K=0 rows at these input sizes")
    args = ap.parse_args()
    items = load_eval_items(load_splits(args.data, val_only=True).val)
    rows = []
    all_rows = ROWS + [(f"K=0 at input {n}", dict(steps=0, warm_start=False, input_size=n)) for n in args.sizes]
    rows_to_run = [all_rows[int(i)] for i in args.only] if args.only else all_rows
    tmp_dir = tempfile.TemporaryDirectory(prefix="ablation_")  # resized weights + their graphs
    tmp = Path(tmp_dir.name)
    for name, kw in rows_to_run:
        kw = {"presence_threshold": 0.5, **kw}
        size = kw.pop("input_size", None)
        weights = weights_at_size(args.weights, size, tmp) if size else args.weights
        seg = load_segmenter(weights=str(weights), backend=args.backend, threads=args.threads, **kw)
        r = score_items(seg, items)
        r["flicker"] = flicker(seg, items)
        r["name"], r["settings"] = name, {**kw, "input_size": seg.input_size}
        rows.append(r)
        print(f"{name}: kvasir {r['kvasir']['dice@0.5']:.4f} clinicdb {r['clinicdb']['dice@0.5']:.4f} "
              f"flicker {r['flicker']['flicker']:.4f} latency p50 {r['latency_ms']['p50']:.1f} ms", flush=True)
    tmp_dir.cleanup()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"weights": args.weights, "sha256": file_sha256(args.weights), "backend": args.backend,
            "threads": args.threads, "machine": machine()}
    (out / "ablation.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = ablation_markdown(rows)
    (out / "ablation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
