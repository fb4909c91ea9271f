"""Batch throughput on this machine: one worker x 2 threads, two workers x 1 thread, and the
local Ray cluster (2 actors x 1 thread), in one run, on 25 fps 384x288 clips made from
ClinicDB frames, the shipped model at K=2. Prints a table and saves JSON.

    nice -n 15 .venv/bin/python tools/bench_batch.py [--clips 4 --frames 60 --out out/bench_batch]

Job fps = all frames / job wall time (model loading and worker start included, Ray cluster
start excluded and reported apart); realtime factor = job fps / 25.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from endostream.batch.run import run as batch_run  # noqa: E402
from endostream.cli import compose  # noqa: E402

FPS = 25
STEPS = 2  # the goal is stated at K=2
CONFIGS = {  # name -> overrides
    "local 1 worker x 2 threads": ["executor=local", "workers=1", "model.threads=2"],
    "local 2 workers x 1 thread": ["executor=local", "workers=2", "model.threads=1"],
    "ray 2 actors x 1 thread": ["executor=ray", "workers=2", "model.threads=1"],
}


def make_clips(data: Path, folder: Path, clips: int, frames: int) -> int:
    """``clips`` H.264 clips of ``frames`` consecutive ClinicDB frames each; returns all frames."""
    ids = sorted(int(p.stem) for p in (data / "images").glob("*.png"))
    if len(ids) < clips * frames:
        raise SystemExit(f"need {clips * frames} ClinicDB frames in {data}, found {len(ids)}")
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(clips):
        with av.open(str(folder / f"clip{c}.mp4"), "w") as out:
            s = out.add_stream("libx264", rate=Fraction(FPS))
            s.width, s.height, s.pix_fmt = 384, 288, "yuv420p"
            for i, k in enumerate(ids[c * frames:(c + 1) * frames]):
                vf = av.VideoFrame.from_ndarray(cv2.imread(str(data / "images" / f"{k}.png")), format="bgr24")
                vf.pts = i
                for p in s.encode(vf):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
    return clips * frames


def bench_one(name: str, overrides: list[str], clips: Path, out: Path, total: int, backend: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cfg = compose("batch", [f"input={clips}", f"output={out}", f"model.backend={backend}", f"model.steps={STEPS}", "force=true",
                            "progress=false", *overrides])
    t0 = time.perf_counter()
    rc = batch_run(cfg)
    wall = time.perf_counter() - t0
    sums = [json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))]
    per_video = [s["fps_achieved"] for s in sums if s.get("fps_achieved")]
    return {"config": name, "overrides": overrides, "rc": rc, "frames": total, "wall_s": round(wall, 2),
            "job_fps": round(total / wall, 2), "realtime_factor": round(total / wall / FPS, 3),
            "per_video_fps_mean": round(sum(per_video) / len(per_video), 2) if per_video else None,
            "workers_seen": len({(s["worker"]["pid"], s["worker"]["actor_id"]) for s in sums})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cvc-clinicdb"))
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--out", default="out/bench_batch")
    args = ap.parse_args()
    out = Path(args.out)
    total = make_clips(Path(args.data), out / "clips", args.clips, args.frames)
    load_before = os.getloadavg()
    results = []
    for name, overrides in CONFIGS.items():
        extra = {}
        if "executor=ray" in overrides:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            extra["ray_start_s"] = round(time.perf_counter() - t0, 2)
        try:
            results.append({**bench_one(name, overrides, out / "clips", out / "run", total, args.backend), **extra})
        finally:
            if extra:
                ray.shutdown()
    report = {"video": f"{args.clips} clips x {args.frames} frames, 384x288 @ {FPS} fps (ClinicDB)",
              "backend": args.backend, "steps": STEPS, "cpu_count": os.cpu_count(),
              "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()], "results": results,
              "best": max(results, key=lambda r: r["job_fps"])["config"]}
    print(f"\n{'config':30s} {'job fps':>8s} {'x real':>7s} {'wall s':>7s} {'video fps':>9s} workers")
    for r in results:
        print(f"{r['config']:30s} {r['job_fps']:8.2f} {r['realtime_factor']:7.3f} {r['wall_s']:7.1f} "
              f"{r['per_video_fps_mean'] or 0:9.2f} {r['workers_seen']}"
              + (f"  (+{r['ray_start_s']} s cluster start)" if "ray_start_s" in r else ""))
    print(f"best: {report['best']}; load average before/after: {report['loadavg_before']} / {report['loadavg_after']}")
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {out / 'results.json'}")


if __name__ == "__main__":
    main()
