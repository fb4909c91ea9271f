"""Consumer stages 3 and 4: the overlay (newest mask, its age, the staleness rule, run-time
controls) and the sinks. Used by :mod:`endostream.consumer.app`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endostream.consumer.worker import MaskResult
from endostream.consumer.overlay import HudInfo, draw_overlay
from endostream.types import Frame, Prediction

log = logging.getLogger(__name__)


@dataclass
class Controls:
    """Run-time overlay switches, read from a JSON file whenever it changes."""

    show_mask: bool = True
    opacity: float = 0.4
    path: Path | None = None
    poll_s: float = 0.25
    _mtime: float = 0.0
    _checked: float = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < self.poll_s:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            data = json.loads(self.path.read_text())
            show = bool(data.get("show_mask", self.show_mask))
            opacity = float(data.get("opacity", self.opacity))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("control file %s ignored: %s (expected {\"show_mask\": bool, "
                        "\"opacity\": 0..1})", self.path, exc)
            return
        self.show_mask, self.opacity = show, min(max(opacity, 0.0), 1.0)
        log.info("controls: show_mask=%s opacity=%.2f", self.show_mask, self.opacity)


@dataclass
class Shown:
    """What the display path decided for one frame."""

    image: np.ndarray
    prediction: Prediction | None  # the mask drawn (None: none yet, or paused)
    mask_seq: int | None
    mask_age_ms: float | None
    paused: bool


class OverlayStage:
    """Frame + newest result -> overlay image, applying the staleness rule."""

    def __init__(self, *, stale_ms: float, color: Any, controls: Controls) -> None:
        self.stale_ms, self.color, self.controls = float(stale_ms), tuple(int(c) for c in color), controls

    def draw(self, frame: Frame, result: MaskResult | None, hud: HudInfo,
             ref_capture_ns: int) -> Shown:
        """``ref_capture_ns``: capture time of the stream's first frame, the reference age when
        no mask exists yet (a model that never answers also ends in "AI paused")."""
        ref = result.t_capture_ns if result is not None else ref_capture_ns
        age_ms = max(0.0, (frame.t_capture_ns - ref) / 1e6)
        paused = age_ms > self.stale_ms
        pred = result.prediction if result is not None and not paused else None
        hud.mask_age_ms = age_ms if result is not None else None
        hud.paused = paused
        image = draw_overlay(np.asarray(frame.image), pred, hud=hud, opacity=self.controls.opacity,
                             show_mask=self.controls.show_mask, color=self.color)
        frame.stamps_ns["overlay"] = time.monotonic_ns()
        return Shown(image, pred, result.seq if result is not None else None,
                     hud.mask_age_ms, paused)


class SinkStage:
    """Writes a shown frame to every sink (each guarded: a failing sink is disabled, the
    others and the display path go on)."""

    def __init__(self, sinks: list[Any]) -> None:
        self.sinks = sinks

    def write(self, frame: Frame, shown: Shown) -> None:
        for sink in self.sinks:
            sink.write(frame, shown.image, shown.prediction)
        frame.stamps_ns["sink"] = time.monotonic_ns()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def errors(self) -> dict[str, str]:
        return {s.name: s.error for s in self.sinks if getattr(s, "error", None)}
