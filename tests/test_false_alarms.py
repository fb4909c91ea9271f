"""False alarms per polyp-free minute: the count the model card reports and training selects on."""

from __future__ import annotations


from endostream.training.false_alarms import FPS, gated, replay, shipped_persistence


def _stream(negative: list[bool], polyp: list[bool], presence: float = 0.95) -> list[dict]:
    """One polyp-free stretch then one polyp stretch (stretch 0); `present` per frame."""
    out = [{"present": p, "polyp": False, "stretch": 0, "hit": False, "presence": presence, "area": 0.01}
           for p in negative]
    out += [{"present": p, "polyp": True, "stretch": 0, "hit": p, "presence": presence, "area": 0.01}
            for p in polyp]
    return out


def test_unfiltered_alarms_are_onsets_per_polyp_free_minute():
    neg = [False] * 100
    for start in (10, 40, 70):  # three bursts of two frames
        neg[start] = neg[start + 1] = True
    r = replay(_stream(neg, [True] * 25), 1, 1, 1)
    assert r["false_alarms_per_min"] == 3 / (100 / FPS / 60)
    assert r["negative_frames_shown_pct"] == 6.0
    assert r["detected_pct"] == 100.0 and r["first_mask_ms_median"] == 0.0


def test_persistence_hides_short_bursts_and_delays_the_first_mask():
    neg = [False] * 100
    neg[10] = neg[11] = True  # a two-frame burst: under 6 of 8
    neg[50:70] = [True] * 20  # a sustained false detection: one alarm
    r = replay(_stream(neg, [True] * 25), 6, 8, 4)
    assert r["false_alarms_per_min"] == 1 / (100 / FPS / 60)
    assert r["first_mask_ms_median"] == 5 * 1000 / FPS  # shown on the 6th frame of the polyp


def test_the_presence_gate_removes_unsure_detections():
    decisions = _stream([True] * 50, [True] * 25, presence=0.6)
    assert replay(decisions, 1, 1, 1)["false_alarms_per_min"] > 0
    r = replay(gated(decisions, 0.9, 0.0), 1, 1, 1)
    assert r["false_alarms_per_min"] == 0 and r["detected_pct"] == 0


def test_training_selects_on_the_live_consumer_setting():
    p = shipped_persistence()
    assert 1 <= p["n"] <= p["m"] and p["hold"] >= 1 and 0 < p["min_presence"] <= 1
    from endostream.cli import compose

    cfg = compose("consume", [])
    assert dict(cfg.overlay.persistence) == {"enabled": True, **{k: p[k] for k in ("n", "m", "hold", "min_presence")}}
