"""Sinks on real files and sockets: decodable video (also after SIGKILL), atomic mask PNGs,
guarded failures on unwritable / full outputs, ZeroMQ re-publish, config-built sinks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from endostream.consumer.republish_sink import ZmqRepublishSink
from endostream.consumer.sinks import (GuardedSink, MaskSink, SinkError, VideoSink, WindowSink,
                              gui_available, make_sinks)
from endostream.types import Frame, Prediction

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "sink"


def _frame(seq: int, h: int = 48, w: int = 64) -> tuple[Frame, np.ndarray]:
    img = np.full((h, w, 3), (seq * 7) % 256, np.uint8)
    return Frame(stream_id=1, seq=seq, t_capture_ns=seq, image=img), img


def _pred(h: int = 48, w: int = 64) -> Prediction:
    mask = np.zeros((h, w), bool)
    mask[10:20, 5:30] = True
    return Prediction(prob=mask.astype(np.float32), mask=mask, presence=0.9, box=(5, 10, 30, 20))


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_video_sink_decodable_with_every_frame(tmp_path):
    out = tmp_path / "sub" / "overlay.mp4"
    sink = VideoSink(str(out), fps=30, keyframe_interval=10)
    for i in range(37):
        sink.write(*_frame(i, 47, 63), None)  # odd size: padded to 64x48 for yuv420p
    sink.close()
    sink.close()
    frames = decoded_frames(out)
    assert len(frames) == 37 == sink.frames_written
    assert frames[0].shape == (48, 64, 3)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert float(c.streams.video[0].average_rate) == pytest.approx(30)


def test_video_sink_survives_sigkill(tmp_path):
    """Fragmented MP4: a writer killed mid-stream leaves every completed fragment playable."""
    out = tmp_path / "killed.mp4"
    script = textwrap.dedent(f"""
        import time, numpy as np
        from endostream.consumer.sinks import VideoSink
        from endostream.types import Frame
        sink = VideoSink({str(out)!r}, fps=25, keyframe_interval=5)
        img = np.zeros((48, 64, 3), np.uint8)
        for i in range(10_000):
            img[:] = i % 256
            sink.write(Frame(0, i, 0, img), img, None)
            if i == 22:
                print("wrote 23", flush=True)
                time.sleep(60)  # killed here, never closed
    """)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=repo)
    try:
        assert proc.stdout.readline().strip() == "wrote 23"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    frames = decoded_frames(out)
    # 23 frames written, keyframe every 5: fragments up to frame 20 are complete.
    assert 20 <= len(frames) <= 23
    assert [int(f.mean()) for f in frames[:3]] == pytest.approx([0, 1, 2], abs=3)


def test_mask_sink_writes_atomic_pngs(tmp_path):
    sink = MaskSink(str(tmp_path / "masks"))
    for i in range(3):
        sink.write(*_frame(i), _pred())
    sink.write(*_frame(3), None)  # no prediction: nothing to write
    sink.close()
    names = sorted(os.listdir(tmp_path / "masks"))
    assert names == ["s1_00000000.png", "s1_00000001.png", "s1_00000002.png"]  # no temp files left
    mask = cv2.imread(str(tmp_path / "masks" / names[0]), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == (48, 64)
    assert set(np.unique(mask)) == {0, 255} and mask[15, 10] == 255


def test_guarded_sink_on_unwritable_folder(tmp_path, caplog):
    folder = tmp_path / "masks"
    sink = MaskSink(str(folder))
    folder.rmdir()
    folder.write_text("a file where the folder was")  # writes now fail, even for root
    guarded = GuardedSink(sink, name="masks")
    with caplog.at_level("ERROR"):
        for i in range(5):
            guarded.write(*_frame(i), _pred())  # never raises
    guarded.close()
    assert guarded.disabled and guarded.failures == 5
    assert "mask sink: cannot write" in guarded.error
    assert sum("sink masks disabled" in r.message for r in caplog.records) == 1  # logged once


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_mask_sink_on_read_only_folder_raises(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SinkError, match="cannot write"):
            MaskSink(str(folder)).write(*_frame(0), _pred())
    finally:
        folder.chmod(0o700)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full (always-full device) missing")
def test_video_sink_disk_full_is_one_clear_error():
    sink = VideoSink("/dev/full")
    with pytest.raises(SinkError, match="No space left on device"):
        for i in range(60):
            sink.write(*_frame(i), None)
    guarded = GuardedSink(VideoSink("/dev/full"))
    for i in range(60):
        guarded.write(*_frame(i), None)
    guarded.close()
    assert guarded.disabled and "No space left" in guarded.error


def test_zmq_republish_sink_sends_wire_jpeg():
    zmq = pytest.importorskip("zmq")
    from endostream.protocol import wire

    sink = ZmqRepublishSink("tcp://127.0.0.1:0")
    endpoint = sink._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVTIMEO, 200)
    sub.connect(endpoint)
    try:
        got = None
        for i in range(50):  # PUB/SUB slow joiner: keep publishing until the subscriber hears
            sink.write(*_frame(i), None)
            try:
                got = wire.decode_message(sub.recv_multipart())
                break
            except zmq.Again:
                continue
        assert got is not None, "subscriber never received a frame"
        assert got.codec == "jpeg" and got.frame.stream_id == 1
        assert got.frame.image.shape == (48, 64, 3)
    finally:
        sub.close(linger=0)
        sink.close()


def test_window_sink_refuses_without_gui():
    ok, why = gui_available()
    if ok:
        pytest.skip("this machine has a GUI-capable OpenCV and a display")
    with pytest.raises(SinkError, match="window sink"):
        WindowSink()
    assert why


def test_sink_configs_build(tmp_path):
    specs = {}
    for name in ("video", "masks", "window"):
        specs.update(OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{name}.yaml")))
    specs["video"]["path"] = str(tmp_path / "o.mp4")
    specs["masks"]["folder"] = str(tmp_path / "m")
    sinks = make_sinks(specs)
    names = [s.name for s in sinks]
    assert "video" in names and "masks" in names
    assert ("window" in names) == gui_available()[0]  # headless: left out with a log line
    for s in sinks:
        s.write(*_frame(0), _pred())
        s.close()
    assert all(not s.disabled for s in sinks)
    assert len(decoded_frames(tmp_path / "o.mp4")) == 1


def _killed_writer(out: Path, n: int, *, index: bool = True) -> int:
    """A process writes ``n`` frames (t_capture_ns = seq) and is SIGKILLed before closing;
    returns the durable_count it reported just before."""
    script = textwrap.dedent(f"""
        import time, numpy as np
        from endostream.consumer.sinks import VideoSink
        from endostream.types import Frame
        sink = VideoSink({str(out)!r}, fps=25, keyframe_interval=5, index={index})
        img = np.zeros((48, 64, 3), np.uint8)
        for i in range({n}):
            img[:] = (i * 7) % 256
            sink.write(Frame(0, i, i, img), img, None)
        print(sink.durable_count, flush=True)
        time.sleep(60)  # killed here, never closed
    """)
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=repo)
    try:
        durable = int(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return durable


def test_video_sink_durable_count_is_what_a_kill_leaves(tmp_path):
    """Every frame reported durable is in the file after SIGKILL (per-frame fragments)."""
    out = tmp_path / "k.mp4"
    durable = _killed_writer(out, 23)
    assert durable == 22  # the last frame's fragment is written when the next frame comes
    assert len(decoded_frames(out)) == durable
    sink = VideoSink(str(tmp_path / "c.mp4"))
    for i in range(5):
        sink.write(*_frame(i), None)
        assert sink.durable_count == i  # lags by one frame while open
    sink.close()
    assert sink.durable_count == 5 and len(decoded_frames(tmp_path / "c.mp4")) == 5


def test_video_sink_resume_writes_every_frame_exactly_once(tmp_path):
    """A killed writer, then a resumed one fed from an older seq (the frames a lossless
    producer resends): the two files hold frames 0..29 exactly once, in order."""
    first = tmp_path / "overlay.mp4"
    durable = _killed_writer(first, 17)
    sink = VideoSink(str(tmp_path / "overlay.1.mp4"), resume=True)
    img = np.zeros((48, 64, 3), np.uint8)
    for i in range(10, 30):  # resent from 10: 10..durable-1 are already in the first file
        img[:] = (i * 7) % 256
        sink.write(Frame(0, i, i, img), img, None)
    assert sink.durable_count == 20 - 1 and sink.frames_skipped == durable - 10
    sink.close()
    frames = decoded_frames(first) + decoded_frames(tmp_path / "overlay.1.mp4")
    assert len(frames) == 30
    assert [int(f.mean()) for f in frames] == pytest.approx([(i * 7) % 256 for i in range(30)], abs=4)
