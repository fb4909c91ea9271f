"""endostream bench: statistics on known arrays, the clock-offset estimator, and short real
runs (real sockets, producer processes, the shipped weights on ONNX Runtime, one thread)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import zmq
from PIL import Image

from endostream.bench import clock as bench_clock
from endostream.bench.stats import (backlog_check, end_to_end_ms, skip_warmup, stage_durations,
                                    stage_order, summarize)
from endostream.cli import main

REQUIRED = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
FAST = ["model.backend=onnxruntime", "model.threads=1", "model.steps=2", "progress=false", "warmup=5"]


# ----------------------------------------------------------------------------- statistics


def test_summarize_known_array():
    s = summarize(np.arange(1, 101, dtype=float))  # 1..100 ms
    assert s["count"] == 100 and s["min_ms"] == 1 and s["max_ms"] == 100
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["p50_ms"] == pytest.approx(50.5)  # linear interpolation
    assert s["p90_ms"] == pytest.approx(90.1) and s["p10_ms"] == pytest.approx(10.9)
    assert s["p95_ms"] == pytest.approx(95.05) and s["p99_ms"] == pytest.approx(99.01)
    assert s["p999_ms"] == pytest.approx(99.901)
    assert s["tail_ms"] == pytest.approx(100 - 95.05)
    assert s["flatness_ms"] == pytest.approx(90.1 - 10.9)
    assert s["std_ms"] == pytest.approx(np.arange(1, 101).std(), abs=1e-3)


def test_summarize_single_outlier_shows_in_tail_not_flatness():
    s = summarize([10.0] * 99 + [500.0])
    assert s["p50_ms"] == 10 and s["flatness_ms"] == 0
    assert s["max_ms"] == 500 and s["tail_ms"] == pytest.approx(490)


def test_summarize_empty_and_nan():
    assert summarize([])["count"] == 0 and summarize([])["p50_ms"] is None
    assert summarize([1.0, float("nan"), 3.0])["count"] == 2


def test_skip_warmup_is_per_stream():
    recs = [{"stream_id": sid, "seq": i} for i in range(5) for sid in (0, 1)]
    kept = skip_warmup(recs, 2)
    assert sorted((r["stream_id"], r["seq"]) for r in kept) == [(s, i) for s in (0, 1) for i in (2, 3, 4)]
    assert skip_warmup(recs, 0) == recs


def test_stages_tile_the_timeline():
    stamps = {"grab": 0, "encode": 1_000_000, "send": 1_500_000, "receive": 3_500_000,
              "decode": 4_000_000, "preprocess": 6_000_000, "encoder": 16_000_000,
              "step2": 22_000_000, "step1": 19_000_000, "postprocess": 23_000_000,
              "overlay": 25_000_000, "sink": 30_000_000}
    rec = {"stream_id": 0, "seq": 0, "t_capture_ns": 0, "stamps_ns": stamps}
    order = stage_order([rec])
    assert order == ["grab", "encode", "send", "receive", "decode", "preprocess", "encoder",
                     "step1", "step2", "postprocess", "overlay", "sink"]
    d = stage_durations(stamps, order)
    assert d["receive"] == 2.0 and d["step1"] == 3.0 and d["step2"] == 3.0 and d["sink"] == 5.0
    assert sum(d.values()) == pytest.approx(end_to_end_ms(rec)) == pytest.approx(30.0)


def test_backlog_check_flat_vs_growing():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30.0
    flat = 30 + rng.normal(0, 2, t.size)
    assert backlog_check(t, flat)["no_backlog_growth"] is True
    growing = 30 + 20 * t + rng.normal(0, 2, t.size)  # a queue growing 20 ms per second
    g = backlog_check(t, growing)
    assert g["no_backlog_growth"] is False and g["slope_ms_per_s"] == pytest.approx(20, rel=0.1)
    assert backlog_check(t[:3], flat[:3])["no_backlog_growth"] is None


# ----------------------------------------------------------------------------- clock offset


def test_clock_offset_estimator_known_offset():
    rng = random.Random(1)
    offset = 7_250_000  # server clock is 7.25 ms ahead
    samples = []
    t = 1_000_000_000
    for _ in range(200):
        up = 60_000 + int(rng.expovariate(1 / 400_000))  # one-way trips with queueing noise
        down = 60_000 + int(rng.expovariate(1 / 400_000))
        t1 = t + up + offset
        t2 = t1 + 20_000
        samples.append((t, t1, t2, t2 - offset + down))
        t += 10_000_000
    est = bench_clock.estimate_offset(samples)
    assert abs(est.offset_ns - offset) <= est.uncertainty_ns
    assert est.min_rtt_ns >= 120_000 and est.uncertainty_ns == pytest.approx(est.min_rtt_ns / 2, abs=1)
    assert est.uncertainty_ns < 300_000  # min-RTT filtering beats the mean queueing (800 us)
    with pytest.raises(ValueError):
        bench_clock.estimate_offset([])


def test_clock_ping_over_loopback_is_zero_within_bound():
    """One host shares the monotonic clock: the measured offset must be 0 within its bound."""
    import threading

    ctx = zmq.Context()
    rep, req = ctx.socket(zmq.REP), ctx.socket(zmq.REQ)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    req.connect(f"tcp://127.0.0.1:{port}")
    th = threading.Thread(target=bench_clock.serve_pings, args=(rep, 20, 5000))
    th.start()
    try:
        est = bench_clock.ping(req, 20)
    finally:
        th.join()
        req.close(0)
        rep.close(0)
        ctx.term()
    assert abs(est.offset_ns) <= est.uncertainty_ns + 1 and est.samples == 20


# ----------------------------------------------------------------------------- real runs


def _bench(out: Path, *overrides: str) -> dict:
    assert main(["bench", f"out={out}", *FAST, *overrides]) == 0
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench_pipeline")
    return out, _bench(out, "scenario=pipeline", "frames=50")


def test_pipeline_report_has_required_keys_plots_and_csv(pipeline_run):
    out, r = pipeline_run
    for key in ("frames_sent", "frames_processed", "frames_dropped", "fps", "end_to_end", "stages",
                "weights_sha256", "backend", "steps", "machine", "clock", "trend"):
        assert key in r, key
    # live: a producer whose send queue is full (a consumer slowed by a loaded machine) refuses
    # frames, so "sent" may fall short of the 50 requested
    assert 0 < r["frames_sent"] <= 50 and r["frames_processed"] > 0 and r["fps"] > 0
    assert all(r["end_to_end"][k] is not None for k in REQUIRED)
    for name in ("encode", "send", "receive", "decode", "overlay", "sink"):
        assert all(r["stages"][name][k] is not None for k in REQUIRED), name
    for name in ("preprocess", "encoder", "step1", "step2", "postprocess"):  # the model branch (live)
        assert r["model_stages"][name]["count"] > 0, name
    assert r["backend"] == "onnxruntime" and r["steps"] == 2 and len(r["weights_sha256"]) == 64
    assert r["machine"]["cores"] >= 1 and "numpy" in r["machine"]["packages"]
    for f in ("latency_cdf.png", "latency_over_time.png", "stage_breakdown.png"):
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
        # a plot read alone names model, backend, machine, load and the verdict (drawn and in its text)
        text = Image.open(out / f).text["Description"]
        for needle in (r["backend"], f"K={r['steps']}", r["machine"]["cpu"], "load during the run", "GOALS "):
            assert needle in text, (f, needle, text)
    assert r["stages"]["wait"]["count"] > 0  # live: the wait for the frame's own mask, its own stage
    assert r["machine"]["load_during_run"]["samples"] >= 2
    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert rows and {"end_to_end_ms", "sink_ms", "grab_ns", "sink_ns", "warmup"} <= set(rows[0])
    md = (out / "summary.md").read_text()
    assert md.startswith("# endostream bench") and "| **mask path**" in md
    assert r["mask_end_to_end"]["count"] > 0 and r["model_stages"]["until shown"]["count"] > 0


def test_stage_medians_add_up_to_end_to_end(pipeline_run):
    _, r = pipeline_run
    c = r["consistency"]
    assert 0.5 <= c["ratio"] <= 1.5, c  # medians of skewed parts: roughly
    assert c["stage_mean_sum_ms"] == pytest.approx(c["end_to_end_mean_ms"], rel=0.01, abs=0.05)  # means: exactly


def test_slow_consumer_drops_in_live_none_in_lossless(tmp_path):
    live = _bench(tmp_path / "live", "frames=40", "infer_delay_ms=150", "sinks=[none]")
    assert live["frames_dropped"] > 0 and live["frames_processed"] < live["frames_sent"]
    lossless = _bench(tmp_path / "lossless", "frames=40", "infer_delay_ms=150", "sinks=[none]",
                      "mode=lossless", "pace=fast")
    assert lossless["frames_dropped"] == 0
    assert lossless["frames_processed"] == lossless["frames_sent"] == 40
    # lossless runs every frame through the model inline: its stages are on the end-to-end path
    assert lossless["stages"]["encoder"]["count"] == 40 - 5


def test_transport_and_compare_synthetic(tmp_path):
    # lossless: at pace=fast a live subscriber may keep only a handful of frames (newest wins)
    r = _bench(tmp_path, "scenario=transport", "source.uri=synthetic", "synthetic.width=320",
               "synthetic.height=240", "pace=fast", "mode=lossless", "frames=60", "compare.rounds=2",
               "compare.variants={raw:{codec:raw},jpeg:{codec:jpeg}}", "compare.baseline=raw")
    assert r["end_boundary"] == "decode" and r["stages"]["receive"]["count"] > 0
    cmp = r["compare"]
    assert set(cmp["variants"]) == {"raw", "jpeg"} and cmp["variants"]["raw"]["ratios"]["p50"] == 1.0
    assert cmp["variants"]["jpeg"]["codec"] == "jpeg"
    variants = {row["variant"] for row in csv.DictReader(open(tmp_path / "frames.csv"))}
    assert variants == {"raw", "jpeg"}


def test_model_branch_gets_its_own_smaller_warmup():
    """A short live run segments fewer frames than ``warmup``: the model branch must still be
    reported (its warm-up is min(warmup, processed // 5)), not silently left out."""
    from endostream.bench.run import _mark_warmup, _summarize_runs, model_warmup
    from endostream.bench.scenarios import RunResult

    def rec(seq, t_ms, stamps):
        return {"stream_id": 0, "seq": seq, "t_capture_ns": int(t_ms * 1e6),
                "stamps_ns": {k: int((t_ms + v) * 1e6) for k, v in stamps.items()},
                "extra": {"mask_seq": (seq // 4) * 4}}

    shown = [rec(i, i * 40, {"grab": 0, "decode": 2, "overlay": 4, "sink": 6}) for i in range(40)]
    model = [rec(i, i * 40, {"decode": 2, "infer_start": 3, "preprocess": 5, "encoder": 20,
                             "postprocess": 30}) for i in range(0, 40, 4)]  # 10 model frames < warmup
    res = RunResult("pipeline", "live", "sink", shown, 40, len(model), 40, model_records=model)
    _mark_warmup(res, 0, 20)
    assert model_warmup(20, 10) == 2 and model_warmup(20, 500) == 20 and model_warmup(20, 3) == 0
    assert sum(r["warmup"] for r in model) == 2 and sum(r["warmup"] for r in shown) == 20
    a = _summarize_runs([res], live=True)
    assert a["model_stages"]["encoder"]["count"] == 8
    assert a["mask_end_to_end"]["count"] > 0


def test_room_rates_in_a_comparison_count_each_run_not_the_rounds_between():
    """Two rounds of one variant, 10 s apart (another variant ran between): each room segments at
    6.25 masks/s within its runs, and that is the rate, not the frames over the whole span."""
    from endostream.bench.run import _summarize_runs
    from endostream.bench.scenarios import RunResult

    def rec(sid, seq, t0_ms, stamps):
        t = t0_ms + seq * 40
        return {"stream_id": sid, "seq": seq, "t_capture_ns": int(t * 1e6), "warmup": False,
                "stamps_ns": {k: int((t + v) * 1e6) for k, v in stamps.items()},
                "extra": {"mask_seq": (seq // 4) * 4}}

    def run(t0_ms):
        shown = [rec(s, i, t0_ms, {"grab": 0, "decode": 2, "overlay": 4, "sink": 6}) for s in (0, 1) for i in range(50)]
        model = [rec(s, i, t0_ms, {"decode": 2, "infer_start": 3, "preprocess": 5, "encoder": 20, "postprocess": 30})
                 for s in (0, 1) for i in range(0, 50, 4)]
        return RunResult("multi", "live", "sink", shown, 100, len(model), 100, model_records=model)

    a = _summarize_runs([run(0), run(10_000)], live=True)
    rates = [a["streams"][s]["model_fps"] for s in ("0", "1")]
    assert rates == [6.25, 6.25], rates


# ----------------------------------------------------------------------------- mask path, report


def _live_records() -> tuple[list[dict], list[dict]]:
    """40 shown frames every 40 ms (display path 6 ms); the model segments every 4th frame in
    28 ms after decode, and its mask is shown from the next shown frame after it is done."""
    def rec(seq, stamps, mask_seq=None):
        t = seq * 40
        return {"stream_id": 0, "seq": seq, "t_capture_ns": int(t * 1e6),
                "stamps_ns": {k: int((t + v) * 1e6) for k, v in stamps.items()},
                "extra": {"mask_seq": mask_seq}}

    model = [rec(i, {"grab": 0, "encode": 1, "send": 1.5, "receive": 2, "decode": 2.5,
                     "infer_start": 3, "preprocess": 5, "encoder": 25, "postprocess": 30.5})
             for i in range(0, 40, 4)]
    shown = [rec(i, {"grab": 0, "encode": 1, "send": 1.5, "receive": 2, "decode": 2.5, "overlay": 4,
                     "sink": 6}, mask_seq=(i - 1) // 4 * 4 if i else None) for i in range(40)]
    return shown, model


def test_mask_path_stages_tile_the_mask_path():
    from endostream.bench.stats import UNTIL_SHOWN, analyze

    shown, model = _live_records()
    a = analyze(shown, end="sink", warmup=0, model_records=model, live=True)
    ser = a["series"]
    assert len(ser["mask_ms"]) == len(ser["mask_t_s"]) == 39  # the first frame has no mask yet
    # Per shown frame the mask path's stages add up to its end to end exactly.
    stages = ser["mask_stages"]
    assert list(stages)[-1] == UNTIL_SHOWN and "encoder" in stages and "overlay" not in stages
    sums = np.sum([stages[k] for k in stages], axis=0)
    assert np.allclose(sums, ser["mask_ms"])
    assert a["model_stages"][UNTIL_SHOWN]["count"] == 39
    # frame 5 shows frame 4's mask: captured 40 ms earlier, written 6 ms after its own capture
    assert a["mask_end_to_end"]["min_ms"] == pytest.approx(46.0)
    assert a["end_to_end"]["p50_ms"] == pytest.approx(6.0)


def _report_of(tmp_path: Path) -> tuple[dict, dict]:
    from endostream.bench.report import machine
    from endostream.bench.stats import analyze

    shown, model = _live_records()
    a = analyze(shown, end="sink", warmup=0, model_records=model, live=True)
    series = a.pop("series")
    rep = {"scenario": "pipeline", "mode": "live", "frames_sent": 40, "frames_processed": 10,
           "frames_dropped": 30, "frames_shown": 40, "warmup": 0, "end_boundary": "sink",
           "machine": machine(), "backend": "onnxruntime", "steps": 0, **a}
    return rep, series


def test_summary_puts_both_end_to_end_figures_first_with_units(tmp_path):
    from endostream.bench.report import summary_md

    rep, _ = _report_of(tmp_path)
    md = summary_md(rep)
    lines = md.splitlines()
    tables = [i for i, line in enumerate(lines) if line.startswith("| ")]
    first = lines[tables[0]:tables[0] + 4]
    assert first[2].startswith("| **display path**") and first[3].startswith("| **mask path**")
    assert "| 6.00 |" in first[2]
    # The live goals: video p99 < 60 ms, mask age p50 < 25 / p99 < 45 ms (README, BENCH.md).
    assert "Goals: video (display path) p99 < 60 ms; mask age (mask path) p50 < 25 ms, p99 < 45 ms." in md
    assert md.index("**mask path**") < md.index("## Display path stages") < md.index("until shown")
    # Every header cell names its unit: a count of frames or milliseconds.
    headers = [lines[i] for i in tables if i + 1 < len(lines) and lines[i + 1].startswith("|---")]
    assert len(headers) >= 3
    for h in headers:
        cells = [c.strip() for c in h.strip("|").split("|")][1:]
        assert all("(ms)" in c or c == "frames" or "(frames" in c or "(x)" in c for c in cells), h
    assert "- display path, capture -> the frame written: p99 met (< 60 ms)" in md
    # the masks here are 86 ms old at p50 and 166 ms at p99: over both mask goals
    assert "that mask: p50 over by 61.0 ms, p99 over by 121.0 ms" in md


def test_plots_show_both_paths_and_fit(tmp_path):
    from PIL import Image

    from endostream.bench.report import plot_all

    _, series = _report_of(tmp_path)
    files = plot_all(tmp_path, {"run": series})
    assert files == ["latency_cdf.png", "latency_over_time.png", "stage_breakdown.png"]
    for f in files:
        w, h = Image.open(tmp_path / f).size
        assert w > 600 and h > 300, f
    # Two variants: each path of each variant, labelled by variant.
    assert plot_all(tmp_path, {"k1": series, "k2": series}) == files


def _clock_cfg(tmp_path, port: int, security: bool, allow_remote: bool = False, bind: str | None = None):
    from omegaconf import OmegaConf

    return OmegaConf.create({
        "clock": {"peer": f"tcp://127.0.0.1:{port}", "bind": bind or f"tcp://127.0.0.1:{port}", "pings": 5},
        "transport": {"allow_remote": allow_remote,
                      "security": {"enabled": security, "keys_dir": str(tmp_path), "server_key": "server",
                                   "client_key": "client", "allow_dir": str(tmp_path / "allowed")}}})


def test_clock_server_refuses_a_remote_bind_without_allow_remote(tmp_path):
    from endostream.bench.run import _serve_clock

    with pytest.raises(ValueError, match="not a loopback address"):
        _serve_clock(_clock_cfg(tmp_path, 5999, security=False, bind="tcp://0.0.0.0:5999"))


def test_clock_exchange_over_curve_and_a_plain_client_gets_nothing(tmp_path):
    """With transport.security on, the clock server is a CURVE server with the allow-list: the
    keyed client measures an offset, a plain client gets no answer."""
    import socket
    import threading

    from endostream.bench.run import _clock, _serve_clock
    from endostream.protocol import security

    security.create_keys(tmp_path, "server")
    security.create_keys(tmp_path, "client")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "client.key").write_text((tmp_path / "client.key").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = _clock_cfg(tmp_path, port, security=True)
    server = threading.Thread(target=_serve_clock, args=(cfg,), daemon=True)
    server.start()
    plain = _clock_cfg(tmp_path, port, security=False)
    with pytest.raises(TimeoutError):  # no CURVE handshake: the ping times out
        _ping_plain(plain)
    result = _clock(cfg)
    server.join(timeout=10)
    assert result["samples"] == 5 and abs(result["offset_ms"]) <= result["uncertainty_ms"] + 1e-6


def _ping_plain(cfg) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.REQ)
    s.linger = 0
    s.connect(str(cfg.clock.peer))
    try:
        bench_clock.ping(s, 1, timeout_ms=700)
    finally:
        s.close(0)
        ctx.term()
