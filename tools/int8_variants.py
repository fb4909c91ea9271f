"""Which INT8 encode graph: validation Dice and encode time of quantization choices, on this CPU.

    python tools/int8_variants.py [--weights weights/polyp.pt] [--only shipped all7 ...] [--out out/int8_variants.json]

Each variant quantizes the float32 encode graph with ``runtime.quantize.quantize_encode`` (the
export's own function, other keywords) on the export's calibration frames, then measures on
OpenVINO: the validation mean Dice at K=0 (``quantize.validation_dice``, the export's check) and
the encode graph's p50 / p99 at batch 1 over the calibration inputs (2 threads). Float32 is
measured the same way first. The variants are the ones docs/RUNTIME.md reports; ``shipped`` is
what ``endostream export precision=int8`` writes. Needs the training data (../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from endostream.runtime import quantize as q  # noqa: E402
from endostream.runtime.artifacts import check_artifacts, graph_paths  # noqa: E402
from endostream.runtime.cpu_caps import probe  # noqa: E402

B0, B1, B2, STEM = "/encoder/blocks.0/", "/encoder/blocks.1/", "/encoder/blocks.2/", "/encoder/stem/"
# name: (weight bits, node-name prefixes left float32, calibration method)
VARIANTS = {
    "all8": (8, (), "minmax"),
    "all7": (7, (), "minmax"),
    "all7-percentile": (7, (), "percentile"),
    "all7-entropy": (7, (), "entropy"),
    "float-stem": (7, (STEM,), "minmax"),
    "float-neck": (7, ("/neck/",), "minmax"),
    "float-heads": (7, ("/heads/", "/aux_head/"), "minmax"),
    "float-temporal": (7, ("/neck/temporal/",), "minmax"),
    "float-b0": (7, (B0,), "minmax"),
    "float-b0-b2": (7, (B0, B2), "minmax"),
    "float-stem-b0-b1": (7, (STEM, B0, B1), "minmax"),
    "shipped": (q.WEIGHT_BITS, q.FLOAT_NODES, "minmax"),
}


def encode_times(backend: object, feeds: list[dict[str, np.ndarray]], calls: int = 150) -> dict[str, float]:
    for f in feeds[:10]:  # warm-up
        backend.encode(f["image"], f["memory"], f["valid"])  # type: ignore[attr-defined]
    ms = []
    for k in range(calls):
        f = feeds[k % len(feeds)]
        t0 = time.perf_counter()
        backend.encode(f["image"], f["memory"], f["valid"])  # type: ignore[attr-defined]
        ms.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="these variants (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/int8_variants.json")
    args = ap.parse_args()
    from endostream.runtime.openvino_backend import OpenVinoBackend

    fp32, reason = check_artifacts(args.weights)
    if fp32 is None:
        raise SystemExit(f"int8_variants: no float32 graphs for {args.weights} ({reason}): run endostream export first")
    src = graph_paths(args.weights)
    feeds = q.calibration_feeds(args.weights, args.data, threads=args.threads)
    side = {**fp32, "precision": "int8"}
    ref = OpenVinoBackend(src["encode"], src["denoise"], fp32["config"], threads=args.threads, precision="fp32")
    result = {"cpu": probe().as_dict(), "weights": args.weights, "calibration_frames": len(feeds),
              "fp32": {"encode": encode_times(ref, feeds)}, "variants": {}}
    print(f"fp32: encode {result['fp32']['encode']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(VARIANTS):
            bits, float_nodes, method = VARIANTS[name]
            dst = Path(tmp) / f"{name}.encode.onnx"
            left = q.quantize_encode(src["encode"], dst, feeds, weight_bits=bits, float_nodes=float_nodes, method=method)
            seg = q.int8_segmenter({"encode": dst, "denoise": src["denoise"]}, side, args.threads)
            row = {"weight_bits": bits, "float_nodes": list(float_nodes), "float_node_count": len(left),
                   "method": method, "dice": q.validation_dice(seg, args.data), "encode": encode_times(seg.backend, feeds)}
            result["variants"][name] = row
            print(f"{name}: Dice {row['dice']} encode {row['encode']}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
