"""Frame -> model input: find the endoscope's field of view, crop it, resize, normalise.

Pure numpy/OpenCV (no torch), shared by training, live inference and batch jobs so the
network always sees frames prepared the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

# One [-1, 1] scaling for every encoder; the EfficientNet encoder turns it into the ImageNet
# normalisation its weights expect inside the graph (two folded constants, model/encoder.py).
_SCALE = np.float32(1.0 / 127.5)


def find_fov(image_bgr: np.ndarray, *, threshold: int = 20, min_fraction: float = 0.5) -> tuple[int, int, int, int]:
    """Bounding box ``(x0, y0, x1, y1)`` of the bright field of view, excluding the black border.

    Works on a 1/8-size copy, so it costs well under a millisecond at 1080p. Falls back to the
    whole frame when the bright area is implausibly small (a dark frame, a blank screen).
    """
    h, w = image_bgr.shape[:2]
    step = max(1, min(h, w) // 96)
    small = image_bgr[::step, ::step]
    bright = small.max(axis=2) > threshold if small.ndim == 3 else small > threshold
    rows = np.flatnonzero(bright.mean(axis=1) > 0.08)
    cols = np.flatnonzero(bright.mean(axis=0) > 0.08)
    if rows.size == 0 or cols.size == 0:
        return 0, 0, w, h
    x0, x1 = int(cols[0] * step), int(min(w, (cols[-1] + 1) * step))
    y0, y1 = int(rows[0] * step), int(min(h, (rows[-1] + 1) * step))
    if (x1 - x0) * (y1 - y0) < min_fraction * w * h * 0.5 or x1 - x0 < 16 or y1 - y0 < 16:
        return 0, 0, w, h
    return x0, y0, x1, y1


def to_input(image_bgr: np.ndarray, size: int, fov: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Crop ``fov`` and resize to ``size`` x ``size``; returns 1x3xSxS float32 RGB in [-1, 1]."""
    x0, y0, x1, y1 = fov if fov is not None else (0, 0, image_bgr.shape[1], image_bgr.shape[0])
    crop = image_bgr[y0:y1, x0:x1]
    resized = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    # (x - 127.5) / 127.5 with BGR -> RGB and HWC -> NCHW in one pass (the numpy chain made four
    # passes over the frame: 2.4 vs 1.3 ms, a tenth of the INT8 segment call)
    return cv2.dnn.blobFromImage(resized, scalefactor=float(_SCALE), mean=(127.5, 127.5, 127.5), swapRB=True)


def paste_prob(prob_small: np.ndarray, frame_hw: tuple[int, int], fov: tuple[int, int, int, int]) -> np.ndarray:
    """Resize a model-grid probability map into the FOV box of a frame of size ``frame_hw``."""
    h, w = frame_hw
    x0, y0, x1, y1 = fov
    out = np.zeros((h, w), np.float32)
    out[y0:y1, x0:x1] = cv2.resize(prob_small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    return out
