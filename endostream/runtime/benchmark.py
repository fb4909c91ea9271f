"""Backend benchmark: encode + K denoise steps per frame, per backend, K and input size.

Reports p50/p99 ms per frame at batch 1 after warm-up, fps, the best offline batch size,
achieved GFLOP/s against a measured ONNX Runtime matmul ceiling, and speed-ups over eager
torch. Times the backends directly (no preprocessing), with the scheduler step in the loop,
exactly as the Segmenter runs it; ``to_numpy`` of the final probability synchronises GPUs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from endostream.model.scheduler import MaskScheduler
from endostream.runtime.registry import create_backend

CPU_SPECS = [{"label": "torch", "name": "torch", "device": "cpu"},
             {"label": "onnxruntime", "name": "onnxruntime", "device": "cpu"}]


def gpu_specs(tensorrt: bool, ort_cuda: bool, max_batch: int = 256) -> list[dict[str, Any]]:
    specs = [{"label": f"torch-cuda-{p}" + ("-graphs" if g else ""), "name": "torch", "device": "cuda",
              "options": {"precision": p, "cuda_graphs": g}} for p in ("fp32", "fp16") for g in (False, True)]
    if ort_cuda:
        specs.append({"label": "onnxruntime-cuda", "name": "onnxruntime", "device": "cuda"})
    if tensorrt:
        specs += [{"label": f"tensorrt-{p}" + ("-graphs" if g else ""), "name": "tensorrt", "device": "cuda",
                   "options": {"precision": p, "cuda_graphs": g, "max_batch": max_batch}}
                  for p in ("fp32", "fp16") for g in (False, True)]
    return specs


def frame_fn(be: Any, steps: int, batch: int) -> Callable[[], np.ndarray]:
    """One frame's work for a batch: encode, K steps with the numpy/torch scheduler, result home
    (K=0: the encoder pass and its decoder mask only)."""
    cfg = be.config
    s, t, n = int(cfg["input_size"]), int(cfg["memory_frames"]), int(cfg["neck_channels"])
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (batch, 3, s, s)).astype(np.float32)
    memory = rng.standard_normal((batch, t, n, s // 16, s // 16)).astype(np.float32)
    valid = np.ones((batch, t), np.float32)
    noise = rng.standard_normal((batch, 1, s // 4, s // 4)).astype(np.float32)
    sch = MaskScheduler(int(cfg["num_train_steps"]), float(cfg["mask_scale"]))
    ts = sch.set_timesteps(steps) if steps > 0 else []

    def run() -> np.ndarray:
        out = be.encode(image, memory, valid)
        sample, prob = be.from_numpy(noise), out["aux_logits"]
        for step_t in ts:
            logits = be.denoise(out["feat"], sample, np.full((batch,), step_t, np.float32))
            sample, prob = sch.step(logits, step_t, sample)
        return be.to_numpy(prob)

    return run


def time_ms(fn: Callable[[], Any], warmup: int, iters: int) -> np.ndarray:
    for _ in range(warmup):
        fn()
    ms = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        ms[i] = (time.perf_counter() - t0) * 1e3
    return ms


def ort_ceiling_gflops(threads: int, n: int = 1024, iters: int = 10) -> float:
    """Achievable float32 GFLOP/s of this CPU in ONNX Runtime: an n^3 MatMul, best of ``iters``."""
    import onnx
    from onnx import TensorProto, helper

    from endostream.runtime.ort_backend import ort, session_options

    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "ceiling",
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    best = time_ms(lambda: sess.run(None, {"a": a, "b": a}), 2, iters).min()
    del onnx
    return 2 * n ** 3 / (best * 1e-3) / 1e9


def model_gflop(weights: str | Path, steps: int) -> float:
    """GFLOP per frame (encode + K denoise), counted by torch's FlopCounterMode (2 per MAC)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from endostream.model.io import load_weights
    from endostream.runtime.export import example_inputs

    net, _ = load_weights(weights)
    ex = example_inputs(net, 1)
    with torch.no_grad(), FlopCounterMode(display=False) as enc:
        net.encode_frame(*ex["encode"])
    with torch.no_grad(), FlopCounterMode(display=False) as den:
        net.denoise(*ex["denoise"])
    return (enc.get_total_flops() + steps * den.get_total_flops()) / 1e9


def weights_at_size(weights: str | Path, size: int, folder: Path) -> Path:
    """The same weights with another input size (all layers are size-agnostic)."""
    import torch

    blob = torch.load(weights, map_location="cpu", weights_only=True)
    if int(blob["config"]["input_size"]) == size:
        return Path(weights)
    blob["config"]["input_size"] = int(size)
    out = folder / f"polyp_{size}.pt"
    torch.save(blob, out)
    return out


def benchmark_backends(weights: str | Path, specs: list[dict[str, Any]] | None = None,
                       steps_list: tuple[int, ...] = (1, 2, 4), sizes: tuple[int, ...] = (256,),
                       batch_sizes: tuple[int, ...] = (1, 4, 16), threads: int = 2, warmup: int = 3,
                       iters: int = 20, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every spec x K x size; returns a JSON-ready dict (``results`` rows + ``ceiling``)."""
    specs = specs or CPU_SPECS
    res: dict[str, Any] = {"threads": threads, "warmup": warmup, "iters": iters, "results": []}
    on_cpu = any(sp.get("device", "cpu") == "cpu" for sp in specs)
    res["ceiling_gflops"] = ort_ceiling_gflops(threads) if on_cpu else None
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            w = weights_at_size(weights, size, Path(tmp))
            for sp in specs:
                try:
                    be = create_backend(sp["name"], w, threads=threads, device=sp.get("device", "cpu"),
                                        **sp.get("options", {}))
                except (RuntimeError, ValueError) as exc:
                    log(f"{sp['label']}: skipped ({exc})")
                    continue
                for k in steps_list:
                    row = _measure(be, sp, k, size, batch_sizes, warmup, iters)
                    row["gflop_per_frame"] = model_gflop(w, k)
                    row["gflops"] = row["gflop_per_frame"] * row["fps_batch1"]
                    res["results"].append(row)
                    log(_line(row))
    _ratios(res["results"])
    return res


def _measure(be: Any, sp: dict[str, Any], k: int, size: int, batch_sizes: tuple[int, ...],
             warmup: int, iters: int) -> dict[str, Any]:
    ms = time_ms(frame_fn(be, k, 1), warmup, iters)
    row = {"backend": sp["label"], "steps": k, "input_size": size, "p50_ms": float(np.percentile(ms, 50)),
           "p99_ms": float(np.percentile(ms, 99)), "fps_batch1": 1e3 / float(np.percentile(ms, 50)),
           "throughput_fps": {}}
    for b in batch_sizes:  # offline: frames per second of one batched call, median of a few
        if b == 1:
            row["throughput_fps"][1] = row["fps_batch1"]
            continue
        bms = time_ms(frame_fn(be, k, b), 1, max(3, iters // 4))
        row["throughput_fps"][b] = b * 1e3 / float(np.median(bms))
    row["best_batch"] = max(row["throughput_fps"], key=row["throughput_fps"].get)
    return row


def _ratios(rows: list[dict[str, Any]]) -> None:
    ref = {(r["steps"], r["input_size"]): r["p50_ms"] for r in rows if r["backend"] == "torch"}
    for r in rows:
        base = ref.get((r["steps"], r["input_size"]))
        r["speedup_vs_eager_torch"] = base / r["p50_ms"] if base else None


def _line(r: dict[str, Any]) -> str:
    return (f"{r['backend']:>28} K={r['steps']} S={r['input_size']}: p50 {r['p50_ms']:7.2f} ms  "
            f"p99 {r['p99_ms']:7.2f} ms  {r['fps_batch1']:7.1f} fps  best batch {r['best_batch']} "
            f"({r['throughput_fps'][r['best_batch']]:.0f} fps)  {r.get('gflops', 0):.1f} GFLOP/s")
