"""Augmentation with albumentations, applied with the same random parameters to every frame of
a clip (additional targets), plus smooth simulated camera motion for clips made from stills."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations calls home otherwise

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402


def build_augment(size: int, frames: int, seed: int | None = None) -> A.Compose:
    """Geometric + photometric pipeline to ``size`` x ``size``; zoom-out (scale < 1) makes small
    polyps, colour/gamma/blur/compression stand in for other cameras and hospitals."""
    targets = {}
    for j in range(1, frames):
        targets[f"image{j}"] = "image"
        targets[f"mask{j}"] = "mask"
    return A.Compose(
        [
            A.Affine(scale=(0.5, 1.3), translate_percent=(-0.12, 0.12), rotate=(-35, 35), shear=(-6, 6),
                     border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.85),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomResizedCrop(size=(size, size), scale=(0.45, 1.0), ratio=(0.75, 1.33), p=1.0),
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.35, hue=0.06, p=0.8),
            # other endoscopes: white-balance casts and low-resolution sensors scaled up
            A.RGBShift(r_shift_limit=(-25, 25), g_shift_limit=(-15, 15), b_shift_limit=(-25, 25), p=0.3),
            A.Downscale(scale_range=(0.35, 0.8), p=0.2),
            A.RandomGamma(gamma_limit=(70, 150), p=0.3),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 7)), A.MotionBlur(blur_limit=(3, 7))], p=0.3),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.2),
            A.ImageCompression(quality_range=(35, 95), p=0.3),
        ],
        additional_targets=targets,
        seed=seed,  # a sampler's seed makes its batches reproducible
    )


def camera_motion(rng: np.random.Generator, frames: int, size: int) -> list[np.ndarray]:
    """Affine 2x3 matrices for ``frames`` frames, oldest first, ending at the identity.

    One random end-to-end motion (shift, rotation, zoom) interpolated linearly over time, so
    consecutive frames move smoothly like a slowly steered endoscope.
    """
    dx, dy = rng.uniform(-0.08, 0.08, 2) * size
    rot = rng.uniform(-8, 8)
    zoom = rng.uniform(-0.1, 0.1)
    mats = []
    for j in range(frames):
        f = (frames - 1 - j) / max(1, frames - 1)  # 1 for the oldest frame, 0 for the current one
        m = cv2.getRotationMatrix2D((size / 2, size / 2), rot * f, 1.0 + zoom * f)
        m[:, 2] += (dx * f, dy * f)
        mats.append(m)
    return mats


def warp(image: np.ndarray, mask: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[1], image.shape[0]
    return (cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT),
            cv2.warpAffine(mask, m, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT))
