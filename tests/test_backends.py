"""One battery run against every backend (as diffusers' pipeline test mixin): the same real
frames, each backend's outputs compared with references computed outside the code under test
at a stated tolerance.

- the pinned slice (tests/reference_values.py, re-pinned by tools/pin_reference.py): the torch
  backend's probabilities at fixed frame pixels, presence and box on one ClinicDB frame, at the
  shipped settings. Checks preprocessing, channel order, pasting back into the frame and the
  presence gate against a recorded reference, not against another backend through shared code;
- K=0 equals the decoder head: the test prepares the input itself (crop, resize, RGB, [-1, 1]),
  calls the backend's encode, and pastes sigmoid(aux_logits) into the frame with OpenCV;
- batch equals single: three streams as one batch equal each stream alone;
- uncertainty with more samples than the backend's max batch, equal to the torch backend's.

Backends: torch, onnxruntime, openvino (where installed), tensorrt through the stand-in of its
documented API (tests/tensorrt_standin.py) and, where a CUDA GPU exists, torch CUDA.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA_ROOT, need_data
from reference_values import PINNED
from tensorrt_standin import CudaStandIn
from endostream.inference.preprocess import find_fov
from endostream.inference.segmenter import Segmenter
from endostream.runtime import registry

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"
MAX_BATCH = 2  # engines with a batch profile are built this small, so S=6 samples need chunks

# Tolerance (probability) of each backend against the torch reference: float32 graphs on CPU
# differ from torch eager only by summation order (1e-6 seen); bf16 keeps 8 bits of mantissa.
BACKENDS = {
    "torch": dict(tol=2e-5),
    "onnxruntime": dict(tol=1e-4),
    "openvino-fp32": dict(tol=1e-4, precision="fp32"),
    "openvino-bf16": dict(tol=6e-2, precision="bf16"),
    "tensorrt-standin": dict(tol=1e-4),
    "torch-cuda": dict(tol=1e-3),  # cuDNN kernels (and TF32 where allowed): tests/test_parity.py's bound
}


def _build(kind: str):
    opts = {k: v for k, v in BACKENDS[kind].items() if k != "tol"}
    if kind == "torch":
        return registry.create_backend("torch", WEIGHTS, threads=1)
    if kind == "onnxruntime":
        return registry.create_backend("onnxruntime", WEIGHTS, threads=1, max_batch=MAX_BATCH)
    if kind.startswith("openvino"):
        pytest.importorskip("openvino")
        try:
            return registry.create_backend("openvino", WEIGHTS, threads=1, max_batch=MAX_BATCH, **opts)
        except (RuntimeError, ValueError) as exc:  # e.g. bf16 on a CPU without the units
            pytest.skip(f"openvino {opts}: {exc}")
    if kind == "tensorrt-standin":
        with pytest.MonkeyPatch.context() as mp:  # the stand-in modules only while it is built
            CudaStandIn().install(mp)
            import tempfile

            return registry.create_backend("tensorrt", WEIGHTS, device="cuda", precision="fp32", cuda_graphs=True,
                                           max_batch=MAX_BATCH, engine_cache=tempfile.mkdtemp(prefix="trt-engines-"))
    if kind == "torch-cuda":
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("no CUDA GPU")
        return registry.create_backend("torch", WEIGHTS, device="cuda")
    raise AssertionError(kind)


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request):
    need_data(PINNED["slice"]["frame"])
    return request.param, BACKENDS[request.param]["tol"], _build(request.param)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """The pinned frame, a Kvasir still of another size, another ClinicDB frame."""
    names = [PINNED["slice"]["frame"], PINNED["predict_images"][0], PINNED["predict_images"][-1]]
    return [cv2.imread(str(need_data(n))) for n in names]


@pytest.fixture(scope="module")
def torch_reference():
    return registry.create_backend("torch", WEIGHTS, threads=1)


def test_pinned_slice(backend, frames) -> None:
    name, tol, be = backend
    ref = PINNED["slice"]
    frame = frames[0]
    assert list(find_fov(frame)) == ref["fov"]
    pred = Segmenter(be, steps=PINNED["steps"], warm_start=False).segment(frame)
    got = np.array([pred.prob[y, x] for y, x in ref["pixels"]])
    worst = float(np.abs(got - np.array(ref["prob"])).max())
    assert worst < tol, f"{name}: probabilities {got.round(5).tolist()} vs pinned {ref['prob']} (max diff {worst})"
    assert abs(pred.presence - ref["presence"]) < max(tol, 1e-4)
    assert not pred.gated and pred.box is not None
    assert max(abs(a - b) for a, b in zip(pred.box, ref["box"])) <= (1 if tol < 1e-2 else 4), (pred.box, ref["box"])
    assert abs(int(pred.mask.sum()) - ref["mask_pixels"]) <= ref["mask_pixels"] * (0.002 if tol < 1e-2 else 0.03)


def test_pinned_slice_through_the_sampler(backend, frames) -> None:
    """The same pixels at K=2 (stream 0's seeded noise, no warm start): the denoiser and the
    DDIM update against the pinned reference."""
    name, tol, be = backend
    ref = PINNED["slice"]
    pred = Segmenter(be, steps=2, warm_start=False).segment(frames[0])
    got = np.array([pred.prob[y, x] for y, x in ref["pixels"]])
    worst = float(np.abs(got - np.array(ref["prob_k2"])).max())
    assert worst < 3 * tol, f"{name}: K=2 probabilities {got.round(5).tolist()} vs pinned {ref['prob_k2']}"


def test_pinned_slice_with_temporal_memory(backend, frames) -> None:
    """The next frame of the sequence on the same stream, where the first frame's memory moves
    the probability most (PINNED moved_by_memory: a forgotten memory misses by that much)."""
    name, tol, be = backend
    ref = PINNED["slice"]["sequence"]
    seg = Segmenter(be, steps=PINNED["steps"], warm_start=False)
    seg.segment(frames[0])
    pred = seg.segment(cv2.imread(str(need_data(ref["next_frame"]))))
    got = np.array([pred.prob[y, x] for y, x in ref["pixels"]])
    worst = float(np.abs(got - np.array(ref["prob"])).max())
    assert worst < 3 * tol, f"{name}: {got.round(5).tolist()} vs pinned {ref['prob']} (memory moves {ref['moved_by_memory']})"


def test_presence_gate(backend, frames) -> None:
    """A laparoscopy frame (no polyp) is gated: no mask, no box; and a threshold above every
    presence hides the pinned frame's mask and box while its probabilities stay."""
    name, tol, be = backend
    negative = cv2.imread(str(need_data("laparoscopy/cholec-instance-seg-sample/images/t80_VID03_000000.png")))
    pred = Segmenter(be, steps=0).segment(negative)
    assert pred.presence < 0.5 and pred.gated and not pred.mask.any() and pred.box is None, name
    shown = Segmenter(be, steps=0).segment(frames[0])
    hidden = Segmenter(be, steps=0, presence_threshold=1.01).segment(frames[0])
    assert shown.mask.any() and shown.box is not None and not shown.gated
    assert hidden.gated and not hidden.mask.any() and hidden.box is None
    np.testing.assert_array_equal(hidden.prob, shown.prob)


def _own_input(frame: np.ndarray, fov: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The model input written out here, not with inference.preprocess: crop, area resize,
    BGR -> RGB, [0, 255] -> [-1, 1], NCHW."""
    x0, y0, x1, y1 = fov
    rgb = cv2.cvtColor(cv2.resize(frame[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None].copy()


def test_k0_is_the_decoder_head(backend, frames) -> None:
    name, tol, be = backend
    cfg = be.config
    size, t_, n_ = cfg["input_size"], cfg["memory_frames"], cfg["neck_channels"]
    for frame in frames[:2]:
        fov = tuple(PINNED["slice"]["fov"]) if frame is frames[0] else find_fov(frame)
        out = be.encode(_own_input(frame, fov, size), np.zeros((1, t_, n_, size // 16, size // 16), np.float32),
                        np.zeros((1, t_), np.float32))
        head = 1.0 / (1.0 + np.exp(-be.to_numpy(out["aux_logits"])[0, 0].astype(np.float64)))
        x0, y0, x1, y1 = fov
        want = np.zeros(frame.shape[:2], np.float32)
        want[y0:y1, x0:x1] = cv2.resize(head.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        pred = Segmenter(be, steps=0).segment(frame)
        assert float(np.abs(pred.prob - want).max()) < 1e-5, name
        presence = 1.0 / (1.0 + np.exp(-float(be.to_numpy(out["presence_logit"]).reshape(-1)[0])))
        assert abs(pred.presence - presence) < 1e-6
        np.testing.assert_array_equal(pred.mask, (want > 0.5) if presence >= 0.5 else np.zeros_like(pred.mask))


@pytest.mark.parametrize("steps", [0, 2])
def test_batch_equals_single(backend, frames, steps) -> None:
    name, tol, be = backend
    batch_tol = max(tol, 1e-4)  # batched kernels may sum in another order
    together = Segmenter(be, steps=steps, max_batch=len(frames))
    alone = [Segmenter(be, steps=steps) for _ in frames]
    for round_ in range(2):  # the second round runs with memory (and warm start at K=2)
        got = together.segment_batch(frames, [0, 1, 2])
        for i, frame in enumerate(frames):
            ref = alone[i].segment(frame, stream_id=i)
            diff = float(np.abs(got[i].prob - ref.prob).max())
            assert diff < batch_tol, f"{name} K={steps} round {round_} stream {i}: {diff}"
            assert abs(got[i].presence - ref.presence) < batch_tol and got[i].gated == ref.gated


def test_uncertainty_beyond_max_batch(backend, frames, torch_reference) -> None:
    """S=6 samples, more than the MAX_BATCH=2 that sized the engines: the torch backend's spread."""
    name, tol, be = backend
    got = Segmenter(be, steps=1, uncertainty_samples=6, warm_start=False, max_batch=MAX_BATCH).segment(frames[0])
    ref = Segmenter(torch_reference, steps=1, uncertainty_samples=6, warm_start=False).segment(frames[0])
    assert got.uncertainty is not None and float(ref.uncertainty.max()) > 0.01
    assert float(np.abs(got.uncertainty - ref.uncertainty).max()) < max(10 * tol, 1e-3), name


def test_data_root_is_the_shared_folder() -> None:
    assert DATA_ROOT == ROOT.parent / "shared" / "data"
