"""Segmentation metrics: a thin layer over pysodmetrics (py_sod_metrics).

SUN-SEG video protocol: predictions are resized to the ground truth's size, metrics are
averaged over the frames of each sequence, then over sequences. S-measure, mean E-measure,
weighted F, MAE, and mean Dice / IoU / sensitivity over the 256 thresholds come from
pysodmetrics; ``dice@0.5`` is the Dice of the binary mask the overlay actually shows.
"""

from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np
import py_sod_metrics as sod

METRIC_KEYS = ("S", "meanE", "wF", "meanDice", "meanIoU", "meanSen", "MAE", "dice@0.5")


def dice_binary(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (a correct 'no polyp')."""
    inter = np.logical_and(pred, gt).sum()
    total = pred.sum() + gt.sum()
    return 1.0 if total == 0 else float(2.0 * inter / total)


class _SequenceMeter:
    def __init__(self) -> None:
        dyn = dict(with_dynamic=True, with_adaptive=False, with_binary=False, sample_based=True)
        self.sm, self.em, self.wfm, self.mae = sod.Smeasure(), sod.Emeasure(), sod.WeightedFmeasure(), sod.MAE()
        self.fm = sod.FmeasureV2(metric_handlers={"dice": sod.DICEHandler(**dyn), "iou": sod.IOUHandler(**dyn),
                                                  "sen": sod.SensitivityHandler(**dyn)})
        self.dice05: list[float] = []

    def step(self, prob: np.ndarray, gt: np.ndarray) -> None:
        pred = (np.clip(prob, 0, 1) * 255).astype(np.uint8)
        gt255 = (gt > 0).astype(np.uint8) * 255
        for m in (self.sm, self.em, self.wfm, self.mae, self.fm):
            m.step(pred, gt255)
        self.dice05.append(dice_binary(prob > 0.5, gt > 0))

    def results(self) -> dict[str, float]:
        fm = self.fm.get_results()
        return {"S": float(self.sm.get_results()["sm"]), "meanE": float(self.em.get_results()["em"]["curve"].mean()),
                "wF": float(self.wfm.get_results()["wfm"]), "meanDice": float(fm["dice"]["dynamic"].mean()),
                "meanIoU": float(fm["iou"]["dynamic"].mean()), "meanSen": float(fm["sen"]["dynamic"].mean()),
                "MAE": float(self.mae.get_results()["mae"]), "dice@0.5": float(np.mean(self.dice05))}


class VideoMetrics:
    """Accumulate (probability, ground truth) per sequence; report the SUN-SEG average."""

    def __init__(self) -> None:
        self.meters: dict[str, _SequenceMeter] = defaultdict(_SequenceMeter)
        self.frames = 0

    def add(self, sequence: str, prob: np.ndarray, gt: np.ndarray) -> None:
        """prob: float in [0,1], any size (resized to gt's); gt: HxW, >0 is polyp."""
        if prob.shape != gt.shape:
            prob = cv2.resize(prob.astype(np.float32), (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
        self.meters[sequence].step(prob, gt)
        self.frames += 1

    def per_sequence(self) -> dict[str, dict[str, float]]:
        return {k: m.results() for k, m in self.meters.items()}

    def summary(self) -> dict[str, float]:
        per = list(self.per_sequence().values())
        if not per:
            return {}
        out = {k: float(np.mean([p[k] for p in per])) for k in METRIC_KEYS}
        out["sequences"] = len(per)
        out["frames"] = self.frames
        return out
