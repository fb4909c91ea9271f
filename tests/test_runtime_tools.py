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
    assert len(a) == 3 and a[0].shape == (1, 1, 64, 64)
    assert max(float(np.abs(x - y).max()) for x, y in zip(a, b)) < 1e-4


def test_gpu_check_fails_clearly_without_gpu(tmp_path) -> None:
    if registry.has_nvidia_gpu():
        pytest.skip("this machine has an NVIDIA GPU")
    r = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh"), str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "no NVIDIA driver" in r.stderr


def test_benchmark_pieces_run_on_cpu() -> None:
    from endostream.runtime.benchmark import _ratios, frame_fn, gpu_specs, ort_ceiling_gflops

    be = registry.create_backend("onnxruntime", WEIGHTS, threads=1)
    assert frame_fn(be, 2, 2)().shape == (2, 1, 64, 64)
    assert ort_ceiling_gflops(1, n=128, iters=2) > 0
    rows = [{"backend": "torch", "steps": 2, "input_size": 256, "p50_ms": 10.0},
            {"backend": "onnxruntime", "steps": 2, "input_size": 256, "p50_ms": 5.0}]
    _ratios(rows)
    assert rows[1]["speedup_vs_eager_torch"] == 2.0
    labels = [s["label"] for s in gpu_specs(tensorrt=True, ort_cuda=False)]
    assert "tensorrt-fp16-graphs" in labels and "torch-cuda-fp16-graphs" in labels
