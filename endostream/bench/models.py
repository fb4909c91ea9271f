"""Figures that compare models in one bench run (``compare.variants`` holding, say, the shipped
diffusion model and a single-pass ONNX graph): the model's own time per call, the Dice of the
shown masks where the source streams ground truth, and how many rooms one consumer serves.

Rooms served, two ways, at the mask rate a room needs (``capacity.min_mask_fps``, the goal
of the bench's rooms-by-capacity search): ``by_model_time`` = floor(1000 / (model p50 ms x that
rate)), the rooms one model worker could refresh if it did nothing else (an estimate from the
measured model time); ``measured`` = the streams of this run whose masks were refreshed at that
rate or more (with one producer it is 0 or 1; ``scenario=multi`` without ``producers`` measures
the most rooms, any model included).
"""

from __future__ import annotations

import math
from typing import Any

from endostream.bench.stats import summarize


def model_ms(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The model call per frame (the segmenter starting on a batch -> its postprocess done), ms."""
    vals = [(r["stamps_ns"]["postprocess"] - r["stamps_ns"]["infer_start"]) / 1e6 for r in records
            if "postprocess" in r["stamps_ns"] and "infer_start" in r["stamps_ns"]]
    return {k: v for k, v in summarize(vals).items() if k in ("count", "mean_ms", "p50_ms", "p99_ms", "max_ms")}


def dice_of_shown(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean Dice of the masks shown against the streamed ground truth (None without ground truth)."""
    vals = [float(r["extra"]["dice"]) for r in records if r.get("extra", {}).get("dice") is not None]
    return {"mean": round(sum(vals) / len(vals), 4) if vals else None, "frames": len(vals)}


def rooms_served(model: dict[str, Any], streams: dict[str, dict[str, Any]] | None,
                 min_mask_fps: float | None) -> dict[str, Any]:
    """See the module docstring; all None without ``min_mask_fps``."""
    if not min_mask_fps:
        return {"mask_fps_per_room": None, "by_model_time": None, "measured": None, "streams": None}
    p50 = model.get("p50_ms")
    est = int(math.floor(1000.0 / (float(p50) * min_mask_fps))) if p50 else None
    measured = None
    if streams:
        measured = sum(1 for v in streams.values() if (v.get("model_fps") or 0) >= min_mask_fps)
    return {"mask_fps_per_room": min_mask_fps, "by_model_time": est, "measured": measured,
            "streams": len(streams) if streams else None}


def model_figures(kept: list[dict[str, Any]], model_kept: list[dict[str, Any]],
                  streams: dict[str, dict[str, Any]] | None, min_mask_fps: float | None) -> dict[str, Any]:
    """``kept``: the end-to-end records (warm-up left out); ``model_kept``: the live model
    branch's (empty elsewhere: there the end-to-end records carry the model's stamps)."""
    m = model_ms(model_kept or kept)
    return {"model_ms": m, "dice": dice_of_shown(kept), "rooms_served": rooms_served(m, streams, min_mask_fps)}


def mask_age(report: dict[str, Any]) -> dict[str, Any]:
    """The shown mask's age: live, the mask path; lossless, the end to end (each frame shown with
    its own mask); {} where nothing is shown (scenario=model)."""
    if report.get("mask_end_to_end"):
        return report["mask_end_to_end"]
    return report.get("end_to_end") or {} if report.get("end_boundary") == "sink" else {}


def compare_lines(variants: dict[str, dict[str, Any]]) -> list[str]:
    """One printed line per variant: the model, its time, the mask's age, rooms served, Dice."""
    lines = []
    for name, v in variants.items():
        mk, m, rooms, d = mask_age(v), v.get("model_ms") or {}, v.get("rooms_served") or {}, v.get("dice") or {}
        age = f"mask age p50 {mk['p50_ms']} p99 {mk['p99_ms']} ms" if mk else "no mask age (no pipeline)"
        measured = (f"{rooms['measured']} of {rooms['streams']} measured" if rooms.get("measured") is not None
                    else "none measured (no pipeline)")
        lines.append(f"  {name}: {v.get('kind', 'diffusion')} {v.get('backend')} ({v.get('model_file')}): model p50 "
                     f"{m.get('p50_ms')} p99 {m.get('p99_ms')} ms; {age}; rooms at {rooms.get('mask_fps_per_room')} "
                     f"masks/s: {rooms.get('by_model_time')} by model time, {measured}; "
                     f"Dice {d.get('mean')} ({d.get('frames')} frames)")
    return lines
