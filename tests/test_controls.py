"""Run-time overlay controls (control.json) are typed strictly: a wrong value is rejected with one
line naming the key and the type expected, and every previous setting is kept. Also the overlay
stage built from configs/overlay/default.yaml."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from endostream.consumer.overlay import HudInfo
from endostream.consumer.stages import ControlError, Controls, OverlayStage, parse_controls
from endostream.consumer.worker import MaskResult
from endostream.types import Frame, Prediction

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "overlay" / "default.yaml"


def _write(path: Path, content: str) -> None:
    """Rewrite and push the mtime forward: a poll must see a change even within one mtime tick."""
    path.write_text(content)
    t = time.time() + 10 + len(content) % 7
    os.utime(path, (t, t))


def _controls(tmp_path: Path) -> Controls:
    c = Controls(path=tmp_path / "control.json", poll_s=0.0)
    c.poll()  # no file yet: nothing changes
    return c


@pytest.mark.parametrize("content,key,expected", [
    ('{"show_mask": "no"}', "show_mask", "true or false"),
    ('{"show_mask": 0}', "show_mask", "true or false"),
    ('{"opacity": 7}', "opacity", "a number from 0 to 1"),
    ('{"opacity": -0.1}', "opacity", "a number from 0 to 1"),
    ('{"opacity": "0.5"}', "opacity", "a number from 0 to 1"),
    ('{"opacity": true}', "opacity", "a number from 0 to 1"),
    ('{"show_labels": null}', "show_labels", "true or false"),
    ('{"show_mask": false, "opacity": 7}', "opacity", "a number from 0 to 1"),
])
def test_bad_value_rejected_with_one_line_and_previous_kept(tmp_path, caplog, content, key, expected):
    c = _controls(tmp_path)
    _write(c.path, '{"show_mask": true, "opacity": 0.3}')
    c.poll()
    assert (c.show_mask, c.opacity) == (True, 0.3)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="endostream.consumer.stages"):
        _write(c.path, content)
        c.poll()
    # Nothing half-applied: {"show_mask": false, "opacity": 7} keeps show_mask true as well.
    assert (c.show_mask, c.opacity) == (True, 0.3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"'{key}' must be {expected}" in warnings[0]
    assert "keeping show_mask=true, opacity=0.3" in warnings[0]


def test_good_values_apply_partially_and_ints_are_numbers(tmp_path):
    c = _controls(tmp_path)
    _write(c.path, '{"opacity": 1}')
    c.poll()
    assert c.opacity == 1.0 and isinstance(c.opacity, float) and c.show_mask is True
    _write(c.path, '{"show_mask": false, "show_labels": false, "show_box": true, "show_uncertainty": true}')
    c.poll()
    assert c.settings() == {"show_mask": False, "opacity": 1.0, "show_labels": False, "show_box": True,
                            "show_uncertainty": True}


def test_unknown_key_names_the_near_one_and_not_json_is_one_line(tmp_path, caplog):
    c = _controls(tmp_path)
    with caplog.at_level(logging.WARNING, logger="endostream.consumer.stages"):
        _write(c.path, '{"opactiy": 0.5}')
        c.poll()
        _write(c.path, '{not json')
        c.poll()
        _write(c.path, '[true]')
        c.poll()
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 3 and all("\n" not in m for m in msgs)
    assert "unknown key 'opactiy' (did you mean 'opacity'?)" in msgs[0]
    assert "not valid JSON" in msgs[1]
    assert "expected a JSON object" in msgs[2] and "got a JSON array" in msgs[2]
    assert c.opacity == 0.15 and c.show_mask is True  # the defaults, untouched


def test_parse_controls_is_pure_and_strict():
    assert parse_controls({}) == {}
    assert parse_controls({"opacity": 0, "show_mask": False}) == {"opacity": 0.0, "show_mask": False}
    for bad in ({"opacity": float("nan")}, {"show_box": "yes"}, {"colour": 1}, "show_mask"):
        with pytest.raises(ControlError):
            parse_controls(bad)


# ----------------------------------------------------------------------------- the overlay stage


def _frame(modality: str = "colonoscopy", seq: int = 10, t_ms: float = 1000) -> Frame:
    return Frame(0, seq, int(t_ms * 1e6), np.full((288, 384, 3), 50, np.uint8), modality=modality)


def _result(t_ms: float = 960) -> MaskResult:
    mask = np.zeros((288, 384), bool)
    mask[100:200, 150:300] = True
    pred = Prediction(prob=mask.astype(np.float32), mask=mask, presence=0.9, box=(150, 100, 300, 200))
    return MaskResult(0, 1, 8, int(t_ms * 1e6), pred, trained=True)


def test_stage_from_the_shipped_config_and_control_file(tmp_path):
    cfg = OmegaConf.load(CONFIG)
    stage = OverlayStage.from_config(cfg, tmp_path / "control.json")
    c = stage.controls
    assert (c.show_mask, c.opacity, c.show_labels, c.show_box, c.show_uncertainty) == (
        cfg.show_mask, cfg.opacity, cfg.show_labels, cfg.show_box, cfg.show_uncertainty)
    hud = HudInfo()
    shown = stage.draw(_frame(), _result(), hud, ref_capture_ns=0)
    assert hud.stale_ms == cfg.stale_ms and hud.mask_age_ms == pytest.approx(40) and not hud.no_model
    assert (shown.image[150, 220] != 50).any()  # the mask's fill
    # Overlay off through the control file: the tissue is clear, the label stays (config says so).
    c.poll_s = 0.0
    _write(c.path, json.dumps({"show_mask": False}))
    c.poll()
    off = stage.draw(_frame(), _result(), HudInfo(), ref_capture_ns=0).image
    assert (off[110:190, 160:290] == 50).all()
    assert (off[80:97, 150:260] != 50).any()


def test_laparoscopy_says_there_is_no_polyp_model(tmp_path):
    stage = OverlayStage.from_config(OmegaConf.load(CONFIG), None)
    hud = HudInfo()
    stage.draw(_frame("laparoscopy"), None, hud, ref_capture_ns=int(990e6))
    assert hud.no_model == "laparoscopy"
    colon = HudInfo()
    stage.draw(_frame("colonoscopy"), None, colon, ref_capture_ns=int(990e6))
    assert colon.no_model == ""


def test_bad_config_value_is_one_clear_error():
    cfg = OmegaConf.load(CONFIG)
    cfg.opacity = 4
    expected = "overlay config: 'opacity' must be a number from 0 to 1, got 4 (a number)"
    with pytest.raises(ControlError, match=re.escape(expected)):
        OverlayStage.from_config(cfg, None)
