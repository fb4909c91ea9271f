"""Overlay drawing: shape/dtype, mask colour where the mask is, pause and off switches."""

from __future__ import annotations

import numpy as np
import pytest

from endostream.consumer.overlay import MASK_BGR, HudInfo, draw_overlay
from endostream.types import Prediction


def _pred(h: int = 288, w: int = 384, presence: float = 0.9) -> Prediction:
    mask = np.zeros((h, w), bool)
    mask[100:200, 150:300] = True
    return Prediction(prob=mask.astype(np.float32), mask=mask, presence=presence, box=(150, 100, 300, 200))


def _image(h: int = 288, w: int = 384) -> np.ndarray:
    return np.full((h, w, 3), 50, np.uint8)


def test_shape_dtype_and_input_untouched():
    img = _image()
    before = img.copy()
    out = draw_overlay(img, _pred(), hud=HudInfo(fps=30, latency_ms=40, dropped=2, mask_age_ms=10, dice=0.8),
                       opacity=0.5, show_mask=True)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(img, before)


def test_mask_colour_appears_inside_mask_only():
    out = draw_overlay(_image(), _pred(), hud=HudInfo(), opacity=0.5, show_mask=True)
    inside = out[130:170, 180:270].reshape(-1, 3).astype(int)
    expected = (0.5 * 50 + 0.5 * np.array(MASK_BGR)).round()
    assert np.abs(inside - expected).max() <= 1
    outside = out[230:260, 20:120]  # away from mask, HUD and label
    assert (outside == 50).all()


@pytest.mark.parametrize("hud,show", [(HudInfo(paused=True), True), (HudInfo(), False)])
def test_paused_or_off_hides_mask(hud, show):
    out = draw_overlay(_image(), _pred(), hud=hud, opacity=0.5, show_mask=show)
    assert (out[130:170, 180:270] == 50).all()


def test_hud_and_research_label_always_drawn():
    out = draw_overlay(_image(), None, hud=HudInfo(), opacity=0.4, show_mask=True)
    assert (out[:20] != 50).any()        # heads-up line, top
    assert (out[-20:, -200:] != 50).any()  # RESEARCH USE ONLY, bottom right


def test_mask_of_other_size_is_resized():
    out = draw_overlay(_image(576, 768), _pred(), hud=HudInfo(), opacity=1.0, show_mask=True)
    assert tuple(out[300, 450]) == MASK_BGR  # mask (100:200, 150:300) scaled x2


def test_rejects_non_bgr():
    with pytest.raises(ValueError):
        draw_overlay(np.zeros((10, 10), np.uint8), None, hud=HudInfo(), opacity=0.4, show_mask=True)
