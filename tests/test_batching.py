"""Cross-stream batching: the segmenter's batch path against the one-frame path on real frames
with the shipped weights (ONNX Runtime), and the live worker batching the newest frame of every
stream, keeping streams apart, and going on when one stream stops."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from endostream.cli import config_dir
from endostream.consumer.worker import Inference, InferenceWorker, ModelRouter, modality_spec
from endostream.inference.segmenter import load_segmenter
from endostream.types import Frame

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = str(ROOT / "weights" / "polyp.pt")
CLIP = ROOT / "assets" / "demo" / "clinicdb_demo.mp4"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """16 real frames of the bundled clip (each stream gets its own slice of them)."""
    cap, out = cv2.VideoCapture(str(CLIP)), []
    while len(out) < 16:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    if len(out) < 16:
        pytest.skip("the demo clip is absent or short")
    return out


def _seg(**kw):
    return load_segmenter(weights=WEIGHTS, backend="onnxruntime", threads=1, **kw)


@pytest.mark.parametrize("kw", [{"steps": 0}, {"steps": 2, "warm_start": True},
                                {"steps": 2, "warm_start": True, "warm_steps": 1}])
def test_batched_equals_unbatched_per_stream(frames, kw) -> None:
    """Four streams, three rounds; stream 3 joins in round 2, so with a warm start its first
    frame steps from noise while the others step from their previous mask (two schedules in
    one batch). Every stream's masks and memory equal the one-at-a-time results."""
    single, batched = _seg(**kw), _seg(max_batch=4, **kw)
    worst = 0.0
    for rnd in range(3):
        sids = [0, 1, 2] if rnd == 0 else [0, 1, 2, 3]
        imgs = [frames[(4 * sid + rnd) % len(frames)] for sid in sids]
        want = [single.segment(img, sid) for img, sid in zip(imgs, sids)]
        got = batched.segment_batch(imgs, sids)
        for a, b in zip(want, got):
            worst = max(worst, float(np.abs(a.prob - b.prob).max()))
            assert abs(a.presence - b.presence) < 1e-5 and a.gated == b.gated
            assert np.mean(a.mask == b.mask) > 0.9999
            assert set(b.stages_ns) == set(a.stages_ns)
    assert worst < 1e-4, f"max abs prob difference {worst}"
    for sid in range(4):
        a, b = single.states[sid], batched.states[sid]
        assert a.frames_seen == b.frames_seen == (3 if sid < 3 else 2)
        np.testing.assert_allclose(a.memory, b.memory, atol=1e-4)
        np.testing.assert_allclose(a.prev_prob, b.prev_prob, atol=1e-4)


def test_uncertainty_in_a_batch_is_per_stream(frames) -> None:
    single, batched = _seg(steps=1, uncertainty_samples=3), _seg(steps=1, uncertainty_samples=3, max_batch=2)
    for rnd in range(2):
        imgs = [frames[rnd], frames[8 + rnd]]
        want = [single.segment(img, sid) for sid, img in enumerate(imgs)]
        got = batched.segment_batch(imgs, [0, 1])
        for a, b in zip(want, got):
            assert b.uncertainty is not None and b.uncertainty.shape == a.prob.shape
            assert float(np.abs(a.uncertainty - b.uncertainty).max()) < 1e-4


def test_streams_in_a_batch_do_not_share_memory(frames) -> None:
    """Stream 0 batched beside stream 1 (other images) gives what stream 0 alone gives, and
    forgetting stream 1 leaves stream 0's memory as it was."""
    alone, shared = _seg(steps=2), _seg(steps=2, max_batch=2)
    for i in range(3):
        a = alone.segment(frames[i], 0)
        b0, b1 = shared.segment_batch([frames[i], frames[15 - i]], [0, 1])
        assert float(np.abs(a.prob - b0.prob).max()) < 1e-4
        assert float(np.abs(b0.prob - b1.prob).max()) > 1e-3  # the streams really differ
    mem0 = shared.states[0].memory.copy()
    shared.reset(1)
    assert 1 not in shared.states and np.array_equal(shared.states[0].memory, mem0)
    assert float(np.abs(alone.segment(frames[3], 0).prob - shared.segment(frames[3], 0).prob).max()) < 1e-4


def test_bad_batches_fail_before_any_memory_changes(frames) -> None:
    seg = _seg(steps=0, max_batch=4)
    seg.segment_batch([frames[0], frames[1]], [0, 1])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        seg.segment_batch([frames[2], frames[3].astype(np.float32)], [0, 1])
    with pytest.raises(ValueError, match="one frame per stream"):
        seg.segment_batch([frames[2], frames[3]], [0, 0])
    with pytest.raises(ValueError, match="one stream id per image"):
        seg.segment_batch([frames[2]], [0, 1])
    assert seg.states[0].frames_seen == seg.states[1].frames_seen == 1
    with pytest.raises(ValueError, match="max_batch"):
        _seg(max_batch=0)


# ----------------------------------------------------------------------------- the live worker


def _inference(max_batch: int, delay_ms: float = 0.0, rows: list | None = None, **model) -> Inference:
    spec = modality_spec(OmegaConf.load(config_dir() / "modality" / "colonoscopy.yaml"))
    router = ModelRouter(spec, {"weights": WEIGHTS, "backend": "onnxruntime", "threads": 1,
                                "max_batch": max_batch, **model}, config_dir())
    router.get(spec.name)  # load now, as the consumer does
    return Inference(router, delay_ms=delay_ms, record=None if rows is None else rows.append)


def _frame(img: np.ndarray, sid: int, seq: int) -> Frame:
    return Frame(stream_id=sid, seq=seq, t_capture_ns=time.monotonic_ns(), image=img)


def _wait_idle(worker: InferenceWorker, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while worker.busy:
        assert time.monotonic() < deadline, "the worker did not finish"
        time.sleep(0.01)


def test_worker_batches_newest_frame_of_every_stream(frames) -> None:
    """Frames of 3 streams submitted together run as one call; a 4th stream over max_batch=3
    waits for the next call; results equal the unbatched worker's per stream."""
    rows: list[dict] = []
    inf = _inference(max_batch=3, rows=rows)
    ref = _inference(max_batch=1)
    worker, ref_worker = InferenceWorker(inf), InferenceWorker(ref)
    try:
        for seq in range(2):
            batch = [(_frame(frames[4 * sid + seq], sid, seq), 7) for sid in range(4)]
            worker.submit_many(batch)
            for item in batch:
                ref_worker.submit(*item)
                _wait_idle(ref_worker)
            _wait_idle(worker)
            for sid in range(4):
                got, want = worker.latest(sid), ref_worker.latest(sid)
                assert got is not None and got.seq == want.seq == seq and got.epoch == 7
                assert float(np.abs(got.prediction.prob - want.prediction.prob).max()) < 1e-4
    finally:
        worker.stop()
        ref_worker.stop()
    assert list(inf.batches) == [3, 1, 3, 1] and list(ref.batches) == [1] * 8
    assert inf.batch_stats() == {"mean": 2.0, "max": 3, "calls": 4}
    assert {r["batch"] for r in rows} == {1, 3} and inf.total_processed == 8
    # Oldest capture first: the stream left for the second call is the last one submitted.
    assert [r["stream_id"] for r in rows if r["batch"] == 1] == [3, 3]


def test_worker_never_waits_for_a_stream_with_nothing_new(frames) -> None:
    """Only stream 0 keeps sending: each of its frames is segmented alone, at once."""
    inf = _inference(max_batch=4)
    worker = InferenceWorker(inf)
    try:
        worker.submit_many([(_frame(frames[sid], sid, 0), 1) for sid in range(3)])
        _wait_idle(worker)
        for seq in range(1, 4):
            t0 = time.monotonic()
            worker.submit(_frame(frames[seq], 0, seq), 1)
            _wait_idle(worker)
            assert worker.latest(0).seq == seq and time.monotonic() - t0 < 10.0
    finally:
        worker.stop()
    assert list(inf.batches) == [3, 1, 1, 1]


def test_stream_that_stops_while_others_go_on(frames) -> None:
    """Stream 1 ends (reset) mid-run: its frame in flight is not published, its memory is
    dropped, and streams 0 and 2 keep being segmented in batches of two."""
    inf = _inference(max_batch=4, delay_ms=150)
    seg = inf.router.get("colonoscopy")[0]
    worker = InferenceWorker(inf)
    try:
        worker.submit_many([(_frame(frames[sid], sid, 0), 1) for sid in range(3)])
        time.sleep(0.05)  # the worker is inside the 150 ms call with all three
        worker.reset(1)
        _wait_idle(worker)
        assert worker.latest(1) is None, "a result of a stream that ended was published"
        for seq in range(1, 4):
            worker.submit_many([(_frame(frames[4 * sid + seq], sid, seq), 1) for sid in (0, 2)])
            _wait_idle(worker)
            assert worker.latest(0).seq == worker.latest(2).seq == seq
        assert worker.latest(1) is None and 1 not in seg.states
        assert seg.states[0].frames_seen == seg.states[2].frames_seen == 4
    finally:
        worker.stop()
    # 3 when the worker took stream 1's frame before the reset (the usual case), else 2.
    assert list(inf.batches)[0] in (2, 3) and list(inf.batches)[1:] == [2, 2, 2]


def test_one_bad_frame_costs_only_its_own_mask(frames) -> None:
    inf = _inference(max_batch=3)
    worker = InferenceWorker(inf)
    try:
        bad = frames[1][:, :, :2].copy()  # two channels: the segmenter rejects it
        worker.submit_many([(_frame(frames[0], 0, 0), 1), (_frame(bad, 1, 0), 1), (_frame(frames[2], 2, 0), 1)])
        _wait_idle(worker)
        assert worker.latest(0) is not None and worker.latest(2) is not None and worker.latest(1) is None
        assert inf.errors == 1 and inf.total_processed == 2
        # The stream with the bad frame goes on with good ones.
        worker.submit(_frame(frames[3], 1, 1), 1)
        _wait_idle(worker)
        assert worker.latest(1).seq == 1
    finally:
        worker.stop()


def test_wait_for_gets_the_frames_own_mask_or_the_newest_by_the_deadline(frames) -> None:
    inf = _inference(max_batch=2, delay_ms=1000)
    worker = InferenceWorker(inf)
    try:
        worker.submit(_frame(frames[0], 0, 0), 1)
        got = worker.wait_for(0, 0, 1, time.monotonic_ns() + int(20e9))
        assert got is not None and got.seq == 0, "waited long enough: the frame's own mask"
        # A model call over 1 s, 30 ms deadline: the newest (seq 0) comes back near the deadline.
        worker.submit(_frame(frames[1], 0, 1), 1)
        t0 = time.monotonic()
        got = worker.wait_for(0, 1, 1, time.monotonic_ns() + int(30e6))
        waited = time.monotonic() - t0
        assert got is not None and got.seq == 0 and 0.025 < waited < 0.9, waited
        # Nothing pending or in flight for a stream: no wait at all.
        t0 = time.monotonic()
        assert worker.wait_for(5, 0, 1, time.monotonic_ns() + int(5e9)) is None
        assert time.monotonic() - t0 < 0.5
        _wait_idle(worker)
        assert worker.wait_for(0, 1, 1, time.monotonic_ns()).seq == 1  # finished: met, no wait
    finally:
        worker.stop()
    s = inf.same_frame.as_dict()
    assert (s["frames"], s["met"], s["missed"]) == (4, 2, 2) and s["met_rate"] == 0.5


def test_display_waiting_on_one_stream_does_not_delay_the_batch(frames) -> None:
    """submit_many before the waits: a frame of every stream is in the one call the display
    waits on, so three streams' own masks all arrive by one deadline."""
    inf = _inference(max_batch=3, delay_ms=100)
    worker = InferenceWorker(inf)
    try:
        batch = [(_frame(frames[sid], sid, 0), 1) for sid in range(3)]
        worker.submit_many(batch)
        deadline = time.monotonic_ns() + int(20e9)
        got = [worker.wait_for(f.stream_id, f.seq, 1, deadline) for f, _ in batch]
        assert [r.seq for r in got] == [0, 0, 0]
    finally:
        worker.stop()
    assert list(inf.batches) == [3] and inf.same_frame.met == 3


def test_resubmitting_a_frame_does_not_segment_it_twice(frames) -> None:
    inf = _inference(max_batch=2)
    worker = InferenceWorker(inf)
    try:
        f = _frame(frames[0], 0, 5)
        worker.submit(f, 1)
        _wait_idle(worker)
        worker.submit(f, 1)  # the live loop submits every stream's frame, then each again
        worker.submit(_frame(frames[1], 0, 4), 1)  # older than one already submitted
        _wait_idle(worker)
    finally:
        worker.stop()
    assert inf.total_processed == 1


def test_worker_threads_are_not_leaked(frames) -> None:
    before = threading.active_count()
    worker = InferenceWorker(_inference(max_batch=2))
    worker.stop()
    assert threading.active_count() == before


def test_a_pass_waiting_for_the_call_in_flight_ends_with_that_call(frames) -> None:
    """``overlay.wait_policy=predicted`` with a model slower than the wait: the pass waits only for
    the call in flight (it holds the room's previous frame), so the frame comes out when that call
    ends with its newer mask, long before the deadline and before the frame's own mask; a room not
    in that call comes out at once."""
    from types import SimpleNamespace

    from endostream.consumer.deadline import Wait

    worker = InferenceWorker(_inference(max_batch=1, delay_ms=300))
    try:
        worker.submit(_frame(frames[0], 0, 0), 1)
        t_end = time.monotonic() + 5
        while (busy := worker.inflight()) is None:
            assert time.monotonic() < t_end, "the first call never started"
            time.sleep(0.002)
        assert busy.streams == frozenset({0}) and busy.frames == 1
        worker.submit_many([(_frame(frames[1], 0, 1), 1), (_frame(frames[2], 1, 0), 1)])
        msgs = [SimpleNamespace(frame=_frame(frames[1], 0, 1), epoch=1),
                SimpleNamespace(frame=_frame(frames[2], 1, 0), epoch=1)]
        wait = Wait(time.monotonic_ns() + 5_000_000_000, busy.call, frozenset({0}))
        t0, out = time.monotonic(), []
        for m in worker.in_completion_order(msgs, wait):
            out.append((m.frame.stream_id, time.monotonic() - t0, worker.latest(m.frame.stream_id)))
        assert [sid for sid, _, _ in out] == [1, 0]
        assert out[0][1] < 0.1 and out[0][2] is None  # not in the call: at once (no mask yet)
        sid, waited, mask = out[1]
        assert 0.05 < waited < 2.0, waited  # until the call in flight ended, not the 5 s deadline
        assert mask is not None and mask.seq == 0 and worker.busy  # its newer mask; its own still to come
    finally:
        worker.stop()


def test_rooms_always_waiting_share_the_calls_alike_whatever_their_phase(frames) -> None:
    """Three rooms, two frames a call, every room's newest frame always pending and always
    captured in the same order (room 0 first: its phase in the interval): each room gets a third
    of the slots. Breaking ties by the oldest frame alone gave room 0 every call and the others
    half of them."""
    inf = _inference(max_batch=2, delay_ms=30)
    worker = InferenceWorker(inf)
    seq = 0
    try:
        while inf.total_processed < 36:
            seq += 1
            worker.submit_many([(_frame(frames[(sid + seq) % len(frames)], sid, seq), 1) for sid in range(3)])
            time.sleep(0.01)
        _wait_idle(worker)
    finally:
        worker.stop()
    counts = [inf.processed.get((sid, 1), 0) for sid in range(3)]
    assert min(counts) >= 0.8 * max(counts), counts
