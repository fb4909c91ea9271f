"""The TensorRT backend's run-time half (allocation, binding, profile limits, copies, CUDA graphs)
run without a GPU through the stand-in of TensorRT's and cuda-python's documented APIs
(tests/tensorrt_standin.py), which computes the engines with ONNX Runtime on host memory. So its
numbers must equal the ONNX Runtime backend's on the same real frames (the same graphs, the same
CPU kernels: differences are only the thread counts' summation order)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import need_data
from tensorrt_standin import CudaStandIn
from endostream.inference.segmenter import Segmenter
from endostream.runtime import registry

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"
TOL = 1e-5  # same graph, same kernels, other thread counts: 1e-6 seen


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Three ClinicDB frames of one sequence and a Kvasir still (another size)."""
    folder = need_data("cvc-clinicdb/images")
    out = [cv2.imread(str(folder / f"{i}.png")) for i in (1, 2, 3)]
    out.append(cv2.imread(str(sorted(need_data("kvasir-seg/images").glob("*.jpg"))[0])))
    return out


@pytest.fixture(scope="module")
def ort_backend():
    return registry.create_backend("onnxruntime", WEIGHTS, threads=1)


def _trt(monkeypatch, tmp_path: Path, *, version: str = "10.13.3.9", **options):
    gpu = CudaStandIn()
    gpu.install(monkeypatch, version)
    options.setdefault("precision", "fp32")
    be = registry.create_backend("tensorrt", WEIGHTS, device="cuda", engine_cache=tmp_path / "engines", **options)
    return be, gpu


def _probs(seg: Segmenter, frames: list[np.ndarray]) -> list[np.ndarray]:
    return [seg.segment(f).prob for f in frames]


@pytest.mark.parametrize("graphs", [False, True], ids=["no-graphs", "cuda-graphs"])
@pytest.mark.parametrize("steps", [0, 2])
def test_tensorrt_backend_equals_onnxruntime_through_the_segmenter(monkeypatch, tmp_path, frames, ort_backend,
                                                                   graphs, steps) -> None:
    """A sequence with temporal memory (and warm start at K=2): masks, presence and boxes equal."""
    be, gpu = _trt(monkeypatch, tmp_path, cuda_graphs=graphs, max_batch=2)
    got = [Segmenter(be, steps=steps).segment(f) for f in frames]
    ref = [Segmenter(ort_backend, steps=steps).segment(f) for f in frames]
    for g, r in zip(got, ref):
        assert float(np.abs(g.prob - r.prob).max()) < TOL
        assert abs(g.presence - r.presence) < TOL and g.box == r.box and g.gated == r.gated
    assert any(g.mask.any() for g in got)
    # Buffers allocated once per I/O tensor (denoise's feat aliases encode's).
    io = sum(e.num_io_tensors for e in be.engines.values()) - 1
    assert gpu.stats["malloc"] == io == 11 and gpu.stats["kernels"] > 0
    if graphs:  # captured once per kind and batch size, then replayed
        assert gpu.stats["captures"] == (1 if steps == 0 else 2) and gpu.stats["launches"] > 0
    else:
        assert gpu.stats["captures"] == 0 and gpu.stats["launches"] == 0


def test_encoder_feat_stays_on_the_device_between_encode_and_denoise(monkeypatch, tmp_path, frames) -> None:
    """K=1 on one frame: image, memory, valid and per step noisy_mask and t go in (5 copies);
    feat is bound to both engines and never copied."""
    be, gpu = _trt(monkeypatch, tmp_path, cuda_graphs=False)
    Segmenter(be, steps=1, warm_start=False).segment(frames[0])
    assert gpu.stats["h2d"] == 5
    assert gpu.stats["d2h"] == 4 + 1  # aux_logits, presence, box, memory_out; logits


def test_batch_beyond_the_profile_runs_in_chunks_and_equals_single(monkeypatch, tmp_path, frames,
                                                                    ort_backend) -> None:
    """Five frames through an engine built for max_batch=2: three chunks, each row as alone."""
    be, _ = _trt(monkeypatch, tmp_path, cuda_graphs=True, max_batch=2)
    from endostream.inference.preprocess import find_fov, to_input

    size = be.config["input_size"]
    x = np.concatenate([to_input(f, size, find_fov(f)) for f in (*frames, frames[0])])
    t_, n_, g_ = be.config["memory_frames"], be.config["neck_channels"], size // 16
    mem = np.random.default_rng(0).standard_normal((5, t_, n_, g_, g_)).astype(np.float32)
    valid = np.ones((5, t_), np.float32)
    batched = be.encode(x, mem, valid)
    single = ort_backend.encode(x, mem, valid)
    for k in single:
        assert np.abs(be.to_numpy(batched[k]) - single[k]).max() < TOL, k
    noise = np.random.default_rng(1).standard_normal((5, 1, size // 4, size // 4)).astype(np.float32)
    t = np.array([999.0, 499.0, 1.0, 999.0, 250.0], np.float32)
    got = be.denoise(be.to_numpy(batched["feat"]), noise, t)
    assert np.abs(got - ort_backend.denoise(single["feat"], noise, t)).max() < TOL


@pytest.mark.parametrize("max_batch", [1, 3])
def test_uncertainty_with_more_samples_than_the_engine_batch(monkeypatch, tmp_path, frames, ort_backend,
                                                            max_batch) -> None:
    """S=8 noise samples of one frame on an engine built for 1 or 3: the spread is the ONNX
    Runtime backend's, the mask unchanged (it was an exception, so every frame lost its mask)."""
    be, _ = _trt(monkeypatch, tmp_path, cuda_graphs=True, max_batch=max_batch)
    got = Segmenter(be, steps=1, uncertainty_samples=8, warm_start=False).segment(frames[0])
    ref = Segmenter(ort_backend, steps=1, uncertainty_samples=8, warm_start=False).segment(frames[0])
    assert got.uncertainty is not None and float(got.uncertainty.max()) > 0.01
    assert float(np.abs(got.uncertainty - ref.uncertainty).max()) < 1e-4
    np.testing.assert_array_equal(got.mask, ref.mask)


def test_tensorrt_11_runs_the_fp16_graph(monkeypatch, tmp_path, frames, ort_backend) -> None:
    """TensorRT 11 builds strongly typed from the FP16 export; the stand-in runs that graph, so the
    result is within the FP16 tolerance of the FP32 backend (tests/test_export.py's bound)."""
    be, _ = _trt(monkeypatch, tmp_path, version="11.4.1.2", precision="fp16", cuda_graphs=True)
    assert be.engine_files["encode"].name.startswith("polyp.fp16.encode-trt11.4.1.2")
    got, ref = Segmenter(be, steps=0).segment(frames[0]), Segmenter(ort_backend, steps=0).segment(frames[0])
    diff = np.abs(got.prob - ref.prob)
    assert 0 < float(diff.max()) < 5e-2 and float(diff.mean()) < 5e-3


def test_auto_falls_back_with_one_line_when_no_engine_can_be_built(monkeypatch, tmp_path, caplog) -> None:
    """On an NVIDIA machine with TensorRT importable, ``auto`` tries TensorRT first; when the
    build fails (the builder returns None) it logs one line and takes the next choice."""
    gpu = CudaStandIn()
    trt = gpu.install(monkeypatch)
    monkeypatch.setattr(trt.Builder, "build_serialized_network", lambda self, network, config: None)
    monkeypatch.setenv("ENDOSTREAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "has_nvidia_gpu", lambda: True)
    monkeypatch.setattr(registry, "auto_choice",
                        lambda gpu_, has_trt, *_: ("tensorrt", "cuda") if has_trt else ("onnxruntime", "cpu"))
    with caplog.at_level(logging.WARNING, logger="endostream.runtime.registry"):
        be = registry.create_backend("auto", WEIGHTS, threads=1, precision="fp16", cuda_graphs=True)
    assert be.name.split("-")[0] == registry.auto_backend(tensorrt=False)[0] != "tensorrt"
    lines = [r.getMessage() for r in caplog.records if r.name == "endostream.runtime.registry"]
    assert len(lines) == 1 and "TensorRT unusable" in lines[0] and "failed to build" in lines[0]
    assert "\n" not in lines[0]


def test_named_tensorrt_without_a_device_is_one_line(monkeypatch, tmp_path) -> None:
    CudaStandIn(devices=0).install(monkeypatch)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        registry.create_backend("tensorrt", WEIGHTS, device="cuda", precision="fp32", engine_cache=tmp_path)


def test_the_standin_catches_what_the_real_api_would_refuse(monkeypatch, tmp_path) -> None:
    """So a wrong backend cannot pass: a shape outside the profile and a missing address are
    refused (False), an out-of-bounds binding is an illegal address at synchronisation, and a
    host buffer read before the stream is synchronised holds stale data."""
    be, gpu = _trt(monkeypatch, tmp_path, cuda_graphs=False, max_batch=2)
    trt, cudart = be.trt, be.cudart
    engine = be.engines["denoise"]
    ctx = engine.create_execution_context()
    item = tuple(engine.get_tensor_shape("feat"))[1:]
    assert ctx.set_input_shape("feat", (2, *item)) and not ctx.set_input_shape("feat", (3, *item))
    assert not ctx.execute_async_v3(int(be.stream)) and "not set" in trt.errors[-1]
    ptr, _, dtype = be.buffers["denoise"]["noisy_mask"]
    for name in ("feat", "noisy_mask", "t"):
        shape = tuple(engine.get_tensor_shape(name))[1:]
        assert ctx.set_input_shape(name, (2, *shape))
    for name in ("feat", "noisy_mask", "t", "logits"):
        assert ctx.set_tensor_address(name, ptr)  # every tensor on one small buffer: too small for feat
    assert ctx.execute_async_v3(int(be.stream))
    err, = cudart.cudaStreamSynchronize(be.stream)
    assert err == cudart.cudaError_t.cudaErrorIllegalAddress
    fresh = CudaStandIn()
    err, dev = fresh.cudart.cudaMalloc(64)
    _, stream = fresh.cudart.cudaStreamCreate()
    src, dst = np.arange(16, dtype=np.float32), np.zeros(16, np.float32)
    fresh.cudart.cudaMemcpyAsync(dev, src.ctypes.data, 64, fresh.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)
    fresh.cudart.cudaMemcpyAsync(dst.ctypes.data, dev, 64, fresh.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)
    assert not dst.any()  # not yet run
    fresh.cudart.cudaStreamSynchronize(stream)
    np.testing.assert_array_equal(dst, src)
