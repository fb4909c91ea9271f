"""``executor=ray``: the same job on a Ray cluster, one actor per worker that loads the model
once. Videos are handed out whole to whichever actor is idle, so a site with many machines
scales out by pointing ``ray.address`` at its cluster (OUT must then be a shared filesystem,
since actors write their results there directly).

Ray is imported only here and only when this executor runs.
"""

from __future__ import annotations

import threading
from typing import Any

from endostream.batch.inputs import VideoJob
from endostream.batch.local import OnProgress, OnResult, crash_result
from endostream.batch.video import BatchWorker, VideoOptions


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("executor=ray needs Ray, which is not installed: pip install 'ray[default]>=2.9' "
                           "(or pip install -e '.[ray]'), or use executor=local") from None
    return ray


class RayWorker:
    """Actor body: a BatchWorker whose progress goes to a Ray queue the driver drains."""

    def __init__(self, model_cfg: dict[str, Any], options: VideoOptions, out_root: str, progress_q: Any) -> None:
        import ray

        self.worker = BatchWorker(model_cfg, options, out_root, executor="ray")
        self.worker.actor_id = ray.get_runtime_context().get_actor_id()
        self.q = progress_q

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        return self.worker.run(job, progress=self.q.put_nowait)


def run_ray(jobs: list[VideoJob], model_cfg: dict[str, Any], options: VideoOptions, out_root: str, *,
            workers: int | None, on_progress: OnProgress, on_result: OnResult,
            address: str | None = None, init_kwargs: dict[str, Any] | None = None,
            stop: threading.Event | None = None) -> None:
    """Process ``jobs`` on Ray: connects (or starts a local cluster), creates
    ``workers`` actors (default: cluster CPUs // model threads) and shuts down what it started.
    When ``stop`` is set no video starts and the actors are killed: videos they were running
    get no result (they stay pending; their partial folders are the caller's to remove)."""
    stop = stop or threading.Event()
    ray = _import_ray()
    from ray.util.queue import Empty, Queue

    started = not ray.is_initialized()
    if started:
        # init_kwargs (num_cpus, include_dashboard...) only make sense for a cluster we start.
        ray.init(address=address, **({} if address else (init_kwargs or {})))
    threads = max(1, int(model_cfg.get("threads", 1)))
    actors: list[Any] = []
    try:
        q = Queue(actor_options={"num_cpus": 0})
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        actor_cls = ray.remote(num_cpus=threads)(RayWorker)
        actors = [actor_cls.remote(model_cfg, options, out_root, q) for _ in range(min(n, len(jobs)))]
        todo, idle, running = list(jobs), list(actors), {}
        while (todo or running) and not stop.is_set():
            while todo and idle:
                actor, job = idle.pop(0), todo.pop(0)
                running[actor.run.remote(job.to_dict())] = (actor, job)
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.25)
            _drain(q, Empty, on_progress)
            for ref in done:
                actor, job = running.pop(ref)
                try:
                    result = ray.get(ref)
                    idle.append(actor)
                except Exception as exc:  # noqa: BLE001 - actor died (or failed to load the model)
                    result = crash_result(job, exc)
                on_result(job, result)
            if not idle and not running and todo:
                for job in todo:  # every actor died: report the rest instead of waiting forever
                    on_result(job, crash_result(job, RuntimeError("no live Ray workers left")))
                todo = []
        _drain(q, Empty, on_progress)
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()


def _drain(q: Any, empty: type[Exception], on_progress: OnProgress) -> None:
    try:
        for n in q.get_nowait_batch(q.qsize()):
            on_progress(n)
    except empty:
        pass
