"""Measure the pinned reference values and quality floors of the shipped weights, and (with
--write) rewrite tests/reference_values.py, the one place the tests read them from.

    .venv/bin/python tools/pin_reference.py            # measure and print, compare with the pins
    .venv/bin/python tools/pin_reference.py --write    # ... and re-pin (after new weights)

Run it on a known-good tree only: what it measures becomes the reference. The floors sit a
stated margin under what was measured, so a broken mask, backend or preprocessing step fails
them and the noise of another CPU, backend or load does not. Needs ../shared/data. About two
minutes on the 2-core VM (the demo runs live, end to end).
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import DATA_ROOT  # noqa: E402  (the tests' one data location)

OUT = ROOT / "tests" / "reference_values.py"
WEIGHTS = ROOT / "weights" / "polyp.pt"
DICE_MARGIN = 0.04       # floors: measured Dice minus this, rounded down to 0.01
SLICE_FRAME = "cvc-clinicdb/images/1.png"
SEQUENCE_NEXT = "cvc-clinicdb/images/2.png"  # the next frame of SLICE_FRAME's sequence
EVAL_SEQUENCE = 23       # a ClinicDB validation sequence (training/dataset.py VAL_CLINIC_SEQUENCES), 12 frames
PREDICT_KVASIR = 5       # the first validation stills (load_splits' seeded permutation)
PREDICT_CLINICDB = (3, 11)  # and the first frame of these validation sequences
UNCERTAINTY_SAMPLES = 8
UNCERTAINTY_BAND_PX = 2  # half-width of the band around the predicted border, model-grid pixels


def shipped_model() -> dict:
    """configs/model/polyp.yaml: the shipped settings (steps K, thresholds, warm start)."""
    return yaml.safe_load((ROOT / "configs" / "model" / "polyp.yaml").read_text())


def floor(x: float, margin: float = DICE_MARGIN) -> float:
    return float(np.floor((x - margin) * 100) / 100)


def _segmenter(backend: str = "torch", **kw):
    from endostream.inference.segmenter import load_segmenter

    m = shipped_model()
    args = dict(weights=str(WEIGHTS), backend=backend, steps=m["steps"], warm_start=m["warm_start"],
                presence_threshold=m["presence_threshold"], mask_threshold=m["mask_threshold"], threads=1)
    args.update(kw)
    return load_segmenter(**args)


def slice_reference() -> dict:
    """Probabilities at fixed frame pixels, presence and box of one real frame with the torch
    backend (the reference). Pixels: three on the mask's border (probability 0.1-0.9, where any
    numeric change shows), two inside, two outside in the field of view, one on the black border."""
    img = cv2.imread(str(DATA_ROOT / SLICE_FRAME))
    pred = _segmenter().segment(img)
    p = pred.prob
    rng = np.random.default_rng(0)

    def pick(cond: np.ndarray, n: int) -> list[list[int]]:
        ys, xs = np.nonzero(cond)
        idx = rng.choice(len(ys), size=n, replace=False)
        return [[int(ys[i]), int(xs[i])] for i in sorted(idx)]

    from endostream.inference.preprocess import find_fov

    x0, y0, x1, y1 = find_fov(img)
    inside_fov = np.zeros(p.shape, bool)
    inside_fov[y0:y1, x0:x1] = True
    pixels = pick((p > 0.1) & (p < 0.9), 3) + pick(p > 0.97, 2) + pick(inside_fov & (p < 0.03), 2)
    if not inside_fov.all():
        pixels += pick(~inside_fov, 1)
    # The same pixels through the sampler (K=2 from stream 0's seeded noise, no warm start).
    p2 = _segmenter(steps=2, warm_start=False).segment(img).prob
    # Temporal memory: the next frame of the sequence after this one, at the pixels where the
    # memory of the first frame moves the probability most (against the frame alone).
    nxt = cv2.imread(str(DATA_ROOT / SEQUENCE_NEXT))
    seg = _segmenter()
    seg.segment(img)
    with_memory = seg.segment(nxt).prob
    seg.reset()
    moved = np.abs(with_memory - seg.segment(nxt).prob)
    top = np.argsort(moved, axis=None)[::-1][:3]
    seq_pixels = [[int(i // moved.shape[1]), int(i % moved.shape[1])] for i in top]
    sequence = {"next_frame": SEQUENCE_NEXT, "pixels": seq_pixels,
                "prob": [round(float(with_memory[y, x]), 6) for y, x in seq_pixels],
                "moved_by_memory": [round(float(moved[y, x]), 6) for y, x in seq_pixels]}
    return {"frame": SLICE_FRAME, "fov": [x0, y0, x1, y1], "pixels": pixels, "sequence": sequence,
            "prob": [round(float(p[y, x]), 6) for y, x in pixels],
            "prob_k2": [round(float(p2[y, x]), 6) for y, x in pixels],
            "presence": round(float(pred.presence), 6), "box": list(pred.box) if pred.box else None,
            "mask_pixels": int(pred.mask.sum())}


def predict_images() -> list[str]:
    from endostream.training.dataset import VAL_KVASIR_COUNT, clinicdb_rows

    ids = sorted(p.stem for p in (DATA_ROOT / "kvasir-seg" / "images").glob("*.jpg"))
    val = np.random.default_rng(0).permutation(ids)[:VAL_KVASIR_COUNT]  # load_splits' rule, seed 0
    names = [f"kvasir-seg/images/{i}.jpg" for i in val[:PREDICT_KVASIR]]
    rows = clinicdb_rows(DATA_ROOT / "cvc-clinicdb")
    for seq in PREDICT_CLINICDB:
        fid = min(f for f, s, _, _ in rows if s == seq)
        names.append(f"cvc-clinicdb/images/{fid}.png")
    return names


def mask_of(image: str) -> Path:
    p = DATA_ROOT / image.replace("/images/", "/masks/")
    return p


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = float(np.logical_and(pred, gt).sum())
    total = float(pred.sum() + gt.sum())
    return 1.0 if total == 0 else 2 * inter / total


def predict_dice(names: list[str]) -> float:
    """``endostream predict`` at the shipped settings on the images; mean Dice against their masks."""
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in", Path(d) / "out"
        src.mkdir()
        for i, n in enumerate(names):
            (src / f"{i:02d}{Path(n).suffix}").symlink_to(DATA_ROOT / n)
        run([sys.executable, "-m", "endostream.cli", "predict", f"input={src}", f"output={dst}", "model.threads=1"])
        scores = []
        for i, n in enumerate(names):
            pred = cv2.imread(str(dst / f"{i:02d}.png"), cv2.IMREAD_GRAYSCALE) > 127
            gt = cv2.imread(str(mask_of(n)), cv2.IMREAD_GRAYSCALE) > 127
            scores.append(dice(pred, gt))
    return round(float(np.mean(scores)), 4)


def eval_sequence(seq: int) -> dict:
    """``endostream eval`` at the shipped settings on one ClinicDB validation sequence, in order."""
    from endostream.training.dataset import clinicdb_rows

    with tempfile.TemporaryDirectory() as d:
        imgs, masks = Path(d) / f"clinicdb_seq{seq}", Path(d) / "masks"
        imgs.mkdir(), masks.mkdir()
        for fid, s, ip, mp in clinicdb_rows(DATA_ROOT / "cvc-clinicdb"):
            if s == seq:
                (imgs / f"{fid}.png").symlink_to(ip)
                (masks / f"{fid}.png").symlink_to(mp)
        out = Path(d) / "eval.json"
        run([sys.executable, "-m", "endostream.cli", "eval", f"images={imgs}", f"masks={masks}", "sequence=true",
             "flicker=false", f"out={out}", "model.threads=1"])
        r = json.loads(out.read_text())[imgs.name]
    return {"frames": int(r["frames"]), "meanDice": round(r["meanDice"], 4), "S": round(r["S"], 4)}


def demo_dice() -> float:
    """``endostream demo max_frames=50 transport.mode=lossless`` (as tests/test_demo.py runs it):
    Dice of the shown masks. Lossless, so every frame is shown with its own mask and the figure
    does not depend on the machine's load (live mode under load shows older masks: 0.60 seen)."""
    with tempfile.TemporaryDirectory() as d:
        run([sys.executable, "-m", "endostream.cli", "demo", "max_frames=50", "transport.mode=lossless",
             f"out={d}/demo"])
        return round(float(json.loads((Path(d) / "demo" / "summary.json").read_text())["dice_mean"]), 4)


def uncertainty_ratios(names: list[str]) -> dict:
    """Mean spread in a band around the predicted border over the interior's and the
    background's (inside the field of view), on the ClinicDB images of ``names``."""
    from uncertainty_band import band_ratios

    seg = _segmenter("onnxruntime", uncertainty_samples=UNCERTAINTY_SAMPLES, warm_start=False)
    worst = {"interior": np.inf, "background": np.inf}
    for n in names:
        img = cv2.imread(str(DATA_ROOT / n))
        seg.reset()
        r = band_ratios(seg.segment(img), img, UNCERTAINTY_BAND_PX)
        for k in worst:
            if np.isfinite(r[k]):  # a small polyp may have no interior beyond the band
                worst[k] = min(worst[k], r[k])
    return {k: round(float(v), 2) for k, v in worst.items()}


def run(cmd: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")


def measure() -> dict:
    from endostream.fileutil import file_sha256

    names = predict_images()
    values = {"weights_sha256": file_sha256(WEIGHTS), "steps": shipped_model()["steps"],
              "slice": slice_reference(), "predict_images": names}
    values["predict_dice"] = predict_dice(names)
    values["eval"] = {"sequence": EVAL_SEQUENCE, **eval_sequence(EVAL_SEQUENCE)}
    values["demo_dice"] = demo_dice()
    values["uncertainty"] = {"samples": UNCERTAINTY_SAMPLES, "band_px": UNCERTAINTY_BAND_PX,
                             "images": [*names, SLICE_FRAME],
                             "measured_min_ratio": None}
    values["uncertainty"]["measured_min_ratio"] = uncertainty_ratios(values["uncertainty"]["images"])
    values["floors"] = {"predict_dice": floor(values["predict_dice"]),
                        "eval_meanDice": floor(values["eval"]["meanDice"]),
                        "demo_dice": floor(values["demo_dice"]),
                        # spread ratios: half the measured worst image's, and never under 1.5
                        "uncertainty_ratio": {k: max(1.5, round(v / 2, 2))
                                              for k, v in values["uncertainty"]["measured_min_ratio"].items()}}
    return values


HEADER = '''"""Pinned reference values and quality floors of the shipped weights: the one place tests read them.

Written by `.venv/bin/python tools/pin_reference.py --write` (re-pin in that one command after the
weights or the shipped `steps` change); measured on {machine}. The floors sit under the measured
values by the margins stated in tools/pin_reference.py, so a broken model fails them:
- predict_dice: `endostream predict` at the shipped settings on PINNED["predict_images"], mean Dice;
- eval_meanDice: `endostream eval images=<ClinicDB sequence {seq}> masks=... sequence=true`;
- demo_dice: `endostream demo max_frames=50 transport.mode=lossless`, Dice of the shown masks;
- slice: the torch backend on one real frame (probabilities at fixed pixels at the shipped steps
  and at K=2, presence, box) and on the next frame of its sequence (temporal memory filled);
- uncertainty: spread in a band around the predicted border over the interior's / background's.
"""

PINNED = '''


def write(values: dict) -> None:
    machine = f"{os.uname().nodename} ({os.cpu_count()} CPUs)"
    text = HEADER.format(machine=machine, seq=values["eval"]["sequence"]) + pprint.pformat(values, width=110,
                                                                                          sort_dicts=False) + "\n"
    OUT.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"rewrite {OUT.relative_to(ROOT)}")
    args = ap.parse_args()
    if not (DATA_ROOT / SLICE_FRAME).is_file():
        raise SystemExit(f"needs the real data at {DATA_ROOT}")
    values = measure()
    print(json.dumps(values, indent=1))
    if OUT.is_file():
        sys.path.insert(0, str(OUT.parent))
        from reference_values import PINNED

        for k in ("weights_sha256", "steps", "predict_dice", "eval", "demo_dice", "floors"):
            if PINNED.get(k) != values.get(k):
                print(f"changed {k}: {PINNED.get(k)} -> {values.get(k)}")
    if args.write:
        write(values)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
