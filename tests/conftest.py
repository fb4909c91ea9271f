"""Shared helpers for tests that run real producer and consumer processes on loopback."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# Low thread counts: the suite must not fight a training job (or each other) for cores.
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
CONSUME_FAST = ["model.threads=1", "log_level=INFO"]
# The real data lives beside the project (../shared/data, see its README); never in the repo.
DATA_ROOT = REPO.parent / "shared" / "data"
# In CI the data must be there: a test that needs it fails instead of skipping silently.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_data(relative: str = "") -> Path:
    """``DATA_ROOT / relative``; skips the test when it is missing, fails under ``CI=true``."""
    path = DATA_ROOT / relative
    if not path.exists():
        msg = f"real data not found at {path} (see ../shared/data/README.md)"
        if IN_CI:
            pytest.fail(msg + "; CI=true requires it", pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data folder (../shared/data); see ``need_data`` for what happens without it."""
    return need_data()


def free_endpoint() -> str:
    """A tcp loopback endpoint on a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def cli(command: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "endostream.cli", command, *overrides]


class Proc:
    """A child process whose stdout/stderr go to files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "w")
        self.p = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=self._fh, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"{self.log.name} did not finish in {timeout} s:\n{self.text()[-3000:]}")
        finally:
            self._fh.flush()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


@pytest.fixture
def procs():
    """Start processes with ``procs(args, log)``; every one still running is killed at the end."""
    started: list[Proc] = []

    def start(args: list[str], log: Path) -> Proc:
        proc = Proc(args, log)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_consumer_ready(proc: Proc, timeout: float = 60.0) -> None:
    """The consumer logs 'consumer <mode> on <endpoint>' once its model is loaded and bound."""
    wait_for(lambda: "consumer " in proc.text() and " on " in proc.text() or proc.p.poll() is not None,
             timeout, "the consumer to start")
    assert proc.p.poll() is None, f"consumer exited early:\n{proc.text()[-3000:]}"


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def make_clip(path: Path, n: int, *, w: int = 160, h: int = 128, fps: int = 25) -> Path:
    """An H.264 clip of ``n`` frames: a bright disc moving over a dark-red background."""
    import av
    import cv2

    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.codec_context.options = {"preset": "ultrafast", "g": "10"}
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = (40, 40, 140)
        cv2.circle(img, (int(w * (0.2 + 0.6 * i / max(n - 1, 1))), h // 2), h // 5, (120, 180, 230), -1)
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


def count_video_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def run_with_producers(consumer, cfg, args: dict, counts: dict[int, int]) -> tuple[dict, dict[int, dict]]:
    """Producer processes (``bench.scenarios._producer_main``, stream id -> frames) into a live
    consumer built from ``cfg``; the consumer runs here. Returns its summary and each
    producer's report (none may carry an error)."""
    import multiprocessing as mp

    from endostream.bench.scenarios import _producer_main

    transport = {**dict(cfg.transport), "live": dict(cfg.transport.live), "lossless": dict(cfg.transport.lossless),
                 "security": dict(cfg.transport.security)}
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    base = {"synthetic": {}, "pace": True, "transport": transport, "codec": "raw", "jpeg_quality": 90,
            "connect_wait_s": 0.5, "drain_timeout_s": 10.0, **args}
    prods = [ctx.Process(target=_producer_main, args=({**base, "stream_id": sid, "count": n}, results), daemon=True)
             for sid, n in counts.items()]
    try:
        for p in prods:
            p.start()
        summary = consumer.run()
    finally:
        consumer.rx.close()
        for p in prods:
            p.join(30)
            if p.is_alive():
                p.terminate()
    reports = {r["stream_id"]: r for r in (results.get(timeout=10) for _ in prods)}
    assert all("error" not in r for r in reports.values()), reports
    return summary, reports
