"""A degraded current frame for the temporal memory to see through (issue #24, item 3).

In a real procedure a frame in the middle of a polyp is now and then ruined: the scope moves
fast (motion blur), the light bounces off wet mucosa (a flash of over-exposure), or water and
bubbles cover the lens. The past frames in the memory are still clean, so the fused features
can carry the polyp through; the network learns that only if some training clips have such a
current frame under a clean memory. Blur and flash are albumentations' and the bubbles are
translucent ellipses drawn here; the probe that scores it (tools/temporal_probe.py) draws its
own three kinds differently, so it does not grade the exact pixels it trained on.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations calls home otherwise

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

KINDS = ("motion_blur", "flash", "bubbles")


class FrameCorruption:
    """One of ``KINDS``, chosen uniformly, applied to a ``size`` x ``size`` uint8 image."""

    def __init__(self, size: int, seed: int | None = None) -> None:
        self.blur = A.Compose([A.MotionBlur(blur_limit=(max(9, size // 20) | 1, max(15, size // 8) | 1), p=1.0)],
                              seed=seed)
        self.flash = A.Compose([  # over-exposure with a bright specular patch
            A.RandomBrightnessContrast(brightness_limit=(0.25, 0.5), contrast_limit=(0.1, 0.4), p=1.0),
            A.RandomSunFlare(flare_roi=(0.2, 0.2, 0.8, 0.8), src_radius=max(8, size // 3),
                             num_flare_circles_range=(1, 3), p=1.0),
        ], seed=seed)

    def __call__(self, image: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
        """``image`` (H, W, 3) uint8 degraded; a new array of the same shape and dtype."""
        kind = kind or KINDS[int(rng.integers(len(KINDS)))]
        if kind == "motion_blur":
            return self.blur(image=image)["image"]
        if kind == "flash":
            return self.flash(image=image)["image"]
        if kind == "bubbles":
            return bubbles(image, rng)
        raise ValueError(f"unknown corruption {kind!r}; expected one of {KINDS}")


def bubbles(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Translucent whitish ellipses with bright rims, as water and air on the lens."""
    h, w = image.shape[:2]
    fill = image.copy()
    rims = np.zeros_like(image)
    for _ in range(int(rng.integers(6, 20))):
        c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        axes = (int(rng.uniform(0.02, 0.1) * w), int(rng.uniform(0.02, 0.1) * h))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(fill, c, axes, angle, 0, 360, (235, 240, 240), -1, cv2.LINE_AA)
        cv2.ellipse(rims, c, axes, angle, 200, 340, (255, 255, 255), int(rng.integers(1, 4)), cv2.LINE_AA)
    alpha = float(rng.uniform(0.2, 0.45))
    out = cv2.addWeighted(image, 1 - alpha, fill, alpha, 0)
    return np.maximum(out, rims)
