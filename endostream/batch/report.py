"""The final table of a batch job: one line per video, plain text (readable in a log)."""

from __future__ import annotations

from typing import Any

_HEAD = ("video", "status", "frames", "fps", "x real", "polyp s", "dice@0.5", "worker", "error")


def _row(r: dict[str, Any]) -> list[str]:
    status = "skipped" if r.get("skipped") else r.get("status", "?")
    dice = (r.get("metrics") or {}).get("dice@0.5")
    worker = r.get("worker") or {}
    err = "; ".join(r.get("errors") or [])
    return [str(r.get("name", "?")), status, str(r.get("frames", "")),
            f"{r['fps_achieved']:.1f}" if r.get("fps_achieved") else "",
            f"{r['realtime_factor']:.2f}" if r.get("realtime_factor") else "",
            f"{r['polyp_present_s']:.1f}" if r.get("polyp_present_s") is not None else "",
            f"{dice:.3f}" if dice is not None else "",
            f"{worker.get('executor', '')}:{worker.get('pid', '')}" if worker else "",
            err[:100]]


def format_table(results: list[dict[str, Any]]) -> str:
    rows = [list(_HEAD)] + [_row(r) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEAD) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * (sum(widths) + 2 * len(widths) + 5))
    return "\n".join(ln.rstrip() for ln in lines)


def print_table(results: list[dict[str, Any]]) -> None:
    print(format_table(results))
