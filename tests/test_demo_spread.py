"""tools/demo_spread.py: the statistics it reports over demo runs, and its argument check.
(The tool itself was run for real: README, "Current figures"; CHANGELOG.md, 2026-12-06.)"""

from __future__ import annotations

import importlib.util
import statistics

import pytest

from conftest import REPO


def _tool():
    spec = importlib.util.spec_from_file_location("demo_spread", REPO / "tools" / "demo_spread.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spread_is_mean_min_max_and_sample_sd():
    s = _tool().spread([0.593, 0.612, 0.70])
    assert s["n"] == 3 and s["min"] == 0.593 and s["max"] == 0.70
    assert s["mean"] == pytest.approx((0.593 + 0.612 + 0.70) / 3)
    assert s["sd"] == pytest.approx(statistics.stdev([0.593, 0.612, 0.70]))  # n - 1, not n


def test_one_run_has_no_sd_and_none_has_no_figures():
    tool = _tool()
    assert tool.spread([0.6])["sd"] is None and tool.spread([0.6])["mean"] == 0.6
    assert tool.spread([]) == {"n": 0, "mean": None, "min": None, "max": None, "sd": None}


def test_summary_figures_are_read_from_the_demo_summary_keys():
    figures = _tool().FIGURES
    summary = {"dice_mean": 0.75, "frames_shown": 182, "latency_ms": {"p50": 38.9, "p95": 48.9, "p99": 53.7}}
    assert {k: f(summary) for k, f in figures.items()} == {
        "dice_mean": 0.75, "frames_shown": 182, "latency_p50_ms": 38.9, "latency_p99_ms": 53.7}


def test_zero_runs_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        _tool().main(["--runs", "0"])
    assert exc.value.code == 2 and "--runs must be at least 1" in capsys.readouterr().err
