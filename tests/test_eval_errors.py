"""`endostream eval images=DIR masks=DIR`: a wrong folder is one line naming the key the user
typed (images=, masks=), before the model loads."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from endostream.cli import main

# A weights file that does not exist: an eval that loaded the model before reading the folders
# would fail on it instead of naming the folder.
NO_MODEL = "model.weights=/nonexistent/polyp.pt"


def _eval_error(capsys, *overrides: str) -> str:
    rc = main(["eval", NO_MODEL, "model.backend=torch", *overrides])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "nonexistent" not in err, f"the model was loaded before the folders were read: {err}"
    return err


def test_missing_images_folder_names_images(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    err = _eval_error(capsys, f"images={tmp_path / 'nope'}", f"masks={tmp_path / 'm'}")
    assert "images folder not found" in err and "images=" in err
    assert "input" not in err


def test_images_without_masks_names_masks(tmp_path, capsys):
    (tmp_path / "i").mkdir()
    err = _eval_error(capsys, f"images={tmp_path / 'i'}")
    assert "masks=" in err


def test_missing_masks_folder_names_masks(tmp_path, capsys):
    img = tmp_path / "i"
    img.mkdir()
    cv2.imwrite(str(img / "a.png"), np.zeros((8, 8, 3), np.uint8))
    err = _eval_error(capsys, f"images={img}", f"masks={tmp_path / 'nope'}")
    assert "masks folder not found" in err


@pytest.mark.parametrize("name", ["a.txt"])
def test_images_file_that_is_not_an_image_names_images(tmp_path, capsys, name):
    (tmp_path / name).write_text("x")
    (tmp_path / "m").mkdir()
    err = _eval_error(capsys, f"images={tmp_path / name}", f"masks={tmp_path / 'm'}")
    assert err.count("images=") == 1 and "not an image" in err
