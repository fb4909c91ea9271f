"""Test-time augmentation (``model.tta`` flips, ``model.tta_sizes``), on the shipped weights and a real frame."""

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


def _seg(tta, sizes=()):
    return load_segmenter("weights/polyp.pt", backend="onnxruntime", steps=0, threads=1, tta=tta, tta_sizes=sizes)


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


def test_another_size_is_segmented_at_that_size_and_averaged_in(frame: np.ndarray) -> None:
    """``model.tta_sizes=[352]``: one more view, the same weights at input 352, whose probability
    map (at the frame's resolution) is averaged with the shipped size's; the mask stays the polyp."""
    seg = _seg([], [352])
    (axis, scaled), = seg.views
    assert axis is None and scaled.input_size == 352 and seg.input_size == 320
    assert seg.info["tta_sizes"] == [352]
    both = seg.segment(frame).prob
    seg.reset()
    alone, at_352 = seg.base.segment(frame).prob, scaled.segment(frame).prob
    assert np.abs(alone - at_352).max() > 1e-2  # the size changes the view
    np.testing.assert_allclose(both, (alone + at_352) / 2, atol=1e-5)
    gt = cv2.imread(str(need_data("cvc-clinicdb/masks/1.png")), cv2.IMREAD_GRAYSCALE) > 127
    mask = both > 0.5
    assert 2 * (mask & gt).sum() / (mask.sum() + gt.sum()) > 0.8


@pytest.mark.parametrize("sizes", [[300], [320], [352, 352], [1024]])
def test_sizes_it_cannot_run_are_one_clear_error_before_any_export(sizes) -> None:
    with pytest.raises(ValueError, match="model.tta_sizes"):
        _seg([], sizes)


def test_sessions_of_several_sizes_do_not_spin() -> None:
    """K=0 alone lets its one encode session spin (faster); with other sizes each view has its own
    session, and spinning ones starve each other (measured: 111 against 46 ms a frame with two more
    sizes), so none of them spins."""
    def spins(seg) -> str:
        opts = seg.backend.encode_session.get_session_options()
        return opts.get_session_config_entry("session.intra_op.allow_spinning")

    assert spins(_seg([])) == "1"
    seg = _seg([], [352])
    assert [spins(s) for s in [seg.base] + [v for _, v in seg.views]] == ["0", "0"]


@pytest.mark.parametrize("command", ["batch", "predict", "eval"])
def test_the_offline_quality_preset_is_the_measured_setting(command: str) -> None:
    """``+quality=offline`` names the setting the model card measured, and later overrides still win."""
    from endostream.cli import compose

    extra = ["input=x", "output=y"] if command in ("batch", "predict") else []
    m = compose(command, ["+quality=offline", *extra]).model
    assert (m.steps, list(m.tta), list(m.tta_sizes)) == (1, ["h", "v"], [288, 352])
    assert compose(command, ["+quality=offline", "model.steps=0", *extra]).model.steps == 0
    assert compose(command, extra).model.steps == 0  # the live default stays K=0 without it
