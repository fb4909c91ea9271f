"""The machine's load while a bench runs: the 1-minute load average sampled in the background,
so a figure says whether the machine was busy while it was measured, not only at the end."""

from __future__ import annotations

import os
import threading
from typing import Any

SAMPLE_EVERY_S = 2.0  # the kernel updates the load average every 5 s; finer adds nothing


class LoadSampler:
    """``with LoadSampler() as load: ...`` then ``load.summary()``: mean and max of the 1-minute
    load average over the run, with the core count to read them against."""

    def __init__(self, every_s: float = SAMPLE_EVERY_S) -> None:
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def _sample(self) -> None:
        if hasattr(os, "getloadavg"):
            self.samples.append(os.getloadavg()[0])

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.every_s):
            self._sample()

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def __enter__(self) -> LoadSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=self.every_s + 1)
            self._sample()  # the load at the end, too

    def summary(self) -> dict[str, Any]:
        s = self.samples
        return {"mean_1min": round(sum(s) / len(s), 2) if s else None,
                "max_1min": round(max(s), 2) if s else None,
                "samples": len(s), "cores": os.cpu_count()}
