"""Where the per-pixel uncertainty sits relative to the predicted mask's border (shared by
tests/test_uncertainty.py and tools/pin_reference.py, so the pinned ratios mean the same thing)."""

from __future__ import annotations

import cv2
import numpy as np

from endostream.inference.preprocess import find_fov
from endostream.types import Prediction


def regions(mask: np.ndarray, fov: tuple[int, int, int, int], band: float) -> dict[str, np.ndarray]:
    """Boolean maps inside the field of view: ``band`` (within ``band`` frame pixels of the
    predicted border, either side), ``interior`` (mask, over 2 x band from the border) and
    ``background`` (not mask, over 2 x band from it)."""
    x0, y0, x1, y1 = fov
    inside = np.zeros(mask.shape, bool)
    inside[y0:y1, x0:x1] = True
    m = mask.astype(np.uint8)
    d_in = cv2.distanceTransform(m, cv2.DIST_L2, 3)       # inside: distance to the background
    d_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)  # outside: distance to the mask
    on = mask.astype(bool)
    return {"band": inside & ((on & (d_in <= band)) | (~on & (d_out <= band))),
            "interior": inside & on & (d_in > 2 * band),
            "background": inside & ~on & (d_out > 2 * band)}


def band_ratios(pred: Prediction, image_bgr: np.ndarray, band_px: int, grid: int = 80) -> dict[str, float]:
    """Mean uncertainty in the border band over the interior's and over the background's.
    ``band_px`` is in model-grid pixels (``grid`` across the field of view), scaled to the frame."""
    if pred.uncertainty is None or not pred.mask.any():
        raise ValueError("needs a prediction with uncertainty and a non-empty mask")
    fov = find_fov(image_bgr)
    band = band_px * (fov[2] - fov[0]) / grid
    r = regions(pred.mask, fov, band)
    u = pred.uncertainty
    mean = {k: float(u[v].mean()) if v.any() else np.nan for k, v in r.items()}
    eps = 1e-6
    return {"interior": mean["band"] / max(mean["interior"], eps),
            "background": mean["band"] / max(mean["background"], eps), **{f"mean_{k}": v for k, v in mean.items()}}
