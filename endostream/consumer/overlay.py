"""Pure drawing: a BGR frame plus a prediction and a heads-up display -> an overlay image.

Nothing here keeps state or decides policy: the caller says whether the mask is stale
(``HudInfo.paused``), which prediction to show and how opaque. Runs per frame at 30 fps, so
everything is OpenCV calls on the frame (blending only inside the mask's bounding box), never
a Python loop over pixels.

What a clinician sees, chosen by looking at ClinicDB frames and the demo clip:
- the finding as a thin outline with a light fill (0.15), so the mucosal surface pattern under
  it stays readable; a box only on request, and never without its mask (a box over an empty
  mask points at nothing the model segmented);
- a short label ("polyp 97%") beside the finding, which stays when the overlay is switched off
  (``show_labels``), so the tissue is clear but the finding is still marked; past half the
  stale limit it also says how old the mask is ("polyp 97%, 288 ms old"), amber, then red;
- the HUD as one line per corner, in plain words, where an endoscope image has its unused black
  corners: top left the AI's state ("AI lag 46 ms" with a bar that grows with the mask's age,
  "AI paused", "no polyp model for laparoscopy"), top right the video ("24 fps, video lag 6 ms"),
  bottom left notes and, only with ground truth, its Dice apart and labelled, bottom right
  "RESEARCH USE ONLY". A line that does not fit its corner is set smaller, then shortened;
  it never wraps onto the image.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from endostream.types import Prediction

RESEARCH_LABEL = "RESEARCH USE ONLY"
MASK_BGR = (0, 220, 0)        # green: the colour endoscopy CADe systems use for "finding"
OUTLINE_BGR = (80, 255, 80)   # brighter green: the outline reads on red mucosa and in glare
BOX_BGR = (255, 200, 0)
LABEL_BGR = (120, 255, 120)
UNCERTAIN_BGR = (255, 255, 255)  # white hatching: "the border is unsure here", not a finding
PAUSED_BGR = (60, 60, 255)
NOTE_BGR = (0, 200, 255)      # amber
TEXT_BGR = (235, 235, 235)
DIM_BGR = (170, 170, 170)
GT_BGR = (255, 200, 120)     # light blue: ground truth is a test bench's, not the AI's
DEFAULT_OPACITY = 0.15
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MIN_SCALE = 0.3  # below this Hershey text stops being legible at any resolution


@dataclass
class HudInfo:
    """What the heads-up display shows. ``None`` fields are left out.

    fps: displayed frames per second; latency_ms: capture -> overlay of the shown frame, ms
    ("video lag"); dropped: frames the model skipped so far (sent, not segmented; the video
    itself showed them); mask_age_ms: capture-time age of the shown mask, ms (shown as "AI lag"
    = mask_age_ms + latency_ms, the mask's age on screen);
    stale_ms: the age at which the caller pauses the mask (scales the staleness bar);
    paused: the caller judged the mask stale -> hide it and show "AI paused";
    dice: running mean Dice against streamed ground truth in [0, 1] (None: no ground truth);
    note: extra text, e.g. "UNTRAINED WEIGHTS"; stream_id: shown when not None;
    no_model: a modality with no model of its own (e.g. "laparoscopy") -> say so instead of
    the AI lag, so an empty overlay never reads as "AI says clear".
    """

    fps: float | None = None
    latency_ms: float | None = None
    dropped: int = 0
    mask_age_ms: float | None = None
    paused: bool = False
    dice: float | None = None
    note: str = ""
    stream_id: int | None = None
    stale_ms: float | None = None
    no_model: str = ""


def _scale(height: int) -> tuple[float, int]:
    """Font scale and line thickness readable from 288p to 2160p."""
    scale = max(0.35, height / 900.0)
    return scale, max(1, int(round(scale * 2)))


def _fit(text: str, max_w: int, scale: float, thick: int) -> tuple[str, float, int, int, int]:
    """Shrink (down to _MIN_SCALE), then shorten with "..", until ``text`` fits ``max_w`` px on
    one line. Returns (text, scale, width, height, baseline)."""
    s = scale
    while True:
        (w, h), base = cv2.getTextSize(text, _FONT, s, thick)
        if w <= max_w or s <= _MIN_SCALE:
            break
        s = max(_MIN_SCALE, s * 0.9)
    while w > max_w and len(text) > 3:
        text = text[:-3].rstrip() + ".."
        (w, h), base = cv2.getTextSize(text, _FONT, s, thick)
    return text, s, w, h, base


def _corner_place(shape: tuple[int, ...], text: str, corner: str, row: int, scale: float, thick: int,
                  max_w: int) -> tuple[str, float, tuple[int, int], tuple[int, int, int, int]]:
    """Where one line goes in a corner ("tl", "tr", "bl", "br"; ``row`` 0 nearest the corner):
    (fitted text, its scale, baseline origin, backing box (x0, y0, x1, y1))."""
    height, width = shape[:2]
    text, s, w, h, base = _fit(text, max_w, scale, thick)
    line_h = int(cv2.getTextSize("Ag", _FONT, scale, thick)[0][1] * 1.9) + 4
    x = 4 if corner[1] == "l" else width - w - 4
    y = 3 + h + row * line_h if corner[0] == "t" else height - 4 - base - row * line_h
    return text, s, (x, y), (x - 2, y - h - 3, x + w + 2, y + base + 1)


def _corner_text(img: np.ndarray, text: str, corner: str, row: int, scale: float, thick: int,
                 color: tuple[int, int, int], max_w: int) -> tuple[int, int, int, int]:
    """One line of text with a dark backing in a corner. Returns the backing's box."""
    text, s, org, box = _corner_place(img.shape, text, corner, row, scale, thick, max_w)
    cv2.rectangle(img, box[:2], box[2:], (0, 0, 0), cv2.FILLED)
    cv2.putText(img, text, org, _FONT, s, color, thick, cv2.LINE_AA)
    return box


def _blend_mask(out: np.ndarray, mask_u8: np.ndarray, opacity: float, color: tuple[int, int, int]) -> None:
    """Alpha-blend ``color`` into ``out`` where ``mask_u8`` is set, in place, inside its bbox only."""
    x, y, w, h = cv2.boundingRect(mask_u8)
    if w == 0 or h == 0 or opacity <= 0.0:
        return
    roi = out[y:y + h, x:x + w]
    tint = np.empty_like(roi)
    tint[:] = tuple(int(c) for c in color)  # also accepts a config ListConfig
    blended = cv2.addWeighted(roi, 1.0 - opacity, tint, opacity, 0.0)
    # roi is a strided view into out; OpenCV writes through it (20x faster than np.copyto(where=)).
    cv2.copyTo(blended, mask_u8[y:y + h, x:x + w], dst=roi)


@functools.lru_cache(maxsize=4)
def _stripes(height: int, width: int, period: int, on: int) -> np.ndarray:
    """HxW uint8 diagonal stripes (1 on ``on`` of every ``period`` diagonals), made once per
    frame size: the per-frame cost is then one AND."""
    return ((np.add.outer(np.arange(height), np.arange(width)) % period) < on).astype(np.uint8)


def _hatch_band(out: np.ndarray, uncertainty: np.ndarray, threshold: float, thick: int) -> None:
    """Diagonal hatching where ``uncertainty`` > ``threshold``: a band that says "the border is
    unsure here" without covering the tissue (most pixels of the band stay untouched)."""
    height, width = out.shape[:2]
    if uncertainty.shape != (height, width):
        uncertainty = cv2.resize(uncertainty.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    band = (uncertainty > threshold).view(np.uint8)
    x, y, w, h = cv2.boundingRect(band)
    if w == 0 or h == 0:
        return
    stripes = _stripes(height, width, 4 * thick + 2, max(1, thick))
    sel = cv2.bitwise_and(band[y:y + h, x:x + w], stripes[y:y + h, x:x + w])
    roi = out[y:y + h, x:x + w]
    roi[sel.view(bool)] = UNCERTAIN_BGR


def _label(presence: float, hud: HudInfo) -> tuple[str, tuple[int, int, int]]:
    """The finding's label and colour. A model score, not a calibrated certainty: never "100%".
    Past half the stale limit the label says how old the mask is, in amber, right where the
    clinician looks (the corner bar says it too)."""
    text = f"polyp {min(99, int(round(presence * 100)))}%"
    if hud.stale_ms and hud.mask_age_ms is not None and hud.mask_age_ms >= 0.5 * hud.stale_ms:
        return f"{text}, {_ai_lag(hud):.0f} ms old", _age_color(hud.mask_age_ms / hud.stale_ms)
    return text, LABEL_BGR


def _draw_label(out: np.ndarray, text: str, color: tuple[int, int, int], rect: tuple[int, int, int, int],
                scale: float, thick: int, keep_out_h: int) -> None:
    """``text`` just above the finding's rectangle (below it when the top HUD row is there)."""
    height, width = out.shape[:2]
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thick)
    x0, y0, x1, y1 = rect
    x = int(min(max(2, x0), width - w - 4))
    y = y0 - base - 4
    if y - h < keep_out_h:
        y = y1 + h + 4 if y1 + h + base + 4 < height - keep_out_h else max(y0 + h + 4, keep_out_h + h)
    cv2.rectangle(out, (x - 2, y - h - 3), (x + w + 2, y + base + 1), (0, 0, 0), cv2.FILLED)
    cv2.putText(out, text, (x, y), _FONT, scale, color, thick, cv2.LINE_AA)


def _age_color(frac: float) -> tuple[int, int, int]:
    """White while fresh, amber past half the stale limit, red near it."""
    if frac < 0.5:
        return TEXT_BGR
    return NOTE_BGR if frac < 0.8 else PAUSED_BGR


def draw_overlay(
    image_bgr: np.ndarray,
    prediction: Prediction | None,
    *,
    hud: HudInfo,
    opacity: float = DEFAULT_OPACITY,
    show_mask: bool = True,
    color: Sequence[int] = MASK_BGR,
    show_box: bool = False,
    show_labels: bool = True,
    show_uncertainty: bool = False,
    uncertainty_threshold: float = 0.1,
) -> np.ndarray:
    """Draw mask (outline + light fill), label, optional box and uncertain border, and the HUD
    on a copy of ``image_bgr``.

    Args:
        image_bgr: HxWx3 uint8 BGR frame (not modified).
        prediction: the mask to show (its ``mask`` is HxW bool in any size; resized with
            nearest-neighbour if it differs from the frame), or ``None`` for no mask yet.
        hud: heads-up display values; ``hud.paused`` hides mask, box and label.
        opacity: mask fill opacity in [0, 1]; 0 leaves the outline alone.
        show_mask: False hides fill, outline, box and uncertain border (the overlay-off
            switch); the HUD stays, and so does the label when ``show_labels``.
        color: mask fill colour, BGR.
        show_box: draw the finding's box too, only while its mask is drawn and not empty.
        show_labels: "polyp NN%" beside a finding whose mask is not empty.
        show_uncertainty: hatch where ``prediction.uncertainty`` > ``uncertainty_threshold``
            (needs a segmenter run with uncertainty samples; nothing is drawn without it).

    Returns:
        HxWx3 uint8 BGR image, a new array.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"draw_overlay: expected HxWx3 uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
    out = image_bgr.copy()
    height, width = out.shape[:2]
    scale, thick = _scale(height)
    line_h = int(cv2.getTextSize("Ag", _FONT, scale, thick)[0][1] * 1.9) + 4
    opacity = float(min(max(opacity, 0.0), 1.0))

    shown_mask = None  # the drawn mask, kept clear of "RESEARCH USE ONLY"
    if prediction is not None and not hud.paused:
        mask = prediction.mask
        if mask.shape != (height, width):
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        mask_u8 = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask > 0).astype(np.uint8)
        rect = cv2.boundingRect(mask_u8)
        if rect[2] > 0 and rect[3] > 0:  # a finding: its mask has pixels
            if show_mask:
                shown_mask = mask_u8
                _blend_mask(out, mask_u8, opacity, color)
                contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(out, contours, -1, OUTLINE_BGR, thick, cv2.LINE_AA)
                if show_uncertainty and prediction.uncertainty is not None:
                    _hatch_band(out, prediction.uncertainty, uncertainty_threshold, thick)
                if show_box:  # the mask's own rectangle: a box can never point where no mask is
                    x, y, w, h = rect
                    m = 2 * thick  # just outside the outline, so both stay visible
                    cv2.rectangle(out, (x - m, y - m), (x + w - 1 + m, y + h - 1 + m), BOX_BGR, thick)
            if show_labels:
                x, y, w, h = rect
                _draw_label(out, *_label(prediction.presence, hud), (x, y, x + w, y + h), scale,
                            thick, line_h)

    _draw_hud(out, hud, show_mask, prediction is not None, scale, thick, shown_mask)
    return out


def _ai_lag(hud: HudInfo) -> float | None:
    """How old the shown mask is on screen: capture of the frame it was computed on -> now,
    i.e. its capture-time age plus the video lag (the bench's "mask path")."""
    if hud.mask_age_ms is None:
        return None
    return hud.mask_age_ms + (hud.latency_ms or 0.0)


def hud_lines(hud: HudInfo, *, show_mask: bool = True, has_mask: bool = False
              ) -> dict[str, list[tuple[str, tuple[int, int, int]]]]:
    """The HUD's words per corner ("tl", "tr", "bl", "br"): a list of (text, BGR colour), the
    first entry nearest the corner. ``has_mask``: a prediction was passed (offline, a mask with
    no age is this very frame's: no AI-lag line)."""
    lines: dict[str, list[tuple[str, tuple[int, int, int]]]] = {"tl": [], "tr": [], "bl": [], "br": []}
    # Top left: the AI's state, the thing a clinician must trust or not.
    if hud.no_model:
        ai = (f"no polyp model for {hud.no_model}", NOTE_BGR)
    elif hud.paused:
        age = f" (mask {lag:.0f} ms old)" if (lag := _ai_lag(hud)) is not None else ""
        ai = (f"AI paused{age}", PAUSED_BGR)
    elif hud.mask_age_ms is None:
        ai = ("", TEXT_BGR) if has_mask else ("AI starting", DIM_BGR)
    else:
        frac = hud.mask_age_ms / hud.stale_ms if hud.stale_ms else 0.0
        ai = (f"AI lag {_ai_lag(hud):.0f} ms", _age_color(frac))
    if not show_mask:
        ai = (f"overlay off, {ai[0]}" if ai[0] else "overlay off", DIM_BGR if ai[1] == TEXT_BGR else ai[1])
    if ai[0]:
        lines["tl"].append(ai)
    # Top right: the video itself.
    video = []
    if hud.stream_id is not None:
        video.append(f"stream {hud.stream_id}")
    if hud.fps is not None:
        video.append(f"{hud.fps:.0f} fps")
    if hud.latency_ms is not None:
        video.append(f"video lag {hud.latency_ms:.0f} ms")
    if video:
        lines["tr"].append((", ".join(video), TEXT_BGR))
    # Bottom left: what the model skipped, notes, and ground truth apart from the clinical HUD.
    if hud.dropped > 0:
        lines["bl"].append((f"AI skipped {hud.dropped} frames", DIM_BGR))
    if hud.note:
        lines["bl"].append((hud.note, NOTE_BGR))
    if hud.dice is not None:
        lines["bl"].append((f"ground truth: mean Dice {hud.dice:.2f}", GT_BGR))
    # Bottom right, permanently: this is not a medical device.
    lines["br"].append((RESEARCH_LABEL, NOTE_BGR))
    return lines


def _draw_hud(out: np.ndarray, hud: HudInfo, show_mask: bool, has_mask: bool, scale: float,
              thick: int, shown_mask: np.ndarray | None = None) -> None:
    """One line per corner (more rows only bottom left: notes and ground truth), each fitted to
    half the width so it can neither wrap nor reach the other corner. "RESEARCH USE ONLY" goes
    bottom right unless the shown mask is there; then to the first free spot of: above the
    bottom-left lines, under the top-right line."""
    half = out.shape[1] // 2 - 16
    aging = bool(hud.stale_ms) and hud.mask_age_ms is not None and not hud.paused and not hud.no_model
    lines = hud_lines(hud, show_mask=show_mask, has_mask=has_mask)
    ruo = lines.pop("br")
    for corner, rows in lines.items():
        for i, (text, color) in enumerate(rows):
            x0, _, _, y1 = _corner_text(out, text, corner, i, scale, thick, color, half)
            if corner == "tl" and i == 0 and aging:
                _staleness_bar(out, (x0, y1), hud.mask_age_ms / hud.stale_ms, color, scale, thick)
    spots = [("br", 0), ("bl", len(lines["bl"])), ("tr", len(lines["tr"]))]
    corner, row = spots[0]
    if shown_mask is not None:
        def covered(spot: tuple[str, int]) -> int:
            x0, y0, x1, y1 = _corner_place(out.shape, ruo[0][0], *spot, scale, thick, half)[3]
            return int(shown_mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)].sum())

        corner, row = min(spots, key=lambda sp: (covered(sp) > 0, spots.index(sp)))
    _corner_text(out, ruo[0][0], corner, row, scale, thick, ruo[0][1], half)


def _staleness_bar(out: np.ndarray, origin: tuple[int, int], frac: float, color: tuple[int, int, int],
                   scale: float, thick: int) -> None:
    """The staleness cue under "AI lag": a bar that grows with the mask's age, full at the pause
    limit, on a grey track of fixed length so its growth reads at a glance."""
    x0, y0 = origin
    full = cv2.getTextSize("AI lag 000 ms", _FONT, scale, thick)[0][0] + 4
    h = max(2, thick + 1)
    cv2.rectangle(out, (x0, y0), (x0 + full, y0 + h), (70, 70, 70), cv2.FILLED)
    w = int(round(full * min(1.0, max(0.0, frac))))
    if w > 0:
        cv2.rectangle(out, (x0, y0), (x0 + w, y0 + h), color, cv2.FILLED)
