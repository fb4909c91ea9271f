"""Looks of other endoscopes that the training cameras lack, drawn once per clip so every frame
of a clip gets the same ones: vignetting, specular highlights, a round or octagonal field of
view, on-screen text and interlacing. The held-out sets are other hospitals' cameras; these are
the differences that show in their frames and that albumentations has no transform for."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class LookParams:
    vignette: float = 0.0  # darkening at the corners (0: none)
    spots: list[tuple[int, int, int, int, float]] = field(default_factory=list)  # x, y, ax, ay, angle
    fov: tuple[str, float] | None = None  # ("circle" | "octagon", radius as a share of the size)
    text: tuple[str, int, int, float] | None = None  # string, x, y, scale
    interlace: int = 0  # horizontal shift of odd rows in pixels


def draw_look(rng: np.random.Generator, size: int, p: float = 1.0) -> LookParams:
    """Random parameters; ``p`` scales every effect's probability (0 turns them all off)."""
    lp = LookParams()
    if rng.random() < 0.3 * p:
        lp.vignette = float(rng.uniform(0.2, 0.6))
    if rng.random() < 0.4 * p:
        for _ in range(int(rng.integers(1, 8))):
            x, y = rng.integers(0, size, 2)
            ax, ay = rng.integers(1, max(2, size // 40), 2)
            lp.spots.append((int(x), int(y), int(ax), int(ay), float(rng.uniform(0, 180))))
    if rng.random() < 0.25 * p:
        lp.fov = (str(rng.choice(["circle", "octagon"])), float(rng.uniform(0.45, 0.62)))
    if rng.random() < 0.2 * p:
        text = "".join(rng.choice(list("0123456789:/ ABCDEFGH"), int(rng.integers(4, 12))))
        lp.text = (text, int(rng.integers(0, size // 2)), int(rng.integers(size // 12, size)),
                   float(rng.uniform(0.3, 0.7)))
    if rng.random() < 0.1 * p:
        lp.interlace = int(rng.integers(1, 4))
    return lp


def _fov_mask(kind: str, radius: float, size: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    r = radius * size
    c = size / 2
    if kind == "circle":
        cv2.circle(m, (int(c), int(c)), int(r), 1, -1)
    else:
        ang = np.deg2rad(22.5 + 45 * np.arange(8))
        pts = np.stack([c + r * 1.08 * np.cos(ang), c + r * 1.08 * np.sin(ang)], 1).astype(np.int32)
        cv2.fillConvexPoly(m, pts, 1)
    return m


def apply_look(image: np.ndarray, mask: np.ndarray, lp: LookParams) -> tuple[np.ndarray, np.ndarray]:
    """uint8 BGR (S, S, 3) and {0,1} mask (S, S) -> the same with the look applied. Outside the
    field of view the mask is cleared too: the ground truth marks only what can be seen."""
    size = image.shape[0]
    out = image.astype(np.float32)
    if lp.vignette:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2 / 2
        out *= (1.0 - lp.vignette * r2)[..., None]
    if lp.spots:
        glare = np.zeros((size, size), np.float32)
        for x, y, ax, ay, angle in lp.spots:
            cv2.ellipse(glare, (x, y), (ax, ay), angle, 0, 360, 1.0, -1)
        glare = cv2.GaussianBlur(glare, (0, 0), 1.2)
        out = out * (1 - glare[..., None]) + 255.0 * glare[..., None]
    if lp.interlace:
        out[1::2] = np.roll(out[1::2], lp.interlace, axis=1)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if lp.fov is not None:
        keep = _fov_mask(lp.fov[0], lp.fov[1], size)
        out *= keep[..., None]
        mask = mask * keep.astype(mask.dtype)
    if lp.text is not None:
        text, x, y, scale = lp.text
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return out, mask
