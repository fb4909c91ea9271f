"""Pure drawing: a BGR frame plus a prediction and a heads-up display -> an overlay image.

Nothing here keeps state or decides policy: the caller says whether the mask is stale
(``HudInfo.paused``), which prediction to show and how opaque. Runs per frame at 30 fps, so
everything is OpenCV calls on the frame (blending only inside the mask's bounding box), never
a Python loop over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from endostream.types import Prediction

RESEARCH_LABEL = "RESEARCH USE ONLY"
MASK_BGR = (0, 220, 0)       # green: the colour endoscopy CADe systems use for "finding"
CONTOUR_BGR = (0, 255, 255)  # yellow contour stays visible on red mucosa and on the green fill
BOX_BGR = (255, 200, 0)
PAUSED_BGR = (0, 0, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class HudInfo:
    """What the heads-up line shows. ``None`` fields are left out.

    fps: displayed frames per second; latency_ms: capture -> overlay, milliseconds;
    dropped: frames dropped so far; mask_age_ms: age of the shown mask, milliseconds;
    paused: the caller judged the mask stale -> hide it and show "AI paused";
    dice: running Dice against ground truth in [0, 1]; note: extra text, e.g.
    "UNTRAINED WEIGHTS"; stream_id: shown when not None.
    """

    fps: float | None = None
    latency_ms: float | None = None
    dropped: int = 0
    mask_age_ms: float | None = None
    paused: bool = False
    dice: float | None = None
    note: str = ""
    stream_id: int | None = None


def _scale(height: int) -> tuple[float, int]:
    """Font scale and line thickness readable from 288p to 2160p."""
    scale = max(0.35, height / 900.0)
    return scale, max(1, int(round(scale * 2)))


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, thick: int,
          color: tuple[int, int, int], bg: bool = True) -> int:
    """Text with a filled dark backing so it reads on any tissue; returns its width (px)."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thick)
    x, y = org
    if bg:
        cv2.rectangle(img, (x - 2, y - h - 3), (x + w + 2, y + base + 1), (0, 0, 0), cv2.FILLED)
    cv2.putText(img, text, (x, y), _FONT, scale, color, thick, cv2.LINE_AA)
    return w


def _wrap(parts: list[str], max_w: int, scale: float, thick: int) -> list[str]:
    """Join HUD parts with " | " into as few lines as fit ``max_w`` pixels."""
    lines: list[str] = []
    for part in parts:
        cand = f"{lines[-1]} | {part}" if lines else part
        if lines and cv2.getTextSize(cand, _FONT, scale, thick)[0][0] <= max_w:
            lines[-1] = cand
        else:
            lines.append(part)
    return lines


def _blend_mask(out: np.ndarray, mask_u8: np.ndarray, opacity: float, color: tuple[int, int, int]) -> None:
    """Alpha-blend ``color`` into ``out`` where ``mask_u8`` is set, in place, inside its bbox only."""
    x, y, w, h = cv2.boundingRect(mask_u8)
    if w == 0 or h == 0:
        return
    roi = out[y:y + h, x:x + w]
    tint = np.empty_like(roi)
    tint[:] = tuple(int(c) for c in color)  # also accepts a config ListConfig
    blended = cv2.addWeighted(roi, 1.0 - opacity, tint, opacity, 0.0)
    # roi is a strided view into out; OpenCV writes through it (20x faster than np.copyto(where=)).
    cv2.copyTo(blended, mask_u8[y:y + h, x:x + w], dst=roi)


def draw_overlay(
    image_bgr: np.ndarray,
    prediction: Prediction | None,
    *,
    hud: HudInfo,
    opacity: float = 0.4,
    show_mask: bool = True,
    color: tuple[int, int, int] = MASK_BGR,
) -> np.ndarray:
    """Draw mask, contour, box, presence, HUD and labels on a copy of ``image_bgr``.

    Args:
        image_bgr: HxWx3 uint8 BGR frame (not modified).
        prediction: the mask to show (its ``mask`` is HxW bool in any size; resized with
            nearest-neighbour if it differs from the frame), or ``None`` for no mask yet.
        hud: heads-up display values; ``hud.paused`` hides the mask and shows "AI paused".
        opacity: mask fill opacity in [0, 1].
        show_mask: False hides mask, contour and box (the overlay-off switch); the HUD stays.
        color: mask fill colour, BGR.

    Returns:
        HxWx3 uint8 BGR image, a new array.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"draw_overlay: expected HxWx3 uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
    out = image_bgr.copy()
    height, width = out.shape[:2]
    scale, thick = _scale(height)
    line_h = int(cv2.getTextSize("Ag", _FONT, scale, thick)[0][1] * 1.9) + 2
    opacity = float(min(max(opacity, 0.0), 1.0))

    if prediction is not None and show_mask and not hud.paused:
        mask = prediction.mask
        if mask.shape != (height, width):
            mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
        mask_u8 = mask.view(np.uint8) if mask.dtype == np.bool_ else (mask > 0).astype(np.uint8)
        if mask_u8.any():
            _blend_mask(out, mask_u8, opacity, color)
            contours, _ = cv2.findContours(mask_u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, CONTOUR_BGR, thick, cv2.LINE_AA)
        if prediction.box is not None:
            x0, y0, x1, y1 = (int(v) for v in prediction.box)
            sx = width / prediction.mask.shape[1]
            sy = height / prediction.mask.shape[0]
            x0, x1, y0, y1 = int(x0 * sx), int(x1 * sx), int(y0 * sy), int(y1 * sy)
            cv2.rectangle(out, (x0, y0), (x1, y1), BOX_BGR, thick, cv2.LINE_AA)
            _text(out, f"polyp {prediction.presence:.2f}", (x0 + 2, max(line_h, y0 - 4)),
                  scale, thick, BOX_BGR)

    # Heads-up line, top left: everything a clinician needs to trust (or not) the overlay.
    parts = []
    if hud.stream_id is not None:
        parts.append(f"S{hud.stream_id}")
    if hud.fps is not None:
        parts.append(f"{hud.fps:.1f} fps")
    if hud.latency_ms is not None:
        parts.append(f"lat {hud.latency_ms:.0f} ms")
    parts.append(f"drop {hud.dropped}")
    if hud.mask_age_ms is not None:
        parts.append(f"mask {hud.mask_age_ms:.0f} ms")
    if prediction is not None:
        parts.append(f"p {prediction.presence:.2f}")
    if hud.dice is not None:
        parts.append(f"Dice {hud.dice:.3f}")
    y = line_h - 4
    for line in _wrap(parts, width - 8, scale, thick):
        _text(out, line, (4, y), scale, thick, (255, 255, 255))
        y += line_h
    if hud.paused:
        _text(out, "AI paused", (4, y), scale * 1.2, thick + 1, PAUSED_BGR)
        y += line_h
    elif not show_mask:
        _text(out, "overlay off", (4, y), scale, thick, (200, 200, 200))
        y += line_h
    if hud.note:
        _text(out, hud.note, (4, y), scale, thick, (0, 200, 255))

    # Permanent label, bottom right: this is not a medical device.
    (lw, _), _ = cv2.getTextSize(RESEARCH_LABEL, _FONT, scale, thick)
    _text(out, RESEARCH_LABEL, (max(2, width - lw - 6), height - 6), scale, thick, (0, 200, 255))
    return out
