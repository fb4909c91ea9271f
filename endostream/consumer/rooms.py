"""Live consumer, per room (stream): mask rate, mask age, missed display deadlines, and the
segmenting thread's per-frame timeline (where a mask's time goes: queueing behind the previous
model call, preprocessing, each session run). Filled by :mod:`endostream.consumer.worker`,
reported in the consumer's summary, ``/status.json`` and the bench report."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RoomStats:
    """One room (stream) in the live consumer: how many masks it got and when (its mask rate),
    how often its frame's own mask missed the display deadline, and the age of the mask shown
    with each frame (capture of the masked frame -> the display taking it)."""

    masks: int = 0
    first_mask_ns: int = 0
    last_mask_ns: int = 0
    frames: int = 0  # frames the display path asked a mask for
    missed: int = 0  # ... whose own mask was not there by the deadline
    # the newest 3000 (two minutes at 25 fps): /status.json takes percentiles of it every 0.2 s
    mask_age_ms: deque = field(default_factory=lambda: deque(maxlen=3_000))

    def on_mask(self, now_ns: int) -> None:
        self.masks += 1
        self.first_mask_ns = self.first_mask_ns or now_ns
        self.last_mask_ns = now_ns

    def as_dict(self) -> dict[str, Any]:
        span_s = (self.last_mask_ns - self.first_mask_ns) / 1e9
        ages = np.asarray(self.mask_age_ms, np.float64)
        return {"masks": self.masks,
                "mask_rate": round((self.masks - 1) / span_s, 2) if self.masks > 1 and span_s > 0 else None,
                "frames": self.frames, "missed_deadlines": self.missed,
                "mask_age_ms": {f"p{q}": round(float(np.percentile(ages, q)), 1) for q in (50, 95, 99)}
                if ages.size else None}


def fairness(rates: list[float]) -> float | None:
    """Lowest mask rate over the highest (1.0: all rooms alike; the goal is >= 0.8)."""
    rates = [r for r in rates if r is not None]
    return round(min(rates) / max(rates), 3) if len(rates) > 1 and max(rates) > 0 else None


# The segmenting thread's per-frame timeline, in order: submitted -> picked (queueing behind the
# previous call), picked -> preprocess done, -> encoder, -> each denoiser step, -> postprocess.
TIMELINE = ("queue", "preprocess", "encoder", "steps", "postprocess", "total")


class Timeline:
    """Per-frame durations of the segmenting thread (bounded), summarised as p50/p99/max."""

    def __init__(self, maxlen: int = 20_000) -> None:
        self.rows: deque[tuple[float, ...]] = deque(maxlen=maxlen)

    def add(self, submitted: int, picked: int, stamps: dict[str, int]) -> None:
        pre, enc, post = stamps.get("preprocess"), stamps.get("encoder"), stamps.get("postprocess")
        if not (submitted and pre and enc and post):
            return
        last_step = max((v for k, v in stamps.items() if k.startswith("step")), default=enc)
        self.rows.append(((picked - submitted) / 1e6, (pre - picked) / 1e6, (enc - pre) / 1e6,
                          (last_step - enc) / 1e6, (post - last_step) / 1e6, (post - submitted) / 1e6))

    def summary(self) -> dict[str, Any] | None:
        if not self.rows:
            return None
        a = np.asarray(self.rows, np.float64)
        return {"frames": len(a), **{name: {"p50_ms": round(float(np.percentile(a[:, i], 50)), 2),
                                            "p99_ms": round(float(np.percentile(a[:, i], 99)), 2),
                                            "max_ms": round(float(a[:, i].max()), 2)}
                                     for i, name in enumerate(TIMELINE)}}
