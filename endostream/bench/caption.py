"""What every bench plot says about itself, so a PNG read alone is not misread: the model and
backend measured, the machine (CPU model name, cores), how loaded it was during the run, and
the verdict against the live goals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Stage names as the plots label them: the display path's wait for the frame's own mask
# (overlay.wait_ms) is its own stage, drawing the overlay another.
STAGE_LABELS: dict[str, str] = {"wait": "wait for own mask (overlay.wait_ms)",
                                "overlay": "overlay (drawing)"}


def stage_label(name: str) -> str:
    return STAGE_LABELS.get(name, name)


def _model(v: Mapping[str, Any]) -> str:
    if v.get("backend") is None and v.get("steps") is None:
        return "none (transport only)"
    steps = v.get("steps")
    kind = v.get("kind") or "diffusion"
    what = f"{kind} K={steps}" if kind == "diffusion" and steps is not None else str(kind)
    sha = str(v.get("weights_sha256") or "")[:12]
    return f"{what}, backend {v.get('backend') or '-'}" + (f", weights {sha}" if sha else "")


def model_line(report: Mapping[str, Any]) -> str:
    variants = (report.get("compare") or {}).get("variants") or {}
    if variants:
        return "models: " + "; ".join(f"{name}: {_model(v)}" for name, v in variants.items())
    return "model: " + _model(report)


def machine_line(report: Mapping[str, Any]) -> str:
    m = report.get("machine") or {}
    load = m.get("load_during_run") or {}
    if load.get("mean_1min") is not None:
        busy = (f"load during the run (1-min average) mean {load['mean_1min']:g}, max "
                f"{load['max_1min']:g} on {load.get('cores') or m.get('cores')} cores")
    else:
        busy = f"load at the end (1, 5, 15 min) {m.get('load_avg_1_5_15', '-')}"
    return f"machine: {m.get('cpu', '-')} x{m.get('cores', '-')}; {busy}"


def _verdict(s: Mapping[str, Any] | None, goals: Mapping[str, float]) -> tuple[bool, str]:
    parts, ok = [], True
    for key, goal in goals.items():
        v = (s or {}).get(key)
        name = key.removesuffix("_ms")
        if v is None:
            parts.append(f"{name} not measured")
            ok = False
        elif float(v) < goal:
            parts.append(f"{name} {float(v):.1f} ms < {goal:g} (met)")
        else:
            parts.append(f"{name} {float(v):.1f} ms >= {goal:g} (MISSED)")
            ok = False
    return ok, ", ".join(parts)


def verdict_line(report: Mapping[str, Any], goals_ms: Mapping[str, Mapping[str, float]]) -> str:
    """"GOALS MET" / "GOALS MISSED", then each path's figures against its goals. The mask path is
    the display path where every frame is shown with its own mask (lossless)."""
    variants = (report.get("compare") or {}).get("variants") or {"": report}
    lines, all_ok = [], True
    for name, v in variants.items():
        mask = v.get("mask_end_to_end") or (v.get("end_to_end") if v.get("end_boundary") == "sink"
                                            and not v.get("model_stages") else None)
        ok1, video = _verdict(v.get("end_to_end"), goals_ms["display path"])
        ok2, age = _verdict(mask, goals_ms["mask path"]) if mask else (True, "not shown")
        all_ok &= ok1 and ok2
        lines.append(f"{name + ': ' if name else ''}video {video}; mask age {age}")
    return f"{'GOALS MET' if all_ok else 'GOALS MISSED'}: " + " | ".join(lines)


def caption(report: Mapping[str, Any], goals_ms: Mapping[str, Mapping[str, float]]) -> str:
    """Three lines for the foot of every plot."""
    what = f"endostream bench {report.get('scenario', '-')} ({report.get('mode', '-')})"
    return "\n".join([f"{what}: {model_line(report)}", machine_line(report),
                      verdict_line(report, goals_ms)])


def soak_caption(report: Mapping[str, Any]) -> str:
    """The soak's three lines: its verdict is flatness (memory and latency over the run)."""
    v = report.get("verdict") or {}
    mem = (v.get("memory") or {}).get("consumer") or {}
    growth = mem.get("growth_mb_per_h")
    verdict = ("FLAT: memory and latency flat over the run" if v.get("flat") else
               "NOT FLAT: memory or latency drifted over the run")
    if growth is not None:
        verdict += f" (consumer memory {growth:+.1f} MiB/h)"
    what = f"endostream bench soak ({report.get('mode', '-')}, {report.get('duration_s', 0):g} s)"
    return "\n".join([f"{what}: {model_line(report)}", machine_line(report), verdict])
