"""`endostream bench scenario=soak`: stream live for ``duration_s`` and sample, every
``soak.sample_every_s``, the resident memory of the consumer and of the producer process and
the latency percentiles and drops of that interval; then judge whether memory and latency
stayed flat. A benchmark command (minutes to hours), not a CI test.

    endostream bench scenario=soak duration_s=1800 out=out/soak

What runs is the ``pipeline`` scenario's: a producer process (the bundled clip looped at its
native rate by default) -> ZeroMQ -> the real consumer (receive, decode, live model on the
newest frame, overlay, sinks), here in the bench process. Nothing per frame is kept beyond the
current interval (a soak that hoarded its own records would measure its own leak).

Outputs in ``out``: report.json (``samples`` + ``verdict``), soak.csv (one row per sample),
soak.png (RSS and latency over time), summary.md. Schema: docs/BENCH.md.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from endostream.bench import report as bench_report
from endostream.bench.caption import soak_caption
from endostream.bench.load import LoadSampler
from endostream.bench.report import _fmt as _f
from endostream.bench.scenarios import STOP
from endostream.bench.source import describe
from endostream.interrupt import StopRequest

log = logging.getLogger(__name__)

MB = 2**20

SAMPLE_KEYS = ("t_s", "rss_consumer_mb", "rss_producer_mb", "consumer_threads", "consumer_fds",
               "frames_sent", "frames_shown", "frames_processed", "frames_dropped",
               "e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms",
               "mask_e2e_p50_ms", "mask_e2e_p95_ms", "mask_e2e_p99_ms", "frames_in_stats", "partial")


def _rss_mb(proc: Any) -> float | None:
    try:
        return round(proc.memory_info().rss / MB, 2)
    except Exception:  # noqa: BLE001 - the process has exited (the last sample) or is gone
        return None


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p = np.percentile(np.asarray(values, np.float64), [50, 95, 99])
    return {"p50": round(float(p[0]), 3), "p95": round(float(p[1]), 3), "p99": round(float(p[2]), 3)}


class Sampler:
    """Collects the consumer's per-frame rows (its ``on_record`` callback, called from the
    display loop and from the model worker) into the current interval only, and turns each
    interval into one sample. Thread-safe; memory bounded by one interval's latencies."""

    def __init__(self, warmup: int, model_warmup: int) -> None:
        import psutil

        self._lock = threading.Lock()
        self._me = psutil.Process(os.getpid())
        self.producer: Any = None  # psutil.Process of the producer, once started
        self.t0_ns = time.monotonic_ns()
        self.warmup, self.model_warmup = warmup, model_warmup
        self._shown_total = self._infer_total = 0
        self._e2e: list[float] = []
        self._mask: list[float] = []
        self._shown = self._processed = 0
        # (stream, epoch, seq) -> capture ns of recent model frames: the mask a shown frame
        # carries was computed on one of the last few (bounded, oldest evicted).
        self._caps: OrderedDict[tuple[int, int, int], int] = OrderedDict()
        self._sent_seen = 0
        self._seq_hi: dict[tuple[int, int], int] = {}
        self.samples: list[dict[str, Any]] = []

    def on_record(self, kind: str, row: dict[str, Any]) -> None:
        key = (int(row["stream_id"]), int(row.get("epoch") or 0))
        with self._lock:
            if kind != "shown":
                self._infer_total += 1
                self._processed += 1
                if self._infer_total > self.model_warmup:
                    self._caps[(*key, int(row["seq"]))] = int(row["t_capture_ns"])
                    while len(self._caps) > 512:
                        self._caps.popitem(last=False)
                return
            self._shown_total += 1
            self._shown += 1
            # Frames the producer sent = the seq span seen (its seqs count every frame it
            # tried to send, so live drops before the consumer are included).
            hi = int(row["seq"]) + 1
            if hi > self._seq_hi.get(key, 0):
                self._sent_seen += hi - self._seq_hi.get(key, 0)
                self._seq_hi[key] = hi
            sink = row.get("sink")
            if sink in (None, "") or self._shown_total <= self.warmup:
                return
            self._e2e.append((int(sink) - int(row["t_capture_ns"])) / 1e6)
            ms = row.get("mask_seq")
            cap = None if ms in (None, "", -1) else self._caps.get((*key, int(ms)))
            if cap is not None:
                self._mask.append((int(sink) - cap) / 1e6)

    def take(self, *, partial: bool = False) -> dict[str, Any]:
        """Close the current interval: one sample (RSS now, percentiles and counts of the interval)."""
        with self._lock:
            e2e, mask, self._e2e, self._mask = self._e2e, self._mask, [], []
            shown, processed, sent = self._shown, self._processed, self._sent_seen
            self._shown = self._processed = self._sent_seen = 0
        try:
            threads, fds = self._me.num_threads(), self._me.num_fds()
        except Exception:  # noqa: BLE001 - num_fds: POSIX only
            threads, fds = None, None
        e, m = _pcts(e2e), _pcts(mask)
        s = {"t_s": round((time.monotonic_ns() - self.t0_ns) / 1e9, 2),
             "rss_consumer_mb": _rss_mb(self._me),
             "rss_producer_mb": _rss_mb(self.producer) if self.producer is not None else None,
             "consumer_threads": threads, "consumer_fds": fds,
             "frames_sent": sent, "frames_shown": shown, "frames_processed": processed,
             "frames_dropped": max(0, sent - processed),
             **{f"e2e_{k}_ms": v for k, v in e.items()}, **{f"mask_e2e_{k}_ms": v for k, v in m.items()},
             "frames_in_stats": len(e2e), "partial": partial}
        self.samples.append(s)
        return s


# ----------------------------------------------------------------------------- verdict


def _fit_per_hour(t_s: list[float], y: list[float]) -> tuple[float | None, float | None]:
    """Linear fit y = a + b t: (b per hour, fitted rise over the span)."""
    if len(y) < 2 or max(t_s) <= min(t_s):
        return None, None
    slope_s = float(np.polyfit(np.asarray(t_s) - t_s[0], np.asarray(y), 1)[0])
    return round(slope_s * 3600.0, 3), round(slope_s * (max(t_s) - min(t_s)), 3)


def _first_last(values: list[float]) -> tuple[float | None, float | None]:
    """Median of the first and of the last third of the samples (one sample each when < 3):
    robust to a single slow minute at either end."""
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    n = max(1, len(v) // 3)
    return round(float(np.median(v[:n])), 3), round(float(np.median(v[-n:])), 3)


def verdict(samples: list[dict[str, Any]], th: dict[str, float]) -> dict[str, Any]:
    """Memory growth per hour (linear fit after ``settle_s``) for both processes, latency
    drift first-vs-last, and ``flat`` with the thresholds used."""
    settle = float(th["settle_s"])
    used = [s for s in samples if s["t_s"] >= settle]
    if len(used) < 3:  # a short run: leave out only the first sample (start-up allocations)
        used = samples[1:] if len(samples) >= 3 else list(samples)
    memory: dict[str, Any] = {}
    for proc in ("consumer", "producer"):
        pts = [(s["t_s"], s[f"rss_{proc}_mb"]) for s in used if s[f"rss_{proc}_mb"] is not None]
        growth, rise = _fit_per_hour([t for t, _ in pts], [v for _, v in pts])
        flat = None if growth is None else bool(growth <= th["max_rss_growth_mb_per_h"]
                                                or rise <= th["rss_noise_mb"])
        memory[proc] = {"growth_mb_per_h": growth, "fit_rise_mb": rise,
                        "first_mb": pts[0][1] if pts else None, "last_mb": pts[-1][1] if pts else None,
                        "max_mb": max((v for _, v in pts), default=None), "samples": len(pts), "flat": flat}
    full = [s for s in used if not s["partial"]] or used
    latency: dict[str, Any] = {}
    for name in ("e2e", "mask_e2e"):
        for q, abs_ms, frac in (("p50", th["max_p50_drift_ms"], th["max_p50_drift_frac"]),
                                ("p99", th["max_p99_drift_ms"], th["max_p99_drift_frac"])):
            first, last = _first_last([s[f"{name}_{q}_ms"] for s in full])
            drift = None if first is None else round(last - first, 3)
            bound = None if first is None else round(max(abs_ms, frac * first), 3)
            latency[f"{name}_{q}"] = {"first_ms": first, "last_ms": last, "drift_ms": drift,
                                      "bound_ms": bound,
                                      "flat": None if drift is None else bool(drift < bound)}
    checks = [m["flat"] for m in memory.values()] + [v["flat"] for v in latency.values()]
    span = (used[-1]["t_s"] - used[0]["t_s"]) if used else 0.0
    return {"flat": bool(checks) and all(c is True for c in checks),
            "memory": memory, "latency": latency,
            "fit_from_s": used[0]["t_s"] if used else None, "fit_span_s": round(span, 2),
            "samples_used": len(used), "thresholds": dict(th),
            "note": ("short run: growth per hour extrapolated from under 10 minutes, indicative only"
                     if span < 600 else "")}


# ----------------------------------------------------------------------------- outputs


def write_csv(path: Path, samples: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(SAMPLE_KEYS), extrasaction="ignore")
        w.writeheader()
        w.writerows(samples)


def plot(path: Path, samples: list[dict[str, Any]], v: dict[str, Any], caption: str = "") -> None:
    """Two panels on one time axis: RSS of both processes; end-to-end and mask p50/p99; under
    them ``caption`` (model, machine, load, verdict)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60.0 for s in samples]

    def col(k: str) -> list[float]:
        return [np.nan if s[k] is None else s[k] for s in samples]

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for k, label in (("rss_consumer_mb", "consumer RSS"), ("rss_producer_mb", "producer RSS")):
        g = v["memory"][k.split("_")[1]]["growth_mb_per_h"]
        a1.plot(t, col(k), "o-", ms=3, label=f"{label} ({'-' if g is None else f'{g:+.1f}'} MiB/h)")
    a1.set_ylabel("resident memory (MiB)")
    a1.set_title(f"Soak: flat={v['flat']}")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    for k, label, style in (("e2e_p50_ms", "end to end p50", "o-"), ("e2e_p99_ms", "end to end p99", "o--"),
                            ("mask_e2e_p50_ms", "mask end to end p50", "s-"),
                            ("mask_e2e_p99_ms", "mask end to end p99", "s--")):
        a2.plot(t, col(k), style, ms=3, label=label)
    a2.set_xlabel("time since start (min)")
    a2.set_ylabel("latency (ms)")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.tight_layout()
    bench_report.draw_caption(fig, caption)
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Description": caption})
    plt.close(fig)


def summary_md(rep: dict[str, Any]) -> str:
    v = rep["verdict"]
    m = rep["machine"]
    lines = [f"# endostream bench: soak ({rep['mode']}, {rep['duration_s']:g} s)", "",
             f"- **flat: {v['flat']}**{' (' + v['note'] + ')' if v['note'] else ''}",
             f"- {len(rep['samples'])} samples every {rep['sample_every_s']:g} s; fit from "
             f"{_f(v['fit_from_s'])} s over {_f(v['fit_span_s'])} s ({v['samples_used']} samples)",
             f"- frames sent {rep['frames_sent']}, shown {rep['frames_shown']}, processed "
             f"{rep['frames_processed']}, dropped {rep['frames_dropped']}; consumer exit: "
             f"{rep['exit_reason']}, errors {rep['errors']}",
             f"- model: {rep.get('backend')} K={rep.get('steps')} sha256 {str(rep.get('weights_sha256'))[:12]}",
             f"- machine: {m.get('cpu')} x{m.get('cores')}, load {m.get('load_avg_1_5_15')}", "",
             "| process | first MiB | last MiB | max MiB | growth MiB/h | fit rise MiB | flat |",
             "|---|---|---|---|---|---|---|"]
    for p, x in v["memory"].items():
        lines.append(f"| {p} | {_f(x['first_mb'])} | {_f(x['last_mb'])} | {_f(x['max_mb'])} | "
                     f"{_f(x['growth_mb_per_h'])} | {_f(x['fit_rise_mb'])} | {x['flat']} |")
    lines += ["", "| latency | first ms | last ms | drift ms | bound ms | flat |", "|---|---|---|---|---|---|"]
    for k, x in v["latency"].items():
        lines.append(f"| {k} | {_f(x['first_ms'])} | {_f(x['last_ms'])} | {_f(x['drift_ms'])} | "
                     f"{_f(x['bound_ms'])} | {x['flat']} |")
    lines += ["", "| t s | RSS consumer | RSS producer | sent | shown | processed | dropped | e2e p50 | "
              "e2e p99 | mask p50 | mask p99 |", "|---" * 11 + "|"]
    for s in rep["samples"]:
        lines.append(" | ".join(["", _f(s["t_s"]), _f(s["rss_consumer_mb"]), _f(s["rss_producer_mb"]),
                                 _f(s["frames_sent"]), _f(s["frames_shown"]), _f(s["frames_processed"]),
                                 _f(s["frames_dropped"]), _f(s["e2e_p50_ms"]), _f(s["e2e_p99_ms"]),
                                 _f(s["mask_e2e_p50_ms"]), _f(s["mask_e2e_p99_ms"]), ""]).strip())
    th = v["thresholds"]
    lines += ["", f"Thresholds: memory flat when growth <= {th['max_rss_growth_mb_per_h']:g} MiB/h or the "
                  f"fitted rise <= {th['rss_noise_mb']:g} MiB; latency flat when the last third's median "
                  f"exceeds the first third's by less than max({th['max_p50_drift_ms']:g} ms, "
                  f"{th['max_p50_drift_frac']:.0%}) for p50 and max({th['max_p99_drift_ms']:g} ms, "
                  f"{th['max_p99_drift_frac']:.0%}) for p99; samples before {th['settle_s']:g} s left "
                  f"out of the fit."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- run


def run(cfg: Any) -> int:
    """Stream for ``cfg.duration_s``, sample, judge, write. Returns 0 (the verdict is data), or
    130 / 143 after a Ctrl-C / SIGTERM (what ran is still judged and written)."""
    import psutil
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from endostream.bench.scenarios import (Producers, _consume_cfg, _producer_args,
                                            _transport_block)
    from endostream.consumer.app import build

    sc = cfg.soak
    duration = float(cfg.duration_s)
    every = float(sc.sample_every_s)
    if duration <= 0 or every <= 0:
        raise ValueError(f"duration_s={duration:g} and soak.sample_every_s={every:g} must be > 0")
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    tb = _transport_block(cfg)
    src = OmegaConf.to_container(cfg.source, resolve=True)
    modality = str(src.get("modality") or "colonoscopy")
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=str(out)))
    warmup = int(cfg.warmup)
    sampler = Sampler(warmup, min(warmup, 5))
    stop = threading.Event()
    t_wall = time.monotonic()
    load = LoadSampler().start()  # stopped below, once the streaming is over

    def sample_loop(bar: Any) -> None:
        next_t = time.monotonic() + every
        while not stop.wait(min(1.0, max(0.0, next_t - time.monotonic()))):
            bar.n = min(int(time.monotonic() - sampler.t0_ns / 1e9), int(duration))
            bar.refresh()
            if time.monotonic() >= next_t:
                s = sampler.take()
                bar.set_postfix_str(f"RSS {s['rss_consumer_mb']}/{s['rss_producer_mb']} MiB, "
                                    f"p50 {s['e2e_p50_ms']} ms")
                next_t += every

    STOP.clear()
    # Ctrl-C / SIGTERM: the producer ends its stream after the frame in hand, the consumer takes
    # the end, and the samples so far are judged and written like a full run (stopped_by).
    with StopRequest(lambda _name: STOP.set()) as interrupt:
        try:
            consumer, _, _ = build(_consume_cfg(cfg, tb, work, modality), on_record=sampler.on_record)
            args = _producer_args(cfg, tb, 10**9)
            args["duration_s"] = duration
            prods = Producers(1, args)
            with tqdm(total=int(duration), desc="bench soak", unit="s", file=sys.stderr,
                      disable=not cfg.progress) as bar:
                prods.start()
                sampler.t0_ns = time.monotonic_ns()
                sampler.producer = psutil.Process(prods.procs[0].pid)
                th = threading.Thread(target=sample_loop, args=(bar,), daemon=True, name="soak-sampler")
                th.start()
                try:
                    summary = consumer.run()
                finally:
                    stop.set()
                    th.join(5)
                    consumer.rx.close()
            last = sampler.samples[-1]["t_s"] if sampler.samples else 0.0
            if (time.monotonic_ns() - sampler.t0_ns) / 1e9 - last > 0.25 * every:
                sampler.take(partial=True)  # the tail of the run (producer has exited: RSS None)
            sent = sum(r["frames_sent"] for r in prods.join())
        finally:
            if not cfg.keep_work:
                shutil.rmtree(work, ignore_errors=True)

    load.stop()
    th_cfg = {k: float(sc[k]) for k in ("settle_s", "max_rss_growth_mb_per_h", "rss_noise_mb",
                                        "max_p50_drift_ms", "max_p50_drift_frac",
                                        "max_p99_drift_ms", "max_p99_drift_frac")}
    samples = sampler.samples
    v = verdict(samples, th_cfg)
    rep: dict[str, Any] = {
        "scenario": "soak", "mode": str(cfg.mode), "duration_s": duration, "sample_every_s": every,
        "warmup": warmup, "codec": str(cfg.codec), "pace": str(cfg.pace),
        "frames_sent": sent, "frames_shown": int(summary["frames_shown"]),
        "frames_processed": int(summary["frames_processed"]),
        "frames_dropped": max(0, sent - int(summary["frames_processed"])),
        "exit_reason": summary.get("exit_reason"), "errors": summary.get("errors"),
        "samples": samples, "verdict": v, "flat": v["flat"],
        **{k: summary.get(k) for k in ("weights_sha256", "backend", "steps", "trained")},
        "source": describe(src, OmegaConf.to_container(cfg.synthetic, resolve=True)),
        "consumer": {k: summary.get(k) for k in ("frames_received", "frames_shown", "frames_processed",
                                                 "frames_dropped", "errors", "exit_reason", "fps")},
        "machine": {**bench_report.machine(), "load_during_run": load.summary()},
        "elapsed_s": round(time.monotonic() - t_wall, 2),
        **({"stopped_by": interrupt.requested} if interrupt.requested else {}),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "files": ["report.json", "soak.csv", "soak.png", "summary.md"]}
    write_csv(out / "soak.csv", samples)
    plot(out / "soak.png", samples, v, soak_caption(rep))
    (out / "summary.md").write_text(summary_md(rep))
    bench_report.write_json(out / "report.json", rep)
    mem = v["memory"]
    print(f"bench soak ({rep['mode']}, {duration:g} s, {len(samples)} samples): flat={v['flat']}; "
          f"RSS consumer {_f(mem['consumer']['growth_mb_per_h'])} MiB/h, producer "
          f"{_f(mem['producer']['growth_mb_per_h'])} MiB/h; e2e p50 drift "
          f"{_f(v['latency']['e2e_p50']['drift_ms'])} ms; sent {sent} shown {rep['frames_shown']} "
          f"dropped {rep['frames_dropped']} -> {out / 'report.json'}")
    if interrupt.requested:
        print(f"bench soak: stopped by {interrupt.requested} after {rep['elapsed_s']:g} s; the samples so far "
              f"are judged and written to {out}", flush=True)
        return interrupt.exit_code
    return 0
