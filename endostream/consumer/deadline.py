"""How long the live display waits for a frame's own mask (``overlay.wait_ms``, ``overlay.wait_policy``).

``fixed``: every pass waits up to ``wait_ms`` for its frames' masks. ``predicted``: a pass waits up
to ``wait_ms`` only when the masks are expected within it: the model's recent call times (the median,
per batch size) plus what is left of the call in flight. When they are not (several rooms
share a model slower than the wait, a slow accelerator), waiting for them would only delay the video
by ``wait_ms`` and still show an older mask. But the call in flight holds a newer frame of the same
rooms than any mask they have: when it is expected within the wait, the pass waits for that call
only (a room's frame is shown the moment its mask arrives), so a model slower than the frame rate
shows the mask one frame old rather than two (the live demo: a 44 ms call at 25 fps). Otherwise,
and for rooms not in that call, the frame is shown at once with the newest mask.
Nor does it wait when the masks would come after the next frame of a stream in the pass is due
(its frame interval, from the capture times, less a margin for drawing): a pass that outlasts the
interval makes the receiver replace frames before they are shown, so with several rooms sharing a
slow model the video would stall. One room keeps the whole ``wait_ms`` for a call that is slower
than usual: only the decision uses the interval, not the length of the wait.
With several rooms sending, ``max_load`` (``overlay.max_model_load``) also stops the wait when the
model is busy: when a call on one frame of every room is expected to take more than that share of
the frame interval, every pass is shown at once with the newest masks. Waiting on a model with
little spare time holds the display loop, the next frames queue in the receiver, and both the video
and the masks come later (four rooms on the AMX Xeon, 2026-12-07, without / with the rule: video p99
63.8 / 14.7 ms, mask age p99 93.7 / 90.3 ms, 22.0-24.6 / 25.0-25.1 masks/s a room; docs/BENCH.md).
The missed deadline is counted either way (``same_frame``, per room).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

POLICIES = ("fixed", "predicted")
HISTORY = 64  # model calls remembered per batch size
# A pass waits when its masks are more likely than not to come in time: the median call. A high
# quantile would never wait where the wait is met most of the time (one room, a 24 ms median
# call with a 42 ms p99 against a 30 ms wait).
QUANTILE = 50
MIN_CALLS = 4  # fewer calls than this of any size: no prediction yet, the pass waits
INTERVALS = 16  # capture intervals remembered per stream
DRAW_MARGIN_MS = 5.0  # drawing and writing a pass's frames, taken off the interval


@dataclass(frozen=True)
class InFlight:
    """The model call being run: when it started, its frame count, its number and its rooms."""

    since_ns: int
    frames: int
    call: int
    streams: frozenset[int]


@dataclass(frozen=True)
class Wait:
    """What a display pass waits for. ``deadline_ns``: it stops waiting then, whatever came.
    ``inflight_call``: None waits for the frames' own masks; a call number waits, for the rooms in
    that call, only until it ends (the rooms not in it are shown at once)."""

    deadline_ns: int
    inflight_call: int | None = None
    inflight_streams: frozenset[int] = frozenset()


class MaskDeadline:
    def __init__(self, wait_ms: float, policy: str, max_load: float | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"overlay.wait_policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if wait_ms < 0:
            raise ValueError(f"overlay.wait_ms must be >= 0, got {wait_ms}")
        if max_load is not None and max_load <= 0:
            raise ValueError(f"overlay.max_model_load must be > 0 (or null: no load rule), got {max_load}")
        self.wait_ms, self.policy, self.max_load = float(wait_ms), policy, max_load
        self.busy_skips = 0  # several rooms' passes shown at once because the model had no spare time
        self._calls: dict[int, deque[float]] = {}
        self._lock = threading.Lock()  # the model's thread records, the display's reads
        self.skipped = 0  # passes shown at once because their masks were not expected in time
        self.inflight_waits = 0  # passes that waited only for the call in flight (a newer mask)
        self._last_capture: dict[int, int] = {}  # stream -> capture ns of its newest frame seen
        self._intervals: dict[int, deque[float]] = {}

    def note_frame(self, stream_id: int, t_capture_ns: int) -> None:
        """A frame the display is about to show (display thread only): learns the stream's interval."""
        last = self._last_capture.get(stream_id)
        if last is not None and t_capture_ns > last:
            self._intervals.setdefault(stream_id, deque(maxlen=INTERVALS)).append((t_capture_ns - last) / 1e6)
        self._last_capture[stream_id] = t_capture_ns

    def forget(self, stream_id: int) -> None:
        self._last_capture.pop(stream_id, None)
        self._intervals.pop(stream_id, None)

    def interval_ms(self, stream_ids: list[int]) -> float | None:
        """The shortest median capture interval among ``stream_ids``; None while none is known."""
        known = [float(np.median(self._intervals[s])) for s in stream_ids if len(self._intervals.get(s, ())) >= 2]
        return min(known) if known else None

    def record(self, batch: int, call_ms: float) -> None:
        """One finished model call of ``batch`` frames that took ``call_ms``."""
        with self._lock:
            self._calls.setdefault(batch, deque(maxlen=HISTORY)).append(call_ms)

    def _medians(self) -> dict[int, tuple[float, int]]:
        """Batch size -> (median call ms, calls) for the sizes with enough calls: one snapshot."""
        with self._lock:
            calls = {b: list(c) for b, c in self._calls.items() if len(c) >= MIN_CALLS}
        return {b: (float(np.percentile(c, QUANTILE)), len(c)) for b, c in calls.items()}

    def expected_ms(self, batch: int, medians: dict[int, tuple[float, int]] | None = None) -> float | None:
        """The median of recent call times for ``batch`` frames; from other sizes scaled
        linearly (a CPU gains little from a batch) when this size has too few; None without any."""
        medians = self._medians() if medians is None else medians
        if batch in medians:
            return medians[batch][0]
        if not medians:
            return None
        b, (median, _) = max(medians.items(), key=lambda item: item[1][1])
        return median * batch / b

    def plan(self, now_ns: int, batch: int, inflight: InFlight | None = None,
             stream_ids: list[int] | None = None) -> Wait:
        """What a pass submitted at ``now_ns`` with ``batch`` frames of ``stream_ids`` waits for;
        ``inflight``: the call the model is busy with (None when idle), which our frames queue behind."""
        wait_ns = int(self.wait_ms * 1e6)
        if self.policy == "fixed" or wait_ns == 0:
            return Wait(now_ns + wait_ns)
        medians = self._medians()
        own = self.expected_ms(batch, medians)
        if own is None:
            return Wait(now_ns + wait_ns)
        ahead = 0.0
        if inflight is not None and inflight.frames:
            busy = self.expected_ms(inflight.frames, medians) or 0.0
            ahead = max(0.0, busy - (now_ns - inflight.since_ns) / 1e6)
        limit = self.wait_ms
        interval = self.interval_ms(stream_ids or [])
        if interval is not None:
            limit = min(limit, interval - DRAW_MARGIN_MS)
            sending = len(self._intervals)  # the streams sending now, whichever this pass holds
            if self.max_load is not None and sending > 1:
                load = (self.expected_ms(sending, medians) or 0.0) / interval
                if load > self.max_load:
                    self.skipped += 1
                    self.busy_skips += 1
                    return Wait(now_ns)
        if ahead + own <= limit:
            return Wait(now_ns + wait_ns)
        rooms = inflight.streams & set(stream_ids or []) if inflight is not None else frozenset()
        if rooms and ahead <= limit:
            self.inflight_waits += 1
            return Wait(now_ns + int(max(limit, 0.0) * 1e6), inflight.call, frozenset(rooms))
        self.skipped += 1
        return Wait(now_ns)

    def as_dict(self) -> dict:
        return {"policy": self.policy, "wait_ms": self.wait_ms, "max_model_load": self.max_load,
                "skipped_passes": self.skipped, "busy_skips": self.busy_skips, "inflight_waits": self.inflight_waits,
                "expected_ms_batch1": None if (e := self.expected_ms(1)) is None else round(e, 2)}
