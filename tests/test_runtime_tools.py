"""The CPU-independent pieces of tools/gpu_check.* and the backend benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from endostream.runtime import registry

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"
sys.path.insert(0, str(ROOT / "tools"))


def test_gpu_check_sequence_agrees_across_cpu_backends() -> None:
    import gpu_check

    torch_be = registry.create_backend("torch", WEIGHTS, threads=1)
    ort_be = registry.create_backend("onnxruntime", WEIGHTS, threads=1)
    inputs = gpu_check.model_inputs(torch_be.config, frames=3)
    a, b = gpu_check.sequence(torch_be, inputs), gpu_check.sequence(ort_be, inputs)
    g = int(torch_be.config["input_size"]) // 4
    assert len(a) == 3 and a[0].shape == (1, 1, g, g)
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b)) < 5e-4  # float32 rounding over a deep encoder


def test_gpu_check_fails_clearly_without_gpu(tmp_path) -> None:
    if registry.has_nvidia_gpu():
        pytest.skip("this machine has an NVIDIA GPU")
    r = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "no NVIDIA driver" in r.stderr


def test_gpu_check_py_fails_in_one_line_without_cuda(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA GPU here")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "torch sees no CUDA GPU" in r.stderr


def test_gpu_check_multistream_runs_through_the_live_worker_on_cpu() -> None:
    """The multi-stream section on CPU with ONNX Runtime, two rounds: the real worker batches
    the streams (batch = streams), and every stream's frames come back."""
    import time

    import gpu_check

    assert gpu_check.worker_batching_available()
    overrides = {"backend": "onnxruntime", "device": "cpu", "steps": 0, "threads": 1}
    res = gpu_check.multistream(str(WEIGHTS), (1, 3), overrides, seconds=120, deadline=time.monotonic() + 900,
                                rounds=2)
    assert res["path"].startswith("live worker")
    one, three = res["rows"]
    assert one["frames"] == 2 and three["frames"] == 6 and three["errors"] == 0, res
    assert three["batch"]["max"] == 3 and three["fps_all_streams"] > 0 and three["latency_p99_ms"] > 0


def test_gpu_check_direct_batches_fallback_on_cpu() -> None:
    """Without a batching worker, gpu_check times batched backend calls directly."""
    import gpu_check

    rows = gpu_check.direct_batches(str(WEIGHTS), {"name": "onnxruntime", "device": "cpu"}, (1, 2), iters=2)
    assert [r["batch"] for r in rows] == [1, 2] and all(r["fps_all_streams"] > 0 for r in rows)


def test_benchmark_pieces_run_on_cpu() -> None:
    from endostream.runtime.benchmark import _ratios, frame_fn, gpu_specs, ort_ceiling_gflops

    be = registry.create_backend("onnxruntime", WEIGHTS, threads=1)
    g = int(be.config["input_size"]) // 4
    assert frame_fn(be, 2, 2)().shape == (2, 1, g, g)
    assert ort_ceiling_gflops(1, n=128, iters=2) > 0
    rows = [{"backend": "torch", "steps": 2, "input_size": 256, "p50_ms": 10.0},
            {"backend": "onnxruntime", "steps": 2, "input_size": 256, "p50_ms": 5.0}]
    _ratios(rows)
    assert rows[1]["speedup_vs_eager_torch"] == 2.0
    labels = [s["label"] for s in gpu_specs(tensorrt=True, ort_cuda=False)]
    assert "tensorrt-fp16-graphs" in labels and "torch-cuda-fp16-graphs" in labels


def test_gpu_check_live_bench_runs_the_bench_scenarios_on_cpu(tmp_path) -> None:
    """The live section (one room, rooms by capacity) through the real bench command; on this
    CPU machine ``auto`` picks the CPU path, on a GPU machine the GPU backend."""
    import time

    import gpu_check

    res = gpu_check.live_bench(tmp_path, time.monotonic() + 400, frames=40, max_rooms=1)
    assert res["pipeline"]["rc"] == 0, res["pipeline"]["stderr"]
    assert res["pipeline"]["mask_end_to_end"]["p50_ms"] > 0 and res["pipeline"]["timeline"]["frames"] > 0
    assert res["multi"]["rc"] == 0, res["multi"]["stderr"]
    assert res["multi"]["rooms_max"] in (0, 1) and res["multi"]["steps"][0]["rooms"] == 1
