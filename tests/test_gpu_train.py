"""The GPU training path (tools/gpu_train.sh, tools/pack_training_data.py) on the CPU: the pack
holds the same split, and the script's `run` trains from the shipped weights and returns them.
Only `train.device=cuda` itself is unrun here (no GPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from test_training import _tiny_data_root

from endostream.fileutil import file_sha256
from endostream.model.io import load_weights
from endostream.training.dataset import load_splits

ROOT = Path(__file__).resolve().parent.parent


def _pack_module():
    spec = importlib.util.spec_from_file_location("pack_training_data", ROOT / "tools/pack_training_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_pack_holds_the_same_split_and_masks(tmp_path):
    data = _tiny_data_root(tmp_path / "data")
    r = _pack_module().pack(data, tmp_path / "pack", size=96, quality=80)
    a, b = load_splits(data, cache_size=96), load_splits(tmp_path / "pack", cache_size=96)
    for part in ("train", "val", "negatives"):
        assert [s.name for s in getattr(a, part)] == [s.name for s in getattr(b, part)], part
        assert [s.sequence for s in getattr(a, part)] == [s.sequence for s in getattr(b, part)], part
    for x, y in zip(a.train + a.val, b.train + b.val):
        assert np.mean(x.mask == y.mask) > 0.98, x.name  # lossless masks, the same crop
        small = [cv2.resize(im, (12, 12), interpolation=cv2.INTER_AREA).astype(int) for im in (x.image, y.image)]
        assert np.abs(small[0] - small[1]).mean() < 6, x.name  # lossy (the noise goes), not another image
    assert r["images"] == len(a.train) + len(a.val) + len(a.negatives)
    assert all(p.suffix == ".webp" for p in (tmp_path / "pack/kvasir-seg/images").iterdir())


def test_gpu_train_run_trains_from_the_shipped_weights_and_returns_them(tmp_path):
    data = _tiny_data_root(tmp_path / "data")
    _pack_module().pack(data, tmp_path / "pack", size=96)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_TRAIN_DEVICE": "cpu", "PYTHON": sys.executable,
           "GPU_TRAIN_DATA": str(tmp_path / "pack")}
    tiny = ["data.cache_size=96", "model.input_size=64", "train.sizes=[64]", "train.batch_size=2",
            "train.budget_steps=2", "train.val_every_steps=2", "train.alarm_stretches=0", "train.threads=1",
            "train.loader_threads=2"]
    p = subprocess.run(["bash", "tools/gpu_train.sh", "run", *tiny], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = tmp_path / "out/gpu_train"
    assert sorted(f.name for f in out.iterdir()) == ["best.json", "best.pt", "log.csv", "train.log"]
    log = (out / "train.log").read_text()
    assert "initialised from weights/polyp.pt" in log and "done: 2 steps" in log
    assert json.loads((out / "best.json").read_text())["sha256"] == file_sha256(out / "best.pt")
    model, meta = load_weights(out / "best.pt")
    assert meta["step"] == 2 and model.cfg.refine_inputs  # the shipped network, trained on
    bad = subprocess.run(["bash", "tools/gpu_train.sh", "run"], cwd=ROOT, capture_output=True, text=True,
                         env={**env, "GPU_TRAIN_DATA": str(tmp_path / "nowhere")}, timeout=60)
    assert bad.returncode == 2 and "tools/gpu_train.sh prepare" in bad.stderr
