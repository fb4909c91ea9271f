"""Latency of each CPU inference path, measured back to back in one process, interleaved.

    python tools/bench_cpu_paths.py [--weights weights/polyp.pt] [--threads 2] [--iters 200] [--out out/cpu_paths.json]
                                    [--steps 0 1] [--dice] [--with-feat]

Paths: ONNX Runtime float32 (the shipped session: spinning encode at K=0), OpenVINO float32,
OpenVINO bf16 (where the CPU has bf16 units; elsewhere it is reported as skipped), OpenVINO INT8
(the calibrated encode graph, ``endostream export precision=int8``, where ``auto`` would run it). For each:
the encode graph alone at batch 1 on real preprocessed frames, and the whole K=0
``Segmenter.segment`` call (preprocess, encode, postprocess) on the same frames. Every
iteration runs every path once, in an order rotated each iteration, so a background job slowing
the machine for a while hits every path alike. Prints a table and saves JSON with the CPU's
model name and flags, the path ``auto`` picks, and the load average (a loaded machine must say
so). ``--dice`` also runs ``endostream eval`` (validation split, K=0) on each path and keeps a
reduced-precision path only where its validation mean Dice is within ``--max-dice-drop``
(0.003) of ONNX Runtime float32: re-run it whenever the weights change.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from endostream.inference.preprocess import find_fov, to_input  # noqa: E402
from endostream.inference.segmenter import load_segmenter  # noqa: E402
from endostream.runtime.cpu_caps import choose_cpu_path, has_openvino, probe  # noqa: E402

PATHS = {"ort-fp32": ("onnxruntime", {}), "openvino-fp32": ("openvino", {"precision": "fp32"}),
         "openvino-bf16": ("openvino", {"precision": "bf16"}), "openvino-int8": ("openvino", {"precision": "int8"})}
# --with-feat: the float32 paths once more with the encode graph's ``feat`` output computed, as
# before K=0 dropped it (onnx_passes.drop_outputs): the before/after of that rewrite.
WITH_FEAT = {"ort-fp32+feat": ("onnxruntime", {"feat": True}),
             "openvino-fp32+feat": ("openvino", {"precision": "fp32", "feat": True})}


def frames(n: int) -> list[np.ndarray]:
    """Real frames: the bundled demo clip (ClinicDB validation sequences), its first ``n``."""
    cap = cv2.VideoCapture(str(Path(__file__).resolve().parent.parent / "assets/demo/clinicdb_demo.mp4"))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    if not out:
        raise SystemExit("bench_cpu_paths: cannot read assets/demo/clinicdb_demo.mp4")
    return out


def eval_dice(weights: str, backend: str, opts: dict[str, str], out: Path, steps: int = 0) -> float:
    """Validation mean Dice (the mean of the two sets' Dice at 0.5, as the model card) of one path."""
    cmd = [str(Path(sys.executable).with_name("endostream")), "eval", f"model.weights={weights}",
           f"model.backend={backend}", f"model.steps={steps}", "model.warm_start=false", "flicker=false", f"out={out}"]
    cmd += [f"+model.backend_options.{k}={v}" for k, v in opts.items()]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    r = json.loads(out.read_text())
    return round((r["kvasir"]["dice@0.5"] + r["clinicdb"]["dice@0.5"]) / 2, 5)


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "mean_ms": round(float(a.mean()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default="weights/polyp.pt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", default="out/cpu_paths.json")
    ap.add_argument("--dice", action="store_true", help="also the validation Dice of each path (endostream eval)")
    ap.add_argument("--max-dice-drop", type=float, default=0.003)
    ap.add_argument("--steps", type=int, nargs="+", default=[0], help="K values, each path at each K, interleaved")
    ap.add_argument("--with-feat", action="store_true", help="also the float32 paths computing feat at K=0")
    args = ap.parse_args()
    if args.with_feat:
        PATHS.update(WITH_FEAT)
    caps = probe()
    segs, skipped = {}, {}
    for name, (backend, opts) in PATHS.items():
        if backend == "openvino" and not has_openvino():
            skipped[name] = "openvino is not installed"
            continue
        if name.endswith("bf16") and not caps.bf16:
            skipped[name] = f"no bf16 units on this CPU ({caps.model})"
            continue
        if name.endswith("int8"):
            from endostream.runtime.registry import usable_int8

            if usable_int8(args.weights) is None:  # what auto would run here
                skipped[name] = (f"no current, kept INT8 graph exact on this CPU ({caps.model}): "
                                 f"endostream export weights={args.weights} precision=int8")
                continue
        for k in args.steps:
            key = name if args.steps == [0] else f"{name}@K{k}"
            segs[key] = load_segmenter(args.weights, backend=backend, steps=k, warm_start=False,
                                       threads=args.threads, backend_options=opts)
    imgs = frames(50)
    size = next(iter(segs.values())).input_size
    inputs = [to_input(im, size, find_fov(im)) for im in imgs]
    st = next(iter(segs.values())).state(0)
    memory, valid = st.memory, np.ones_like(st.valid)  # a full memory: the steady-state graph
    enc = {n: [] for n in segs}
    seg = {n: [] for n in segs}
    names = list(segs)
    for i in range(args.warmup + args.iters):
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            be = segs[n].backend
            t0 = time.perf_counter()
            be.encode(inputs[i % len(inputs)], memory, valid)
            t1 = time.perf_counter()
            segs[n].segment(imgs[i % len(imgs)], 0)
            t2 = time.perf_counter()
            if i >= args.warmup:
                enc[n].append((t1 - t0) * 1e3)
                seg[n].append((t2 - t1) * 1e3)
    auto = choose_cpu_path(caps, has_openvino())
    if auto[0] == "openvino":
        from endostream.runtime.registry import usable_int8

        auto = ("openvino", "int8") if usable_int8(args.weights) is not None else auto
    result = {"cpu": caps.as_dict(), "auto_path": "-".join(auto),
              "threads": args.threads, "batch": 1, "iters": args.iters, "input_size": size,
              "weights": args.weights, "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
              "paths": {n: {"backend": segs[n].info["backend"], "encode": stats(enc[n]), "segment": stats(seg[n])}
                        for n in segs}, "skipped": skipped}
    if args.dice:
        for n, r in result["paths"].items():
            backend, opts = PATHS[n.split("@")[0]]
            k = segs[n].steps
            r["dice"] = eval_dice(args.weights, backend, opts, Path(args.out).with_suffix(f".eval-{n}.json"), k)
        for n, r in result["paths"].items():
            ref = result["paths"][n.replace(n.split("@")[0], "ort-fp32")]["dice"]  # float32 at the same K
            r["dice_drop"] = round(ref - r["dice"], 5)
            r["kept"] = r["dice_drop"] <= args.max_dice_drop
    print(f"CPU: {caps.model}  flags: {' '.join(caps.as_dict()['flags'])}  auto: {result['auto_path']}  "
          f"load: {result['load_avg_1_5_15']}")
    print(f"{'path':16} {'encode p50/p99 ms':>20} {'segment p50/p99 ms':>20}")
    for n, r in result["paths"].items():
        print(f"{n:16} {r['encode']['p50_ms']:>9.2f} / {r['encode']['p99_ms']:<8.2f} "
              f"{r['segment']['p50_ms']:>9.2f} / {r['segment']['p99_ms']:<8.2f}"
              + (f"  Dice {r['dice']:.4f} (drop {r['dice_drop']:+.4f}, {'kept' if r['kept'] else 'REJECTED'})"
                 if "dice" in r else ""))
    for n, why in skipped.items():
        print(f"{n:16} skipped: {why}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
