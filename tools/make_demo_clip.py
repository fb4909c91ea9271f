"""Build the bundled demo clip from CVC-ClinicDB validation sequences, with ground truth.

ClinicDB sequences are sparse (a few frames per second of the original video), so each
source frame is held for ``--hold`` output frames while a smooth simulated camera motion
(zoom, rotation, drift; keyframes eased with a cosine) runs continuously across the whole
clip. The same affine transform warps frame and mask, so the clip keeps exact ground truth.

Writes, into ``--out`` (default ``assets/demo``):
  clinicdb_demo.mp4        H.264 (libx264, yuv420p), 384x288, 25 fps
  clinicdb_demo_masks.mkv  the masks, FFV1 gray (lossless), one per video frame; the sidecar
                           that :func:`endostream.capture.sources.open_source` attaches as ``gt_mask``

Usage: python tools/make_demo_clip.py [--data ../shared/data/cvc-clinicdb] [--sequences 19 23]
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# Validation sequences agreed with the model's training split (never trained on).
VALIDATION_SEQUENCES = (3, 7, 11, 15, 19, 23)
MAX_BYTES = 3 * 1024 * 1024


def load_sequence(data: Path, seq_ids: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image HxWx3 uint8 BGR, mask HxW uint8 {0,255}) pairs, in sequence then time order."""
    with open(data / "sequences.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pairs = []
    for sid in seq_ids:
        for r in (r for r in rows if int(r["sequence_id"]) == sid):
            img = cv2.imread(str(data / r["image"]), cv2.IMREAD_COLOR)
            mask = cv2.imread(str(data / r["mask"]), cv2.IMREAD_GRAYSCALE)
            if img is None or mask is None:
                raise SystemExit(f"cannot read {r['image']} / {r['mask']} under {data}")
            pairs.append((img, np.where(mask > 127, 255, 0).astype(np.uint8)))
    if not pairs:
        raise SystemExit(f"no frames for sequences {seq_ids} in {data / 'sequences.csv'}")
    return pairs


def camera_path(n: int, rng: np.random.Generator, every: int = 40) -> np.ndarray:
    """n x 4 array of (zoom, angle_deg, dx_px, dy_px): random keyframes eased with a cosine.

    Zoom stays >= 1.05 so the warp never shows content from outside the frame at the
    corners; angles within +-6 degrees and drift within +-14 px look like a hand-held scope.
    """
    k = n // every + 2
    keys = np.stack([rng.uniform(1.05, 1.3, k), rng.uniform(-6, 6, k),
                     rng.uniform(-14, 14, k), rng.uniform(-10, 10, k)], axis=1)
    out = np.empty((n, 4))
    for i in range(n):
        j, frac = divmod(i / every, 1.0)
        w = 0.5 - 0.5 * math.cos(math.pi * frac)  # ease in/out: no velocity jumps at keyframes
        out[i] = (1 - w) * keys[int(j)] + w * keys[int(j) + 1]
    return out


def warp(img: np.ndarray, mask: np.ndarray, zoom: float, angle: float, dx: float, dy: float):
    """Same affine (about the centre) on image (bilinear) and mask (nearest: stays binary)."""
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom)
    m[:, 2] += (dx, dy)
    im = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mk = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return im, mk


def write_clip(frames, masks, video: Path, mask_video: Path, fps: int, crf: int) -> None:
    h, w = masks[0].shape
    with av.open(str(video), "w", options={"movflags": "+faststart"}) as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"crf": str(crf), "preset": "slow", "g": str(2 * fps)}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(mask_video), "w") as c:
        s = c.add_stream("ffv1", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "gray"
        for m in masks:
            for p in s.encode(av.VideoFrame.from_ndarray(m, format="gray")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cvc-clinicdb", help="CVC-ClinicDB folder")
    ap.add_argument("--sequences", type=int, nargs="+", default=[19, 23])
    ap.add_argument("--hold", type=int, default=5, help="output frames per source frame")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="assets/demo")
    args = ap.parse_args(argv)
    bad = [s for s in args.sequences if s not in VALIDATION_SEQUENCES]
    if bad:
        print(f"sequences {bad} are not validation sequences {VALIDATION_SEQUENCES}", file=sys.stderr)
        return 2

    pairs = load_sequence(Path(args.data), args.sequences)
    n = len(pairs) * args.hold
    path = camera_path(n, np.random.default_rng(args.seed))
    frames, masks = [], []
    for i in range(n):
        img, mask = pairs[i // args.hold]
        im, mk = warp(img, mask, *path[i])
        frames.append(im)
        masks.append(mk)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video, mask_video = out / "clinicdb_demo.mp4", out / "clinicdb_demo_masks.mkv"
    write_clip(frames, masks, video, mask_video, args.fps, args.crf)
    total = video.stat().st_size + mask_video.stat().st_size
    print(f"{video}: {n} frames {masks[0].shape[1]}x{masks[0].shape[0]} @ {args.fps} fps, "
          f"{video.stat().st_size / 1e6:.2f} MB; masks {mask_video.stat().st_size / 1e6:.2f} MB")
    if total > MAX_BYTES:
        print(f"clip is {total} bytes, over the {MAX_BYTES} limit; raise --crf", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
