"""`endostream batch input=<folder|glob|list file> output=OUT`: every frame of every video
through the live path's segmenter, resumable, on a local process pool or a Ray cluster.

Per video, ``OUT/<stem>/``: ``overlay.mp4``, ``masks/`` (one PNG per frame), optionally
``masks.mkv``, ``detections.csv``, ``summary.json`` (with metrics when ground truth exists).
``OUT/manifest.json`` lists every input as done, failed (with its error) or pending. A re-run
skips finished videos whose input and settings are unchanged. Exit code 1 if any failed.

SIGINT/SIGTERM: no video starts after it; running ones stop after their current frame and
their partial folders are removed; finished ones are in the manifest as done; one line says
how many are done and pending and where the manifest is; exit 130/143. Re-running the same
command does exactly the rest. See docs/BATCH.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from endostream.batch.inputs import VideoJob, frame_count, plan_jobs
from endostream.batch.manifest import Manifest, clean_partials, finished
from endostream.batch.video import VideoOptions
from endostream.interrupt import StopRequest

# Model settings that change the masks; a finished video is re-done when one of them changes.
_MASK_SETTINGS = ("steps", "warm_start", "warm_start_t", "warm_steps", "presence_threshold",
                  "mask_threshold", "use_temporal", "uncertainty_samples")


def model_config(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.model`` as plain kwargs for load_segmenter, the weights path made absolute
    (pool processes and Ray actors may not share this working directory)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    if model.get("kind") == "onnx":  # a single-pass graph (configs/model/onnx.yaml): its file instead
        model["graph"] = {**model.get("graph", {}), "path": str(Path(model["graph"]["path"]).resolve())}
    else:
        model["weights"] = str(Path(model["weights"]).resolve())
    return model


def video_options(cfg: DictConfig, model: dict[str, Any]) -> VideoOptions:
    from endostream.fileutil import file_sha256

    onnx = model.get("kind") == "onnx"
    settings = {"weights_sha256": file_sha256(model["graph"]["path"] if onnx else model["weights"]),
                **({"graph": model["graph"]} if onnx else {k: model.get(k) for k in _MASK_SETTINGS}),
                "mask_pngs": bool(cfg.mask_pngs), "mask_video": bool(cfg.mask_video)}
    return VideoOptions(mask_pngs=bool(cfg.mask_pngs), mask_video=bool(cfg.mask_video), crf=int(cfg.crf),
                        opacity=float(cfg.overlay.opacity), color=tuple(int(c) for c in cfg.overlay.color),
                        settings=settings)


def default_workers(threads: int) -> int:
    """Processes that fill the machine: cores (this process's affinity) // threads per worker."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, threads))


def run(cfg: DictConfig) -> int:
    from tqdm import tqdm

    from endostream.batch.report import print_table

    for key in ("input", "output"):
        if OmegaConf.is_missing(cfg, key):
            raise ValueError(f"{key}= is required: endostream batch input=<folder|glob|list> output=<folder>")
    out_root = Path(cfg.output).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(OmegaConf.to_container(cfg.input) if OmegaConf.is_list(cfg.input) else str(cfg.input),
                     str(Path(cfg.gt).resolve()) if cfg.gt else None)
    model = model_config(cfg)
    options = video_options(cfg, model)
    clean_partials(out_root)
    manifest = Manifest(out_root, jobs, {"executor": cfg.executor, "model": model, "settings": options.settings})
    results: dict[str, dict[str, Any]] = {}
    todo: list[VideoJob] = []
    for job in jobs:
        prev = None if cfg.force else finished(out_root, job, options.settings)
        if prev is not None:
            results[job.name] = {**prev, "skipped": True}
            manifest.entries[job.name].update(status="done", error=None)
        else:
            todo.append(job)
    manifest.save()

    show = bool(cfg.progress)
    vbar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="videos", unit="video",
                position=0, disable=not show, file=sys.stderr)
    hints = [frame_count(j.input) for j in todo] if show else []
    fbar = tqdm(total=sum(hints) or None, desc="frames", unit="fr", position=1, disable=not show,
                file=sys.stderr, smoothing=0.1)

    def on_result(job: VideoJob, result: dict[str, Any]) -> None:
        if result["status"] == "interrupted":  # stays pending; restarts from its first frame next run
            if result.get("frames"):
                stopped.append(job.name)
            return
        results[job.name] = result
        err = "; ".join(result.get("errors") or []) or None
        manifest.set(job.name, result["status"], err, frames=result.get("frames"))
        vbar.update(1)
        if result["status"] == "failed":
            vbar.write(f"batch: {job.name} failed: {err}", file=sys.stderr)

    threads = int(model.get("threads", 1))
    workers = int(cfg.workers) if cfg.workers else None
    stopped: list[str] = []
    try:
        with StopRequest() as stop:
            if not todo:
                pass
            elif cfg.executor == "local":
                from endostream.batch.local import run_local

                run_local(todo, model, options, str(out_root), workers=workers or default_workers(threads),
                          on_progress=fbar.update, on_result=on_result, stop=stop.event)
            elif cfg.executor == "ray":
                from endostream.batch.ray_pool import run_ray

                init = OmegaConf.to_container(cfg.ray.init, resolve=True) if cfg.ray.init else {}
                run_ray(todo, model, options, str(out_root), workers=workers, on_progress=fbar.update,
                        on_result=on_result, address=cfg.ray.address, init_kwargs=init, stop=stop.event)
            else:
                raise ValueError(f"unknown executor {cfg.executor!r}; expected local or ray")
    finally:
        fbar.close()
        vbar.close()
        manifest.save()  # whatever did not finish stays "pending" for the next run
    if stop.requested:
        clean_partials(out_root)  # a Ray actor killed mid-video leaves its folder behind
        return _interrupted(stop, jobs, results, stopped, manifest.path)
    print_table([results.get(j.name, {"name": j.name, "status": "pending"}) for j in jobs])
    failed = sum(r.get("status") == "failed" for r in results.values())
    done = sum(r.get("status") == "done" and not r.get("skipped") for r in results.values())
    pending = len(jobs) - len(results)
    print(f"batch: {len(jobs)} videos: {len(jobs) - len(todo)} skipped (already done), {done} processed, "
          f"{failed} failed, {pending} pending; manifest: {manifest.path}")
    return 1 if failed else 0


def _interrupted(stop: StopRequest, jobs: list[VideoJob], results: dict[str, dict[str, Any]],
                 stopped: list[str], manifest: Path) -> int:
    """The one line an interrupted run prints; the exit code for the signal."""
    done = sum(r.get("status") == "done" for r in results.values())
    failed = sum(r.get("status") == "failed" for r in results.values())
    pending = len(jobs) - len(results)
    mid = f" ({len(stopped)} stopped mid-video, restarting from their first frame)" if stopped else ""
    print(f"batch: stopped by {stop.requested}: {done} of {len(jobs)} videos done, {failed} failed, "
          f"{pending} pending{mid}; manifest: {manifest}; the same command resumes", flush=True)
    return stop.exit_code
