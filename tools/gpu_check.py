"""GPU check: CUDA parity against the CPU reference, TensorRT engines if present, the torch-CUDA
path at batch 1 (p50/p99), batched multi-stream through the live worker, the live scenarios of
``endostream bench`` on the GPU (one room: mask age and video p99, missed deadlines; rooms by
capacity: the most rooms meeting the goals), then the backend benchmark.

Needs only this repository, its weights, PyTorch (with CUDA) and numpy; OpenCV (real frames,
preprocessing) and OmegaConf (the live worker's model configs) where installed: without them the
multi-stream section times batched backend calls directly. No PyAV, no onnxruntime-gpu, nothing
from the network. Every section is bounded by ``--budget-s`` and rewrites
``<out>/gpu_check.json`` when it ends, so a run stopped at the bound keeps what it measured.

    python tools/gpu_check.py OUT_DIR [--weights weights/polyp.pt] [--budget-s 420]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 5e-2}  # max abs prob difference vs CPU fp32
MASK_AGREEMENT = 0.999


def model_inputs(cfg: dict[str, Any], frames: int = 6) -> list[np.ndarray]:
    """(1,3,S,S) float32 inputs in [-1,1]: real ClinicDB frames when OpenCV and data exist."""
    s = int(cfg["input_size"])
    try:
        import cv2

        folder = Path("/work/shared/data/cvc-clinicdb/images")
        imgs = [cv2.imread(str(folder / f"{i}.png")) for i in range(1, frames + 1)]
        if all(i is not None for i in imgs):
            from endostream.inference.preprocess import find_fov, to_input

            return [to_input(i, s, find_fov(i)) for i in imgs]
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    return [rng.uniform(-1, 1, (1, 3, s, s)).astype(np.float32) for _ in range(frames)]


def sequence(be: Any, inputs: list[np.ndarray], steps: int = 2) -> list[np.ndarray]:
    """The Segmenter's model-grid loop (memory + warm start) without preprocessing."""
    from endostream.model.scheduler import MaskScheduler
    from endostream.inference.stream_state import StreamState

    cfg = be.config
    s = int(cfg["input_size"])
    st = StreamState(int(cfg["memory_frames"]), int(cfg["neck_channels"]), s // 16, seed=0)
    sch = MaskScheduler(int(cfg["num_train_steps"]), float(cfg["mask_scale"]))
    probs = []
    for x in inputs:
        out = be.encode(x, st.memory, st.valid)
        noise = st.noise((1, 1, s // 4, s // 4))
        if st.prev_prob is not None:
            ts = sch.set_timesteps(steps, start_t=499)
            sample = sch.add_noise(sch.mask_to_signal(st.prev_prob), noise, ts[0])
        else:
            ts, sample = sch.set_timesteps(steps), noise
        sample, prob = be.from_numpy(sample.astype(np.float32)), None
        for t in ts:
            sample, prob = sch.step(be.denoise(out["feat"], sample, np.array([t], np.float32)), t, sample)
        p = be.to_numpy(prob).astype(np.float32)
        st.push(be.to_numpy(out["memory_out"]), p)
        probs.append(p)
    return probs


def latency_batch1(weights: str, specs: list[dict[str, Any]], steps: tuple[int, ...] = (0, 2),
                   iters: int = 300) -> list[dict[str, Any]]:
    """p50/p99 ms of one frame at batch 1 (encode + K steps + result home) per spec and K."""
    from endostream.runtime.benchmark import frame_fn, time_ms
    from endostream.runtime.registry import create_backend

    rows = []
    for sp in specs:
        try:
            be = create_backend(sp["name"], weights, device=sp.get("device", "cuda"), **sp.get("options", {}))
            for k in steps:
                ms = time_ms(frame_fn(be, k, 1), warmup=30, iters=iters)
                rows.append({"backend": sp["label"], "steps": k, "iters": iters, "p50_ms": float(np.percentile(ms, 50)),
                             "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())})
                print(f"batch 1 {sp['label']:>28} K={k}: p50 {rows[-1]['p50_ms']:.3f} ms  p99 {rows[-1]['p99_ms']:.3f} ms",
                      flush=True)
        except Exception as exc:  # noqa: BLE001 - one failing backend must not hide the others' results
            rows.append({"backend": sp["label"], "error": f"{type(exc).__name__}: {exc}"})
            print(f"batch 1 {sp['label']}: {rows[-1]['error']}", flush=True)
    return rows


def synthetic_frames(n: int, height: int = 480, width: int = 640) -> list[np.ndarray]:
    """``n`` deterministic BGR frames, endoscope-like: a bright disc (the field of view) on black."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:height, :width]
    disc = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2) < (0.48 * height) ** 2
    frames = []
    for _ in range(n):
        img = rng.integers(40, 220, (height, width, 3), dtype=np.uint8)
        img[~disc] = 0
        frames.append(img)
    return frames


def worker_batching_available() -> bool:
    """The live worker batches across streams (Inference.run_batch + InferenceWorker.submit_many)
    and its model configs can be read (OmegaConf)."""
    import importlib.util

    if importlib.util.find_spec("omegaconf") is None:
        return False
    from endostream.consumer.worker import Inference, InferenceWorker

    return hasattr(Inference, "run_batch") and hasattr(InferenceWorker, "submit_many")


def worker_streams(weights: str, streams: int, overrides: dict[str, Any], seconds: float = 8.0,
                   rounds: int = 10_000, timeout_s: float = 30.0) -> dict[str, Any]:
    """``streams`` synthetic streams through the live worker (ModelRouter -> Inference ->
    InferenceWorker), closed loop: every stream submits a new frame as soon as the previous batch
    is done, for ``seconds`` or ``rounds`` rounds, whichever ends first. Frames/s over all streams,
    per-frame latency (submit to postprocess) p50/p99, and the batch sizes the worker ran."""
    from omegaconf import OmegaConf

    from endostream.consumer.worker import Inference, InferenceWorker, ModelRouter, modality_spec
    from endostream.types import Frame

    spec = modality_spec(OmegaConf.load(ROOT / "configs" / "modality" / "colonoscopy.yaml"))
    records: list[dict[str, Any]] = []
    router = ModelRouter(spec, {"weights": weights, "max_batch": streams, **overrides}, ROOT / "configs")
    router.get(spec.name)  # load (and for TensorRT, build) outside the timed loop
    inference = Inference(router, record=records.append)
    worker = InferenceWorker(inference)
    images = synthetic_frames(4)
    try:
        def round_(seq: int) -> None:
            now = time.monotonic_ns()
            worker.submit_many([(Frame(sid, seq, now, images[(sid + seq) % len(images)], spec.name), 0)
                                for sid in range(streams)])
            if worker.wait_for(0, seq, 0, time.monotonic_ns() + int(timeout_s * 1e9)) is None:
                raise RuntimeError(f"no result for stream 0 seq {seq} within {timeout_s} s")
            while worker.busy:  # the rest of the streams (over the batch cap, or still in flight)
                time.sleep(0.0002)

        for seq in range(3):  # warm-up: CUDA graphs, allocator, first-batch effects
            round_(seq)
        warm, records[:] = inference.total_processed, []
        inference.batches.clear()
        t0, done = time.monotonic(), 0
        while done < rounds and time.monotonic() - t0 < seconds:
            round_(3 + done)
            done += 1
        elapsed = time.monotonic() - t0
    finally:
        worker.stop()
    lat = np.array([(r["postprocess"] - r["t_capture_ns"]) / 1e6 for r in records])
    return {"streams": streams, "rounds": done, "seconds": round(elapsed, 3), "frames": len(records),
            "fps_all_streams": len(records) / elapsed if elapsed else None,
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "batch": inference.batch_stats(), "errors": inference.errors, "warmup_frames": warm,
            "frame_shape": list(images[0].shape)}


def direct_batches(weights: str, spec: dict[str, Any], batches: tuple[int, ...], steps: int = 0,
                   iters: int = 50) -> list[dict[str, Any]]:
    """The fallback when the worker cannot be used: batched backend calls timed directly (no
    preprocessing, no worker), frames/s per batch size."""
    from endostream.runtime.benchmark import frame_fn, time_ms
    from endostream.runtime.registry import create_backend

    be = create_backend(spec["name"], weights, device=spec.get("device", "cuda"),
                        **{**spec.get("options", {}), "max_batch": max(batches)})
    rows = []
    for b in batches:
        ms = time_ms(frame_fn(be, steps, b), warmup=5, iters=iters)
        rows.append({"streams": b, "batch": b, "steps": steps, "p50_ms": float(np.percentile(ms, 50)),
                     "p99_ms": float(np.percentile(ms, 99)), "fps_all_streams": b * 1e3 / float(np.percentile(ms, 50))})
    return rows


def multistream(weights: str, streams: tuple[int, ...], overrides: dict[str, Any], seconds: float,
                deadline: float, rounds: int = 10_000) -> dict[str, Any]:
    """Streams 1, 4, 16, 64 ... through the live worker (or, without it, batched backend calls)."""
    res: dict[str, Any] = {"overrides": overrides, "rows": []}
    if not worker_batching_available():
        res["path"] = "backend calls (the live worker does not batch across streams here, or omegaconf is missing)"
        spec = {"name": overrides["backend"], "device": overrides.get("device", "cuda"),
                "options": overrides.get("backend_options", {})}
        res["rows"] = direct_batches(weights, spec, streams, int(overrides.get("steps", 0)))
        return res
    res["path"] = "live worker (ModelRouter -> Inference -> InferenceWorker, submit_many + wait_for)"
    for n in streams:
        if time.monotonic() + seconds + 20 > deadline:
            res["rows"].append({"streams": n, "skipped": "time budget"})
            continue
        try:
            row = worker_streams(weights, n, overrides, seconds=seconds, rounds=rounds)
        except Exception as exc:  # noqa: BLE001 - keep the other stream counts
            row = {"streams": n, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        res["rows"].append(row)
        print(f"streams {n:>3}: " + (f"{row['fps_all_streams']:.0f} frames/s, latency p50 {row['latency_p50_ms']:.2f} "
                                     f"p99 {row['latency_p99_ms']:.2f} ms, batch {row['batch']}"
                                     if "fps_all_streams" in row else str(row)), flush=True)
    return res


def live_bench(out: Path, deadline: float, frames: int = 250, max_rooms: int = 12) -> dict[str, Any]:
    """The CPU machine's live scenarios, here with ``auto`` picking the GPU backend:
    ``bench scenario=pipeline`` (one room) and ``bench scenario=multi`` (rooms by capacity, batches
    up to ``max_rooms``), each its own process, reports under ``out/bench-*``. Needs the whole
    package (PyAV, ZeroMQ, Hydra); each run is cut at ``deadline``."""
    import os
    import subprocess

    exe = Path(sys.executable).with_name("endostream")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "endostream.cli"]
    runs = {"pipeline": ["scenario=pipeline", f"frames={frames}"],
            "multi": ["scenario=multi", f"frames={frames // 2}", f"capacity.max_rooms={max_rooms}",
                      f"model.max_batch={max_rooms}"]}
    res: dict[str, Any] = {}
    for name, args in runs.items():
        left = deadline - time.monotonic()
        if left < 30:
            res[name] = {"skipped": "time budget"}
            continue
        folder = out / f"bench-{name}"
        p = subprocess.run([*cmd, "bench", *args, "progress=false", f"out={folder}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=left, env=dict(os.environ))
        res[name] = {"rc": p.returncode, "stdout": p.stdout[-3000:], "stderr": p.stderr[-1500:]}
        if name == "pipeline" and (folder / "report.json").is_file():
            r = json.loads((folder / "report.json").read_text())
            res[name].update({k: r.get(k) for k in ("backend", "end_to_end", "mask_end_to_end", "same_frame")},
                             timeline=(r.get("consumer") or {}).get("timeline"))
        if name == "multi" and (folder / "capacity.json").is_file():
            c = json.loads((folder / "capacity.json").read_text())
            res[name].update(rooms_max=c["rooms_max"], steps=c["steps"], backend=c["backend"])
        print(f"gpu_check: bench {name}: rc {p.returncode}; {p.stdout.strip().splitlines()[-1:] or ''}", flush=True)
    return res


def parity(weights: str, specs: list[dict[str, Any]], ref: list[np.ndarray], inputs: list[np.ndarray]) -> list[dict]:
    from endostream.runtime.registry import create_backend

    rows = []
    for sp in specs:
        row: dict[str, Any] = {"backend": sp["label"]}
        try:
            be = create_backend(sp["name"], weights, device=sp.get("device", "cuda"), **sp.get("options", {}))
            got = sequence(be, inputs)
            diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(got, ref)])
            row["max_abs"] = float(diff.max())
            row["p999_abs"] = float(np.percentile(diff, 99.9))  # FP16: a few steep-sigmoid pixels set the max
            row["mask_agreement"] = float(np.mean([np.mean((a > 0.5) == (b > 0.5)) for a, b in zip(got, ref)]))
            tol = TOLERANCE[sp.get("options", {}).get("precision", "fp32")]
            row["tolerance"] = tol
            row["pass"] = row["max_abs"] <= tol and row["mask_agreement"] >= MASK_AGREEMENT
        except Exception as exc:  # one failing backend must not hide the others' results
            row.update({"pass": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
        print(f"parity {row['backend']:>28}: " + ("PASS" if row["pass"] else "FAIL") +
              f"  max_abs={row.get('max_abs')}  agreement={row.get('mask_agreement')}  {row.get('error', '')}", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="out/gpu_check")
    ap.add_argument("--weights", default=str(ROOT / "weights" / "polyp.pt"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--stream-seconds", type=float, default=8.0)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--budget-s", type=float, default=420.0, help="every section ends by then")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import torch
    except ImportError:
        print(f"gpu_check: {sys.executable} cannot import torch - nothing to check", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA GPU (torch %s, CUDA build %s) - nothing to check"
              % (torch.__version__, torch.version.cuda), file=sys.stderr)
        return 2
    import importlib.util

    from endostream.runtime.benchmark import benchmark_backends, gpu_specs
    from endostream.runtime.registry import create_backend

    t0 = time.monotonic()
    deadline = t0 + a.budget_s
    has_trt = importlib.util.find_spec("tensorrt") is not None
    ort_cuda = ort_trt = False
    if importlib.util.find_spec("onnxruntime") is not None:
        from endostream.runtime.ort_backend import TRT_EP, available_providers, cuda_available

        ort_cuda, ort_trt = cuda_available(), TRT_EP in available_providers()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "gpu": torch.cuda.get_device_name(0),
                              "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                              "tensorrt": None, "onnxruntime_cuda": ort_cuda, "onnxruntime_tensorrt_ep": ort_trt,
                              "budget_s": a.budget_s}
    if has_trt:
        import tensorrt

        report["tensorrt"] = tensorrt.__version__
    print(json.dumps({k: report[k] for k in ("gpu", "torch", "cuda", "tensorrt", "onnxruntime_cuda")}), flush=True)

    def save() -> None:
        report["total_s"] = time.monotonic() - t0
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")

    def section(name: str, need_s: float, fn: Any) -> None:
        """Run one section if ``need_s`` seconds are left; record its result or its error."""
        if time.monotonic() + need_s > deadline:
            report[name] = {"skipped": f"time budget ({a.budget_s:.0f} s) nearly spent"}
            print(f"gpu_check: {name} skipped (time budget)", flush=True)
        else:
            s0 = time.monotonic()
            try:
                report[name] = fn()
            except Exception as exc:  # noqa: BLE001 - later sections still run
                report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
                print(f"gpu_check: {name} failed: {report[name]['error']}", flush=True)
            report[f"{name}_s"] = round(time.monotonic() - s0, 1)
        save()

    ref_be = create_backend("torch", a.weights, device="cpu", threads=4)
    inputs = model_inputs(ref_be.config)
    ref = sequence(ref_be, inputs)
    specs = gpu_specs(has_trt, ort_cuda, max(a.batches)) + [
        {"label": "torch-cuda-bf16-graphs", "name": "torch", "device": "cuda",
         "options": {"precision": "bf16", "cuda_graphs": True}}]
    if ort_cuda or ort_trt:  # ONNX Runtime's fallback order (TensorRT EP, CUDA EP, CPU), FP32 and FP16 graphs
        specs += [{"label": f"onnxruntime-gpu-{p}", "name": "onnxruntime", "device": "gpu",
                   "options": {"precision": p, "max_batch": max(a.batches)}} for p in ("fp32", "fp16")]
    section("parity", 60, lambda: parity(a.weights, specs, ref, inputs))
    torch_specs = [sp for sp in specs if sp["name"] == "torch" and sp["label"] != "torch-cuda-bf16-graphs"]
    section("batch1", 30, lambda: latency_batch1(a.weights, torch_specs, iters=a.iters))
    overrides = {"backend": "torch", "device": "cuda", "steps": 0, "threads": 4,
                 "backend_options": {"precision": "fp16", "cuda_graphs": True}}
    section("multistream", 40, lambda: multistream(a.weights, tuple(a.streams), overrides, a.stream_seconds, deadline))
    section("live_bench", 90, lambda: live_bench(out, deadline - 100))  # leaves the benchmark its 90 s
    bench_specs = [sp for sp in specs if sp["label"] != "torch-cuda-bf16-graphs"]
    section("benchmark", 90, lambda: benchmark_backends(a.weights, bench_specs, (0, 2), batch_sizes=tuple(a.batches),
                                                        warmup=20, iters=a.iters))
    print(f"gpu_check: wrote {out / 'gpu_check.json'} in {report['total_s']:.0f} s", flush=True)
    rows = report["parity"] if isinstance(report.get("parity"), list) else []
    return 0 if rows and all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
