"""`endostream demo` end to end: two processes on loopback over the bundled clip (shortened)."""

from __future__ import annotations

import json
import subprocess
import time

from conftest import ENV, REPO, cli, count_video_frames
from reference_values import PINNED

KEYS = {"frames_sent", "frames_shown", "frames_processed", "frames_dropped", "latency_ms", "fps",
        "dice_mean", "weights_sha256", "backend", "steps", "trained"}


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    t0 = time.monotonic()
    r = subprocess.run(cli("demo", "max_frames=50", f"out={out}"), cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 120
    s = json.loads((out / "summary.json").read_text())
    assert KEYS <= s.keys()
    assert set(s["latency_ms"]) >= {"p50", "p95", "p99"}
    assert s["frames_sent"] == 50 and 0 < s["frames_processed"] <= s["frames_sent"]
    assert s["frames_dropped"] == s["frames_sent"] - s["frames_processed"]
    # live mode: under load the display path may skip frames it never received in time
    assert 0 < s["frames_shown"] <= 50 and s["dice_frames"] == s["frames_shown"]
    assert 0.0 <= s["dice_mean"] <= 1.0
    # Live mode shows whichever mask was ready, so its Dice depends on the load (0.81 idle, 0.60
    # and 0.22 seen on the 2-core VM under a training run): the lossless test below holds the
    # model's figure.
    # plus NO SIGNAL cards when the feed stalled (or its end-of-stream was lost: 3 s grace)
    assert count_video_frames(out / "overlay.mp4") == s["frames_shown"] + s["signal"]["video_cards"]
    assert s["signal"]["state"] in ("ended", "no_signal")
    side = REPO / "weights" / "polyp.json"  # the weights' sidecar says whether they are trained
    meta = json.loads(side.read_text()).get("meta", {}) if side.is_file() else {}
    assert s["trained"] is bool(meta.get("trained", False))
    if not s["trained"]:
        assert "UNTRAINED WEIGHTS" in s["hud_note"]
    assert "frames: sent 50" in r.stdout


def test_demo_lossless_dice_of_shown_masks(tmp_path):
    """Every frame segmented and shown with its own mask: the Dice of the shown masks against the
    clip's ground truth is the model's, whatever the load. Measured by `tools/pin_reference.py`
    with this command (PINNED["demo_dice"]); the floor sits 0.04 under it. Inverted masks: 0.05."""
    out = tmp_path / "demo"
    r = subprocess.run(cli("demo", "max_frames=50", "transport.mode=lossless", f"out={out}"), cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["frames_shown"] == s["dice_frames"] == 50
    assert s["dice_mean"] >= PINNED["floors"]["demo_dice"], (s["dice_mean"], PINNED["demo_dice"])
