"""How much of a training step's wall time counts toward the time budget.

The budget is wall time per step (so a run slowed by other work still anneals on schedule), but
a step during which the process was stopped from outside (SIGSTOP while the machine is measured
idle, a suspended VM) would count the whole stop: pauses for benchmarks took about 11 of the first
35 budget minutes of one run (weights/MODEL_CARD.md, run M). A step counts at most ``CAP`` times
the median of the recent steps; a machine that gets slower raises the median within a few steps.
"""

from __future__ import annotations

from collections import deque

import numpy as np

CAP = 3.0  # a step counts at most this many recent medians
WINDOW = 20  # steps the median is taken over
MIN_STEPS = 5  # fewer steps seen than this: every step counts in full (warm-up, first compile)


class StepClock:
    def __init__(self) -> None:
        self._recent: deque[float] = deque(maxlen=WINDOW)

    def count(self, seconds: float) -> float:
        """The seconds of a step of ``seconds`` wall time that count toward the budget."""
        if len(self._recent) >= MIN_STEPS:
            seconds = min(seconds, CAP * float(np.median(self._recent)))
        self._recent.append(seconds)
        return seconds
