"""GPU check: CUDA parity against the CPU reference, TensorRT engines if present, benchmark.

Needs only this repository, its weights, PyTorch (with CUDA) and numpy: no Hydra, no PyAV, no
onnxruntime-gpu, nothing from the network. Frames are real (ClinicDB PNGs via OpenCV if both
exist) or, failing that, deterministic synthetic frames. Writes ``<out>/gpu_check.json``.

    python tools/gpu_check.py OUT_DIR [--weights weights/polyp.pt] [--budget-s 420]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2}  # max abs prob difference vs CPU fp32
MASK_AGREEMENT = 0.999


def model_inputs(cfg: dict[str, Any], frames: int = 6) -> list[np.ndarray]:
    """(1,3,S,S) float32 inputs in [-1,1]: real ClinicDB frames when OpenCV and data exist."""
    s = int(cfg["input_size"])
    try:
        import cv2

        folder = Path("/work/shared/data/cvc-clinicdb/images")
        imgs = [cv2.imread(str(folder / f"{i}.png")) for i in range(1, frames + 1)]
        if all(i is not None for i in imgs):
            from endostream.inference.preprocess import find_fov, to_input

            return [to_input(i, s, find_fov(i)) for i in imgs]
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (1, 3, s, s)).astype(np.float32) for _ in range(frames)]


def sequence(be: Any, inputs: list[np.ndarray], steps: int = 2) -> list[np.ndarray]:
    """The Segmenter's model-grid loop (memory + warm start) without preprocessing."""
    from endostream.model.scheduler import MaskScheduler
    from endostream.inference.stream_state import StreamState

    cfg = be.config
    s = int(cfg["input_size"])
    st = StreamState(int(cfg["memory_frames"]), int(cfg["neck_channels"]), s // 16, seed=0)
    sch = MaskScheduler(int(cfg["num_train_steps"]), float(cfg["mask_scale"]))
    probs = []
    for x in inputs:
        out = be.encode(x, st.memory, st.valid)
        noise = st.noise((1, 1, s // 4, s // 4))
        if st.prev_prob is not None:
            ts = sch.set_timesteps(steps, start_t=499)
            sample = sch.add_noise(sch.mask_to_signal(st.prev_prob), noise, ts[0])
        else:
            ts, sample = sch.set_timesteps(steps), noise
        sample, prob = be.from_numpy(sample.astype(np.float32)), None
        for t in ts:
            sample, prob = sch.step(be.denoise(out["feat"], sample, np.array([t], np.float32)), t, sample)
        p = be.to_numpy(prob).astype(np.float32)
        st.push(be.to_numpy(out["memory_out"]), p)
        probs.append(p)
    return probs


def parity(weights: str, specs: list[dict[str, Any]], ref: list[np.ndarray], inputs: list[np.ndarray]) -> list[dict]:
    from endostream.runtime.registry import create_backend

    rows = []
    for sp in specs:
        row: dict[str, Any] = {"backend": sp["label"]}
        try:
            be = create_backend(sp["name"], weights, device="cuda", **sp.get("options", {}))
            got = sequence(be, inputs)
            row["max_abs"] = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
            row["mask_agreement"] = float(np.mean([np.mean((a > 0.5) == (b > 0.5)) for a, b in zip(got, ref)]))
            tol = TOLERANCE[sp.get("options", {}).get("precision", "fp32")]
            row["tolerance"] = tol
            row["pass"] = row["max_abs"] <= tol and row["mask_agreement"] >= MASK_AGREEMENT
        except Exception as exc:  # one failing backend must not hide the others' results
            row.update({"pass": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
        print(f"parity {row['backend']:>28}: " + ("PASS" if row["pass"] else "FAIL") +
              f"  max_abs={row.get('max_abs')}  agreement={row.get('mask_agreement')}  {row.get('error', '')}", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="out/gpu_check")
    ap.add_argument("--weights", default=str(ROOT / "weights" / "polyp.pt"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--iters", type=int, default=200)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU (torch %s, CUDA build %s) - nothing to check"
              % (torch.__version__, torch.version.cuda), file=sys.stderr)
        return 2
    import importlib.util

    from endostream.runtime.benchmark import benchmark_backends, gpu_specs
    from endostream.runtime.registry import create_backend

    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_ort = importlib.util.find_spec("onnxruntime") is not None
    ort_cuda = False
    if has_ort:
        from endostream.runtime.ort_backend import cuda_available

        ort_cuda = cuda_available()
    t0 = time.monotonic()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "gpu": torch.cuda.get_device_name(0),
                              "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                              "tensorrt": None, "onnxruntime_cuda": ort_cuda}
    if has_trt:
        import tensorrt

        report["tensorrt"] = tensorrt.__version__
    print(json.dumps({k: report[k] for k in ("gpu", "torch", "cuda", "tensorrt", "onnxruntime_cuda")}), flush=True)
    ref_be = create_backend("torch", a.weights, device="cpu", threads=4)
    inputs = model_inputs(ref_be.config)
    ref = sequence(ref_be, inputs)
    specs = gpu_specs(has_trt, ort_cuda, max(a.batches)) + [
        {"label": "torch-cuda-bf16-graphs", "name": "torch", "device": "cuda",
         "options": {"precision": "bf16", "cuda_graphs": True}}]
    report["parity"] = parity(a.weights, specs, ref, inputs)
    report["parity_s"] = time.monotonic() - t0
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    bench_specs = [sp for sp in specs if sp["label"] != "torch-cuda-bf16-graphs"]
    report["benchmark"] = benchmark_backends(a.weights, bench_specs, (1, 2, 4), batch_sizes=tuple(a.batches),
                                             warmup=20, iters=a.iters)
    report["total_s"] = time.monotonic() - t0
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_check: wrote {out / 'gpu_check.json'} in {report['total_s']:.0f} s", flush=True)
    return 0 if all(r["pass"] for r in report["parity"]) else 1


if __name__ == "__main__":
    sys.exit(main())
