"""Per-pixel uncertainty from several noise samples of the denoiser (shipped weights, ONNX Runtime),
tested for what it means: the samples disagree along the predicted border, not inside the polyp or
in the background, the same seed gives the same map and another seed another one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import need_data
from reference_values import PINNED
from uncertainty_band import band_ratios
from endostream.inference.segmenter import load_segmenter

U = PINNED["uncertainty"]


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return cv2.imread(str(need_data("cvc-clinicdb/images/1.png")), cv2.IMREAD_COLOR)


def _seg(samples: int, steps: int = 0):
    return load_segmenter("weights/polyp.pt", backend="onnxruntime", steps=steps, uncertainty_samples=samples,
                          warm_start=False, threads=1)


def test_spread_concentrates_along_the_predicted_border() -> None:
    """Mean spread in a band of U["band_px"] model-grid pixels around the mask's border over the
    interior's and the background's, worst image of the pinned validation set, over the floors
    (measured: PINNED["uncertainty"]["measured_min_ratio"], by tools/pin_reference.py). A
    constant or shuffled spread gives ratios near 1."""
    seg = _seg(U["samples"])
    worst = {"interior": np.inf, "background": np.inf}
    for name in U["images"]:
        img = cv2.imread(str(need_data(name)))
        seg.reset()
        r = band_ratios(seg.segment(img), img, U["band_px"])
        for k in worst:
            if np.isfinite(r[k]):  # a small polyp may have no interior beyond the band
                worst[k] = min(worst[k], r[k])
    for k, bound in PINNED["floors"]["uncertainty_ratio"].items():
        assert worst[k] >= bound, f"band/{k} spread ratio {worst[k]:.2f} under {bound} (measured {U['measured_min_ratio']})"


def test_reproducible_with_a_seed_and_moved_by_another(frame: np.ndarray) -> None:
    """Noise is seeded per stream: stream 0 twice gives the same map, stream 1 another map of
    the same border (the shown mask identical)."""
    a, b = _seg(4).segment(frame, stream_id=0), _seg(4).segment(frame, stream_id=0)
    c = _seg(4).segment(frame, stream_id=1)
    np.testing.assert_array_equal(a.uncertainty, b.uncertainty)
    assert float(np.abs(a.uncertainty - c.uncertainty).max()) > 1e-3
    np.testing.assert_array_equal(a.mask, c.mask)
    assert np.corrcoef(a.uncertainty.ravel(), c.uncertainty.ravel())[0, 1] > 0.5  # same place, other draw
    assert a.uncertainty.shape == frame.shape[:2] and a.uncertainty.dtype == np.float32
    assert a.mean_uncertainty is not None and a.mean_uncertainty >= 0.0


def test_uncertainty_leaves_the_mask_unchanged(frame: np.ndarray) -> None:
    for steps in (0, 2):
        plain, sampled = _seg(0, steps).segment(frame), _seg(4, steps).segment(frame)
        assert plain.uncertainty is None and plain.mean_uncertainty is None
        np.testing.assert_array_equal(plain.mask, sampled.mask)


def test_uncertainty_samples_must_be_two_or_more() -> None:
    with pytest.raises(ValueError, match="uncertainty_samples"):
        _seg(1)
