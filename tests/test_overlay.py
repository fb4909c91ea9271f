"""Overlay drawing: shape/dtype, mask colour where the mask is, pause and off switches, no box
without a mask, labels that follow their toggle, the HUD's words and corners, the staleness cue,
the uncertain border."""

from __future__ import annotations

import numpy as np
import pytest

from endostream.consumer.overlay import (BOX_BGR, MASK_BGR, UNCERTAIN_BGR, HudInfo, draw_overlay,
                                         hud_lines)
from endostream.types import Prediction

GREY = 50


def _pred(h: int = 288, w: int = 384, presence: float = 0.9, empty: bool = False) -> Prediction:
    mask = np.zeros((h, w), bool)
    if not empty:
        mask[100:200, 150:300] = True
    return Prediction(prob=mask.astype(np.float32), mask=mask, presence=presence, box=(150, 100, 300, 200),
                      gated=empty)


def _image(h: int = 288, w: int = 384) -> np.ndarray:
    return np.full((h, w, 3), GREY, np.uint8)


def _texts(lines: dict) -> list[str]:
    return [t for rows in lines.values() for t, _ in rows]


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
    expected = (0.5 * GREY + 0.5 * np.array(MASK_BGR)).round()
    assert np.abs(inside - expected).max() <= 1
    outside = out[230:260, 20:120]  # away from mask, HUD and label
    assert (outside == GREY).all()


def test_default_is_a_light_fill_with_an_outline():
    out = draw_overlay(_image(), _pred(), hud=HudInfo())
    inside = out[150, 220].astype(int)
    assert 0 < abs(inside[1] - GREY) < 0.25 * (MASK_BGR[1] - GREY)  # tinted, lightly
    assert (out[100:200, 150] != GREY).any() and out[100:200, 150, 1].max() > 200  # bright outline


@pytest.mark.parametrize("hud,show", [(HudInfo(paused=True), True), (HudInfo(), False)])
def test_paused_or_off_hides_mask(hud, show):
    out = draw_overlay(_image(), _pred(), hud=hud, opacity=0.5, show_mask=show)
    assert (out[130:170, 180:270] == GREY).all()


def _box_pixels(out: np.ndarray) -> int:
    return int(np.all(out == np.array(BOX_BGR, np.uint8), axis=2).sum())


def test_no_box_without_a_shown_mask():
    # The model's box says (150, 100, 300, 200) but its mask is empty (gated): nothing is drawn.
    gated = draw_overlay(_image(), _pred(empty=True), hud=HudInfo(), show_box=True)
    assert _box_pixels(gated) == 0
    assert (gated[60:240, 100:340] == GREY).all()  # no box, no label, no outline anywhere near
    # A shown mask gets its box, on the mask's own rectangle.
    shown = draw_overlay(_image(), _pred(), hud=HudInfo(), show_box=True)
    assert _box_pixels(shown) > 400
    ys, xs = np.nonzero(np.all(shown == np.array(BOX_BGR, np.uint8), axis=2))
    assert xs.min() >= 146 and xs.max() <= 303 and ys.min() >= 96 and ys.max() <= 203
    # Overlay off or paused: no box either, even when asked for.
    assert _box_pixels(draw_overlay(_image(), _pred(), hud=HudInfo(), show_box=True, show_mask=False)) == 0
    assert _box_pixels(draw_overlay(_image(), _pred(), hud=HudInfo(paused=True), show_box=True)) == 0


def test_label_follows_its_toggle_not_the_overlay_switch():
    label_band = (slice(78, 97), slice(150, 260))  # just above the finding
    on = draw_overlay(_image(), _pred(), hud=HudInfo(), show_mask=True, show_labels=True)
    off_kept = draw_overlay(_image(), _pred(), hud=HudInfo(), show_mask=False, show_labels=True)
    no_labels = draw_overlay(_image(), _pred(), hud=HudInfo(), show_mask=True, show_labels=False)
    assert (on[label_band] != GREY).any()
    assert (off_kept[label_band] != GREY).any()          # overlay off: the label stays
    assert (off_kept[100:200, 150:300] == GREY).all()    # ... but the tissue is clear
    assert (no_labels[label_band] == GREY).all()


def test_hud_words_are_plain():
    hud = HudInfo(fps=24.3, latency_ms=6.2, dropped=21, mask_age_ms=40, stale_ms=500)
    texts = _texts(hud_lines(hud, has_mask=True))  # AI lag: the mask's age on screen, 40 + 6 ms
    assert "AI lag 46 ms" in texts and "AI skipped 21 frames" in texts
    assert "24 fps, video lag 6 ms" in texts and "RESEARCH USE ONLY" in texts
    joined = " ".join(texts)
    assert "drop" not in joined and "p 0." not in joined and "p 1." not in joined
    assert "Dice" not in joined  # no ground truth streamed: no Dice at all


def test_dice_only_with_ground_truth_and_apart():
    lines = hud_lines(HudInfo(mask_age_ms=40, dice=0.81), has_mask=True)
    assert ("ground truth: mean Dice 0.81" in [t for t, _ in lines["bl"]])
    assert all("Dice" not in t for c in ("tl", "tr", "br") for t, _ in lines[c])


def test_states_of_the_ai_line():
    tl = lambda hud, **kw: [t for t, _ in hud_lines(hud, **kw)["tl"]]  # noqa: E731
    assert tl(HudInfo()) == ["AI starting"]
    assert tl(HudInfo(), has_mask=True) == []  # offline: the mask is this frame's, no lag to show
    assert tl(HudInfo(paused=True, mask_age_ms=620)) == ["AI paused (mask 620 ms old)"]
    assert tl(HudInfo(mask_age_ms=46), show_mask=False) == ["overlay off, AI lag 46 ms"]
    assert tl(HudInfo(mask_age_ms=46, no_model="laparoscopy")) == ["no polyp model for laparoscopy"]


def _bar_px(out: np.ndarray) -> int:
    """Coloured (not grey-track, not black) pixels in the staleness bar's rows under "AI lag"."""
    band = out[14:22, 0:110].reshape(-1, 3).astype(int)
    grey_track = np.all(band == 70, axis=1)
    dark = band.max(axis=1) < 90
    return int((~grey_track & ~dark).sum())


def test_staleness_cue_grows_with_mask_age():
    img = np.zeros((288, 384, 3), np.uint8)
    px = [_bar_px(draw_overlay(img, _pred(), hud=HudInfo(mask_age_ms=a, stale_ms=500))) for a in (50, 200, 450)]
    assert 0 < px[0] < px[1] < px[2]
    # Its colour turns from white to amber/red as the age nears the pause limit.
    fresh = hud_lines(HudInfo(mask_age_ms=50, stale_ms=500))["tl"][0][1]
    old = hud_lines(HudInfo(mask_age_ms=450, stale_ms=500))["tl"][0][1]
    assert fresh != old


@pytest.mark.parametrize("h,w", [(288, 384), (1080, 1920), (480, 854)])
def test_hud_stays_in_the_corners_on_one_line(h, w):
    """Long values and notes never wrap onto the picture: everything outside the top and bottom
    text rows stays untouched, and the left and right lines never meet."""
    hud = HudInfo(fps=123.4, latency_ms=12345, dropped=987654, mask_age_ms=499, stale_ms=500,
                  dice=0.5, note="UNTRAINED WEIGHTS | a very long operator note that goes on and on",
                  stream_id=3)
    out = draw_overlay(_image(h, w), None, hud=hud)
    row_h = max(24, int(h * 0.06))  # one text row at this height, generously
    assert (out[row_h + 4:h - 3 * row_h] == GREY).all()     # bottom left may hold 3 rows
    assert (out[:row_h, w // 2 - 8:w // 2 + 8] == GREY).all()  # top corners do not meet
    assert (out[h - row_h:, w // 2 - 8:w // 2 + 8] == GREY).all()


def test_research_label_bottom_right_off_the_centre():
    out = draw_overlay(_image(), _pred(), hud=HudInfo(), opacity=0.5)
    assert (out[-18:, -120:] != GREY).any()
    assert (out[-18:, 150:200] == GREY).all()


def test_uncertain_border_is_hatched_only_when_asked_and_present():
    pred = _pred()
    unc = np.zeros((288, 384), np.float32)
    unc[95:105, 150:300] = 0.3  # an unsure top border
    pred.uncertainty = unc
    white = lambda o: np.all(o[95:105, 150:300] == np.array(UNCERTAIN_BGR, np.uint8), axis=2)  # noqa: E731
    on = draw_overlay(_image(), pred, hud=HudInfo(), show_uncertainty=True, uncertainty_threshold=0.1)
    assert 0.1 < white(on).mean() < 0.6  # hatched: part of the band, not a solid fill
    assert not np.all(on[120:190, 160:290] == np.array(UNCERTAIN_BGR, np.uint8), axis=2).any()  # certain: none
    assert not white(draw_overlay(_image(), pred, hud=HudInfo())).any()  # off by default
    assert not white(draw_overlay(_image(), pred, hud=HudInfo(), show_uncertainty=True,
                                  uncertainty_threshold=0.35)).any()
    pred.uncertainty = None  # not computed: nothing to draw, no error
    draw_overlay(_image(), pred, hud=HudInfo(), show_uncertainty=True)


def test_hud_and_research_label_always_drawn():
    out = draw_overlay(_image(), None, hud=HudInfo(), opacity=0.4, show_mask=True)
    assert (out[:20] != GREY).any()        # "AI starting", top left
    assert (out[-20:, -200:] != GREY).any()  # RESEARCH USE ONLY, bottom right


def test_mask_of_other_size_is_resized():
    out = draw_overlay(_image(576, 768), _pred(), hud=HudInfo(), opacity=1.0, show_mask=True)
    assert tuple(out[300, 450]) == MASK_BGR  # mask (100:200, 150:300) scaled x2


def test_rejects_non_bgr():
    with pytest.raises(ValueError):
        draw_overlay(np.zeros((10, 10), np.uint8), None, hud=HudInfo(), opacity=0.4, show_mask=True)


def test_research_label_moves_off_the_mask():
    mask = np.zeros((288, 384), bool)
    mask[180:, 200:] = True  # a finding in the bottom-right corner
    pred = Prediction(prob=mask.astype(np.float32), mask=mask, presence=0.9, box=None)
    out = draw_overlay(_image(), pred, hud=HudInfo(), opacity=1.0)
    corner = out[-18:, -110:].reshape(-1, 3)
    assert not (corner.max(axis=1) == 0).any()  # no dark text backing on the mask
    assert (out[-18:, :120].max(axis=2) == 0).any()  # it went bottom left instead
    # With the overlay off the tissue is not covered: the label stays in its corner.
    off = draw_overlay(_image(), pred, hud=HudInfo(), show_mask=False)
    assert (off[-18:, -110:].max(axis=2) == 0).any()


def test_label_says_how_old_an_aging_mask_is():
    band = (slice(78, 97), slice(140, 384))  # the label row above the finding
    amber = lambda o: int(np.all(np.abs(o[band].astype(int) - (0, 200, 255)) < 40, axis=2).sum())  # noqa: E731
    fresh = draw_overlay(_image(), _pred(), hud=HudInfo(mask_age_ms=50, stale_ms=500))
    aging = draw_overlay(_image(), _pred(), hud=HudInfo(mask_age_ms=300, latency_ms=10, stale_ms=500))
    assert amber(fresh) == 0 and amber(aging) > 20
    wide = lambda o: int(np.nonzero((o[band] != GREY).any(axis=2))[1].max())  # noqa: E731
    assert wide(aging) > wide(fresh) + 40  # ", 310 ms old" added
