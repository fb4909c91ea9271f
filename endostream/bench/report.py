"""Bench outputs: report.json, frames.csv, summary.md and PNG plots, plus the machine
description every figure needs beside it. Only writes what the analysis already computed."""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from endostream.bench.stats import stage_durations

_PACKAGES = ("endostream", "numpy", "torch", "onnxruntime", "pyzmq", "opencv-python-headless",
             "av", "hydra-core")


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, OS, Python, package versions and the load at report time
    (a benchmark on a busy machine must say so)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
                            "python": sys.version.split()[0]}
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["load_avg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    info["packages"] = versions
    return info


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def write_csv(path: Path, records: Sequence[Mapping[str, Any]], order: Sequence[str],
              end: str) -> None:
    """One row per frame: ids, warm-up flag, end-to-end and per-stage ms, raw stamps (ns)."""
    stages = list(order[1:])
    extra = sorted({k for r in records for k in r.get("extra", {})})
    cols = ["variant", "stream_id", "seq", "warmup", "t_capture_ns", "end_to_end_ms",
            *[f"{s}_ms" for s in stages], *extra, *[f"{b}_ns" for b in order]]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in records:
            st = r["stamps_ns"]
            row: dict[str, Any] = {"variant": r.get("variant", ""), "stream_id": r["stream_id"],
                                   "seq": r["seq"], "warmup": int(bool(r.get("warmup"))),
                                   "t_capture_ns": r["t_capture_ns"]}
            if end in st:
                row["end_to_end_ms"] = round((st[end] - r["t_capture_ns"]) / 1e6, 4)
            row.update({f"{k}_ms": round(v, 4) for k, v in stage_durations(st, order).items()})
            row.update(r.get("extra", {}))
            row.update({f"{b}_ns": st[b] for b in order if b in st})
            w.writerow(row)


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def summary_md(report: Mapping[str, Any]) -> str:
    """A short human summary: counts, end to end, per stage, trend, machine."""
    e2e = report["end_to_end"]
    m = report["machine"]
    lines = [f"# endostream bench: {report['scenario']} ({report.get('mode', '-')})", "",
             f"- frames sent {report['frames_sent']}, processed {report['frames_processed']}, "
             f"dropped {report['frames_dropped']}, shown {report.get('frames_shown', '-')}, "
             f"fps {_fmt(report['fps'])}, warm-up skipped {report['warmup']} per stream",
             f"- model: {report.get('backend')} K={report.get('steps')} "
             f"sha256 {str(report.get('weights_sha256'))[:12]}",
             f"- machine: {m.get('cpu')} x{m.get('cores')}, {m.get('os')}, load "
             f"{m.get('load_avg_1_5_15')}", ""]
    cols = ["count", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms",
            "tail_ms", "flatness_ms"]
    lines += ["| stage | " + " | ".join(c.replace("_ms", "") for c in cols) + " |",
              "|---" * (len(cols) + 1) + "|"]
    rows = [("**end to end**", e2e), *report["stages"].items()]
    if report.get("mask_end_to_end"):
        rows.append(("mask end to end", report["mask_end_to_end"]))
    rows += [(f"model: {k}", v) for k, v in (report.get("model_stages") or {}).items()]
    for name, s in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(s.get(c)) for c in cols) + " |")
    c = report.get("consistency") or {}
    if c:
        lines += ["", f"Sum of stage medians {_fmt(c.get('stage_p50_sum_ms'))} ms vs end-to-end "
                      f"median {_fmt(c.get('end_to_end_p50_ms'))} ms (ratio {_fmt(c.get('ratio'))})."]
    t = report.get("trend") or {}
    if t.get("no_backlog_growth") is not None:
        lines.append(f"Latency over time: first third p50 {_fmt(t['first_third_p50_ms'])} ms, last "
                     f"third {_fmt(t['last_third_p50_ms'])} ms, slope {t['slope_ms_per_s']} ms/s "
                     f"-> no_backlog_growth={t['no_backlog_growth']}.")
    cmp = report.get("compare")
    if cmp:
        lines += ["", f"## Compare (baseline {cmp['baseline']}, {cmp['rounds']} interleaved rounds)",
                  "", "| variant | p50 ms | p99 ms | fps | dropped | p50 ratio | p99 ratio | fps ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, v in cmp["variants"].items():
            r = v.get("ratios", {})
            lines.append(f"| {name} | {_fmt(v['end_to_end']['p50_ms'])} | "
                         f"{_fmt(v['end_to_end']['p99_ms'])} | {_fmt(v['fps'])} | "
                         f"{v['frames_dropped']} | {_fmt(r.get('p50'))} | {_fmt(r.get('p99'))} | "
                         f"{_fmt(r.get('fps'))} |")
    return "\n".join(lines) + "\n"


def plot_all(out: Path, series: Mapping[str, Mapping[str, Any]], order_name: str = "") -> list[str]:
    """PNG plots. ``series``: variant -> {"e2e_t_s", "e2e_ms", "stages": {name: [ms]}}.
    Written: latency_cdf.png, latency_over_time.png, stage_breakdown.png."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a CI box or a tower PC
    import matplotlib.pyplot as plt
    import numpy as np

    files = []
    single = len(series) == 1
    # 1. CDF: per stage for one configuration, end to end per variant when comparing.
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, s in series.items():
        curves = {"end to end": s["e2e_ms"]} if not single else {"end to end": s["e2e_ms"], **s["stages"]}
        for label, vals in curves.items():
            v = np.sort(np.asarray(vals, float))
            if v.size:
                ax.plot(v, np.arange(1, v.size + 1) / v.size,
                        label=label if single else name, lw=2.2 if label == "end to end" else 1.2)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Latency CDF" + (" per stage" if single else " per variant"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=100)
    plt.close(fig)
    files.append("latency_cdf.png")
    # 2. End-to-end latency over time: a rising line means a growing backlog.
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, s in series.items():
        ax.plot(s["e2e_t_s"], s["e2e_ms"], ".", ms=3, label=name)
    ax.set_xlabel("capture time since start (s)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title("End-to-end latency over time")
    ax.grid(alpha=0.3)
    if not single:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency_over_time.png", dpi=100)
    plt.close(fig)
    files.append("latency_over_time.png")
    # 3. Stacked per-stage medians, one bar per variant, end-to-end median marked.
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(series) + 3), 5))
    names = list(series)
    all_stages: list[str] = []
    for s in series.values():
        all_stages += [k for k in s["stages"] if k not in all_stages]
    cmap = plt.get_cmap("tab20")
    bottom = np.zeros(len(names))
    for i, stage in enumerate(all_stages):
        h = np.array([float(np.median(series[n]["stages"][stage])) if len(series[n]["stages"].get(stage, []))
                      else 0.0 for n in names])
        ax.bar(names, h, bottom=bottom, color=cmap(i % 20), label=stage)
        bottom += h
    e2e = [float(np.median(series[n]["e2e_ms"])) if len(series[n]["e2e_ms"]) else 0.0 for n in names]
    ax.scatter(names, e2e, marker="_", s=800, color="k", zorder=3, label="end-to-end p50")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("Per-stage breakdown (medians)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out / "stage_breakdown.png", dpi=100)
    plt.close(fig)
    files.append("stage_breakdown.png")
    return files
