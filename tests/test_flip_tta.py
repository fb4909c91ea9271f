"""Flip test-time augmentation (``model.tta``), on the shipped weights and a real frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from endostream.inference.segmenter import load_segmenter
from tests.conftest import need_data


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    img = cv2.imread(str(need_data("cvc-clinicdb/images/1.png")))
    assert img is not None
    return img


def _seg(tta):
    return load_segmenter("weights/polyp.pt", backend="onnxruntime", steps=0, threads=1, tta=tta)


def test_tta_is_flip_equivariant(frame: np.ndarray) -> None:
    """Averaging a view with its mirrored view, flipped BACK, makes the result mirror exactly
    with the input; a view not flipped back (or flipped on the wrong axis) breaks this."""
    seg = _seg(["h"])
    a = seg.segment(frame).prob
    seg.reset()
    b = seg.segment(np.ascontiguousarray(frame[:, ::-1])).prob
    np.testing.assert_allclose(b[:, ::-1], a, atol=2e-4)
    plain = _seg([]).segment(frame).prob
    assert np.abs(plain - a).max() > 1e-3, "TTA changed nothing: the mirrored view was not averaged in"


def test_tta_keeps_the_polyp_and_rejects_unknown_flips(frame: np.ndarray) -> None:
    gt = cv2.imread(str(need_data("cvc-clinicdb/masks/1.png")), cv2.IMREAD_GRAYSCALE) > 127
    pred = _seg(["h", "v"]).segment(frame)
    dice = 2 * (pred.mask & gt).sum() / (pred.mask.sum() + gt.sum())
    assert dice > 0.8, dice
    with pytest.raises(ValueError, match="model.tta"):
        _seg(["diagonal"])
