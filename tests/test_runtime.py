"""Backend selection, the torch-free ONNX Runtime path and TensorRT's absence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from endostream.runtime import registry

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"

NO_TORCH = r"""
import sys, numpy as np
from endostream.inference.segmenter import load_segmenter
seg = load_segmenter(weights=sys.argv[1], backend=sys.argv[2], steps=2, threads=1)
img = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
for _ in range(2):
    pred = seg.segment(img)
assert pred.prob.shape == (120, 160), pred.prob.shape
assert "torch" not in sys.modules, "torch was imported"
print(seg.info["backend"])
"""


@pytest.mark.parametrize("backend", ["onnxruntime", "auto"])
def test_onnxruntime_path_never_imports_torch(backend: str) -> None:
    if backend == "auto" and registry.has_nvidia_gpu():
        pytest.skip("auto picks a GPU backend here")
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(WEIGHTS), backend], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    # auto on a CPU: the fastest path this processor has (runtime/cpu_caps.py), torch-free too
    from endostream.runtime.cpu_caps import choose_cpu_path, has_openvino, probe

    name, precision = choose_cpu_path(probe(), has_openvino()) if backend == "auto" else (backend, "fp32")
    if name == "openvino" and registry.usable_int8(WEIGHTS) is not None:
        precision = "int8"  # the calibrated INT8 encode graph, where the CPU has int8 units too
    assert r.stdout.strip().endswith(name if name == "onnxruntime" else f"{name}-{precision}")


def test_stale_graphs_are_reexported_into_cache(tmp_path, monkeypatch) -> None:
    """Weights without matching graphs: exported on first use (torch is importable here)."""
    import shutil

    w = tmp_path / "w" / "polyp.pt"
    w.parent.mkdir()
    shutil.copy(WEIGHTS, w)
    (w.parent / "polyp.json").write_text('{"sha256": "0"}')  # a stale sidecar
    monkeypatch.setenv("ENDOSTREAM_CACHE", str(tmp_path / "cache"))
    be = registry.create_backend("onnxruntime", w, threads=1)
    n = int(be.config["input_size"])
    out = be.encode(np.zeros((1, 3, n, n), np.float32), np.zeros((1, 2, 64, n // 16, n // 16), np.float32),
                    np.zeros((1, 2), np.float32))
    assert out["feat"].shape == (1, 24, n // 4, n // 4)  # denoiser_hidden: the per-frame conditioning
    assert registry.check_artifacts(w)[0] is not None  # now current, beside the weights


def test_missing_graphs_without_torch_is_one_clear_line(tmp_path) -> None:
    import shutil

    w = tmp_path / "polyp.pt"
    shutil.copy(WEIGHTS, w)
    code = ("import sys; sys.modules['torch'] = None\n"  # torch present on disk but unimportable
            "from endostream.runtime import registry\n"
            "registry.has_module = lambda name: name != 'torch'\n"
            f"registry.create_backend('onnxruntime', {str(w)!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"ENDOSTREAM_CACHE": str(tmp_path / "c"), "PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "torch is not installed" in r.stderr and "endostream export" in r.stderr


def test_tensorrt_absent_gives_clear_error() -> None:
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="TensorRT is not installed"):
        registry.create_backend("tensorrt", WEIGHTS)


def test_unknown_backend_names_choices() -> None:
    with pytest.raises(ValueError, match="onnxruntime"):
        registry.create_backend("tflite", WEIGHTS)


def test_torch_half_precision_needs_cuda() -> None:
    with pytest.raises(ValueError, match="cuda"):
        registry.create_backend("torch", WEIGHTS, precision="fp16")


def test_engine_key_changes_with_every_dependency() -> None:
    from endostream.runtime.trt_backend import engine_key

    base = ("NVIDIA H200", (9, 0), "10.3.0", "ab" * 32, "fp16", 1)
    keys = {engine_key(*base)}
    for i, alt in enumerate(("NVIDIA A100", (8, 0), "10.4.0", "cd" * 32, "fp32", 256)):
        keys.add(engine_key(*base[:i], alt, *base[i + 1:]))
    assert len(keys) == 7


def test_backends_expose_the_interface() -> None:
    for name in ("torch", "onnxruntime"):
        be = registry.create_backend(name, WEIGHTS, threads=1)
        assert be.name.startswith(name)
        for key in ("input_size", "memory_frames", "neck_channels", "num_train_steps", "mask_scale"):
            assert key in be.config
        g = int(be.config["input_size"]) // 4
        logits = be.denoise(be.from_numpy(np.zeros((1, 24, g, g), np.float32)),
                            be.from_numpy(np.zeros((1, 1, g, g), np.float32)), np.array([999.0], np.float32))
        assert be.to_numpy(logits).shape == (1, 1, g, g)
