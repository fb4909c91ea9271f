"""Latency statistics: per-frame stamps -> per-stage durations -> percentiles, tail, flatness,
and a backlog-growth check. Pure numpy; no sockets, no model.

Conventions follow Holoscan's flow benchmarking: warm-up frames are skipped, ``tail`` is
p100 - p95 (how bad the worst frames are compared to the typical slow one) and ``flatness``
is p90 - p10 (how wide the usual spread is). All outputs are milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# Stage boundaries in pipeline order. A stage is named by the boundary that ends it, so
# "receive" is send -> receive (socket + queueing) and "sink" is overlay -> sink written.
# "infer_start" is decode -> the model starting on the frame (live: waiting for the worker).
# "wait" (live display path) is decode -> the display stops waiting for the frame's own mask
# (overlay.wait_ms at most); "overlay" after it is the drawing alone.
# step1..stepK are expanded in :func:`stage_order` from what the records hold.
BOUNDARIES: tuple[str, ...] = ("grab", "encode", "send", "receive", "decode", "infer_start", "preprocess",
                               "encoder", "step*", "postprocess", "wait", "overlay", "sink")

# The mask path's last stage: the mask's postprocess -> the sink writing a frame drawn with it.
UNTIL_SHOWN = "until shown"

PERCENTILES: dict[str, float] = {"p10_ms": 10, "p50_ms": 50, "p90_ms": 90, "p95_ms": 95,
                                 "p99_ms": 99, "p999_ms": 99.9}


def summarize(values_ms: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """count, mean, std, min, p10..p99.9, max, tail (max - p95), flatness (p90 - p10), in ms.

    Percentiles use linear interpolation (numpy's default), so p50 of [1, 2, 3, 4] is 2.5.
    An empty input gives ``count`` 0 and None elsewhere (a stage a scenario never reaches).
    """
    a = np.asarray(values_ms, dtype=np.float64)
    a = a[np.isfinite(a)]
    keys = ["mean_ms", "std_ms", "min_ms", *PERCENTILES, "max_ms", "tail_ms", "flatness_ms"]
    if a.size == 0:
        return {"count": 0, **{k: None for k in keys}}
    pct = dict(zip(PERCENTILES, np.percentile(a, list(PERCENTILES.values()))))
    out: dict[str, float | int | None] = {
        "count": int(a.size), "mean_ms": float(a.mean()), "std_ms": float(a.std()),
        "min_ms": float(a.min()), **{k: float(v) for k, v in pct.items()},
        "max_ms": float(a.max())}
    out["tail_ms"] = out["max_ms"] - out["p95_ms"]
    out["flatness_ms"] = out["p90_ms"] - out["p10_ms"]
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def skip_warmup(records: Sequence[Mapping], warmup: int) -> list[Mapping]:
    """Drop the first ``warmup`` records per stream (first-call allocations, JIT, caches).
    Per stream, so that N producers each lose their own cold start, not stream 0's alone."""
    seen: dict[int, int] = {}
    kept = []
    for r in records:
        sid = int(r.get("stream_id", 0))
        seen[sid] = seen.get(sid, 0) + 1
        if seen[sid] > warmup:
            kept.append(r)
    return kept


def stage_order(records: Iterable[Mapping]) -> list[str]:
    """The boundaries present in ``records[*]["stamps_ns"]``, in pipeline order."""
    present: set[str] = set()
    for r in records:
        present.update(r["stamps_ns"])
    steps = sorted((s for s in present if s.startswith("step") and s[4:].isdigit()),
                   key=lambda s: int(s[4:]))
    order: list[str] = []
    for b in BOUNDARIES:
        if b == "step*":
            order += steps
        elif b in present:
            order.append(b)
    return order


def stage_durations(stamps_ns: Mapping[str, int], order: Sequence[str]) -> dict[str, float]:
    """One frame's stage durations (ms): each present boundary minus the previous present one.
    Because stages tile the frame's timeline, they sum to last - first exactly."""
    out: dict[str, float] = {}
    prev: int | None = None
    for b in order:
        t = stamps_ns.get(b)
        if t is None:
            continue
        if prev is not None:
            out[b] = (t - prev) / 1e6
        prev = t
    return out


def end_to_end_ms(record: Mapping, end: str = "sink") -> float | None:
    """Capture time -> ``end`` boundary (ms), measured directly, never summed from stages."""
    t_end = record["stamps_ns"].get(end)
    return None if t_end is None else (t_end - int(record["t_capture_ns"])) / 1e6


def stage_table(records: Sequence[Mapping], order: Sequence[str]) -> dict[str, list[float]]:
    """Stage name -> durations (ms) over ``records`` (only frames that have that stage)."""
    table: dict[str, list[float]] = {b: [] for b in order[1:]}
    for r in records:
        for k, v in stage_durations(r["stamps_ns"], order).items():
            table[k].append(v)
    return table


def backlog_check(t_s: Sequence[float], latency_ms: Sequence[float], *,
                  tolerance_ms: float = 5.0, tolerance_frac: float = 0.25) -> dict[str, float | bool | None]:
    """Does latency stay flat over the run (a live pipeline that falls behind grows a queue,
    so its latency climbs steadily)?

    Fits latency = a + slope * t and compares the medians of the first and last thirds.
    ``no_backlog_growth`` is True when the last third's median exceeds the first's by less
    than max(tolerance_ms, tolerance_frac * first) AND the fitted rise over the run is below
    the same bound. Medians of thirds resist single stalls that would tilt a fit alone.
    """
    t = np.asarray(t_s, np.float64)
    y = np.asarray(latency_ms, np.float64)
    if t.size < 6:
        return {"slope_ms_per_s": None, "fit_rise_ms": None, "first_third_p50_ms": None,
                "last_third_p50_ms": None, "no_backlog_growth": None}
    slope = float(np.polyfit(t - t[0], y, 1)[0]) if np.ptp(t) > 0 else 0.0
    n3 = t.size // 3
    first, last = float(np.median(y[:n3])), float(np.median(y[-n3:]))
    bound = max(tolerance_ms, tolerance_frac * first)
    rise = slope * float(np.ptp(t))
    return {"slope_ms_per_s": round(slope, 5), "fit_rise_ms": round(rise, 3),
            "first_third_p50_ms": round(first, 3), "last_third_p50_ms": round(last, 3),
            "no_backlog_growth": bool(last - first < bound and rise < bound)}


def analyze(records: Sequence[Mapping], *, end: str, warmup: int,
            model_records: Sequence[Mapping] = (), live: bool = False) -> dict:
    """Records of one configuration -> end_to_end, stages (the end-to-end path: they tile it,
    so their medians add up to about the end-to-end median), model_stages and mask_end_to_end
    (live: the model branch beside the display path; model_stages ends with "until shown", the
    mask's postprocess -> the sink showing it), trend, fps, a consistency line, and ``series``
    for the plots (display path; live also the mask path per shown frame and its stages)."""
    kept = skip_warmup(sorted(records, key=lambda r: int(r["t_capture_ns"])), warmup)
    order = stage_order(kept)
    e2e = [(int(r["t_capture_ns"]), v) for r in kept if (v := end_to_end_ms(r, end)) is not None]
    e2e_ms = [v for _, v in e2e]
    t_s = [(t - e2e[0][0]) / 1e9 for t, _ in e2e] if e2e else []
    stages = {k: summarize(v) for k, v in stage_table(kept, order).items()}
    ends = sorted(int(r["stamps_ns"][end]) for r in kept if end in r["stamps_ns"])
    out: dict = {"end_to_end": summarize(e2e_ms), "stages": stages,
                 "fps": round((len(ends) - 1) / ((ends[-1] - ends[0]) / 1e9), 2)
                 if len(ends) > 1 and ends[-1] > ends[0] else None,
                 "trend": backlog_check(t_s, e2e_ms) if live else None,
                 "series": {"e2e_t_s": t_s, "e2e_ms": e2e_ms, "stages": stage_table(kept, order)}}
    p50s = [s["p50_ms"] for s in stages.values() if s["p50_ms"] is not None]
    total = out["end_to_end"]["p50_ms"]
    # Medians of parts need not add up exactly (skewed stages); means do, so both are shown.
    means = [s["mean_ms"] for s in stages.values() if s["mean_ms"] is not None]
    out["consistency"] = {"stage_p50_sum_ms": round(sum(p50s), 3), "end_to_end_p50_ms": total,
                          "ratio": round(sum(p50s) / total, 3) if total else None,
                          "stage_mean_sum_ms": round(sum(means), 3),
                          "end_to_end_mean_ms": out["end_to_end"]["mean_ms"]}
    if model_records:
        mkept = skip_warmup(sorted(model_records, key=lambda r: int(r["t_capture_ns"])), warmup)
        # The model branch starts at decode; the display path may stamp the same frame's overlay
        # and sink meanwhile (one Frame object), which belong to the other branch.
        skip = ("grab", "encode", "send", "receive", "wait", "overlay", "sink")
        morder = [b for b in stage_order(mkept) if b not in skip]
        out["model_stages"] = {k: summarize(v) for k, v in stage_table(mkept, morder).items()}
        # What the overlay really shows: capture of the frame the mask was computed on ->
        # the sink writing a frame with that mask. Per shown frame, its stages tile that path:
        # the masked frame's own stages up to postprocess, then "until shown" (postprocess ->
        # the sink of the frame drawn with it: waiting for the next displayed frame + drawing).
        by_key = {(r.get("run", 0), int(r["stream_id"]), int(r["seq"])): r for r in model_records}
        path_order = [b for b in stage_order(model_records) if b not in ("wait", "overlay", "sink")]
        mask_t, mask_e2e = [], []
        mask_stages: dict[str, list[float]] = {b: [] for b in path_order[1:]}
        mask_stages[UNTIL_SHOWN] = []
        for r in kept:
            m = by_key.get((r.get("run", 0), int(r["stream_id"]), _int(r.get("extra", {}).get("mask_seq"))))
            if m is None or end not in r["stamps_ns"]:
                continue
            mask_t.append((int(r["t_capture_ns"]) - e2e[0][0]) / 1e9 if e2e else 0.0)
            mask_e2e.append((r["stamps_ns"][end] - int(m["t_capture_ns"])) / 1e6)
            for k, v in stage_durations(m["stamps_ns"], path_order).items():
                mask_stages[k].append(v)
            if "postprocess" in m["stamps_ns"]:
                mask_stages[UNTIL_SHOWN].append((r["stamps_ns"][end] - m["stamps_ns"]["postprocess"]) / 1e6)
        out["mask_end_to_end"] = summarize(mask_e2e)
        out["model_stages"][UNTIL_SHOWN] = summarize(mask_stages[UNTIL_SHOWN])
        out["series"].update(mask_t_s=mask_t, mask_ms=mask_e2e,
                             mask_stages={k: v for k, v in mask_stages.items() if v})
        post = sorted(int(r["stamps_ns"]["postprocess"]) for r in mkept if "postprocess" in r["stamps_ns"])
        out["model_fps"] = (round((len(post) - 1) / ((post[-1] - post[0]) / 1e9), 2)
                            if len(post) > 1 and post[-1] > post[0] else None)
    return out


def _int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return -1
