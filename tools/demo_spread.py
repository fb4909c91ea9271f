"""The demo's figures with their run-to-run spread.

`endostream demo` runs live: which frames the model gets to, and so the Dice of the masks shown,
depends on timing, and moves between runs. This runs the demo N times, one after another, each
into its own out folder (``<out>/run-1``, ...), and prints and saves (``<out>/spread.json``) the
mean, min, max and sample standard deviation of ``dice_mean``, ``frames_shown`` and the latency
p50 / p99 over the runs, with the machine and the weights.

    .venv/bin/python tools/demo_spread.py                      # 3 runs into out/demo_spread
    .venv/bin/python tools/demo_spread.py --runs 5 --out out/spread5 -- codec=jpeg

Anything after ``--`` is passed to every ``endostream demo`` as overrides. A run that fails stops
the tool with its exit status and the run's last output lines.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The figures spread over: summary.json key -> a function of the summary giving the value.
FIGURES: dict[str, Any] = {
    "dice_mean": lambda s: s.get("dice_mean"),
    "frames_shown": lambda s: s.get("frames_shown"),
    "latency_p50_ms": lambda s: (s.get("latency_ms") or {}).get("p50"),
    "latency_p99_ms": lambda s: (s.get("latency_ms") or {}).get("p99"),
}


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def spread(values: list[float]) -> dict[str, float | int | None]:
    """Mean, min, max and sample standard deviation (None for fewer than two values)."""
    if not values:
        return {"n": 0, "mean": None, "min": None, "max": None, "sd": None}
    return {"n": len(values), "mean": statistics.fmean(values), "min": min(values),
            "max": max(values), "sd": statistics.stdev(values) if len(values) > 1 else None}


def run_demo(endostream: str, out: Path, overrides: list[str]) -> dict[str, Any]:
    """One `endostream demo` into ``out``; its summary.json."""
    cmd = [endostream, "demo", f"out={out}", *overrides]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-5:])
        raise SystemExit(f"demo_spread: {' '.join(cmd)} exited {p.returncode}:\n{tail}")
    summary = json.loads((out / "summary.json").read_text())
    summary["_wall_s"] = round(time.monotonic() - t0, 1)
    return summary


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _fmt(v: float | int | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="how many demo runs (default 3)")
    ap.add_argument("--out", type=Path, default=Path("out/demo_spread"),
                    help="folder for run-1, run-2, ... and spread.json (default out/demo_spread)")
    ap.add_argument("--endostream", default=str(REPO / ".venv" / "bin" / "endostream"),
                    help="the endostream command (default: the repository's .venv)")
    ap.add_argument("overrides", nargs="*", help="overrides for every demo run (after --)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs must be at least 1, got {args.runs}")
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    runs = []
    for i in range(1, args.runs + 1):
        s = run_demo(args.endostream, out / f"run-{i}", list(args.overrides))
        row = {k: f(s) for k, f in FIGURES.items()}
        row.update(out=str(out / f"run-{i}"), load_average=load_average(), wall_s=s["_wall_s"])
        runs.append(row)
        print(f"run {i}/{args.runs}: Dice {_fmt(row['dice_mean'], 3)}, shown {row['frames_shown']}, "
              f"latency p50 {_fmt(row['latency_p50_ms'], 1)} / p99 {_fmt(row['latency_p99_ms'], 1)} ms, "
              f"load {row['load_average']}", flush=True)
    last = s
    result = {
        "runs": runs,
        "spread": {k: spread([float(r[k]) for r in runs if r[k] is not None]) for k in FIGURES},
        "overrides": list(args.overrides),
        "weights_sha256": last.get("weights_sha256"), "backend": last.get("backend"),
        "steps": last.get("steps"), "frames_sent": last.get("frames_sent"),
        "machine": {"cpu": cpu_model(), "python": platform.python_version()},
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "spread.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{args.runs} demo runs, {result['machine']['cpu']}, backend {result['backend']}, "
          f"weights {str(result['weights_sha256'])[:12]}:")
    print(f"{'figure':<16}{'mean':>10}{'min':>10}{'max':>10}{'sd':>10}")
    for k, st in result["spread"].items():
        d = 3 if k == "dice_mean" else 1
        print(f"{k:<16}" + "".join(f"{_fmt(st[c], d):>10}" for c in ("mean", "min", "max", "sd")))
    print(f"saved {out / 'spread.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
