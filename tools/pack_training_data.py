"""Pack the training data small enough to travel to a GPU machine with the repository.

    python tools/pack_training_data.py [--data ../shared/data] [--out .pack/data] [--size 416] [--quality 80]

The device tool sends the working tree and at most 64 MiB in all, and ``../shared/data`` (about
96 MB) does not travel. This writes the layout ``endostream train`` reads (``data.root``): every
Kvasir-SEG image, every CVC-ClinicDB frame and the laparoscopy negatives, each cropped to its
field of view with the live path's ``find_fov`` and resized to a square of ``--size`` (what
``data.cache_size`` caches anyway), images as WebP, masks as PNG (binarised at 127, lossless).
About 21 MiB at the defaults. Training on a pack is training on slightly different pixels (WebP at
quality 80, already cropped): score what comes back with ``endostream eval`` on the originals here.

Research-only data: the pack goes to a folder git ignores (``.pack/``), never into a commit.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from endostream.training.dataset import clinicdb_rows, file_for, image_files, load_square  # noqa: E402

NEGATIVES = Path("laparoscopy/cholec-instance-seg-sample/images")


def write(path: Path, img: np.ndarray, params: list[int] | None = None) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img, params or []):
        raise SystemExit(f"pack: cannot write {path}")
    return path.stat().st_size


def pack(data: Path, out: Path, size: int = 416, quality: int = 80) -> dict[str, int]:
    """Write the pack; returns {"images": n, "bytes": total}."""
    if not (data / "kvasir-seg").is_dir():
        raise SystemExit(f"pack: no kvasir-seg under {data}")
    webp = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    count = total = 0
    for ip in image_files(data / "kvasir-seg/images"):
        img, m = load_square(ip, file_for(data / "kvasir-seg/masks", ip.stem), size)
        total += write(out / "kvasir-seg/images" / f"{ip.stem}.webp", img, webp)
        total += write(out / "kvasir-seg/masks" / f"{ip.stem}.png", m * 255)
        count += 1
    rows = []
    for fid, seq, ip, mp in clinicdb_rows(data / "cvc-clinicdb"):
        img, m = load_square(ip, mp, size)
        total += write(out / "cvc-clinicdb/images" / f"{fid}.webp", img, webp)
        total += write(out / "cvc-clinicdb/masks" / f"{fid}.png", m * 255)
        rows.append({"frame_id": fid, "sequence_id": seq, "image": f"images/{fid}.webp", "mask": f"masks/{fid}.png"})
        count += 1
    (out / "cvc-clinicdb").mkdir(parents=True, exist_ok=True)
    with open(out / "cvc-clinicdb/sequences.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["frame_id", "sequence_id", "image", "mask"])
        w.writeheader()
        w.writerows(rows)
    for ip in image_files(data / NEGATIVES):
        img, _ = load_square(ip, None, size)
        total += write(out / NEGATIVES / f"{ip.stem}.webp", img, webp)
        count += 1
    (out / "README.md").write_text(
        f"Packed by tools/pack_training_data.py from {data} (size {size}, WebP quality {quality}).\n"
        "Research use only: the terms and credits of ../shared/data/README.md apply. Never commit.\n")
    return {"images": count, "bytes": total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default=".pack/data")
    ap.add_argument("--size", type=int, default=416, help="square side; train with data.cache_size at most this")
    ap.add_argument("--quality", type=int, default=80, help="WebP quality of the images")
    a = ap.parse_args()
    r = pack(Path(a.data), Path(a.out), a.size, a.quality)
    print(f"packed {r['images']} images into {a.out}: {r['bytes'] / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
