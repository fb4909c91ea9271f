"""Batches of short clips (T past frames + the current one) for training.

ClinicDB frames use their real sequence neighbours; stills get simulated camera motion.
Negatives (no polyp) are crops away from the polyp, or laparoscopic frames; their presence
target is 0 and their mask is empty. Everything runs in the main process: on 2 cores a loader
worker competes with the two compute threads and slowed training (baseline run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from endostream.training.augment import build_augment, camera_motion, warp
from endostream.training.corruptions import FrameCorruption
from endostream.training.dataset import Sample
from endostream.training.endoscope_look import apply_look, draw_look
from endostream.training.hard_examples import HardnessTable


@dataclass
class ClipBatch:
    images: np.ndarray  # (B, T+1, 3, S, S) float32 RGB in [-1, 1], oldest first, current last
    masks: np.ndarray  # (B, T+1, 1, S, S) float32 {0, 1}
    valid: np.ndarray  # (B, T) float32: which past slots hold a frame
    presence: np.ndarray  # (B,) float32
    box: np.ndarray  # (B, 4) float32 normalised (cx, cy, w, h) of the current mask
    indices: np.ndarray | None = None  # (B,) int: the training image of each clip, -1 for a negative


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Normalised (cx, cy, w, h) of all foreground pixels; zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return np.zeros(4, np.float32)
    h, w = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return np.array([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h], np.float32)


def negative_crop(sample: Sample, rng: np.random.Generator) -> Sample | None:
    """A crop of ``sample`` that contains no polyp pixel, or None when no such crop fits."""
    size = sample.image.shape[0]
    for _ in range(8):
        c = int(rng.uniform(0.35, 0.6) * size)
        x, y = rng.integers(0, size - c + 1, 2)
        if sample.mask[y:y + c, x:x + c].sum() == 0:
            import cv2

            img = cv2.resize(sample.image[y:y + c, x:x + c], (size, size), interpolation=cv2.INTER_LINEAR)
            return Sample(sample.name + "_neg", "negative", img, np.zeros_like(sample.mask))
    return None


class ClipSampler:
    def __init__(self, train: list[Sample], negatives: list[Sample], *, size: int, past: int,
                 negative_p: float = 0.12, seed: int = 0, look_p: float = 0.0,
                 hardness: HardnessTable | None = None, corrupt_p: float = 0.0) -> None:
        if not 0.0 <= corrupt_p <= 1.0:
            raise ValueError(f"train.corrupt_current_p must be within [0, 1], got {corrupt_p}")
        self.train, self.negatives = train, negatives
        # share of clips with a past frame whose current frame is degraded (corruptions.py)
        self.corrupt_p = corrupt_p
        self.corruption = FrameCorruption(size, seed) if corrupt_p > 0 else None
        self.corrupt_rng = np.random.default_rng(seed + 1)  # its own draws: the clean clips stay as they were
        self.hardness = hardness  # shared by every sampler of a run; None draws uniformly
        self.look_p = look_p  # scales the other-endoscope looks (endoscope_look.py); 0 = none
        self.size, self.past, self.negative_p = size, past, negative_p
        self.rng = np.random.default_rng(seed)
        self.augment = build_augment(size, past + 1, seed)
        # position of each ClinicDB frame inside its sequence, for real temporal neighbours
        self.prev_index: dict[int, int] = {}
        for i, s in enumerate(train):
            if i > 0 and s.sequence >= 0 and train[i - 1].sequence == s.sequence:
                self.prev_index[i] = i - 1

    def _frames(self, idx: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
        """Raw (image, mask) pairs oldest first, and whether this is a negative clip."""
        rng = self.rng
        if rng.random() < self.negative_p:
            neg = None
            if self.negatives and rng.random() < 0.35:
                neg = self.negatives[rng.integers(len(self.negatives))]
            else:
                neg = negative_crop(self.train[idx], rng)
            if neg is not None:
                mats = camera_motion(rng, self.past + 1, neg.image.shape[0])
                return [warp(neg.image, neg.mask, m) for m in mats], True
        s = self.train[idx]
        chain = [idx]
        while len(chain) <= self.past and chain[-1] in self.prev_index and rng.random() < 0.7:
            chain.append(self.prev_index[chain[-1]])
        if len(chain) == self.past + 1:
            return [(self.train[i].image, self.train[i].mask) for i in reversed(chain)], False
        mats = camera_motion(rng, self.past + 1, s.image.shape[0])
        return [warp(s.image, s.mask, m) for m in mats], False

    def batch(self, batch_size: int) -> ClipBatch:
        T, S = self.past, self.size
        images = np.empty((batch_size, T + 1, 3, S, S), np.float32)
        masks = np.empty((batch_size, T + 1, 1, S, S), np.float32)
        valid = np.zeros((batch_size, T), np.float32)
        presence = np.zeros(batch_size, np.float32)
        box = np.zeros((batch_size, 4), np.float32)
        indices = np.full(batch_size, -1, np.int64)
        for b in range(batch_size):
            idx = self.hardness.pick(self.rng) if self.hardness is not None else int(self.rng.integers(len(self.train)))
            frames, negative = self._frames(idx)
            indices[b] = -1 if negative else idx
            kw = {"image": frames[-1][0], "mask": frames[-1][1]}
            for j in range(T):
                kw[f"image{j + 1}"], kw[f"mask{j + 1}"] = frames[j]
            out = self.augment(**kw)
            seq = [(out[f"image{j + 1}"], out[f"mask{j + 1}"]) for j in range(T)] + [(out["image"], out["mask"])]
            if self.look_p > 0:
                look = draw_look(self.rng, S, self.look_p)
                seq = [apply_look(img, m, look) for img, m in seq]
            for j, (img, m) in enumerate(seq):
                images[b, j] = img[:, :, ::-1].transpose(2, 0, 1) * (1 / 127.5) - 1.0
                masks[b, j, 0] = m
            # how many past frames this clip offers: 0..T, so cold starts are trained too
            n_valid = int(self.rng.choice(T + 1, p=_valid_probs(T)))
            if n_valid:
                valid[b, T - n_valid:] = 1.0
                if self.corruption is not None and self.corrupt_rng.random() < self.corrupt_p:
                    # the memory stays clean; the target stays the true mask of the ruined frame
                    bad = self.corruption(np.ascontiguousarray(seq[-1][0]), self.corrupt_rng)
                    images[b, -1] = bad[:, :, ::-1].transpose(2, 0, 1) * (1 / 127.5) - 1.0
            cur = seq[-1][1]
            presence[b] = float(not negative and cur.any())
            box[b] = mask_box(cur) if presence[b] else 0.0
        return ClipBatch(images, masks, valid, presence, box, indices)


def _valid_probs(t: int) -> np.ndarray:
    p = np.ones(t + 1)
    p[0] = 0.5  # fewer cold starts than full memories; the stream's first frame is rarer
    p[-1] = 2.0
    return p / p.sum()
