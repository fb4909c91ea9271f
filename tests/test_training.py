"""One training step on a tiny batch lowers the loss; clip batches have the promised shapes."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import need_data

from endostream.model.io import save_weights
from endostream.model.network import NetConfig, PolypNet
from endostream.model.scheduler import MaskScheduler
from endostream.training.clips import ClipBatch, ClipSampler, mask_box
from endostream.training.dataset import Sample
from endostream.training.losses import FrameDiscriminator
from endostream.training.train import init_from_weights, train_step


def _samples(n=6, size=80):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(10, 40, 2)
        m[y:y + 25, x:x + 25] = 1
        img[m > 0] = (200, 80, 90)
        out.append(Sample(f"s{i}", "kvasir" if i < 3 else "clinicdb", img, m, sequence=-1 if i < 3 else 1))
    return out


def test_clip_sampler_shapes_and_targets():
    sampler = ClipSampler(_samples(), [], size=64, past=2, negative_p=0.3, seed=1)
    b = sampler.batch(8)
    assert b.images.shape == (8, 3, 3, 64, 64) and b.images.dtype == np.float32
    assert b.images.min() >= -1.0 and b.images.max() <= 1.0
    assert b.masks.shape == (8, 3, 1, 64, 64) and set(np.unique(b.masks)) <= {0.0, 1.0}
    assert b.valid.shape == (8, 2)
    # negatives have no mask and no box; positives have a box inside [0, 1]
    for i in range(8):
        if b.presence[i] == 0:
            assert b.box[i].sum() == 0
        else:
            assert b.masks[i, -1].sum() > 0 and 0 < b.box[i, 2] <= 1
    np.testing.assert_allclose(mask_box(np.pad(np.ones((2, 4)), ((1, 1), (2, 2)))), [0.5, 0.5, 0.5, 0.5])


def test_one_training_step_lowers_the_loss_on_a_tiny_batch():
    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64))
    disc = FrameDiscriminator()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=1e-3)
    batch = ClipSampler(_samples(), [], size=64, past=2, negative_p=0.0, seed=2).batch(4)
    sched = MaskScheduler()

    def loss_now() -> float:
        g = torch.Generator().manual_seed(5)
        return train_step(net, None, torch.optim.SGD(net.parameters(), lr=0.0), None, batch, sched, gen=g)["mask"]

    before = loss_now()
    for _ in range(8):
        stats = train_step(net, disc, opt, opt_d, batch, sched, gen=torch.Generator().manual_seed(5))
    assert {"mask", "aux", "presence", "box", "predict", "adv", "disc"} <= set(stats)
    assert loss_now() < before


def test_init_weights_may_change_only_the_input_size(tmp_path):
    torch.manual_seed(0)
    src = PolypNet(NetConfig(input_size=64))
    save_weights(src, tmp_path / "w.pt", meta={"minutes": 3.0})
    bigger = PolypNet(NetConfig(input_size=96))
    assert init_from_weights(bigger, tmp_path / "w.pt")["minutes"] == 3.0
    for (k, a), b in zip(src.state_dict().items(), bigger.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="only model.input_size, model.refine_inputs, the denoiser's size and a deeper model.encoder may change"):
        init_from_weights(PolypNet(NetConfig(input_size=64, neck_channels=32)), tmp_path / "w.pt")


def test_adding_refinement_inputs_starts_from_the_same_function(tmp_path):
    """A fourth-generation network continued with refine_inputs: the new convolution starts at
    zero, so every output equals the source network's until training moves it."""
    torch.manual_seed(0)
    src = PolypNet(NetConfig(input_size=64)).eval()
    save_weights(src, tmp_path / "w.pt")
    dst = PolypNet(NetConfig(input_size=64, refine_inputs=True)).eval()
    init_from_weights(dst, tmp_path / "w.pt")
    img = torch.randn(2, 3, 64, 64)
    mem, valid = src.empty_memory(2)
    with torch.no_grad():
        a, b = src.encode_frame(img, mem, valid), dst.encode_frame(img, mem, valid)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_plain_recipe_trains_the_decoder_pass_and_leaves_the_denoiser_alone():
    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64, temporal=False))
    denoiser_before = {k: v.clone() for k, v in net.denoiser.state_dict().items()}
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    batch = ClipSampler(_samples(), [], size=64, past=0, negative_p=0.0, seed=2).batch(4)
    first = train_step(net, None, opt, None, batch, MaskScheduler(), heads=False, diffusion=False, bf16=False)
    assert set(first) == {"aux", "total", "skipped"} and first["skipped"] == 0.0
    for _ in range(7):
        last = train_step(net, None, opt, None, batch, MaskScheduler(), heads=False, diffusion=False, bf16=False)
    assert last["aux"] < first["aux"]
    for k, v in net.denoiser.state_dict().items():
        assert torch.equal(v, denoiser_before[k]), k  # no gradient reached it, so AdamW skipped it


def test_plain_baseline_recipe_composes_to_the_issue_size():
    from endostream.cli import compose

    cfg = compose("train", ["+recipe=plain_baseline"])
    net = PolypNet(NetConfig.from_dict(dict(cfg.model)))
    params = sum(p.numel() for n, p in net.named_parameters() if n.startswith(("encoder", "neck", "aux_head")))
    assert 1.8e6 < params < 2.3e6  # the issue's baseline: about 2 M parameters
    assert cfg.train.diffusion is False and cfg.train.heads is False and cfg.model.temporal is False


def test_the_training_seed_does_not_move_the_validation_split():
    from endostream.cli import compose
    from endostream.training.dataset import load_splits
    from endostream.training.train import training_splits

    root = need_data("kvasir-seg").parent
    cfg = compose("train", ["train.seed=3", f"data.root={root}"])
    names = [s.name for s in training_splits(cfg, val_only=True).val]
    assert names == [s.name for s in load_splits(cfg.data.root, val_only=True).val]  # what eval scores
    assert len(names) > 90


def _tiny_data_root(root: Path, size: int = 96) -> Path:
    """The layout of ../shared/data in miniature: 3 Kvasir stills (all validation, fewer than 90)
    and ClinicDB sequences 1-2 (training) and 3 (validation), each image with a bright blob."""
    import cv2

    rng = np.random.default_rng(0)

    def write(img_path: Path, mask_path: Path) -> None:
        img = (rng.random((size, size, 3)) * 80 + 40).astype(np.uint8)
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(15, 50, 2)
        m[y:y + 30, x:x + 30] = 255
        img[m > 0] = (90, 80, 220)
        img_path.parent.mkdir(parents=True, exist_ok=True)
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img_path), img)
        cv2.imwrite(str(mask_path), m)

    for i in range(3):
        write(root / "kvasir-seg/images" / f"k{i}.jpg", root / "kvasir-seg/masks" / f"k{i}.jpg")
    rows = ["frame_id,sequence_id,image,mask"]
    for fid, seq in enumerate([1, 1, 1, 2, 2, 2, 3, 3], start=1):
        write(root / "cvc-clinicdb/images" / f"{fid}.png", root / "cvc-clinicdb/masks" / f"{fid}.png")
        rows.append(f"{fid},{seq},images/{fid}.png,masks/{fid}.png")
    (root / "cvc-clinicdb/sequences.csv").write_text("\n".join(rows) + "\n")
    return root


def _tiny_run(data: Path, out: Path, *extra: str) -> list[str]:
    """A train command's overrides for a few steps of a 64-pixel network on the tiny data root,
    validated every 3 steps, without the false-alarm stream."""
    return [f"data.root={data}", "data.cache_size=96", f"train.out={out}", "model.input_size=64",
            "train.batch_size=2", "train.pretrained_encoder=false", "train.val_every_steps=3",
            "train.warmup_steps=1", "train.threads=1", "train.alarm_stretches=0", *extra]


def test_step_budget_stops_validates_and_resumes_on_schedule(tmp_path):
    """`endostream train` with a step budget: exactly N steps, validation every k, a best and a
    last checkpoint; a larger budget resumes from the last step instead of starting over."""
    import csv

    from endostream.cli import compose
    from endostream.model.io import load_weights
    from endostream.training.train import run

    data = _tiny_data_root(tmp_path / "data")
    out = tmp_path / "run"
    common = [f"data.root={data}", "data.cache_size=96", f"train.out={out}", "model.input_size=64",
              "train.batch_size=2", "train.pretrained_encoder=false", "train.val_every_steps=2",
              "train.warmup_steps=1", "train.threads=1"]
    assert run(compose("train", common + ["train.budget_steps=3"])) == 0
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert [bool(r["val_mean"]) for r in rows] == [False, True, True]  # every 2 steps, and at the end
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert load_weights(out / "best.pt")[1]["step"] in (2, 3)

    assert run(compose("train", common + ["train.budget_steps=5"])) == 0
    with open(out / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]


def test_a_checkpoint_over_the_false_alarm_limit_is_never_kept_as_best(tmp_path):
    """Selection's second criterion: validation counts false alarms on a synthesised stream and a
    checkpoint over train.max_false_alarms is not saved as best, whatever its Dice."""
    import csv

    from endostream.cli import compose
    from endostream.training.train import run

    data = _tiny_data_root(tmp_path / "data")
    common = [f"data.root={data}", "data.cache_size=96", "model.input_size=64", "train.batch_size=2",
              "train.pretrained_encoder=false", "train.val_every_steps=1", "train.warmup_steps=1",
              "train.threads=1", "train.budget_steps=2", "train.alarm_stretches=2", "train.alarm_negative_frames=5"]
    assert run(compose("train", common + [f"train.out={tmp_path / 'strict'}", "train.max_false_alarms=-1"])) == 0
    assert not (tmp_path / "strict" / "best.pt").is_file() and (tmp_path / "strict" / "last.pt").is_file()
    with open(tmp_path / "strict" / "log.csv") as f:
        assert all(r["val_mean"] for r in csv.DictReader(f))  # validated, just never good enough
    assert run(compose("train", common + [f"train.out={tmp_path / 'usual'}"])) == 0
    assert (tmp_path / "usual" / "best.pt").is_file()


def test_with_ema_the_moving_average_is_validated_kept_and_resumed(tmp_path):
    """train.ema_decay: best.pt holds the averaged weights (not the raw ones the optimiser moves),
    and the average travels in last.pt so a resumed run goes on averaging instead of restarting."""
    import torch

    from endostream.cli import compose
    from endostream.training.train import run

    data = _tiny_data_root(tmp_path / "data")
    out = tmp_path / "run"
    common = _tiny_run(data, out, "train.ema_decay=0.5", "train.lr=0.01")
    assert run(compose("train", common + ["train.budget_steps=3"])) == 0
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    best = torch.load(out / "best.pt", map_location="cpu", weights_only=True)["state_dict"]
    averaged = {k.removeprefix("module."): v for k, v in ck["ema"].items() if k.startswith("module.")}
    assert int(ck["ema"]["n_averaged"]) == 3
    weights = [k for k, v in best.items() if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))]
    assert all(torch.equal(best[k], averaged[k].float()) for k in weights)
    assert any(not torch.allclose(best[k], ck["model"][k].float()) for k in weights)  # not the raw weights

    assert run(compose("train", common + ["train.budget_steps=4"])) == 0
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert int(ck["ema"]["n_averaged"]) == 4


def test_validation_streams_sequences_and_starts_each_still_and_sequence_afresh():
    """stream_items: a still, and the first frame of a new sequence, see an empty memory (the same
    prediction as on a fresh segmenter); a frame inside a sequence sees its predecessors."""
    from endostream.inference.segmenter import Segmenter
    from endostream.runtime.torch_backend import TorchBackend
    from endostream.training.validate import EvalItem, stream_items

    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64, encoder="cnn")).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    gt = np.zeros((64, 64), np.uint8)

    def seg() -> Segmenter:
        return Segmenter(TorchBackend(net, threads=1), steps=0, presence_threshold=0.0)

    def alone(image: np.ndarray) -> np.ndarray:
        return seg().segment(image).prob

    items = [EvalItem(images[0], gt, "clinicdb", 1), EvalItem(images[1], gt, "clinicdb", 1),
             EvalItem(images[2], gt, "kvasir", -1), EvalItem(images[0], gt, "kvasir", -1),
             EvalItem(images[1], gt, "clinicdb", 2)]
    probs = [pred.prob for _, pred in stream_items(seg(), items)]
    assert not np.allclose(probs[1], alone(images[1]), atol=1e-6)  # inside a sequence: memory used
    np.testing.assert_allclose(probs[2], alone(images[2]), atol=1e-6)  # a still: fresh memory
    np.testing.assert_allclose(probs[3], alone(images[0]), atol=1e-6)  # the next still too
    np.testing.assert_allclose(probs[4], alone(images[1]), atol=1e-6)  # a new sequence: fresh memory


def test_hard_mining_draws_the_badly_fitted_images_more_often():
    """The mined share follows each image's running error; the rest stays uniform; negatives and
    unseen images are handled as documented (unseen = hardest, negatives carry no score)."""
    from endostream.training.hard_examples import HardnessTable

    table = HardnessTable(4, share=0.5)
    table.update(np.array([0, 1, 2, -1]), np.array([0.0, 0.0, 0.0, 0.9]))
    # image 3 is unseen (scores 1.0), the others fit perfectly: the mined half picks it almost always
    rng = np.random.default_rng(0)
    picks = np.bincount([table.pick(rng) for _ in range(4000)], minlength=4) / 4000
    assert 0.58 < picks[3] < 0.68  # 0.5 x (1.02 / 1.08) + 0.5 x 0.25 = 0.597
    table.update(np.array([3, 3]), np.array([0.2, 0.0]))  # the running score halves toward the new error
    assert table.score[3] == pytest.approx(0.1)
    uniform = HardnessTable(4, share=0.0)
    uniform.update(np.array([0, 1, 2]), np.zeros(3))
    picks = np.bincount([uniform.pick(rng) for _ in range(4000)], minlength=4) / 4000
    assert np.all(np.abs(picks - 0.25) < 0.03)

    six = HardnessTable(6, share=0.5)
    six.update(np.arange(6), np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    b = ClipSampler(_samples(), [], size=64, past=0, negative_p=0.0, seed=3, hardness=six).batch(32)
    assert 10 <= (b.indices == 5).sum() <= 26  # about 0.5 x 0.91 + 0.5 / 6 = 0.54 of the batch


def test_hard_mining_scores_what_the_step_got_wrong_and_resumes_its_table(tmp_path):
    """train_step feeds each sample's K=0 error back (an image the network cannot fit scores high);
    the table travels in last.pt and a resumed run continues it."""
    from endostream.cli import compose
    from endostream.training.hard_examples import HardnessTable
    from endostream.training.train import run

    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64))
    batch = ClipSampler(_samples(), [], size=64, past=0, negative_p=0.0, seed=2).batch(4)
    batch.indices = np.array([0, 1, 2, 3])
    batch.masks[1, -1] = 0.0  # image 1's target is empty: nothing to fit, a soft Dice error of ~1
    batch.presence[1] = 0.0
    table = HardnessTable(6, share=0.5)
    train_step(net, None, torch.optim.SGD(net.parameters(), lr=0.0), None, batch, MaskScheduler(),
               bf16=False, hardness=table)
    assert table.seen[:4].all() and not table.seen[4:].any()
    assert table.score[1] > 0.9 and table.score[1] > max(table.score[0], table.score[2], table.score[3])

    data = _tiny_data_root(tmp_path / "data")
    out = tmp_path / "run"
    common = _tiny_run(data, out, "train.hard_mining=0.5", "train.negative_p=0")
    assert run(compose("train", common + ["train.budget_steps=2"])) == 0
    ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    assert 1 <= ck["hardness"]["seen"].sum() <= 4
    ck["hardness"]["seen"][:] = True  # mark every image with a score no step can produce exactly
    ck["hardness"]["score"][:] = 0.123456
    torch.save(ck, out / "last.pt")
    assert run(compose("train", common + ["train.budget_steps=3"])) == 0  # two more picks at most
    second = torch.load(out / "last.pt", map_location="cpu", weights_only=False)["hardness"]
    assert second["seen"].all() and (second["score"] == 0.123456).sum() >= len(second["score"]) - 2


def test_a_ruined_current_frame_sits_under_a_clean_memory_and_keeps_its_true_mask():
    """``train.corrupt_current_p``: in clips with a past frame the current frame is degraded (blur,
    flash, bubbles), its target stays the true mask and the past frames stay clean, so the temporal
    module learns to carry the polyp through; cold-start clips are left alone (nothing to carry)."""
    clean = ClipSampler(_samples(), [], size=64, past=2, negative_p=0.2, seed=4).batch(12)
    ruined = ClipSampler(_samples(), [], size=64, past=2, negative_p=0.2, seed=4, corrupt_p=1.0).batch(12)
    np.testing.assert_array_equal(clean.images[:, :-1], ruined.images[:, :-1])  # the memory's frames
    np.testing.assert_array_equal(clean.masks, ruined.masks)
    np.testing.assert_array_equal(clean.valid, ruined.valid)
    changed = np.abs(clean.images[:, -1] - ruined.images[:, -1]).mean(axis=(1, 2, 3)) > 1e-3
    has_past = clean.valid.sum(1) > 0
    assert has_past.any() and (~has_past).any(), clean.valid  # both kinds in the batch
    np.testing.assert_array_equal(changed, has_past)
    with pytest.raises(ValueError, match="corrupt_current_p"):
        ClipSampler(_samples(), [], size=64, past=2, corrupt_p=1.5)


def test_each_corruption_degrades_the_image_and_unknown_kinds_are_refused():
    from endostream.training.corruptions import KINDS, FrameCorruption

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    img = np.stack([(xx * 2) % 256, (yy * 2) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
    c = FrameCorruption(96, seed=0)
    for kind in KINDS:
        out = c(img, rng, kind)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert np.abs(out.astype(float) - img).mean() > 3, kind
    with pytest.raises(ValueError, match="unknown corruption"):
        c(img, rng, "fog")


def test_bf16_step_runs_the_sampler_inputs_in_bf16_too():
    """train.bf16 with timesteps=sampler: the second-step input is built by the denoiser on bf16
    features (it once met float32 weights outside autocast and stopped the run at its first step)."""
    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64))
    batch = ClipSampler(_samples(), [], size=64, past=2, negative_p=0.0, seed=2).batch(4)
    stats = train_step(net, None, torch.optim.SGD(net.parameters(), lr=1e-3), None, batch, MaskScheduler(),
                       bf16=True, timesteps="sampler", second_step_p=1.0, gen=torch.Generator().manual_seed(5))
    assert np.isfinite(stats["mask"]) and np.isfinite(stats["aux"])


def test_a_step_stopped_from_outside_counts_as_a_slow_step_not_the_stop():
    """The time budget counts wall time per step; a step during which the process was stopped
    (SIGSTOP for an idle benchmark) counts at most three recent medians, while a machine that
    gets slower for good is followed within a few steps."""
    from endostream.training.step_clock import CAP, StepClock

    clock = StepClock()
    assert [clock.count(4.0) for _ in range(6)] == [4.0] * 6
    assert clock.count(300.0) == CAP * 4.0  # a 5-minute stop inside one step
    slower = [clock.count(16.0) for _ in range(12)]  # the machine becomes 4x slower for good
    assert slower[0] == CAP * 4.0 and slower[-1] == 16.0


def _losses(out):
    import csv

    with open(out / "log.csv") as f:
        return [r["total"] for r in csv.DictReader(f)]


def test_several_loader_threads_draw_a_reproducible_stream(tmp_path):
    """train.loader_threads (a GPU needs batches prepared in parallel): each thread has its own
    samplers, so two runs with the same seed see the same batches and losses, and one thread draws
    what the single-threaded loader always drew (another seed for the threads after it)."""
    from endostream.cli import compose
    from endostream.training.train import run

    data = _tiny_data_root(tmp_path / "data")
    common = [f"data.root={data}", "data.cache_size=96", "model.input_size=64", "train.batch_size=2",
              "train.pretrained_encoder=false", "train.warmup_steps=1", "train.threads=1",
              "train.budget_steps=4", "train.val_every_steps=100", "train.alarm_stretches=0"]
    runs = {}
    for name, threads in (("a", 3), ("b", 3), ("one", 1)):
        assert run(compose("train", common + [f"train.out={tmp_path / name}", f"train.loader_threads={threads}"])) == 0
        runs[name] = _losses(tmp_path / name)
    assert runs["a"] == runs["b"] and len(runs["a"]) == 4
    assert runs["a"][0] == runs["one"][0]  # batch 0 comes from thread 0, seeded as the single loader
    assert runs["a"][1:] != runs["one"][1:]
    # With the rate at 0, no noise input and single frames, a step's loss is a function of its batch
    # alone (batch norm normalises by the batch): two threads must not draw the same batches.
    still = common + ["train.lr=0", "train.diffusion=false", "train.clip_p=0", "train.budget_steps=2",
                      f"train.out={tmp_path / 'still'}", "train.loader_threads=2"]
    assert run(compose("train", still)) == 0
    first, second = _losses(tmp_path / "still")
    assert first != second


def test_a_device_that_is_not_here_is_one_clear_error():
    from endostream.training.train import training_device

    assert training_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train.device=cuda: this torch .* sees no CUDA GPU"):
            training_device("cuda")
    with pytest.raises(ValueError, match="train.device='tpu7'"):
        training_device("tpu7")
