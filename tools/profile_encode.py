"""Time and profile one encode graph in ONNX Runtime (CPU): p50 with and without thread spinning,
time per operator type and the slowest nodes, and optionally an INT8 (QDQ, per-channel) copy.

    python tools/profile_encode.py weights/polyp.encode.onnx
    python tools/profile_encode.py weights/polyp.encode.onnx --int8     # also a quantised copy
    git show 8b3469a:weights/polyp.encode.onnx > /tmp/gen2.onnx          # the graph before the Pad fold

The figures in docs/RUNTIME.md and the model card's Latency section (spinning 36.1 vs 30.9 ms,
2.9 ms in the five Pads, INT8 25.2 ms) came from this measurement on the second-generation graph.
Random inputs: convolution cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: str, threads: int, spin: bool, profile: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = profile
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        out[i.name] = np.ones(shape, np.float32) if i.name == "valid" else rng.uniform(-1, 1, shape).astype(np.float32)
    return out


def p50_ms(sess: ort.InferenceSession, runs: int) -> float:
    f = feeds(sess)
    for _ in range(10):
        sess.run(None, f)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, f)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def op_profile(path: str, threads: int, runs: int, top: int) -> None:
    sess = session(path, threads, spin=True, profile=True)
    f = feeds(sess)
    for _ in range(runs):
        sess.run(None, f)
    trace = Path(sess.end_profiling())
    by_op: dict[str, float] = collections.defaultdict(float)
    by_node: dict[str, float] = collections.defaultdict(float)
    for e in json.loads(trace.read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"] / runs / 1e3
            by_node[e["name"].removesuffix("_kernel_time")] += e["dur"] / runs / 1e3
    trace.unlink()
    print(f"kernel time per run {sum(by_op.values()):.2f} ms; by operator type:")
    for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {k:<20} {v:6.2f} ms")
    print(f"slowest {top} nodes:")
    for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {k[:70]:<70} {v:6.2f} ms")


def int8_copy(path: str, out: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out + ".pre.onnx"
    quant_pre_process(path, pre, skip_symbolic_shape=True)
    example = feeds(session(path, 1, spin=False))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = 4

        def get_next(self) -> dict[str, np.ndarray] | None:
            self.left -= 1
            return example if self.left >= 0 else None

    quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    os.unlink(pre)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("graph")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--int8", action="store_true", help="also time an INT8 QDQ copy (speed only, random calibration)")
    a = ap.parse_args()
    for spin in (False, True):
        print(f"p50 {'spinning' if spin else 'not spinning'}: {p50_ms(session(a.graph, a.threads, spin), a.runs):.2f} ms")
    op_profile(a.graph, a.threads, 30, a.top)
    if a.int8:
        with tempfile.TemporaryDirectory() as tmp:
            q = str(Path(tmp) / "int8.onnx")
            int8_copy(a.graph, q)
            print(f"INT8 QDQ p50 spinning: {p50_ms(session(q, a.threads, True), a.runs):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
