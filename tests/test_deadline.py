"""The live display's own-mask deadline (overlay.wait_policy): wait only when the model's recent
call times say the mask comes within overlay.wait_ms."""

from __future__ import annotations

import pytest

from endostream.consumer.deadline import MIN_CALLS, MaskDeadline

MS = 1_000_000


def test_predicted_waits_only_when_the_mask_is_expected_in_time() -> None:
    d = MaskDeadline(30, "predicted")
    assert d.deadline_ns(0, 1) == 30 * MS  # nothing learnt yet: wait as a fixed deadline would
    for _ in range(MIN_CALLS):
        d.record(1, 20.0)
    assert d.expected_ms(1) == pytest.approx(20.0)
    assert d.deadline_ns(0, 1) == 30 * MS  # 20 ms calls: the mask comes, wait for it
    assert d.deadline_ns(0, 2) == 0  # two frames scaled from one (40 ms): it cannot, show at once
    # the call in flight started 5 ms ago: 15 ms left + 20 ms for ours > 30
    assert d.deadline_ns(100 * MS, 1, inflight_ns=95 * MS, inflight_batch=1) == 100 * MS
    # ...started 18 ms ago: 2 ms left + 20 ms < 30
    assert d.deadline_ns(100 * MS, 1, inflight_ns=82 * MS, inflight_batch=1) == 130 * MS
    assert d.skipped == 2
    for _ in range(MIN_CALLS):
        d.record(2, 26.0)  # a batch of two measured on its own is cheaper than twice one
    assert d.deadline_ns(0, 2) == 30 * MS


def test_the_prediction_follows_the_model_and_fixed_never_skips() -> None:
    d = MaskDeadline(30, "predicted")
    for _ in range(10):
        d.record(1, 45.0)
    assert d.deadline_ns(0, 1) == 0
    for _ in range(64):  # the model got faster (another room left, the machine went idle)
        d.record(1, 12.0)
    assert d.deadline_ns(0, 1) == 30 * MS
    fixed = MaskDeadline(30, "fixed")
    for _ in range(10):
        fixed.record(1, 45.0)
    assert fixed.deadline_ns(0, 1) == 30 * MS and fixed.skipped == 0
    assert MaskDeadline(0, "predicted").deadline_ns(7, 1) == 7
    with pytest.raises(ValueError, match="wait_policy"):
        MaskDeadline(30, "sometimes")


def test_a_pass_that_would_outlast_the_frame_interval_does_not_wait() -> None:
    """Two rooms at 25 fps sharing a model whose two-frame call (48 ms) fits a 50 ms wait but not
    the 40 ms between a room's frames: waiting would let the next frames replace the ones waiting,
    so the pass shows at once; one room's 25 ms call still gets the whole 50 ms wait."""
    d = MaskDeadline(50, "predicted")
    for _ in range(MIN_CALLS):
        d.record(1, 25.0)
        d.record(2, 48.0)
    assert d.deadline_ns(0, 2, stream_ids=[0, 1]) == 50 * MS  # no interval known yet: 48 < 50
    for k in range(5):
        d.note_frame(0, k * 40 * MS)
        d.note_frame(1, k * 40 * MS + 20 * MS)
    assert d.interval_ms([0, 1]) == pytest.approx(40.0)
    assert d.deadline_ns(0, 2, stream_ids=[0, 1]) == 0  # 48 > 40 - 5
    assert d.deadline_ns(0, 1, stream_ids=[0]) == 50 * MS  # 25 < 35: wait, and the full 50 ms
    d.forget(0)
    assert d.interval_ms([0]) is None
