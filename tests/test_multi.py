"""Many rooms into one consumer: the `multi` benchmark's per-stream report with batched vs
unbatched inference in one compare run, and a real consumer process fed by two producer
processes where one stream ends early while the other goes on."""

from __future__ import annotations

import json
import subprocess

from conftest import ENV, REPO, cli, run_with_producers


def test_multi_bench_reports_every_stream_and_the_batching(tmp_path) -> None:
    out = tmp_path / "multi"
    cmd = cli("bench", "scenario=multi", "producers=2", "frames=50", "warmup=5", "progress=false",
              "model.threads=1", f"out={out}", "compare.rounds=1", "compare.baseline=b2",
              "compare.variants={b2:{model:{max_batch:2}},b1:{model:{max_batch:1}}}")
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    variants = report["compare"]["variants"]
    assert set(variants) == {"b2", "b1"} and report["scenario"] == "multi"
    for name, v in variants.items():
        assert set(v["streams"]) == {"0", "1"}, v["streams"]
        for sid, st in v["streams"].items():
            assert 0 < st["frames_sent"] <= 50, (name, sid, st)  # live: a full send queue refuses some
            assert 0 < st["frames_processed"] <= st["frames_shown"] <= st["frames_sent"], (name, sid, st)
            m = st["mask_end_to_end"]
            assert set(m) == {"p50_ms", "p95_ms", "p99_ms"} and 0 < m["p50_ms"] <= m["p95_ms"] <= m["p99_ms"]
        for key in ("frames_sent", "frames_processed", "frames_shown"):
            assert sum(st[key] for st in v["streams"].values()) == v[key], key
        assert v["inference_batch"]["calls"] > 0 and v["inference_batch"]["mean"] >= 1.0
        assert set(v["ratios"]) >= {"fps", "model_fps", "mask_p99"}
        sf = v["same_frame"]  # the busy-model rule's setting and count reach the report
        assert sf["max_model_load"] == 0.5 and 0 <= sf["busy_skips"] <= sf["skipped_passes"], sf
    assert variants["b1"]["inference_batch"]["max"] == 1  # max_batch=1: the unbatched consumer
    assert variants["b2"]["inference_batch"]["max"] <= 2
    assert report["inference_batch"] == variants["b2"]["inference_batch"] and "streams" in report


def test_one_stream_ends_while_the_other_goes_on(tmp_path) -> None:
    """Two producer processes into one live consumer (batches of up to 2): stream 0 sends 15
    frames, stream 1 sends 75 (25 fps). After stream 0's end-of-stream the consumer keeps
    segmenting and showing stream 1, and ends when both have ended."""
    from endostream.bench.scenarios import free_endpoint as free_ep
    from endostream.cli import compose
    from endostream.consumer.app import build

    ep, out = free_ep(), tmp_path / "out"
    cfg = compose("consume", [f"transport.endpoint={ep}", "transport.mode=live", f"out={out}", "min_streams=2",
                              "idle_timeout_s=30", "model.max_batch=2", "model.threads=1", "sink=[]"])
    rows: dict[str, list[dict]] = {"shown": [], "inference": []}
    consumer, _, _ = build(cfg, on_record=lambda kind, row: rows[kind].append(dict(row)))
    s, _ = run_with_producers(consumer, cfg, {"source": {"uri": "synthetic"},
                                              "synthetic": {"width": 320, "height": 240, "fps": 25.0}},
                              {0: 15, 1: 75})
    assert s["exit_reason"] == "end of stream" and s["errors"] == 0, json.dumps(s)[:3000]
    assert s["streams"]["0"]["ended"] and s["streams"]["1"]["ended"]
    shown, inferred = rows["shown"], rows["inference"]
    # Live mode shows a frame before its mask is done, so stream 0's last inference may start
    # after its last shown frame: measure "after stream 0 stopped" from its last inference.
    end0 = max(int(r["infer_start"]) for r in inferred if r["stream_id"] == 0)
    later = [r for r in inferred if r["stream_id"] == 1 and int(r["infer_start"]) > end0]
    assert len(later) >= 2, "stream 1 was not segmented after stream 0 stopped"
    assert len([r for r in shown if r["stream_id"] == 1]) > 2 * len([r for r in shown if r["stream_id"] == 0])
    assert s["inference_batch"]["max"] <= 2 and s["same_frame"]["frames"] == s["frames_shown"]
