"""``executor=local``: a process pool on this machine, one model per worker process.

Work is handed out a whole video at a time (the temporal memory needs the frames in order).
Pool processes are spawned, not forked: the parent may hold threads (tqdm, Hydra), and a fork
of a threaded process can deadlock; spawning costs a second or two per worker, once.

Stopping (``stop`` set by the parent's SIGINT/SIGTERM handler): no video is started after it,
and running ones end after their current frame (their partial folders removed, reported as
``interrupted``). Workers ignore SIGINT (a terminal's Ctrl-C reaches them too; the parent
decides) and treat a SIGTERM of their own as the same stop.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import signal
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from endostream.batch.inputs import VideoJob
from endostream.batch.video import BatchWorker, VideoOptions
from endostream.interrupt import children_ignore_sigint

OnProgress = Callable[[int], None]
OnResult = Callable[[VideoJob, dict[str, Any]], None]

_worker: BatchWorker | None = None
_progress_q: Any = None
_stop: Any = None  # the parent's multiprocessing Event
_stop_here = threading.Event()  # this worker's own SIGTERM


def _stopping() -> bool:
    return _stop_here.is_set() or (_stop is not None and _stop.is_set())


def _init(model_cfg: dict[str, Any], options: VideoOptions, out_root: str, q: Any, stop: Any) -> None:
    global _worker, _progress_q, _stop
    signal.signal(signal.SIGTERM, lambda *_: _stop_here.set())
    _progress_q, _stop = q, stop
    _worker = BatchWorker(model_cfg, options, out_root, executor="local")


def _run(job: VideoJob) -> dict[str, Any]:
    assert _worker is not None
    return _worker.run(job, progress=_progress_q.put, should_stop=_stopping)


def crash_result(job: VideoJob, exc: BaseException) -> dict[str, Any]:
    """A worker died or could not start (model failed to load, killed): the video failed."""
    msg = str(exc).strip().splitlines()
    return {"status": "failed", "name": job.name, "input": job.input, "frames": 0,
            "errors": [f"worker failed: {type(exc).__name__}: {msg[0] if msg else ''}"]}


def run_local(jobs: list[VideoJob], model_cfg: dict[str, Any], options: VideoOptions, out_root: str, *,
              workers: int, on_progress: OnProgress, on_result: OnResult,
              stop: threading.Event | None = None) -> None:
    """Process ``jobs``; ``on_result`` is called in this process as each video finishes (or
    stops mid-way: status ``interrupted``). Videos not started when ``stop`` is set get no
    result."""
    stop = stop or threading.Event()
    if workers <= 1 or len(jobs) == 1:
        # One worker: no pool, no second process to start; same code path inside.
        worker = BatchWorker(model_cfg, options, out_root, executor="local")
        for job in jobs:
            if stop.is_set():
                return
            on_result(job, worker.run(job, progress=on_progress, should_stop=stop.is_set))
        return
    ctx = mp.get_context("spawn")
    with children_ignore_sigint():  # the pool's processes start with the submits
        q, child_stop = ctx.Queue(), ctx.Event()
        pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx, initializer=_init,
                                   initargs=(model_cfg, options, out_root, q, child_stop))
        futures: dict[Future, VideoJob] = {pool.submit(_run, job): job for job in jobs}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(q, on_progress)
            if stop.is_set() and not child_stop.is_set():
                child_stop.set()  # running videos end after their frame; queued ones return at once
                for fut in pending:
                    fut.cancel()  # not handed to a worker yet
            for fut in done:
                if fut.cancelled():
                    continue
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - BrokenProcessPool and friends
                    result = crash_result(futures[fut], exc)
                on_result(futures[fut], result)
        _drain(q, on_progress)
    except BaseException:  # a second Ctrl-C: leave at once; the workers stop after their frame
        child_stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _drain(q: Any, on_progress: OnProgress) -> None:
    while True:
        try:
            on_progress(q.get_nowait())
        except queue_mod.Empty:
            return
