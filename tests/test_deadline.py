"""The live display's own-mask deadline (overlay.wait_policy): wait only when the model's recent
call times say the mask comes within overlay.wait_ms."""

from __future__ import annotations

import pytest

from endostream.consumer.deadline import MIN_CALLS, InFlight, MaskDeadline, Wait

MS = 1_000_000


def test_predicted_waits_only_when_the_mask_is_expected_in_time() -> None:
    d = MaskDeadline(30, "predicted")
    assert d.plan(0, 1).deadline_ns == 30 * MS  # nothing learnt yet: wait as a fixed deadline would
    for _ in range(MIN_CALLS):
        d.record(1, 20.0)
    assert d.expected_ms(1) == pytest.approx(20.0)
    assert d.plan(0, 1).deadline_ns == 30 * MS  # 20 ms calls: the mask comes, wait for it
    assert d.plan(0, 2).deadline_ns == 0  # two frames scaled from one (40 ms): it cannot, show at once
    # the call in flight started 5 ms ago: 15 ms left + 20 ms for ours > 30
    assert d.plan(100 * MS, 1, InFlight(95 * MS, 1, 3, frozenset({0}))).deadline_ns == 100 * MS
    # ...started 18 ms ago: 2 ms left + 20 ms < 30
    assert d.plan(100 * MS, 1, InFlight(82 * MS, 1, 3, frozenset({0}))).deadline_ns == 130 * MS
    assert d.skipped == 2
    for _ in range(MIN_CALLS):
        d.record(2, 26.0)  # a batch of two measured on its own is cheaper than twice one
    assert d.plan(0, 2).deadline_ns == 30 * MS


def test_the_prediction_follows_the_model_and_fixed_never_skips() -> None:
    d = MaskDeadline(30, "predicted")
    for _ in range(10):
        d.record(1, 45.0)
    assert d.plan(0, 1).deadline_ns == 0
    for _ in range(64):  # the model got faster (another room left, the machine went idle)
        d.record(1, 12.0)
    assert d.plan(0, 1).deadline_ns == 30 * MS
    fixed = MaskDeadline(30, "fixed")
    for _ in range(10):
        fixed.record(1, 45.0)
    assert fixed.plan(0, 1).deadline_ns == 30 * MS and fixed.skipped == 0
    assert MaskDeadline(0, "predicted").plan(7, 1).deadline_ns == 7
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
    assert d.plan(0, 2, stream_ids=[0, 1]).deadline_ns == 50 * MS  # no interval known yet: 48 < 50
    for k in range(5):
        d.note_frame(0, k * 40 * MS)
        d.note_frame(1, k * 40 * MS + 20 * MS)
    assert d.interval_ms([0, 1]) == pytest.approx(40.0)
    assert d.plan(0, 2, stream_ids=[0, 1]).deadline_ns == 0  # 48 > 40 - 5
    assert d.plan(0, 1, stream_ids=[0]).deadline_ns == 50 * MS  # 25 < 35: wait, and the full 50 ms
    d.forget(0)
    assert d.interval_ms([0]) is None


def test_a_model_slower_than_the_wait_still_waits_for_the_newer_mask_in_flight() -> None:
    """The live demo's case: 44 ms calls, 25 fps, a 30 ms wait. The frame's own mask cannot come in
    time, but the call in flight holds the room's previous frame: when it ends within the wait, the
    pass waits for that call alone (a mask one frame old, not two); when it does not, or when the
    call in flight is another room's, the frame is shown at once."""
    d = MaskDeadline(30, "predicted")
    for _ in range(MIN_CALLS):
        d.record(1, 44.0)
    for k in range(5):
        d.note_frame(0, k * 40 * MS)
    mine = InFlight(since_ns=0, frames=1, call=7, streams=frozenset({0}))
    # 30 ms into the call: 14 ms left, within min(30, 40 - 5)
    assert d.plan(30 * MS, 1, mine, [0]) == Wait(60 * MS, inflight_call=7, inflight_streams=frozenset({0}))
    assert d.inflight_waits == 1 and d.skipped == 0
    assert d.plan(5 * MS, 1, mine, [0]) == Wait(5 * MS)  # 39 ms left: longer than the wait
    other = InFlight(since_ns=0, frames=1, call=7, streams=frozenset({1}))
    assert d.plan(30 * MS, 1, other, [0]) == Wait(30 * MS)  # another room's call brings room 0 nothing
    assert d.plan(30 * MS, 1, None, [0]) == Wait(30 * MS)  # idle: nothing newer is coming
    assert d.skipped == 3 and d.as_dict()["inflight_waits"] == 1
    # a pass of two rooms, one of them in the call: only that room waits (the worker shows the other)
    both = d.plan(30 * MS, 2, mine, [0, 1])
    assert both.inflight_call == 7 and both.inflight_streams == frozenset({0})
    fixed = MaskDeadline(30, "fixed")
    assert fixed.plan(30 * MS, 1, mine, [0]) == Wait(60 * MS)  # fixed waits for the own mask


def test_several_rooms_do_not_wait_on_a_model_without_spare_time() -> None:
    """overlay.max_model_load: four rooms at 25 fps whose batch-of-four call (22 ms) fits the wait
    and the interval, but takes more than half of the 40 ms interval: every pass is shown at once
    (and counted); a cheaper call (15 ms) still waits; one room is never held to the rule."""
    d = MaskDeadline(30, "predicted", max_load=0.5)
    for _ in range(MIN_CALLS):
        d.record(4, 22.0)
        d.record(1, 22.0)
    for k in range(5):
        for s in range(4):
            d.note_frame(s, k * 40 * MS + s * 10 * MS)
    assert d.plan(0, 4, stream_ids=[0, 1, 2, 3]) == Wait(0)
    assert d.plan(0, 2, stream_ids=[1, 2]) == Wait(0)  # a pass with two of them: the model's load is all four's
    assert d.busy_skips == 2 and d.skipped == 2
    one = MaskDeadline(30, "predicted", max_load=0.5)  # one room sending: the whole wait, whatever the call
    for _ in range(MIN_CALLS):
        one.record(1, 22.0)
    for k in range(5):
        one.note_frame(0, k * 40 * MS)
    assert one.plan(0, 1, stream_ids=[0]).deadline_ns == 30 * MS and one.busy_skips == 0
    off = MaskDeadline(30, "predicted")  # no rule: the same pass waits
    for _ in range(MIN_CALLS):
        off.record(4, 22.0)
    for k in range(5):
        for s in range(4):
            off.note_frame(s, k * 40 * MS + s * 10 * MS)
    assert off.plan(0, 4, stream_ids=[0, 1, 2, 3]).deadline_ns == 30 * MS
    for _ in range(64):
        d.record(4, 15.0)  # the model got cheaper: 15 < 0.5 x 40
    assert d.plan(0, 4, stream_ids=[0, 1, 2, 3]).deadline_ns == 30 * MS and d.busy_skips == 2
    assert d.as_dict()["busy_skips"] == 2
    with pytest.raises(ValueError, match="max_model_load"):
        MaskDeadline(30, "predicted", max_load=0)
