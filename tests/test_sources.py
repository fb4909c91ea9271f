"""Sources on real files: clips encoded with PyAV here, image folders, the ClinicDB list."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import DATA_ROOT, need_data

from endostream.capture.sources import SourceError, natural_key, open_source

CLINICDB = DATA_ROOT / "cvc-clinicdb"
DEMO = Path(__file__).resolve().parents[1] / "assets" / "demo" / "clinicdb_demo.mp4"


def write_clip(path: Path, n: int = 12, size: tuple[int, int] = (64, 48), fps: int = 25,
               codec: str = "libx264", pix_fmt: str = "yuv420p", gray: bool = False) -> None:
    """A clip whose frame i is uniformly grey level 10*i (so order is checkable after decode)."""
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        for i in range(n):
            img = np.full((h, w) if gray else (h, w, 3), 10 * i, np.uint8)
            vf = av.VideoFrame.from_ndarray(img, format="gray" if gray else "bgr24")
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264"), ("mkv", "libx264"), ("avi", "mpeg4")])
def test_video_roundtrip_count_size_order(tmp_path, ext, codec):
    clip = tmp_path / f"clip.{ext}"
    write_clip(clip, n=12, size=(64, 48), codec=codec)
    frames = list(open_source(str(clip), stream_id=3, modality="laparoscopy"))
    assert len(frames) == 12
    assert [f.seq for f in frames] == list(range(12))
    f = frames[0]
    assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
    assert f.stream_id == 3 and f.modality == "laparoscopy" and f.gt_mask is None
    assert f.stamps_ns["grab"] == f.t_capture_ns
    levels = [float(fr.image.mean()) for fr in frames]
    assert np.all(np.diff(levels) > 0)  # decoded in order
    assert np.allclose(levels, [10 * i for i in range(12)], atol=8)  # lossy codecs, colour range
    stamps = [fr.t_capture_ns for fr in frames]
    assert stamps == sorted(stamps)


def test_url_through_ffmpeg(tmp_path):
    """A URL goes through FFmpeg's own network stack (here HTTP from a local server)."""
    import functools
    import http.server
    import threading

    write_clip(tmp_path / "clip.mp4", n=7)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        frames = list(open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.mp4"))
        assert len(frames) == 7 and frames[0].image.shape == (48, 64, 3)
        with pytest.raises(SourceError):
            open_source(f"http://127.0.0.1:{server.server_address[1]}/missing.mp4", open_timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()


def test_max_frames_and_loop(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, n=5)
    assert len(list(open_source(str(clip), max_frames=3))) == 3
    frames = list(open_source(str(clip), loop=True, max_frames=12))
    assert [f.seq for f in frames] == list(range(12))
    assert abs(frames[5].image.mean() - frames[0].image.mean()) < 4  # wrapped to the start


def test_pacing_follows_native_rate(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, n=11, fps=50)
    frames = list(open_source(str(clip), pace=True))
    span_s = (frames[-1].t_capture_ns - frames[0].t_capture_ns) / 1e9
    assert 0.18 <= span_s < 1.0, span_s  # 10 gaps at 20 ms = 0.2 s; loose for a busy machine
    unpaced = list(open_source(str(clip)))
    assert len(unpaced) == 11


def test_mask_video_sidecar_gives_ground_truth(tmp_path):
    clip = tmp_path / "clip.mp4"
    write_clip(clip, n=6)
    masks = tmp_path / "clip_masks.mkv"
    write_clip(masks, n=6, codec="ffv1", pix_fmt="gray", gray=True)  # levels 0,10,..50: all <= 127
    frames = list(open_source(str(clip)))
    assert all(f.gt_mask is not None and f.gt_mask.shape == (48, 64) for f in frames)
    assert all(f.gt_mask.dtype == np.uint8 and not f.gt_mask.any() for f in frames)


def test_image_folder_natural_order_with_mask_folder(tmp_path):
    imgs, masks = tmp_path / "images", tmp_path / "masks"
    imgs.mkdir(), masks.mkdir()
    for i in (10, 2, 1, 33, 3):
        cv2.imwrite(str(imgs / f"{i}.png"), np.full((20, 30, 3), i, np.uint8))
        cv2.imwrite(str(masks / f"{i}.png"), np.full((20, 30), 200 if i % 2 else 100, np.uint8))
    (imgs / "notes.txt").write_text("ignored")
    frames = list(open_source(str(imgs), gt=str(masks)))
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 3, 10, 33]
    assert [int(f.gt_mask[0, 0]) for f in frames] == [255, 0, 255, 0, 255]  # > 127 binarised
    assert sorted(["10.png", "2.png", "1.png"], key=natural_key) == ["1.png", "2.png", "10.png"]


def test_clinicdb_sequence_list_with_masks():
    need_data("cvc-clinicdb/sequences.csv")
    frames = list(open_source(f"{CLINICDB / 'sequences.csv'}?sequence=23"))
    same = list(open_source(str(CLINICDB / "sequences.csv"), sequences=[23]))
    assert len(frames) == len(same) == 12
    f = frames[0]
    assert f.image.shape == (288, 384, 3) and f.gt_mask.shape == (288, 384)
    assert set(np.unique(f.gt_mask)) <= {0, 255} and f.gt_mask.any()


def test_demo_clip_has_ground_truth_for_every_frame():
    if not DEMO.exists():
        pytest.skip("demo clip not generated (tools/make_demo_clip.py)")
    frames = list(open_source(str(DEMO)))
    assert 150 <= len(frames) <= 240
    assert all(f.gt_mask is not None and f.gt_mask.shape == f.image.shape[:2] for f in frames)
    assert np.mean([f.gt_mask.any() for f in frames]) > 0.5


def test_bad_inputs_raise_one_line_source_error(tmp_path):
    good = tmp_path / "good.mp4"
    write_clip(good, n=10)
    data = good.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 3])  # moov index cut off
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "junk.mkv").write_bytes(b"not a video at all " * 100)
    cases = {
        "missing": tmp_path / "nope.mp4",
        "zero": tmp_path / "zero.mp4",
        "trunc": tmp_path / "trunc.mp4",
        "junk": tmp_path / "junk.mkv",
        "device": "/dev/video99",
        "empty folder": tmp_path,  # no images in it (only the files above)
    }
    for name, uri in cases.items():
        with pytest.raises(SourceError) as err:
            open_source(str(uri))  # raised on open, not on first next()
        assert "\n" not in str(err.value), name
    assert issubclass(SourceError, ValueError)


def test_unknown_codec_raises(tmp_path):
    avi = tmp_path / "m.avi"
    write_clip(avi, n=3, codec="mjpeg", pix_fmt="yuvj420p")
    data = avi.read_bytes()
    assert data.count(b"MJPG") >= 1
    (tmp_path / "z.avi").write_bytes(data.replace(b"MJPG", b"ZQZQ"))  # a FourCC FFmpeg lacks
    with pytest.raises(SourceError, match="codec"):
        open_source(str(tmp_path / "z.avi"))


def test_absurd_frame_size_is_refused(tmp_path):
    clip = tmp_path / "wide.mp4"
    write_clip(clip, n=2, size=(640, 48))
    with pytest.raises(SourceError, match="640x48"):
        open_source(str(clip), max_side=320)


def test_pacing_does_not_drift_after_a_slow_consumer(tmp_path):
    """A late frame is not slept for, and later frames keep the original schedule."""
    clip = tmp_path / "clip.mp4"
    write_clip(clip, n=21, fps=25)
    it = open_source(str(clip), pace=True)
    first = next(it)
    time.sleep(1.5)  # consumer stalls for 37 frame periods
    rest = list(it)
    span_s = (rest[-1].t_capture_ns - first.t_capture_ns) / 1e9
    # No drift: 1.5 s + decoding the 20 overdue frames at once; drift: >= 1.5 + 20 * 0.04 s.
    # The margin is wide: decoding on the loaded 2-core machine took up to 40 ms a frame.
    assert span_s < 2.25, span_s
