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

from endostream.bench.caption import stage_label
from endostream.bench.models import mask_age
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
    from endostream.runtime.cpu_caps import probe

    info["cpu_caps"] = probe().as_dict()  # the flags behind the CPU path ``auto`` picks (backend)
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


# The live goals every figure is read against (README, "Current figures"): the video a clinician
# watches (display path: capture -> the frame written) under 60 ms at p99, the same video goal as
# the rooms-by-capacity search (capacity.video_p99_ms), and the mask on it (capture of the frame
# the mask was computed on -> the frame showing it) under 25 ms at p50 and 45 ms at p99.
GOALS_MS: dict[str, dict[str, float]] = {"display path": {"p99_ms": 60.0},
                                         "mask path": {"p50_ms": 25.0, "p99_ms": 45.0}}

_SUMMARY_COLS = ("count", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms",
                 "tail_ms", "flatness_ms")


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def _header(first: str) -> list[str]:
    """A table header with a unit in every column: "frames", then "<stat> (ms)"."""
    names = ["frames" if c == "count" else f"{c.removesuffix('_ms').replace('p999', 'p99.9')} (ms)"
             for c in _SUMMARY_COLS]
    return [f"| {first} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]


def _row(name: str, s: Mapping[str, Any]) -> str:
    return f"| {name} | " + " | ".join(_fmt(s.get(c)) for c in _SUMMARY_COLS) + " |"


def _goal(s: Mapping[str, Any] | None, path: str) -> str:
    """"p99 met" / "p99 over by N ms" against ``path``'s goals (a value must stay under its goal)."""
    if not s or s.get("p50_ms") is None:
        return "-"
    parts = []
    for key, goal in GOALS_MS[path].items():
        v = float(s[key])
        name = key.removesuffix("_ms")
        parts.append(f"{name} met (< {goal:g} ms)" if v < goal else f"{name} over by {v - goal:.1f} ms")
    return ", ".join(parts)


def goals_line() -> str:
    """The goals in words, for summaries and plot titles."""
    def one(path: str) -> str:
        return ", ".join(f"{k.removesuffix('_ms')} < {v:g} ms" for k, v in GOALS_MS[path].items())
    return f"video (display path) {one('display path')}; mask age (mask path) {one('mask path')}"


def summary_md(report: Mapping[str, Any]) -> str:
    """A short human summary. First the two end-to-end figures (the display path: capture -> the
    frame written; the mask path: capture of the frame a mask was computed on -> a frame showing
    it) against the goal, then counts, each path's stages, trend and machine."""
    e2e = report["end_to_end"]
    m = report["machine"]
    live_mask = report.get("mask_end_to_end")
    lines = [f"# endostream bench: {report['scenario']} ({report.get('mode', '-')})", "",
             f"Goals: {goals_line()}.", ""]
    lines += _header("end to end") + [_row("**display path** (HUD: video lag)", e2e)]
    if live_mask:
        lines.append(_row("**mask path** (HUD: AI lag)", live_mask))
    lines += ["", f"- display path, capture -> the frame written: {_goal(e2e, 'display path')}"]
    if live_mask:
        lines.append(f"- mask path, capture of the frame a mask was computed on -> a frame shown with "
                     f"that mask: {_goal(live_mask, 'mask path')}")
    elif report.get("end_boundary") == "sink":
        lines.append("- mask path: the same as the display path (each frame is shown with its own mask): "
                     f"{_goal(e2e, 'mask path')}")
    lines += ["",
              f"- frames: sent {report['frames_sent']}, segmented {report['frames_processed']}, not "
              f"segmented (the model skipped them) {report['frames_dropped']}, shown "
              f"{report.get('frames_shown', '-')}; {_fmt(report['fps'])} frames/s shown"
              + (f", {_fmt(report.get('model_fps'))} frames/s segmented" if report.get("model_fps") else "")
              + f"; warm-up skipped: {report['warmup']} frames per stream",
              f"- model: {report.get('backend')} K={report.get('steps')} "
              f"sha256 {str(report.get('weights_sha256'))[:12]}",
              f"- machine: {m.get('cpu')} x{m.get('cores')}, {m.get('os')}, load (1, 5, 15 min) "
              f"{m.get('load_avg_1_5_15')}", ""]
    lines += ["## Display path stages", ""] + _header("stage")
    lines += [_row(name, s) for name, s in report["stages"].items()]
    if report.get("model_stages"):
        lines += ["", "## Mask path stages (the model branch, beside the display path)", "",
                  "Up to decode the masked frame's stages are the display path's own (above). "
                  "\"until shown\" is counted per shown frame (a mask is shown on several).", ""]
        lines += _header("stage") + [_row(name, s) for name, s in report["model_stages"].items()]
    c = report.get("consistency") or {}
    if c:
        lines += ["", f"Sum of display-path stage medians {_fmt(c.get('stage_p50_sum_ms'))} ms vs its "
                      f"end-to-end median {_fmt(c.get('end_to_end_p50_ms'))} ms (ratio {_fmt(c.get('ratio'))})."]
    t = report.get("trend") or {}
    if t.get("no_backlog_growth") is not None:
        lines.append(f"Latency over time: first third p50 {_fmt(t['first_third_p50_ms'])} ms, last "
                     f"third {_fmt(t['last_third_p50_ms'])} ms, slope {t['slope_ms_per_s']} ms/s "
                     f"-> no_backlog_growth={t['no_backlog_growth']}.")
    streams = report.get("streams") or {}
    if len(streams) > 1:
        lines += ["", "## Per stream", "", "| stream | sent (frames) | shown (frames) | segmented (frames) | "
                  "mask p50 (ms) | mask p99 (ms) | segmented (frames/s) |", "|---" * 7 + "|"]
        for sid, v in streams.items():
            mk = v.get("mask_end_to_end") or {}
            lines.append(f"| {sid} | {v.get('frames_sent')} | {v.get('frames_shown')} | {v.get('frames_processed')} "
                         f"| {_fmt(mk.get('p50_ms'))} | {_fmt(mk.get('p99_ms'))} | {_fmt(v.get('model_fps'))} |")
    cmp = report.get("compare")
    if cmp:
        lines += ["", "## Models", "", "| variant | model | backend | model p50 (ms) | model p99 (ms) | mask p50 (ms) "
                  "| mask p99 (ms) | rooms by model time | rooms measured | Dice of shown masks |", "|---" * 10 + "|"]
        for name, v in cmp["variants"].items():
            mk, m = mask_age(v), v.get("model_ms") or {}
            rooms, d = v.get("rooms_served") or {}, v.get("dice") or {}
            lines.append(f"| {name} | {v.get('kind')} | {v.get('backend')} | {_fmt(m.get('p50_ms'))} | "
                         f"{_fmt(m.get('p99_ms'))} | {_fmt(mk.get('p50_ms'))} | {_fmt(mk.get('p99_ms'))} | "
                         f"{_fmt(rooms.get('by_model_time'))} | {_fmt(rooms.get('measured'))} of "
                         f"{_fmt(rooms.get('streams'))} | {_fmt(d.get('mean'))} |")
        lines += ["", f"## Compare (baseline {cmp['baseline']}, {cmp['rounds']} interleaved rounds)",
                  "", "| variant | display p50 (ms) | display p99 (ms) | mask p50 (ms) | mask p99 (ms) "
                  "| shown (frames/s) | not segmented (frames) | p50 ratio (x) | p99 ratio (x) | fps ratio (x) |",
                  "|---" * 10 + "|"]
        for name, v in cmp["variants"].items():
            r = v.get("ratios", {})
            mk = v.get("mask_end_to_end") or {}
            lines.append(f"| {name} | {_fmt(v['end_to_end']['p50_ms'])} | "
                         f"{_fmt(v['end_to_end']['p99_ms'])} | {_fmt(mk.get('p50_ms'))} | "
                         f"{_fmt(mk.get('p99_ms'))} | {_fmt(v['fps'])} | "
                         f"{v['frames_dropped']} | {_fmt(r.get('p50'))} | {_fmt(r.get('p99'))} | "
                         f"{_fmt(r.get('fps'))} |")
    return "\n".join(lines) + "\n"


def _goal_lines(ax: Any, *, vertical: bool) -> None:
    """Each path's goals as grey lines, labelled in the legend."""
    draw = ax.axvline if vertical else ax.axhline
    styles = iter([":", "--", "-."])
    for path, goals in GOALS_MS.items():
        for key, goal in goals.items():
            draw(goal, color="0.25", ls=next(styles), lw=1.3,
                 label=f"goal {path.split()[0]} {key.removesuffix('_ms')} < {goal:g} ms")


def _cdf(ax: Any, values: Sequence[float], **kw: Any) -> None:
    import numpy as np

    v = np.sort(np.asarray(values, float))
    if v.size:
        ax.plot(v, np.arange(1, v.size + 1) / v.size, **kw)


def _paths(s: Mapping[str, Any]) -> list[tuple[str, list[float], list[float], dict[str, list[float]]]]:
    """(name, t_s, ms, stages) for the display path and, when measured, the mask path."""
    out = [("display path", s["e2e_t_s"], s["e2e_ms"], s["stages"])]
    if s.get("mask_ms"):
        out.append(("mask path", s["mask_t_s"], s["mask_ms"], s.get("mask_stages") or {}))
    return out


def draw_caption(fig: Any, caption: str) -> None:
    """The caption (model, machine, load, verdict: bench/caption.py) under the figure; the
    verdict line red when a goal is missed."""
    if not caption:
        return
    *head, verdict = caption.splitlines()
    fig.text(0.01, -0.01, "\n".join(head), ha="left", va="top", fontsize=8.5)
    line = 8.5 * 1.3 / 72 / fig.get_figheight()  # one text line, in figure heights
    fig.text(0.01, -0.01 - line * len(head), verdict, ha="left", va="top",
             fontsize=8.5, weight="bold", color="#b00000" if "MISSED" in verdict or verdict.startswith("NOT") else "#006400")


def plot_all(out: Path, series: Mapping[str, Mapping[str, Any]], order_name: str = "",
             caption: str = "") -> list[str]:
    """PNG plots. ``series``: variant -> {"e2e_t_s", "e2e_ms", "stages": {name: [ms]}} and, for
    a live pipeline, "mask_t_s", "mask_ms", "mask_stages" (the mask path per shown frame).
    Written: latency_cdf.png (both paths against the goals, and per stage), latency_over_time.png,
    stage_breakdown.png (stacked stage medians per path). Linear millisecond axes throughout:
    the goals are in milliseconds and read best on a linear scale. ``caption``: written under
    each figure, so that a PNG read alone names model, backend, machine, load and verdict."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on a CI box or a tower PC
    import matplotlib.pyplot as plt
    import numpy as np

    files = []
    single = len(series) == 1
    path_style = {"display path": "-", "mask path": "--"}
    colors = plt.get_cmap("tab10")
    # 1. CDFs: left, end to end per path (per variant when comparing) against the goals;
    #    right, each stage of each path (one configuration only).
    ncols = 2 if single else 1
    fig, axes = plt.subplots(1, ncols, figsize=(13 if single else 8, 5), squeeze=False)
    ax = axes[0][0]
    for i, (name, s) in enumerate(series.items()):
        for pname, _, ms, _ in _paths(s):
            label = pname if single else f"{name}: {pname}"
            _cdf(ax, ms, lw=2.2, ls=path_style[pname], color=colors(i if not single else
                                                                    (0 if pname == "display path" else 3)),
                 label=label)
    _goal_lines(ax, vertical=True)
    ax.axhline(0.5, color="0.7", lw=0.8)
    ax.axhline(0.99, color="0.7", lw=0.8)
    ax.set_xlim(left=0)
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("fraction of frames")
    ax.set_title("End to end: display path and mask path")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if single:
        ax = axes[0][1]
        s = next(iter(series.values()))
        cmap = plt.get_cmap("tab20")
        k = 0
        for pname, _, _, stages in _paths(s):
            for stage, vals in stages.items():
                if pname == "mask path" and stage in s["stages"] and stage in ("encode", "send", "receive", "decode"):
                    continue  # the masked frame's transport stages: the display path's, already drawn
                _cdf(ax, vals, lw=1.3, ls=path_style[pname], color=cmap(k % 20),
                     label=f"{stage_label(stage)} ({pname.split()[0]})")
                k += 1
        ax.set_xlim(left=0)
        ax.set_xlabel("stage duration (ms)")
        ax.set_ylabel("fraction of frames")
        ax.set_title("Per stage (solid: display path, dashed: mask path)")
        ax.grid(alpha=0.3)
        if k:
            ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    draw_caption(fig, caption)
    fig.savefig(out / "latency_cdf.png", dpi=100, bbox_inches="tight", metadata={"Description": caption})
    plt.close(fig)
    files.append("latency_cdf.png")

    # 2. Latency over time, both paths: a rising line means a growing backlog.
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, (name, s) in enumerate(series.items()):
        for pname, t, ms, _ in _paths(s):
            label = pname if single else f"{name}: {pname}"
            color = colors(i if not single else (0 if pname == "display path" else 3))
            ax.plot(t, ms, "." if pname == "display path" else "x", ms=3, color=color, label=label)
    _goal_lines(ax, vertical=False)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("capture time since start (s)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title("End-to-end latency over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    draw_caption(fig, caption)
    fig.savefig(out / "latency_over_time.png", dpi=100, bbox_inches="tight", metadata={"Description": caption})
    plt.close(fig)
    files.append("latency_over_time.png")

    # 3. Stacked stage medians, one bar per path (and variant), the end-to-end median marked.
    bars: list[tuple[str, dict[str, list[float]], list[float]]] = []
    for name, s in series.items():
        for pname, _, ms, stages in _paths(s):
            bars.append((pname if single else f"{name}\n{pname}", stages, ms))
    labels = [b[0] for b in bars]
    all_stages: list[str] = []
    for _, stages, _ in bars:
        all_stages += [k for k in stages if k not in all_stages]
    fig, ax = plt.subplots(figsize=(max(6.5, 1.5 * len(bars) + 4.5), 5))
    cmap = plt.get_cmap("tab20")
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for i, stage in enumerate(all_stages):
        h = np.array([float(np.median(st[stage])) if len(st.get(stage, [])) else 0.0 for _, st, _ in bars])
        ax.bar(x, h, 0.6, bottom=bottom, color=cmap(i % 20), label=stage_label(stage))
        bottom += h
    e2e = [float(np.median(ms)) if len(ms) else 0.0 for _, _, ms in bars]
    ax.hlines(e2e, x - 0.36, x + 0.36, color="k", lw=2.2, zorder=3, label="end-to-end median")
    mask_p50 = GOALS_MS["mask path"]["p50_ms"]  # the only median goal
    ax.axhline(mask_p50, color="0.25", ls="--", lw=1.2, label=f"goal mask p50 < {mask_p50:g} ms")
    ax.set_xticks(x, labels)
    ax.set_xlim(-0.7, len(bars) - 0.3)
    ax.set_ylim(0, max(mask_p50, *e2e, *bottom) * 1.12)
    ax.set_ylabel("median latency (ms)")
    ax.set_title("Where the time goes (stage medians)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    draw_caption(fig, caption)
    fig.savefig(out / "stage_breakdown.png", dpi=100, bbox_inches="tight", metadata={"Description": caption})
    plt.close(fig)
    files.append("stage_breakdown.png")
    return files
