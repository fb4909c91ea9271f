"""The live model in its own process (``model.process=true``, inference/process_segmenter.py):
the same masks as in-process on real frames of the demo clip, a bad frame costs only its call,
a killed child is replaced on the next frame, frames that outgrow the shared memory still
arrive whole, closing frees the memory, and real rooms over loopback ZeroMQ get masks from it."""

from __future__ import annotations

import os
import signal
from multiprocessing.shared_memory import SharedMemory

import av
import cv2
import numpy as np
import pytest

from conftest import REPO
from test_rooms import run_rooms

from endostream.inference.process_segmenter import InferenceProcessError, ProcessSegmenter
from endostream.inference.segmenter import load_segmenter

CLIP = REPO / "assets" / "demo" / "clinicdb_demo.mp4"
KW = dict(backend="onnxruntime", steps=1, warm_start=False, threads=1)


def _frames(n: int) -> list[np.ndarray]:
    with av.open(str(CLIP)) as c:
        return [f.to_ndarray(format="bgr24") for _, f in zip(range(n), c.decode(video=0))]


@pytest.fixture(scope="module")
def remote():
    seg = load_segmenter(**KW, process=True)
    yield seg
    seg.close()


def test_the_child_gives_the_in_process_masks_frame_by_frame_with_memory(remote) -> None:
    local = load_segmenter(**KW)
    remote.reset()
    for i, frame in enumerate(_frames(6)):  # the temporal memory carries over in both
        a, b = local.segment(frame, 3), remote.segment(frame, 3)
        assert a.mask.shape == b.mask.shape == frame.shape[:2] and a.mask.any()
        assert np.array_equal(a.mask, b.mask), i
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-6)
        assert a.presence == pytest.approx(b.presence, abs=1e-6) and a.box == b.box and a.gated == b.gated
        assert set(b.stages_ns) >= {"preprocess", "encoder", "step1", "postprocess"}
    assert remote.info["backend"] == "onnxruntime" and remote.info["process"] != os.getpid()


def test_a_bad_frame_costs_its_call_and_the_child_goes_on(remote) -> None:
    pid = remote.info["process"]
    with pytest.raises(ValueError, match="expected an HxWx3 uint8 image"):
        remote.segment(np.zeros((64, 64), np.float32), 0)
    with pytest.raises(ValueError, match="at most one frame per stream"):
        remote.segment_batch(_frames(2), [5, 5])
    assert remote.segment(_frames(1)[0], 0).mask.shape == (288, 384)
    assert remote.info["process"] == pid and remote.restarts == 0


def test_a_killed_child_fails_one_call_in_one_line_and_is_replaced(remote) -> None:
    frames = _frames(2)
    remote.segment(frames[0], 1)
    os.kill(remote.info["process"], signal.SIGKILL)
    with pytest.raises(InferenceProcessError, match=r"died \(exit code -9\); a fresh one starts") as err:
        remote.segment(frames[1], 1)
    assert "\n" not in str(err.value)
    fresh = load_segmenter(**KW)  # the new child starts with no memory, like a fresh segmenter
    assert np.array_equal(remote.segment(frames[1], 1).mask, fresh.segment(frames[1], 1).mask)
    assert remote.restarts == 1 and remote.info["process_restarts"] == 1


def test_frames_that_outgrow_the_shared_memory_arrive_whole(remote) -> None:
    small = _frames(1)[0]
    big = cv2.resize(small, (1536, 1152))  # 5.3 MB in, 8.8 MB out: past the first blocks
    preds = remote.segment_batch([small, big], [10, 11])
    fresh = load_segmenter(**KW)
    expected = fresh.segment_batch([small, big], [10, 11])
    for got, want in zip(preds, expected):
        assert got.mask.shape == want.mask.shape and got.mask.any()
        assert np.array_equal(got.mask, want.mask)


def test_close_stops_the_child_and_frees_the_shared_memory() -> None:
    seg = ProcessSegmenter(KW)
    seg.segment(_frames(1)[0], 0)
    names = [seg._in.shm.name, seg._out.shm.name]
    proc = seg._proc
    seg.close()
    assert not proc.is_alive()
    for name in names:
        with pytest.raises(FileNotFoundError):
            SharedMemory(name=name)


def test_a_missing_weights_file_is_said_in_one_line() -> None:
    with pytest.raises(FileNotFoundError, match="weights file not found: nowhere.pt"):
        load_segmenter(weights="nowhere.pt", backend="onnxruntime", process=True)


def test_two_rooms_get_their_masks_from_the_model_in_its_own_process(tmp_path) -> None:
    s, consumer = run_rooms(tmp_path, 2, 40, "model.process=true", "overlay.wait_ms=3000",
                            "overlay.wait_policy=fixed")  # always wait: every mask is the frame's own
    for sid in ("0", "1"):
        room = s["rooms"][sid]
        assert room["masks"] >= 10 and room["missed_deadlines"] <= room["frames"] // 5, room
    (seg,) = consumer.router._models.values()
    assert isinstance(seg, ProcessSegmenter) and seg._proc is None  # the run stopped its child
