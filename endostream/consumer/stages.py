"""Consumer stages 3 and 4: the overlay (newest mask, its age, the staleness rule, run-time
controls) and the sinks. Used by :mod:`endostream.consumer.app`."""

from __future__ import annotations

import difflib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from endostream.consumer.worker import MaskResult
from endostream.consumer.overlay import HudInfo, draw_overlay
from endostream.types import Frame, Prediction

log = logging.getLogger(__name__)


# control.json keys -> (Python type, what the one-line error says is expected).
_CONTROL_KEYS: dict[str, tuple[type, str]] = {
    "show_mask": (bool, "true or false"),
    "opacity": (float, "a number from 0 to 1"),
    "show_labels": (bool, "true or false"),
    "show_box": (bool, "true or false"),
    "show_uncertainty": (bool, "true or false"),
}


class ControlError(ValueError):
    """A control file that is not what the operator meant; the message is one line."""


def _json_kind(value: Any) -> str:
    return {bool: "boolean", str: "string", int: "number", float: "number", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)


def parse_controls(data: Any) -> dict[str, bool | float]:
    """Validate a parsed control.json strictly: an object with known keys, booleans that are
    JSON booleans (``"no"`` is not false), opacity a number in [0, 1] (7 is not clamped to 1).
    Returns the settings it holds. Raises :class:`ControlError` with one line naming the key
    and the type expected: a wrong value never half-applies."""
    if not isinstance(data, dict):
        raise ControlError(f"expected a JSON object like {{\"show_mask\": false, \"opacity\": 0.3}}, "
                           f"got a JSON {_json_kind(data)}")
    out: dict[str, bool | float] = {}
    for key, value in data.items():
        if key not in _CONTROL_KEYS:
            near = difflib.get_close_matches(str(key), _CONTROL_KEYS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ControlError(f"unknown key {key!r}{hint}; known keys: {', '.join(_CONTROL_KEYS)}")
        kind, expected = _CONTROL_KEYS[key]
        if kind is bool:
            ok = isinstance(value, bool)
        else:  # a JSON number; bool is an int subclass in Python and must not pass as 1.0
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and math.isfinite(value) and 0.0 <= value <= 1.0)
        if not ok:
            raise ControlError(f"{key!r} must be {expected}, got {json.dumps(value)} "
                               f"(a JSON {_json_kind(value)})")
        out[key] = bool(value) if kind is bool else float(value)
    return out


@dataclass
class Controls:
    """Run-time overlay switches, read from a JSON file whenever it changes (see
    :func:`parse_controls` for what the file may hold). A rejected file leaves every setting as
    it was and logs one line."""

    show_mask: bool = True
    opacity: float = 0.15
    show_labels: bool = True
    show_box: bool = False
    show_uncertainty: bool = False
    path: Path | None = None
    poll_s: float = 0.25
    _seen: tuple[int, int] = (0, -1)  # (mtime_ns, size): a rewrite within one mtime tick still counts
    _checked: float = 0.0

    def settings(self) -> dict[str, bool | float]:
        return {k: getattr(self, k) for k in _CONTROL_KEYS}

    def poll(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < self.poll_s:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except OSError:
            return
        if (st.st_mtime_ns, st.st_size) == self._seen:
            return
        self._seen = (st.st_mtime_ns, st.st_size)
        try:
            text = self.path.read_text()
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ControlError(f"not valid JSON ({exc})") from None
            changes = parse_controls(data)
        except (OSError, ControlError) as exc:
            kept = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={str(v).lower()}"
                             for k, v in self.settings().items())
            log.warning("control file %s rejected: %s; keeping %s", self.path, exc, kept)
            return
        for key, value in changes.items():
            setattr(self, key, value)
        if changes:
            log.info("controls: %s", ", ".join(f"{k}={v}" for k, v in changes.items()))


@dataclass
class Shown:
    """What the display path decided for one frame."""

    image: np.ndarray
    prediction: Prediction | None  # the mask drawn (None: none yet, or paused)
    mask_seq: int | None
    mask_age_ms: float | None
    paused: bool


class OverlayStage:
    """Frame + newest result -> overlay image, applying the staleness rule.

    ``no_model_for``: modalities served by a model that is not theirs (laparoscopy runs the
    polyp model behind a strict gate): the HUD says so instead of showing an AI lag, so an
    empty overlay is never read as "AI says clear"."""

    def __init__(self, *, stale_ms: float, color: Any, controls: Controls,
                 uncertainty_threshold: float = 0.1, no_model_for: Sequence[str] = ()) -> None:
        self.stale_ms, self.color, self.controls = float(stale_ms), tuple(int(c) for c in color), controls
        self.uncertainty_threshold = float(uncertainty_threshold)
        self.no_model_for = frozenset(str(m) for m in no_model_for)

    @classmethod
    def from_config(cls, cfg: Any, control_path: Path | str | None) -> OverlayStage:
        """From the ``overlay`` config group (configs/overlay/*.yaml); the control file, when
        given, may change the switches at run time."""
        try:
            switches = parse_controls({k: cfg[k] for k in _CONTROL_KEYS if k in cfg})
        except ControlError as exc:
            raise ControlError(f"overlay config: {str(exc).replace('a JSON ', 'a ')}") from None
        controls = Controls(path=Path(control_path) if control_path else None, **switches)
        return cls(stale_ms=float(cfg.stale_ms), color=cfg.color, controls=controls,
                   uncertainty_threshold=float(cfg.get("uncertainty_threshold", 0.1)),
                   no_model_for=list(cfg.get("no_model_for") or ()))

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
        hud.stale_ms = self.stale_ms
        if frame.modality in self.no_model_for:
            hud.no_model = frame.modality
        c = self.controls
        image = draw_overlay(np.asarray(frame.image), pred, hud=hud, opacity=c.opacity,
                             show_mask=c.show_mask, color=self.color, show_box=c.show_box,
                             show_labels=c.show_labels, show_uncertainty=c.show_uncertainty,
                             uncertainty_threshold=self.uncertainty_threshold)
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
