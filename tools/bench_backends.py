"""Compare inference backends: p50/p99 per frame, fps, best batch, GFLOP/s, speed-up vs eager torch.

    python tools/bench_backends.py [--weights weights/polyp.pt] [--out out/bench_backends.json]
        [--steps 1 2 4] [--sizes 256] [--batches 1 4 16] [--threads 2] [--gpu] [--unrolled]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from endostream.runtime.benchmark import CPU_SPECS, benchmark_backends, gpu_specs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--out", default="out/bench_backends.json")
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--gpu", action="store_true", help="add the CUDA backends (torch, ORT CUDA, TensorRT)")
    ap.add_argument("--unrolled", action="store_true", help="also time one unrolled K=2 graph vs split")
    a = ap.parse_args(argv)
    specs = list(CPU_SPECS)
    if a.gpu:
        import importlib.util

        from endostream.runtime.ort_backend import cuda_available

        specs += gpu_specs(importlib.util.find_spec("tensorrt") is not None, cuda_available(), max(a.batches))
    res = benchmark_backends(a.weights, specs, tuple(a.steps), tuple(a.sizes), tuple(a.batches), a.threads,
                             iters=a.iters)
    if a.unrolled:
        from endostream.runtime.unrolled import compare_split_unrolled

        res["unrolled_vs_split"] = compare_split_unrolled(a.weights, 2, a.threads)
        print("unrolled vs split (K=2):", json.dumps(res["unrolled_vs_split"]))
    print(f"ORT matmul ceiling: {res['ceiling_gflops']} GFLOP/s")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
