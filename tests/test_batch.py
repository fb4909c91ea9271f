"""`endostream batch` end to end on tiny real clips (PyAV-encoded, ClinicDB frames when the
data folder is present), the shipped weights on ONNX Runtime, one thread per worker."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from endostream.batch.inputs import list_inputs, plan_jobs
from endostream.cli import main

ROOT = Path(__file__).resolve().parents[1]
CLINICDB = ROOT.parent / "shared" / "data" / "cvc-clinicdb"
CLIPS = {"a.mp4": 10, "b.mp4": 12, "c.mkv": 8}
# Two uncertainty samples: detections.csv then carries a mean_uncertainty per frame.
COMMON = ["model.backend=onnxruntime", "model.threads=1", "model.steps=2", "model.uncertainty_samples=2",
          "progress=false"]


def _frames(n: int, start: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n consecutive 384x288 ClinicDB frames + masks, or synthetic ones without the data."""
    if (CLINICDB / "images").is_dir():
        ids = sorted(int(p.stem) for p in (CLINICDB / "images").glob("*.png"))[start:start + n]
        return ([cv2.imread(str(CLINICDB / "images" / f"{i}.png")) for i in ids],
                [cv2.imread(str(CLINICDB / "masks" / f"{i}.png"), cv2.IMREAD_GRAYSCALE) for i in ids])
    rng = np.random.default_rng(start)
    images, masks = [], []
    for k in range(n):
        img = cv2.GaussianBlur(rng.integers(40, 200, (288, 384, 3), dtype=np.uint8), (0, 0), 5)
        mask = np.zeros((288, 384), np.uint8)
        cv2.circle(mask, (150 + 4 * k, 140), 40, 255, -1)
        img[mask > 0] = (80, 90, 200)
        images.append(img)
        masks.append(mask)
    return images, masks


def write_video(path: Path, images: list[np.ndarray], codec: str = "libx264", gray: bool = False) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(25))
        s.height, s.width = images[0].shape[:2]
        s.pix_fmt = "gray" if gray else "yuv420p"
        for i, img in enumerate(images):
            vf = av.VideoFrame.from_ndarray(img, format="gray" if gray else "bgr24")
            vf.pts = i
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clips")
    for k, (name, n) in enumerate(CLIPS.items()):
        images, masks = _frames(n, start=30 * k)
        write_video(d / name, images)
        if name == "a.mp4":  # the sidecar convention of sources.py: ground truth for a.mp4
            write_video(d / "a_masks.mkv", masks, codec="ffv1", gray=True)
    (d / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 50)
    return d


@pytest.fixture(scope="module")
def local_out(clips, tmp_path_factory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("out_local")
    rc = main(["batch", f"input={clips}", f"output={out}", "workers=2", *COMMON])
    return out, rc


def test_inputs_folder_glob_list(clips, tmp_path):
    names = [Path(p).name for p in list_inputs(str(clips))]
    assert names == ["a.mp4", "b.mp4", "bad.mp4", "c.mkv"]  # the a_masks.mkv sidecar is ground truth
    assert [Path(p).name for p in list_inputs(str(clips / "*.mkv"))] == ["c.mkv"]
    lst = tmp_path / "videos.txt"
    lst.write_text(f"# two clips\n{clips / 'b.mp4'}\n\n{clips / 'a.mp4'}\n")
    jobs = plan_jobs(str(lst))
    assert [j.name for j in jobs] == ["b", "a"] and jobs[1].fingerprint["size"] > 0
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.mp4").write_bytes(b"")
    assert [j.name for j in plan_jobs([str(clips / "a.mp4"), str(tmp_path / "x" / "a.mp4")])] == [f"{clips.name}_a", "x_a"]
    with pytest.raises(FileNotFoundError):
        list_inputs(str(tmp_path / "nothing_here"))


def test_outputs_per_clip(local_out, clips):
    out, rc = local_out
    assert rc == 1  # bad.mp4 failed
    for name, n in CLIPS.items():
        folder = out / Path(name).stem
        assert count_frames(folder / "overlay.mp4") == n == count_frames(clips / name)
        assert len(list((folder / "masks").glob("*.png"))) == n
        rows = list(csv.DictReader(open(folder / "detections.csv")))
        assert [int(r["frame"]) for r in rows] == list(range(n))
        assert float(rows[1]["timestamp_s"]) == pytest.approx(0.04)
        mask0 = cv2.imread(str(folder / "masks" / "s0_00000000.png"), cv2.IMREAD_GRAYSCALE)
        assert mask0.shape == (288, 384) and int(rows[0]["mask_area_px"]) == int((mask0 > 0).sum())
        assert all(0.0 <= float(r["mean_uncertainty"]) <= 0.5 for r in rows)
        s = json.loads((folder / "summary.json").read_text())
        assert s["status"] == "done" and s["frames"] == n and s["errors"] == []
        assert s["steps"] == 2 and s["backend"] == "onnxruntime" and len(s["weights_sha256"]) == 64
        assert s["fps_achieved"] > 0 and 0 <= s["polyp_present_s"] <= n / 25
    metrics = json.loads((out / "a" / "summary.json").read_text())["metrics"]
    assert metrics["frames"] == CLIPS["a.mp4"] and 0 <= metrics["dice@0.5"] <= 1
    assert "metrics" not in json.loads((out / "b" / "summary.json").read_text())
    assert not list(out.glob(".*"))  # no temporary folders left


def test_corrupt_file_listed_as_failed(local_out):
    out, _ = local_out
    manifest = json.loads((out / "manifest.json").read_text())
    status = {Path(v["input"]).name: v for v in manifest["videos"]}
    assert {k: v["status"] for k, v in status.items()} == {"a.mp4": "done", "b.mp4": "done",
                                                          "bad.mp4": "failed", "c.mkv": "done"}
    assert "bad.mp4" in status["bad.mp4"]["error"] and "\n" not in status["bad.mp4"]["error"]
    assert manifest["counts"] == {"done": 3, "failed": 1, "pending": 0}
    s = json.loads((out / "bad" / "summary.json").read_text())
    assert s["status"] == "failed" and s["errors"] == [status["bad.mp4"]["error"]]


def test_second_run_skips_all(local_out, clips, tmp_path, capsys):
    out, _ = local_out
    lst = tmp_path / "good.txt"
    lst.write_text("".join(f"{clips / n}\n" for n in CLIPS))
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    t0 = time.perf_counter()
    rc = main(["batch", f"input={lst}", f"output={out}", *COMMON])
    assert rc == 0 and time.perf_counter() - t0 < 10  # nothing to do: no model is even loaded
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")} == before
    assert "3 skipped" in capsys.readouterr().out


def test_interrupted_run_restarts_cleanly(clips, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "endostream.cli", "batch", f"input={clips / 'b.mp4'}", f"output={out}", *COMMON]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".b.partial-*/masks/*.png")) and time.monotonic() < deadline:
            assert proc.poll() is None, "batch ended before it could be interrupted"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # a crash half-way through the video
    finally:
        proc.wait()
    assert list(out.glob(".b.partial-*")) and not (out / "b").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["videos"][0]["status"] == "pending"

    rc = main(["batch", f"input={clips / 'b.mp4'}", f"output={out}", "mask_video=true", *COMMON])
    assert rc == 0 and not list(out.glob(".*"))
    assert len(list((out / "b" / "masks").glob("*.png"))) == CLIPS["b.mp4"]
    with av.open(str(out / "b" / "masks.mkv")) as c:  # the optional lossless mask video
        vid = [f.to_ndarray(format="gray") for f in c.decode(video=0)]
    png = cv2.imread(str(out / "b" / "masks" / "s0_00000005.png"), cv2.IMREAD_GRAYSCALE)
    assert len(vid) == CLIPS["b.mp4"] and np.array_equal(vid[5], png)
    assert json.loads((out / "manifest.json").read_text())["videos"][0]["status"] == "done"


def test_ray_matches_local(local_out, clips, tmp_path):
    pytest.importorskip("ray")
    out_local, _ = local_out
    out = tmp_path / "out_ray"
    rc = main(["batch", f"input={clips}", f"output={out}", "executor=ray", "workers=2",
               "+ray.init.num_cpus=2", *COMMON])
    assert rc == 1  # bad.mp4 fails on Ray too
    workers = set()
    for name in CLIPS:
        stem = Path(name).stem
        assert (out / stem / "detections.csv").read_bytes() == (out_local / stem / "detections.csv").read_bytes()
        masks = sorted(p.name for p in (out_local / stem / "masks").glob("*.png"))
        assert masks == sorted(p.name for p in (out / stem / "masks").glob("*.png"))
        for m in masks:
            a = cv2.imread(str(out_local / stem / "masks" / m), cv2.IMREAD_GRAYSCALE)
            assert np.array_equal(a, cv2.imread(str(out / stem / "masks" / m), cv2.IMREAD_GRAYSCALE)), (stem, m)
        w = json.loads((out / stem / "summary.json").read_text())["worker"]
        assert w["executor"] == "ray" and w["actor_id"]
        workers.add((w["pid"], w["actor_id"]))
    assert len(workers) >= 2, f"only one Ray worker took part: {workers}"
    bad = json.loads((out / "manifest.json").read_text())["videos"][2]
    assert bad["status"] == "failed" and "bad.mp4" in bad["error"]


def test_ray_missing_says_how_to_install(monkeypatch):
    from endostream.batch.ray_pool import _import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RuntimeError, match="pip install"):
        _import_ray()
