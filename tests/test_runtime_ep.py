"""ONNX Runtime execution providers: the fallback order (TensorRT EP, CUDA EP, CPU) as a pure
function, checked against the real onnxruntime installed here (CPU only), and `auto`'s choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from endostream.runtime import ort_backend, registry
from endostream.runtime.ort_backend import CPU_EP, CUDA_EP, TRT_EP, provider_options, provider_order

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"


def test_provider_order_is_tensorrt_then_cuda_then_cpu_of_what_is_available() -> None:
    assert provider_order([CPU_EP, CUDA_EP, TRT_EP], "gpu") == [TRT_EP, CUDA_EP, CPU_EP]  # order of ours, not theirs
    assert provider_order(["AzureExecutionProvider", CUDA_EP, CPU_EP], "gpu:1") == [CUDA_EP, CPU_EP]
    assert provider_order([TRT_EP, CPU_EP], "gpu") == [TRT_EP, CPU_EP]
    assert provider_order([TRT_EP, CUDA_EP, CPU_EP], "cuda:0") == [CUDA_EP, CPU_EP]  # cuda: no TensorRT EP
    assert provider_order([TRT_EP, CUDA_EP, CPU_EP], "cpu") == [CPU_EP]
    with pytest.raises(RuntimeError, match="neither the TensorRT nor the CUDA"):
        provider_order([CPU_EP], "gpu")
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider"):
        provider_order([TRT_EP, CPU_EP], "cuda")
    with pytest.raises(ValueError, match="cpu, cuda"):
        provider_order([CPU_EP], "tpu")


def test_the_installed_onnxruntime_gives_cpu_here() -> None:
    available = onnxruntime.get_available_providers()
    assert CPU_EP in available
    assert provider_order(available, "cpu") == [CPU_EP]
    if not ort_backend.gpu_providers_available():  # this machine: CPU-only onnxruntime
        with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
            provider_order(available, "gpu")
        with pytest.raises(RuntimeError, match="install onnxruntime-gpu"):
            registry.create_backend("onnxruntime", WEIGHTS, device="gpu")
    be = registry.create_backend("onnxruntime", WEIGHTS, threads=1, max_batch=4)
    assert be.providers == [CPU_EP] and be.name == "onnxruntime"
    n = int(be.config["input_size"])
    out = be.encode(np.zeros((3, 3, n, n), np.float32), np.zeros((3, 2, 64, n // 16, n // 16), np.float32),
                    np.zeros((3, 2), np.float32))
    assert out["feat"].shape == (3, 24, n // 4, n // 4)


def test_provider_options_give_the_tensorrt_ep_a_batch_profile_and_a_versioned_cache() -> None:
    from endostream.runtime.artifacts import io_shapes

    shapes = io_shapes({"input_size": 256, "memory_frames": 2, "neck_channels": 64, "denoiser_hidden": 24})
    opts = provider_options([TRT_EP, CUDA_EP, CPU_EP], 1, shapes["encode"], ("image", "memory", "valid"), 16)
    (trt_name, trt), (cuda_name, cuda), cpu = opts
    assert (trt_name, cuda_name, cpu) == (TRT_EP, CUDA_EP, CPU_EP) and cuda == {"device_id": 1}
    assert trt["trt_profile_min_shapes"] == "image:1x3x256x256,memory:1x2x64x16x16,valid:1x2"
    assert trt["trt_profile_max_shapes"] == "image:16x3x256x256,memory:16x2x64x16x16,valid:16x2"
    assert trt["trt_engine_cache_enable"] and f"ort{onnxruntime.__version__}-trt" in trt["trt_engine_cache_path"]
    assert "trt_fp16_enable" not in trt  # precision comes from the graph (export precision=fp16)
    # a network without the temporal module declares only `image`: the profile names only it
    only = provider_options([TRT_EP, CPU_EP], 0, shapes["encode"], ("image",), 2)[0][1]
    assert only["trt_profile_opt_shapes"] == "image:2x3x256x256"


def test_auto_prefers_tensorrt_then_ort_gpu_providers_then_torch_cuda_then_cpu() -> None:
    asked = []

    def torch_cuda() -> bool:
        asked.append(1)
        return True

    choice = registry.auto_choice
    assert choice(True, True, True, [CPU_EP], torch_cuda) == ("tensorrt", "cuda")
    assert choice(True, False, True, [TRT_EP, CUDA_EP, CPU_EP], torch_cuda) == ("onnxruntime", "gpu")
    assert choice(True, True, False, [CUDA_EP, CPU_EP], torch_cuda) == ("onnxruntime", "gpu")
    assert not asked
    assert choice(True, False, True, [CPU_EP], torch_cuda) == ("torch", "cuda") and asked
    assert choice(True, False, True, [CPU_EP], lambda: False) == ("onnxruntime", "cpu")
    assert choice(False, True, True, [TRT_EP, CUDA_EP, CPU_EP], torch_cuda) == ("onnxruntime", "cpu")
    if not registry.has_nvidia_gpu():  # the CPU path: tests/test_cpu_paths.py
        from endostream.runtime.cpu_caps import choose_cpu_path, has_openvino, probe

        assert registry.auto_backend() == (choose_cpu_path(probe(), has_openvino())[0], "cpu")


def test_options_a_backend_does_not_take() -> None:
    with pytest.raises(ValueError, match="takes no option cuda_graphs"):
        registry.create_backend("onnxruntime", WEIGHTS, cuda_graphs=True)
    if not registry.has_nvidia_gpu():  # auto picks a CPU path here and drops torch's options
        be = registry.create_backend("auto", WEIGHTS, threads=1, cuda_graphs=True, compile=False, max_batch=2,
                                     precision="bf16")
        assert be.name.split("-")[0] in ("onnxruntime", "openvino")
