"""Load the real polyp data once into memory, field of view cropped, with a split by patient.

Kvasir-SEG stills and CVC-ClinicDB sequences from ``../shared/data``. Every image is cropped to
its field of view with the same ``find_fov`` the live path uses, then resized to a square
cache size a little larger than the network input (augmentation crops from it).
Validation: 90 Kvasir images (seeded) and whole ClinicDB sequences, so no patient's sequence
sits on both sides of the split. A held-out source (``holdout``) is the cross-source check: none of
its images is trained on and all of them validate, as another hospital's camera would.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from endostream.inference.preprocess import find_fov

VAL_CLINIC_SEQUENCES = (3, 7, 11, 15, 19, 23)  # 6 of 24 sequences, spread over the set
VAL_KVASIR_COUNT = 90
# The datasets ship JPEG (Kvasir) and PNG (ClinicDB, laparoscopy); a pack for a GPU machine
# (tools/pack_training_data.py) holds WebP. A stem's file is found whatever its suffix.
IMAGE_SUFFIXES = (".jpg", ".png", ".webp")
SOURCES = ("kvasir", "clinicdb")  # the polyp sources; either can be held out whole


def image_files(folder: Path) -> list[Path]:
    """The images in ``folder`` (any of IMAGE_SUFFIXES), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def file_for(folder: Path, stem: str) -> Path:
    """``folder/stem.<suffix>`` for the first suffix present (the JPEG name when none is)."""
    return next((folder / f"{stem}{x}" for x in IMAGE_SUFFIXES if (folder / f"{stem}{x}").is_file()),
                folder / f"{stem}.jpg")


@dataclass
class Sample:
    """One still image (or one frame of a sequence) at cache size, plus its original for eval."""

    name: str
    source: str  # "kvasir" | "clinicdb" | "negative"
    image: np.ndarray  # CxC x3 uint8 BGR, FOV-cropped and resized
    mask: np.ndarray  # CxC uint8 {0,1}
    sequence: int = -1  # ClinicDB sequence id, -1 for stills
    original_path: str = ""
    mask_path: str = ""


@dataclass
class Splits:
    train: list[Sample] = field(default_factory=list)
    val: list[Sample] = field(default_factory=list)
    negatives: list[Sample] = field(default_factory=list)  # frames known to have no polyp


def read_mask(path: str | Path) -> np.ndarray:
    """Mask file -> HxW uint8 {0,1}; threshold 127 because the files are not clean binaries."""
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise FileNotFoundError(f"cannot read mask {path}")
    return (m > 127).astype(np.uint8)


def load_square(image_path: Path, mask_path: Path | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image cropped to its field of view and resized to size x size (BGR uint8), and its mask
    cropped and resized alike ({0,1}; zeros without ``mask_path``)."""
    img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {image_path}")
    x0, y0, x1, y1 = find_fov(img)
    img = cv2.resize(img[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)
    if mask_path is None:
        return img, np.zeros((size, size), np.uint8)
    m = read_mask(mask_path)[y0:y1, x0:x1]
    m = (cv2.resize(m * 255, (size, size), interpolation=cv2.INTER_LINEAR) > 127).astype(np.uint8)
    return img, m


def clinicdb_rows(root: Path) -> list[tuple[int, int, Path, Path]]:
    """(frame_id, sequence_id, image, mask) rows of ``sequences.csv`` in frame order."""
    with open(root / "sequences.csv") as f:
        rows = [(int(r["frame_id"]), int(r["sequence_id"]), root / r["image"], root / r["mask"]) for r in csv.DictReader(f)]
    return sorted(rows)


def load_splits(data_root: str | Path, cache_size: int = 320, seed: int = 0, val_only: bool = False,
                holdout: str | None = None) -> Splits:
    """Training and validation samples; ``holdout`` (one of SOURCES) moves that whole source to
    validation, so its Dice is a cross-source figure."""
    root = Path(data_root)
    if not (root / "kvasir-seg").is_dir():
        raise FileNotFoundError(f"no kvasir-seg under {root}: pass data.root=<path to shared/data>")
    if holdout is not None and holdout not in SOURCES:
        raise ValueError(f"data.holdout={holdout!r}: one of {', '.join(SOURCES)}, or null")
    splits = Splits()
    kv = root / "kvasir-seg"
    ids = sorted(p.stem for p in image_files(kv / "images"))
    val_ids = set(np.random.default_rng(seed).permutation(ids)[:VAL_KVASIR_COUNT].tolist())
    if holdout == "kvasir":
        val_ids = set(ids)
    for i in ids:
        if val_only and i not in val_ids:
            continue
        ip, mp = file_for(kv / "images", i), file_for(kv / "masks", i)
        img, m = load_square(ip, mp, cache_size)
        s = Sample(i, "kvasir", img, m, original_path=str(ip), mask_path=str(mp))
        (splits.val if i in val_ids else splits.train).append(s)
    for fid, seq, ip, mp in clinicdb_rows(root / "cvc-clinicdb"):
        validates = holdout == "clinicdb" or seq in VAL_CLINIC_SEQUENCES
        if val_only and not validates:
            continue
        img, m = load_square(ip, mp, cache_size)
        s = Sample(f"clinicdb_{fid}", "clinicdb", img, m, sequence=seq, original_path=str(ip), mask_path=str(mp))
        (splits.val if validates else splits.train).append(s)
    # Laparoscopic frames: real endoscopy without polyps, negatives for the presence head.
    # (The EndoVis clip is kept out: the laparoscopy demo streams it.)
    if val_only:
        return splits
    lap = root / "laparoscopy" / "cholec-instance-seg-sample"
    for p in image_files(lap / "images"):
        img, m = load_square(p, None, cache_size)
        splits.negatives.append(Sample(p.stem, "negative", img, m, original_path=str(p)))
    return splits
