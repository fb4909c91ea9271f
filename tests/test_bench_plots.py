"""Bench plots that stand alone: every PNG names the model, backend, machine, the load during
the run and the verdict against the live goals, drawn under the figure and in its text; the
display path's wait for its own mask (overlay.wait_ms) is its own stage."""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from endostream.bench.caption import caption, stage_label
from endostream.bench.load import LoadSampler
from endostream.bench.report import GOALS_MS, plot_all
from endostream.bench.stats import stage_durations, stage_order


def _report(video_p99: float, mask_p50: float, mask_p99: float) -> dict:
    return {"scenario": "pipeline", "mode": "live", "kind": "diffusion", "steps": 0,
            "backend": "onnxruntime", "weights_sha256": "ab" * 32,
            "end_to_end": {"p50_ms": 30.0, "p99_ms": video_p99},
            "mask_end_to_end": {"p50_ms": mask_p50, "p99_ms": mask_p99},
            "machine": {"cpu": "Some CPU 9000", "cores": 2,
                        "load_during_run": {"mean_1min": 1.5, "max_1min": 2.25, "samples": 4, "cores": 2}}}


def test_caption_names_model_machine_load_and_verdict():
    text = caption(_report(50.0, 20.0, 40.0), GOALS_MS)
    for needle in ("diffusion K=0", "backend onnxruntime", "Some CPU 9000 x2", "mean 1.5, max 2.25 on 2 cores",
                   "GOALS MET", "p99 50.0 ms < 60 (met)"):
        assert needle in text, (needle, text)
    assert len(text.splitlines()) == 3


def test_verdict_turns_on_each_goal():
    assert "GOALS MET" in caption(_report(59.9, 24.9, 44.9), GOALS_MS)
    for args in ((60.0, 20.0, 40.0), (50.0, 25.0, 40.0), (50.0, 20.0, 45.0)):  # each goal missed alone
        text = caption(_report(*args), GOALS_MS)
        assert "GOALS MISSED" in text and text.count("(MISSED)") == 1, (args, text)


def test_wait_is_its_own_stage_between_decode_and_the_drawing():
    stamps = {"grab": 0, "encode": 1_000_000, "send": 2_000_000, "receive": 3_000_000, "decode": 4_000_000,
              "wait": 34_000_000, "overlay": 36_000_000, "sink": 40_000_000}
    order = stage_order([{"stamps_ns": stamps}])
    assert order.index("decode") < order.index("wait") < order.index("overlay")
    d = stage_durations(stamps, order)
    assert d["wait"] == 30.0 and d["overlay"] == 2.0 and sum(d.values()) == 40.0
    assert "overlay.wait_ms" in stage_label("wait") and "drawing" in stage_label("overlay")


def test_every_png_carries_its_caption(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    t = list(np.arange(n) / 25.0)
    stages = {"decode": list(rng.uniform(1, 3, n)), "wait": list(rng.uniform(20, 30, n)),
              "overlay": list(rng.uniform(1, 2, n)), "sink": list(rng.uniform(2, 4, n))}
    series = {"run": {"e2e_t_s": t, "e2e_ms": list(rng.uniform(30, 45, n)), "stages": stages}}
    text = caption(_report(50.0, 30.0, 40.0), GOALS_MS)
    bare, captioned = tmp_path / "bare", tmp_path / "captioned"
    bare.mkdir()
    captioned.mkdir()
    files = plot_all(bare, series)
    assert plot_all(captioned, series, caption=text) == files and len(files) == 3
    for f in files:
        with Image.open(captioned / f) as im, Image.open(bare / f) as plain:
            assert im.text["Description"] == text
            assert im.height > plain.height + 30  # the three caption lines are drawn under it


def test_load_sampler_samples_during_the_run():
    with LoadSampler(every_s=0.05) as load:
        time.sleep(0.3)
    s = load.summary()
    assert s["samples"] >= 3 and s["mean_1min"] is not None and s["max_1min"] >= s["mean_1min"]
