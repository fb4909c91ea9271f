"""The INT8 encode graph's time with its float layers in float32 against bf16, interleaved.

    python tools/int8_float_precision.py [--weights weights/polyp.pt] [--iters 300] [--threads 2]

The OpenVINO backend runs what the INT8 graph leaves float (MBConv blocks 0-1, the QDQ graph's
other ops) in float32 on every CPU, the arithmetic the export's check scored (docs/RUNTIME.md,
"The float layers run float32 on every CPU"). This measures what that costs on a CPU with bf16
units: the same graph compiled twice, only ``INFERENCE_PRECISION_HINT`` differing, batch 1, `feat`
computed, inputs of the graph's own shapes (timing does not depend on the pixels). On a CPU
without bf16 units OpenVINO runs both as float32 and the two figures only show the noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from endostream.runtime.artifacts import graph_paths  # noqa: E402
from endostream.runtime.cpu_caps import probe  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import openvino as ov

    path = graph_paths(args.weights, precision="int8")["encode"]
    if not path.is_file():
        print(f"no INT8 graph at {path}: run endostream export precision=int8 first", file=sys.stderr)
        return 2
    core = ov.Core()
    model = core.read_model(str(path))
    shapes = {p.get_any_name(): [1, *[d.get_length() for d in list(p.get_partial_shape())[1:]]] for p in model.inputs}
    model.reshape(shapes)
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    if "valid" in feeds:
        feeds["valid"] = np.ones(shapes["valid"], np.float32)
    requests = {hint: core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                         "INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1,
                                                         "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
                for hint in ("f32", "bf16")}
    times: dict[str, list[float]] = {hint: [] for hint in requests}
    for i in range(args.warmup + args.iters):
        for hint in (list(requests) if i % 2 else list(requests)[::-1]):  # alternate the order
            t0 = time.perf_counter()
            requests[hint].infer(feeds)
            if i >= args.warmup:
                times[hint].append((time.perf_counter() - t0) * 1e3)
    caps = probe()
    print(f"CPU: {caps.model}  bf16 units: {caps.bf16}  graph: {path}")
    for hint, ms in times.items():
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        print(f"float layers {hint:>4}: encode p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f} ms ({len(ms)} calls)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
