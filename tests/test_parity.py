"""Backends against the torch reference on real frames, through the full Segmenter loop
(K=2, warm start, a sequence so the temporal memory fills)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA_ROOT, need_data
from endostream.inference.segmenter import Segmenter, load_segmenter

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"
DATA = DATA_ROOT
CLIP = ROOT / "assets" / "demo" / "clinicdb_demo.mp4"


def clinicdb_sequence(n: int = 4) -> list[np.ndarray]:
    folder = DATA / "cvc-clinicdb" / "images"
    return [cv2.imread(str(folder / f"{i}.png")) for i in range(1, n + 1) if (folder / f"{i}.png").is_file()]


def kvasir_frames(n: int = 2) -> list[np.ndarray]:
    folder = DATA / "kvasir-seg" / "images"
    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.jpg"))[:n]] if folder.is_dir() else []


def clip_frames(n: int = 4) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(CLIP)), []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def sequences() -> list[list[np.ndarray]]:
    need_data("cvc-clinicdb/images")
    need_data("kvasir-seg/images")
    seqs = [s for s in (clinicdb_sequence(), kvasir_frames(), clip_frames()) if s]
    return seqs


def run(seg: Segmenter, seqs: list[list[np.ndarray]]) -> list[np.ndarray]:
    probs = []
    for sid, frames in enumerate(seqs):
        for frame in frames:
            probs.append(seg.segment(frame, stream_id=sid).prob)
    return probs


@pytest.fixture(scope="module")
def reference() -> list[np.ndarray]:
    return run(load_segmenter(weights=str(WEIGHTS), backend="torch", steps=2, threads=1), sequences())


def test_onnxruntime_matches_torch_fp32(reference: list[np.ndarray]) -> None:
    seg = load_segmenter(weights=str(WEIGHTS), backend="onnxruntime", steps=2, threads=1)
    assert seg.info["backend"] == "onnxruntime"
    got = run(seg, sequences())
    assert len(got) == len(reference) >= 4
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, reference))
    agree = min(float(np.mean((a > 0.5) == (b > 0.5))) for a, b in zip(got, reference))
    # With warm start each frame's mask feeds the next frame's denoiser, so float32 rounding grows
    # along a sequence: fourth-generation weights, 2026-12-02: below 5e-5 for the first frames of
    # each sequence, 1.6e-3 at the demo clip's third frame (about 100 pixels over 1e-4; at most
    # one pixel per frame on the other side of 0.5). The decoder pass alone is held to 5e-5 below.
    assert worst < 5e-3 and agree > 0.9999, f"max abs prob difference {worst}, mask agreement {agree}"


def test_onnxruntime_matches_torch_decoder_pass() -> None:
    """K=0 (the shipped default): no feedback between frames' masks, so a tight tolerance."""
    seqs = sequences()
    ref = run(load_segmenter(weights=str(WEIGHTS), backend="torch", steps=0, threads=1), seqs)
    got = run(load_segmenter(weights=str(WEIGHTS), backend="onnxruntime", steps=0, threads=1), seqs)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, ref))
    assert worst < 5e-5, f"max abs prob difference {worst}"  # 1e-5 seen


def _gpu_parity(backend: str, reference: list[np.ndarray], tol: float, **options) -> None:
    from endostream.runtime.registry import create_backend

    be = create_backend(backend, WEIGHTS, device="cuda", **options)
    got = run(Segmenter(be, steps=2), sequences())
    worst = max(float(np.abs(a - b).max()) for a, b in zip(got, reference))
    agree = np.mean([np.mean((a > 0.5) == (b > 0.5)) for a, b in zip(got, reference)])
    assert worst < tol and agree >= 0.999, f"{be.name}: max abs {worst}, mask agreement {agree}"


@pytest.mark.cuda
@pytest.mark.parametrize("precision,graphs,tol", [("fp32", False, 1e-3), ("fp32", True, 1e-3), ("fp16", True, 2e-2)])
def test_torch_cuda_matches_cpu(reference, precision, graphs, tol) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _gpu_parity("torch", reference, tol, precision=precision, cuda_graphs=graphs)


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_tensorrt_matches_cpu(reference, precision, tol, tmp_path) -> None:
    pytest.importorskip("tensorrt")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _gpu_parity("tensorrt", reference, tol, precision=precision, engine_cache=tmp_path)
