"""Per-pixel uncertainty from several noise samples of the denoiser (shipped weights, ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from endostream.inference.segmenter import load_segmenter

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cvc-clinicdb" / "images"


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    path = DATA / "1.png"
    if not path.is_file():
        pytest.skip(f"real data not found at {path}")
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def _seg(samples: int, steps: int = 0):
    return load_segmenter("weights/polyp.pt", backend="onnxruntime", steps=steps, uncertainty_samples=samples,
                          warm_start=False, threads=1)


def test_uncertainty_shape_range_and_reproducible(frame: np.ndarray) -> None:
    a, b = _seg(4).segment(frame), _seg(4).segment(frame)
    assert a.uncertainty is not None and a.uncertainty.shape == frame.shape[:2]
    assert a.uncertainty.dtype == np.float32
    assert 0.0 <= float(a.uncertainty.min()) and float(a.uncertainty.max()) <= 0.5
    assert float(a.uncertainty.max()) > 0.0  # the samples do differ somewhere
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)  # seeded per stream
    assert a.mean_uncertainty is not None and a.mean_uncertainty >= 0.0


def test_uncertainty_leaves_the_mask_unchanged(frame: np.ndarray) -> None:
    for steps in (0, 2):
        plain, sampled = _seg(0, steps).segment(frame), _seg(4, steps).segment(frame)
        assert plain.uncertainty is None and plain.mean_uncertainty is None
        np.testing.assert_array_equal(plain.mask, sampled.mask)


def test_uncertainty_samples_must_be_two_or_more() -> None:
    with pytest.raises(ValueError, match="uncertainty_samples"):
        _seg(1)
