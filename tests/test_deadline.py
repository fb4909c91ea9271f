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
