"""``executor=local``: a process pool on this machine, one model per worker process.

Work is handed out a whole video at a time (the temporal memory needs the frames in order).
Pool processes are spawned, not forked: the parent may hold threads (tqdm, Hydra), and a fork
of a threaded process can deadlock; spawning costs a second or two per worker, once.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from endostream.batch.inputs import VideoJob
from endostream.batch.video import BatchWorker, VideoOptions

OnProgress = Callable[[int], None]
OnResult = Callable[[VideoJob, dict[str, Any]], None]

_worker: BatchWorker | None = None
_progress_q: Any = None


def _init(model_cfg: dict[str, Any], options: VideoOptions, out_root: str, q: Any) -> None:
    global _worker, _progress_q
    _worker = BatchWorker(model_cfg, options, out_root, executor="local")
    _progress_q = q


def _run(job: VideoJob) -> dict[str, Any]:
    assert _worker is not None
    return _worker.run(job, progress=_progress_q.put)


def crash_result(job: VideoJob, exc: BaseException) -> dict[str, Any]:
    """A worker died or could not start (model failed to load, killed): the video failed."""
    msg = str(exc).strip().splitlines()
    return {"status": "failed", "name": job.name, "input": job.input, "frames": 0,
            "errors": [f"worker failed: {type(exc).__name__}: {msg[0] if msg else ''}"]}


def run_local(jobs: list[VideoJob], model_cfg: dict[str, Any], options: VideoOptions, out_root: str, *,
              workers: int, on_progress: OnProgress, on_result: OnResult) -> None:
    """Process ``jobs``; ``on_result`` is called in this process as each video finishes."""
    if workers <= 1 or len(jobs) == 1:
        # One worker: no pool, no second process to start; same code path inside.
        worker = BatchWorker(model_cfg, options, out_root, executor="local")
        for job in jobs:
            on_result(job, worker.run(job, progress=on_progress))
        return
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init,
                               initargs=(model_cfg, options, out_root, q))
    try:
        futures: dict[Future, VideoJob] = {pool.submit(_run, job): job for job in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(q, on_progress)
            for fut in done:
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - BrokenProcessPool and friends
                    result = crash_result(futures[fut], exc)
                on_result(futures[fut], result)
        _drain(q, on_progress)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: don't wait for running videos
        raise
    pool.shutdown(wait=True)


def _drain(q: Any, on_progress: OnProgress) -> None:
    while True:
        try:
            on_progress(q.get_nowait())
        except queue_mod.Empty:
            return
