"""`endostream bench`: run a scenario of the real pipeline, instrumented at every stage
boundary, and write report.json, frames.csv, summary.md and plots into ``out``.

Single run: ``endostream bench scenario=pipeline frames=300 out=out/bench``.
Compare mode: ``compare.variants`` (name -> overrides of this config) run interleaved in
``compare.rounds`` rounds (A B C, B C A, ...), so that machine noise (here: a training job on
the same two cores) falls on every variant alike; ratios are to ``compare.baseline``.
Schema and meaning of every field: docs/BENCH.md.

SIGINT/SIGTERM: the running scenario ends after its frame (producers send end-of-stream), no
further run starts, and the outputs are written for what ran (``stopped_by`` in report.json);
one line says so and where; exit 130/143.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from endostream.bench import clock as bench_clock

from endostream.bench import models as bench_models
from endostream.bench import report as bench_report
from endostream.bench.caption import caption
from endostream.bench.load import LoadSampler
from endostream.bench.scenarios import SCENARIOS, STOP, RunResult
from endostream.bench.source import describe
from endostream.bench.stats import analyze
from endostream.config_schema.variants import variant_config
from endostream.interrupt import StopRequest

log = logging.getLogger(__name__)


def model_warmup(warmup: int, processed: int) -> int:
    """The live model branch runs on fewer frames than the display path (only the newest), so
    a short run may segment fewer frames than ``warmup``: it gets min(warmup, processed // 5)."""
    return min(int(warmup), max(0, int(processed)) // 5)


def _mark_warmup(result: RunResult, run: int, warmup: int) -> None:
    """Tag each record with its run and whether it is one of its stream's first warm-up frames
    (``warmup`` on the end-to-end path; the model branch: :func:`model_warmup` per stream)."""
    counts: dict[int, int] = {}
    for r in result.model_records:
        counts[r["stream_id"]] = counts.get(r["stream_id"], 0) + 1
    result.info["model_warmup"] = {sid: model_warmup(warmup, n) for sid, n in sorted(counts.items())}
    for recs, limit in ((result.records, lambda sid: warmup),
                        (result.model_records, lambda sid: result.info["model_warmup"][sid])):
        seen: dict[int, int] = {}
        for r in sorted(recs, key=lambda r: int(r["t_capture_ns"])):
            seen[r["stream_id"]] = seen.get(r["stream_id"], 0) + 1
            r["run"], r["warmup"] = run, seen[r["stream_id"]] <= limit(r["stream_id"])


def _summarize_runs(runs: list[RunResult], live: bool, min_mask_fps: float | None = None) -> dict[str, Any]:
    """Merge a variant's runs (records tagged) and compute its statistics."""
    first = runs[0]
    recs = [r for run in runs for r in run.records if not r["warmup"]]
    mrecs = [r for run in runs for r in run.model_records if not r["warmup"]]
    a = analyze(recs, end=first.end, warmup=0, model_records=mrecs, live=live)
    sent = sum(r.frames_sent for r in runs)
    processed = sum(r.frames_processed for r in runs)
    shown = None if first.frames_shown is None else sum(r.frames_shown or 0 for r in runs)
    a.update(frames_sent=sent, frames_processed=processed, frames_dropped=max(0, sent - processed),
             frames_shown=shown)
    if len(runs) > 1:  # rates within each run, averaged: the time between rounds carries no frames
        per = [analyze([r for r in run.records if not r["warmup"]], end=first.end, warmup=0,
                       model_records=[r for r in run.model_records if not r["warmup"]], live=live) for run in runs]
        for key in ("fps", "model_fps"):
            rates = [p[key] for p in per if p.get(key) is not None]
            if key in a or rates:
                a[key] = round(sum(rates) / len(rates), 2) if rates else None
    if first.end == "sink":  # the pipeline: per stream, and the consumer's batching and waiting
        a.update(streams=_per_stream(runs, live), inference_batch=_merge_batches(runs),
                 same_frame=_merge_same_frame(runs))
    a.update(bench_models.model_figures(recs, mrecs, a.get("streams"), min_mask_fps))
    return a


def _per_stream(runs: list[RunResult], live: bool) -> dict[str, dict[str, Any]]:
    """Stream id -> frames sent, shown and processed (all frames) and, warm-up excluded, the
    mask's capture -> shown latency (lossless: the frame's own, its end to end), the model's
    frames per second on the stream, and the share of frames shown with their own mask."""
    first = runs[0]
    sids = sorted({int(r["stream_id"]) for run in runs for r in run.records}
                  | {int(s) for run in runs for s in run.info.get("sent_per_stream", {})})
    out: dict[str, dict[str, Any]] = {}
    for sid in sids:
        recs = [r for run in runs for r in run.records if r["stream_id"] == sid]
        mrecs = [r for run in runs for r in run.model_records if r["stream_id"] == sid]
        kept = [r for r in recs if not r["warmup"]]
        a = analyze(kept, end=first.end, warmup=0, model_records=[r for r in mrecs if not r["warmup"]],
                    live=live)
        mask = a.get("mask_end_to_end") if live else a["end_to_end"]
        own = [r for r in kept if r["extra"].get("mask_seq") not in (None, "")]
        out[str(sid)] = {
            "frames_sent": sum(int(run.info.get("sent_per_stream", {}).get(sid, 0)) for run in runs),
            "frames_shown": len(recs),
            "frames_processed": len(mrecs) if live else len(recs),
            "mask_end_to_end": {k: (mask or {}).get(k) for k in ("p50_ms", "p95_ms", "p99_ms")},
            "end_to_end": {k: a["end_to_end"].get(k) for k in ("p50_ms", "p99_ms")},
            "model_fps": _stream_rate(runs, sid, live) if len(runs) > 1 else (a.get("model_fps") if live else a.get("fps")),
            "same_frame_rate": (round(sum(int(r["extra"]["mask_seq"]) == r["seq"] for r in own) / len(kept), 4)
                                if kept else None),
        }
    return out


def _stream_rate(runs: list[RunResult], sid: int, live: bool) -> float | None:
    """A stream's masks (live) or frames (lossless) per second within each run, averaged: in a
    comparison the other variants' rounds fall between this variant's runs and carry none of its
    frames (over the whole span a 25 fps room read as 5 masks/s)."""
    key, rates = ("model_fps" if live else "fps"), []
    for run in runs:
        recs = [r for r in run.records if r["stream_id"] == sid and not r["warmup"]]
        mrecs = [r for r in run.model_records if r["stream_id"] == sid and not r["warmup"]]
        rate = analyze(recs, end=runs[0].end, warmup=0, model_records=mrecs, live=live).get(key) if recs else None
        if rate is not None:
            rates.append(rate)
    return round(sum(rates) / len(rates), 2) if rates else None


def _merge_batches(runs: list[RunResult]) -> dict[str, Any]:
    """Frames per model call over the runs' consumers: {mean, max, calls}."""
    parts = [(run.info.get("consumer_summary") or {}).get("inference_batch") or {} for run in runs]
    calls = sum(int(p.get("calls") or 0) for p in parts)
    total = sum(float(p.get("mean") or 0) * int(p.get("calls") or 0) for p in parts)
    return {"mean": round(total / calls, 3) if calls else None,
            "max": max((p["max"] for p in parts if p.get("max") is not None), default=None), "calls": calls}


def _merge_same_frame(runs: list[RunResult]) -> dict[str, Any]:
    """Live display path over the runs: frames shown with their own mask (``overlay.wait_ms``)."""
    parts = [(run.info.get("consumer_summary") or {}).get("same_frame") or {} for run in runs]
    frames = sum(int(p.get("frames") or 0) for p in parts)
    met = sum(int(p.get("met") or 0) for p in parts)
    waited = sum(float(p.get("mean_wait_ms") or 0) * int(p.get("frames") or 0) for p in parts)
    return {"policy": next((p.get("policy") for p in parts if p), None),
            "wait_ms": next((p.get("wait_ms") for p in parts if p), None),
            "max_model_load": next((p.get("max_model_load") for p in parts if p), None),
            "skipped_passes": sum(int(p.get("skipped_passes") or 0) for p in parts),
            "busy_skips": sum(int(p.get("busy_skips") or 0) for p in parts),
            "inflight_waits": sum(int(p.get("inflight_waits") or 0) for p in parts), "frames": frames, "met": met,
            "missed": frames - met,
            "met_rate": round(met / frames, 4) if frames else None,
            "mean_wait_ms": round(waited / frames, 3) if frames else None,
            "max_wait_ms": max((float(p["max_wait_ms"]) for p in parts if p.get("max_wait_ms") is not None),
                               default=None)}


def _clock(cfg: Any) -> dict[str, Any]:
    """Same host: shared monotonic clock. With ``clock.peer``: ping a `scenario=clock_server`
    (CURVE when ``transport.security.enabled``, like every other socket)."""
    peer = cfg.clock.get("peer")
    if not peer:
        return bench_clock.same_host()
    import zmq

    from endostream.protocol.security import secure_client
    from endostream.protocol.factory import security_keys

    keys = security_keys(cfg.transport.get("security"), server=False)
    with zmq.Context() as ctx, ctx.socket(zmq.REQ) as s:
        s.linger = 0
        if keys is not None:
            secure_client(s, keys)
        s.connect(str(peer))
        est = bench_clock.ping(s, int(cfg.clock.pings))
    return {"method": f"ping exchange with {peer}, min round trip", **est.as_dict()}


def _serve_clock(cfg: Any) -> int:
    """The clock server binds like the consumer: loopback unless ``transport.allow_remote``, and
    CURVE with the allow-list when ``transport.security.enabled``."""
    import zmq

    from endostream.protocol.security import secure_server, start_auth, stop_auth
    from endostream.protocol.factory import security_keys
    from endostream.protocol.sockets import check_bind_endpoint

    bind = str(cfg.clock.bind)
    check_bind_endpoint(bind, allow_remote=bool(cfg.transport.get("allow_remote", False)))
    keys = security_keys(cfg.transport.get("security"), server=True)
    with zmq.Context() as ctx, ctx.socket(zmq.REP) as s:
        if keys is not None:
            start_auth(ctx, keys)
            secure_server(s, keys)
        try:
            s.bind(bind)
            print(f"clock server on {bind}{' (CURVE)' if keys else ''}: answering {cfg.clock.pings} pings")
            n = bench_clock.serve_pings(s, int(cfg.clock.pings), timeout_ms=60_000)
        finally:
            if keys is not None:
                stop_auth(ctx)
    print(f"answered {n} pings")
    return 0


def _plan(cfg: Any) -> tuple[dict[str, Any], str, int]:
    """Variant name -> config, the baseline name, and the number of rounds."""
    variants = dict(cfg.compare.variants or {})
    if not variants:
        return {"run": cfg}, "run", 1
    cfgs = {name: variant_config(cfg, ov) for name, ov in variants.items()}
    baseline = str(cfg.compare.baseline or next(iter(cfgs)))
    if baseline not in cfgs:
        raise ValueError(f"compare.baseline={baseline!r} is not one of the variants {list(cfgs)}")
    rounds = max(1, int(cfg.compare.rounds))
    for c in cfgs.values():  # each round runs a share of the frames
        c.frames = max(int(c.frames) // rounds, int(c.warmup) + 10)
    return cfgs, baseline, rounds


def _report(cfg: Any, name: str, runs: list[RunResult],
            summary: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from omegaconf import OmegaConf

    first = runs[0]
    info = first.info
    series = summary.pop("series")
    rep = {"scenario": first.scenario, "mode": first.mode, "variant": name,
           "frames_requested": int(cfg.frames), "warmup": int(cfg.warmup),
           **({"model_warmup": min((w for r in runs for w in r.info.get("model_warmup", {}).values()),
                                   default=int(cfg.warmup))} if first.model_records else {}),
           "producers": int(cfg.producers), "codec": str(cfg.codec), "pace": str(cfg.pace),
           "infer_delay_ms": float(cfg.infer_delay_ms),
           **{k: summary[k] for k in ("frames_sent", "frames_processed", "frames_dropped",
                                      "frames_shown", "fps")},
           "end_to_end": summary["end_to_end"], "end_boundary": first.end,
           "stages": summary["stages"],
           **{k: summary[k] for k in ("model_stages", "mask_end_to_end", "model_fps", "inference_batch",
                                      "same_frame", "streams") if k in summary},
           "trend": summary["trend"],
           "no_backlog_growth": (summary["trend"] or {}).get("no_backlog_growth"),
           "consistency": summary["consistency"],
           **{k: summary[k] for k in ("model_ms", "dice", "rooms_served")},
           "kind": info.get("kind", "diffusion"), "model_file": info.get("model_file"),
           "weights_sha256": info.get("weights_sha256"), "backend": info.get("backend"),
           "steps": info.get("steps"), "trained": info.get("trained"),
           "source": describe(OmegaConf.to_container(cfg.source, resolve=True),
                              OmegaConf.to_container(cfg.synthetic, resolve=True)),
           "consumer": info.get("consumer_summary")}
    return rep, series


def run(cfg: Any) -> int:
    """Run the scenario (or the compare plan) and write the outputs. Returns 0."""
    from omegaconf import OmegaConf
    from tqdm import tqdm

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    OmegaConf.set_struct(cfg, False)
    if cfg.scenario == "clock_server":
        return _serve_clock(cfg)
    if cfg.scenario == "soak":
        from endostream.bench import soak as bench_soak

        return bench_soak.run(cfg)
    if cfg.scenario not in SCENARIOS:
        raise ValueError(f"scenario={cfg.scenario!r}; expected one of {sorted(SCENARIOS)}, soak or clock_server")
    if cfg.scenario == "multi" and int(cfg.producers) < 2:
        if str(cfg.multi_producers) == "auto":  # rooms by capacity: add rooms until the goals fail
            from endostream.bench.capacity import run_capacity

            return run_capacity(cfg, run)
        cfg.producers = int(cfg.multi_producers)
    if cfg.scenario == "model":
        cfg.producers = 1
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    cfgs, baseline, rounds = _plan(cfg)
    names = list(cfgs)
    total = sum(int(c.frames) * int(c.producers) for c in cfgs.values()) * rounds
    t0 = time.monotonic()
    runs: dict[str, list[RunResult]] = {n: [] for n in names}
    STOP.clear()
    load = LoadSampler()  # how busy the machine was while measuring, for every figure
    with load, StopRequest(lambda _name: STOP.set()) as stop, \
            tqdm(total=total, desc=f"bench {cfg.scenario}", unit="frame", file=sys.stderr,
                 disable=not cfg.progress) as bar:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
                if stop.requested:
                    break
                c = cfgs[name]
                bar.set_postfix_str(name if len(names) > 1 else str(c.mode))
                res = SCENARIOS[str(c.scenario)](c, bar.update)
                for rec in res.records + res.model_records:
                    rec["variant"] = name
                _mark_warmup(res, r, int(c.warmup))
                runs[name].append(res)
    if stop.requested:  # report what ran: the variants with frames measured past warm-up
        names = [n for n in names if any(not rec["warmup"] for res in runs[n] for rec in res.records)]
        if not names:
            print(f"bench: stopped by {stop.requested} before any frame was measured past warm-up; "
                  f"nothing written to {out}", flush=True)
            return stop.exit_code
        baseline = baseline if baseline in names else names[0]
    reports, series = {}, {}
    for name in names:
        live = runs[name][0].mode == "live"
        reports[name], series[name] = _report(cfgs[name], name, runs[name],
                                              _summarize_runs(runs[name], live,
                                                              float(cfgs[name].capacity.min_mask_fps)))
    report = dict(reports[baseline])
    if len(names) > 1:
        b = reports[baseline]
        report["compare"] = {"baseline": baseline, "rounds": rounds, "variants": {
            n: {**v, "ratios": _ratios(v, b)} for n, v in reports.items()}}
        report["compare"]["overrides"] = OmegaConf.to_container(cfg.compare.variants, resolve=True)
    report.update(clock=_clock(cfg), machine={**bench_report.machine(), "load_during_run": load.summary()},
                  elapsed_s=round(time.monotonic() - t0, 2),
                  config=OmegaConf.to_container(cfg, resolve=True),
                  **({"stopped_by": stop.requested} if stop.requested else {}))
    all_records = [rec for n in names for res in runs[n] for rec in res.records]
    order = sorted({b for rec in all_records for b in rec["stamps_ns"]},
                   key=lambda b: _order_index(b))
    bench_report.write_csv(out / "frames.csv", all_records, order, runs[baseline][0].end)
    model_records = [rec for n in names for res in runs[n] for rec in res.model_records]
    if model_records:
        morder = sorted({b for rec in model_records for b in rec["stamps_ns"]
                         if b not in ("overlay", "sink")}, key=_order_index)
        bench_report.write_csv(out / "inference.csv", model_records, morder, "postprocess")
    report["files"] = ["report.json", "frames.csv", "summary.md",
                       *bench_report.plot_all(out, series, caption=caption(report, bench_report.GOALS_MS))] + (["inference.csv"] if model_records else [])
    (out / "summary.md").write_text(bench_report.summary_md(report))
    bench_report.write_json(out / "report.json", report)
    if stop.requested:
        print(f"bench: stopped by {stop.requested} after {report['frames_processed']} frames processed; "
              f"what ran is in {out / 'report.json'} (summary.md, frames.csv, plots)", flush=True)
        return stop.exit_code
    e = report["end_to_end"]
    print(f"bench {report['scenario']} ({report['mode']}): sent {report['frames_sent']} processed "
          f"{report['frames_processed']} dropped {report['frames_dropped']} fps {report['fps']}; "
          f"end to end p50 {e['p50_ms']} p95 {e['p95_ms']} p99 {e['p99_ms']} max {e['max_ms']} ms"
          f" -> {out / 'report.json'}")
    print("\n".join(bench_models.compare_lines(report["compare"]["variants"] if len(names) > 1 else {names[0]: report})))
    return 0


def _order_index(boundary: str) -> tuple[int, int]:
    from endostream.bench.stats import BOUNDARIES

    if boundary.startswith("step") and boundary[4:].isdigit():
        return BOUNDARIES.index("step*"), int(boundary[4:])
    return (BOUNDARIES.index(boundary), 0) if boundary in BOUNDARIES else (len(BOUNDARIES), 0)


def _ratios(v: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
    """variant / baseline for end-to-end p50, p99, fps and (live pipeline) the model's frames
    per second over all streams and the mask's p99 (lower latency ratio = faster)."""
    def ratio(x: float | None, y: float | None) -> float | None:
        return round(x / y, 3) if x is not None and y else None

    return {"p50": ratio(v["end_to_end"]["p50_ms"], b["end_to_end"]["p50_ms"]),
            "p99": ratio(v["end_to_end"]["p99_ms"], b["end_to_end"]["p99_ms"]),
            "fps": ratio(v["fps"], b["fps"]),
            "model_fps": ratio(v.get("model_fps"), b.get("model_fps")),
            "mask_p99": ratio((v.get("mask_end_to_end") or {}).get("p99_ms"),
                              (b.get("mask_end_to_end") or {}).get("p99_ms"))}
