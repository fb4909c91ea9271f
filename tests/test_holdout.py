"""The cross-source check (`data.holdout`): a held-out source is never trained on, validates whole,
never selects a checkpoint, and `endostream eval` scores the same frames."""

import json

import pytest
import torch

from conftest import need_data
from test_training import _tiny_data_root, _tiny_run

from endostream.training.dataset import clinicdb_rows, image_files, load_splits
from endostream.training.train import without_holdout


def test_a_held_out_source_is_never_trained_on_and_validates_whole():
    from endostream.cli import compose
    from endostream.training.train import training_splits

    root = need_data("kvasir-seg").parent
    usual = load_splits(root, cache_size=32)
    held = training_splits(compose("train", [f"data.root={root}", "data.cache_size=32", "data.holdout=clinicdb"]))
    assert {s.source for s in held.train} == {"kvasir"}
    assert [s.name for s in held.train] == [s.name for s in usual.train if s.source == "kvasir"]
    every_frame = [f"clinicdb_{fid}" for fid, *_ in clinicdb_rows(root / "cvc-clinicdb")]
    assert [s.name for s in held.val if s.source == "clinicdb"] == every_frame
    # The other source's validation part stays the one every other run is scored on.
    assert [s.name for s in held.val if s.source == "kvasir"] == [s.name for s in usual.val if s.source == "kvasir"]
    # And the other way round: every Kvasir still validates, ClinicDB's usual training sequences train.
    other = load_splits(root, cache_size=32, holdout="kvasir")
    assert [s.name for s in other.train] == [s.name for s in usual.train if s.source == "clinicdb"]
    assert len([s for s in other.val if s.source == "kvasir"]) == len(image_files(root / "kvasir-seg" / "images"))


def test_an_unknown_source_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="data.holdout='etis'"):
        load_splits(_tiny_data_root(tmp_path / "data"), cache_size=32, holdout="etis")


def test_the_held_out_dice_is_reported_apart_and_kept_out_of_the_selecting_mean():
    v = {"kvasir_dice": 0.9, "clinicdb_dice": 0.5, "mean_dice": 0.7}
    assert without_holdout(v, None) == v
    assert without_holdout(v, "clinicdb") == {"kvasir_dice": 0.9, "cross_dice": 0.5, "mean_dice": 0.9}


def test_a_run_with_a_held_out_source_trains_without_it_and_eval_scores_all_of_it(tmp_path, capsys):
    from endostream.cli import compose, main
    from endostream.model.io import load_weights
    from endostream.training.train import run

    data = _tiny_data_root(tmp_path / "data")  # ClinicDB: sequences 1-2 train, 3 validates
    out = tmp_path / "run"
    assert run(compose("train", _tiny_run(data, out, "data.holdout=kvasir", "train.budget_steps=3",
                                          "train.val_steps=0"))) == 0
    log = capsys.readouterr().out
    assert "data: 6 train, 5 val" in log  # 3 Kvasir stills + sequence 3's 2 frames validate
    val = load_weights(out / "best.pt")[1]["val"]
    assert "kvasir_dice" not in val and val["mean_dice"] == val["clinicdb_dice"]
    assert 0.0 <= val["cross_dice"] <= 1.0

    def eval_frames(*extra: str) -> dict[str, int]:
        rc = main(["eval", f"model.weights={out / 'best.pt'}", "model.backend=torch",
                   "model.steps=0", f"data.root={data}", "flicker=false", f"out={tmp_path / 'eval.json'}", *extra])
        assert rc == 0
        r = json.loads((tmp_path / "eval.json").read_text())
        return {g: r[g]["frames"] for g in ("kvasir", "clinicdb")}

    assert eval_frames() == {"kvasir": 3, "clinicdb": 2}
    assert eval_frames("data.holdout=clinicdb") == {"kvasir": 3, "clinicdb": 8}
    capsys.readouterr()
    torch.set_num_threads(2)  # the run set one thread for the process; later tests expect the usual two
