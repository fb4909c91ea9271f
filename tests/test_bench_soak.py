"""endostream bench scenario=soak: a short real soak (producer process, consumer, shipped model
on ONNX Runtime, tiny generated frames) and the verdict on known series."""

from __future__ import annotations

import csv
import json

import pytest

from endostream.bench.soak import SAMPLE_KEYS, verdict
from endostream.cli import main

TH = {"settle_s": 0, "max_rss_growth_mb_per_h": 20, "rss_noise_mb": 8, "max_p50_drift_ms": 5,
      "max_p50_drift_frac": 0.25, "max_p99_drift_ms": 15, "max_p99_drift_frac": 0.5}


def _samples(rss_per_min: float, p50_per_min: float, n: int = 30) -> list[dict]:
    return [{"t_s": 60.0 * (i + 1), "rss_consumer_mb": 300 + rss_per_min * i, "rss_producer_mb": 120.0,
             "e2e_p50_ms": 30 + p50_per_min * i, "e2e_p99_ms": 45.0, "mask_e2e_p50_ms": 60.0,
             "mask_e2e_p99_ms": 90.0, "partial": False} for i in range(n)]


def test_verdict_flat_leak_and_drift():
    flat = verdict(_samples(0.0, 0.0), TH)
    assert flat["flat"] is True and flat["memory"]["consumer"]["growth_mb_per_h"] == pytest.approx(0)
    leak = verdict(_samples(1.0, 0.0), TH)  # 1 MiB a minute = 60 MiB/h
    assert leak["flat"] is False and leak["memory"]["consumer"]["flat"] is False
    assert leak["memory"]["consumer"]["growth_mb_per_h"] == pytest.approx(60, rel=1e-3)
    assert leak["memory"]["producer"]["flat"] is True
    drift = verdict(_samples(0.0, 1.0), TH)  # p50 climbing 1 ms a minute: a backlog
    assert drift["flat"] is False and drift["latency"]["e2e_p50"]["flat"] is False
    assert drift["latency"]["e2e_p99"]["flat"] is True and drift["thresholds"] == TH


def test_soak_short_run_report(tmp_path):
    out = tmp_path / "soak"
    assert main(["bench", "scenario=soak", f"out={out}", "duration_s=8", "soak.sample_every_s=2",
                 "soak.settle_s=0", "source.uri=synthetic", "synthetic.width=160",
                 "synthetic.height=120", "synthetic.fps=15", "sinks=[none]", "warmup=3",
                 "model.backend=onnxruntime", "model.threads=1", "progress=false"]) == 0
    r = json.loads((out / "report.json").read_text())
    for key in ("samples", "verdict", "flat", "frames_sent", "frames_shown", "frames_processed",
                "frames_dropped", "weights_sha256", "backend", "steps", "machine", "exit_reason"):
        assert key in r, key
    v = r["verdict"]
    for key in ("flat", "memory", "latency", "thresholds", "fit_from_s", "samples_used"):
        assert key in v, key
    assert {"consumer", "producer"} <= set(v["memory"]) and "growth_mb_per_h" in v["memory"]["consumer"]
    assert {"e2e_p50", "e2e_p99", "mask_e2e_p50", "mask_e2e_p99"} <= set(v["latency"])
    full = [s for s in r["samples"] if not s["partial"]]
    assert len(full) >= 3, r["samples"]
    for s in full:
        assert set(SAMPLE_KEYS) <= set(s)
        assert s["rss_consumer_mb"] > 50 and s["rss_producer_mb"] > 10
    assert any(s["e2e_p50_ms"] is not None for s in full) and any(s["frames_shown"] > 0 for s in full)
    assert r["exit_reason"] == "end of stream" and r["frames_sent"] > 0
    rows = list(csv.DictReader(open(out / "soak.csv")))
    assert len(rows) == len(r["samples"]) and "rss_producer_mb" in rows[0]
    assert (out / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "summary.md").read_text().startswith("# endostream bench: soak")
