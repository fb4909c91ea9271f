"""`endostream predict` with the shipped weights: one 0/255 mask per image, at its own size."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA_ROOT
from endostream.cli import main



def _write_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"2.png": (288, 384), "10.jpg": (531, 622), "1.jpeg": (90, 1300)}
    for name, (h, w) in sizes.items():
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(folder / name), img)
    kv = DATA_ROOT / "kvasir-seg" / "images"
    if kv.is_dir():
        real = sorted(kv.glob("*.jpg"))[0]
        img = cv2.imread(str(real))
        cv2.imwrite(str(folder / "real.jpg"), img)
        sizes["real.jpg"] = img.shape[:2]
    (folder / "notes.txt").write_text("not an image")
    return sizes


@pytest.mark.parametrize("sequence", ["false", "true"])
def test_predict_writes_one_mask_per_image(tmp_path, sequence):
    sizes = _write_inputs(tmp_path / "in")
    out = tmp_path / "out" / "nested"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("user file")
    rc = main(["predict", f"input={tmp_path / 'in'}", f"output={out}", f"sequence={sequence}",
               "model.backend=torch", "model.threads=1"])
    assert rc == 0
    assert (out / "keep.txt").read_text() == "user file"  # never deletes what is there
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == sorted(Path(n).stem + ".png" for n in sizes)
    for name, (h, w) in sizes.items():
        m = cv2.imread(str(out / (Path(name).stem + ".png")), cv2.IMREAD_UNCHANGED)
        assert m.shape == (h, w) and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 255}


def test_predict_missing_folder_is_a_one_line_error(tmp_path, capsys):
    rc = main(["predict", f"input={tmp_path / 'nope'}", f"output={tmp_path / 'o'}", "model.backend=torch"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "input folder not found" in err and len(err.splitlines()) == 1
