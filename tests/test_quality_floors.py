"""Quality floors on real validation data at the shipped settings: `endostream predict` and
`endostream eval` with the shipped weights must stay near what they measured. The measured
values, the floors and the commands that measured them are in tests/reference_values.py
(re-pinned by `tools/pin_reference.py --write`); a broken mask, preprocessing step or backend
falls far under them (inverted masks: Dice about 0.05)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from conftest import need_data
from reference_values import PINNED
from endostream.cli import main
from endostream.training.dataset import clinicdb_rows


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    total = float(pred.sum() + gt.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(pred, gt).sum()) / total


def test_predict_dice_on_validation_images(tmp_path) -> None:
    """`endostream predict` (shipped settings, backend auto) on the pinned validation stills
    and ClinicDB frames; mean Dice of the written PNGs against the datasets' masks."""
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    names = PINNED["predict_images"]
    for i, n in enumerate(names):
        (src / f"{i:02d}{Path(n).suffix}").symlink_to(need_data(n))
    assert main(["predict", f"input={src}", f"output={dst}", "model.threads=1"]) == 0
    scores = []
    for i, n in enumerate(names):
        pred = cv2.imread(str(dst / f"{i:02d}.png"), cv2.IMREAD_GRAYSCALE) > 127
        gt = cv2.imread(str(need_data(n.replace("/images/", "/masks/"))), cv2.IMREAD_GRAYSCALE) > 127
        assert pred.shape == gt.shape, n
        scores.append(_dice(pred, gt))
    mean = float(np.mean(scores))
    assert mean >= PINNED["floors"]["predict_dice"], (f"mean Dice {mean:.4f} under the floor "
                                                      f"{PINNED['floors']['predict_dice']} (pinned {PINNED['predict_dice']})",
                                                      [round(s, 3) for s in scores])


def test_eval_on_a_clinicdb_validation_sequence(tmp_path, capsys) -> None:
    """`endostream eval images=... masks=... sequence=true` on one validation sequence streamed in
    order (temporal memory as live): its meanDice over the floor, its frame count as pinned."""
    seq = PINNED["eval"]["sequence"]
    imgs, masks = tmp_path / f"clinicdb_seq{seq}", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    for fid, s, ip, mp in clinicdb_rows(need_data("cvc-clinicdb")):
        if s == seq:
            (imgs / f"{fid}.png").symlink_to(ip)
            (masks / f"{fid}.png").symlink_to(mp)
    out = tmp_path / "eval.json"
    assert main(["eval", f"images={imgs}", f"masks={masks}", "sequence=true", "flicker=false", f"out={out}",
                 "model.threads=1"]) == 0
    r = json.loads(out.read_text())[imgs.name]
    assert r["frames"] == PINNED["eval"]["frames"]
    assert r["meanDice"] >= PINNED["floors"]["eval_meanDice"], (r["meanDice"], PINNED["eval"])
