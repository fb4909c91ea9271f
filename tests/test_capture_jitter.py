"""The jitter buffer's release schedule, on arrival traces (no clock, no sleeping): bursts
are spread to their presentation times, the hold is bounded, an even stream is not
delayed, and the buffer shrinks back when the bursts stop."""

from __future__ import annotations

import numpy as np
import pytest

from endostream.capture.jitter import JitterBuffer

PERIOD = 0.04  # 25 fps


def bursty(n: int, burst: int, gap_s: float = 0.001) -> tuple[np.ndarray, np.ndarray]:
    """pts of a 25 fps stream delivered ``burst`` frames at a time, ``gap_s`` apart, each
    burst when its last frame is due (the network held the earlier ones)."""
    pts = np.arange(n) * PERIOD
    arrival = np.empty(n)
    for start in range(0, n, burst):
        end = min(start + burst, n)
        arrival[start:end] = pts[end - 1] + np.arange(end - start) * gap_s
    return pts, arrival + 100.0  # any clock origin


def schedule(jb: JitterBuffer, pts, arrival) -> np.ndarray:
    return np.array([jb.release_at(p, a) for p, a in zip(pts, arrival)])


def shown_by_newest_wins(release: np.ndarray, poll_s: float = 0.010) -> int:
    """Frames a consumer that wakes every ``poll_s`` and shows only the newest would show."""
    ticks = np.floor(release / poll_s)
    return len(np.unique(ticks))


@pytest.mark.parametrize("burst", [2, 4, 5])
def test_bursts_are_spread_to_presentation_times(burst):
    pts, arrival = bursty(250, burst)
    release = schedule(JitterBuffer(0.2), pts, arrival)
    hold = release - arrival
    assert hold.min() >= 0 and hold.max() <= 0.2 + 1e-9
    gaps = np.diff(release[burst:])  # after the first burst the timeline is known
    assert np.all(gaps > PERIOD * 0.9), gaps.min()
    assert shown_by_newest_wins(release) >= 0.95 * len(pts)
    assert shown_by_newest_wins(arrival) <= len(pts) / burst + 1  # what newest-wins shows without it


def test_even_stream_is_not_delayed():
    pts = np.arange(200) * PERIOD
    rng = np.random.default_rng(0)
    arrival = pts + 5.0 + rng.uniform(0, 0.002, len(pts))  # 2 ms of decode jitter
    hold = schedule(JitterBuffer(0.2), pts, arrival) - arrival
    assert hold.max() < 0.003 and np.median(hold) < 0.002


def test_hold_is_bounded_after_a_stall():
    """One second without data, then 25 frames at once: none is held beyond the bound."""
    pts = np.arange(100) * PERIOD
    arrival = pts.copy() + 1.0
    arrival[25:50] = arrival[49] + np.arange(25) * 0.001  # frames 25..49 come at once, 1 s late
    hold = schedule(JitterBuffer(0.15), pts, arrival) - arrival
    assert hold.max() <= 0.15 + 1e-9


def test_buffer_shrinks_back_when_bursts_stop():
    pts_b, arr_b = bursty(125, 5)  # 5 s of bursts: holds up to 160 ms
    pts_e = pts_b[-1] + PERIOD * np.arange(1, 251)  # then 10 s of an even stream
    arr_e = arr_b[-1] + PERIOD * np.arange(1, 251)
    jb = JitterBuffer(0.2)
    schedule(jb, pts_b, arr_b)
    hold = schedule(jb, pts_e, arr_e) - arr_e
    assert hold[:25].max() > 0.05  # still holding what the bursts taught it
    assert hold[-25:].max() < 0.01  # relaxed to (almost) no added latency


def test_off_and_new_timeline():
    assert JitterBuffer(0).release_at(1.0, 7.0) == 7.0
    assert JitterBuffer(0.2).release_at(None, 7.0) == 7.0  # no timestamp: released on arrival
    jb = JitterBuffer(0.2)
    for i in range(10):
        jb.release_at(1000 + i * PERIOD, 50 + i * PERIOD)
    assert jb.release_at(3.0, 51.0) == 51.0  # pts jumped back (reconnect): a new timeline
