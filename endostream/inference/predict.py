"""`endostream predict input=DIR output=DIR`: one 0/255 mask PNG per input image, at its size.

Never deletes anything in the output folder. ``sequence=true`` streams the folder in natural
order through one temporal memory (with warm start); the default treats images independently.
SIGINT/SIGTERM: stops after the image in hand; one line says how many masks were written where.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from endostream.fileutil import atomic_write_bytes
from endostream.inference.segmenter import load_segmenter
from endostream.capture.sources import IMAGE_EXTS, image_files
from endostream.interrupt import StopRequest


def list_images(folder: Path, key: str = "input") -> list[Path]:
    """Image files of ``folder`` in natural order (the same listing as folder sources), or
    ``folder`` itself when it is one image file. ``key`` is the override the user typed
    (``input`` for predict, ``images`` for eval), so the error names it."""
    if folder.is_file():
        if not folder.name.lower().endswith(IMAGE_EXTS):
            raise ValueError(f"{key}={folder} is not an image (png/jpg/bmp/tif) nor a folder of images")
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"{key} folder not found: {folder} "
                                f"({key}= takes a folder of images or one image file)")
    return [Path(p) for p in image_files(folder) if Path(p).is_file()]


def run(cfg) -> int:
    src, dst = Path(cfg.input), Path(cfg.output)
    images = list_images(src)
    if not images:
        raise FileNotFoundError(f"no images (png/jpg/bmp/tif) in {src}")
    dst.mkdir(parents=True, exist_ok=True)
    with StopRequest() as stop:
        seg = load_segmenter(**cfg.model)
        written, failed = _predict_all(seg, images, dst, bool(cfg.sequence), stop)
    if stop.requested:
        print(f"predict: stopped by {stop.requested}: {written} of {len(images)} masks written to {dst}",
              flush=True)
        return stop.exit_code
    print(f"predict: {written} masks written to {dst}" + (f", {failed} unreadable" if failed else ""))
    return 1 if failed else 0


def _predict_all(seg, images: list[Path], dst: Path, sequence: bool, stop: StopRequest) -> tuple[int, int]:
    """Masks for ``images`` until done or stopped; (written, unreadable)."""
    written = failed = 0
    for p in images:
        if stop.is_set():
            break
        if not sequence:
            seg.reset()
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            print(f"predict: skipped unreadable image {p}", file=sys.stderr)
            failed += 1
            continue
        mask = seg.segment(img).mask.astype(np.uint8) * 255
        ok, png = cv2.imencode(".png", mask)
        atomic_write_bytes(dst / f"{p.stem}.png", png.tobytes())
        written += 1
    return written, failed
