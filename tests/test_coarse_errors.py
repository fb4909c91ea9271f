"""``train.coarse_error_p``: the diffusion step trains on a K=0 mask with errors put in, the K=0 head
does not; and a step whose gradients are not finite is skipped, never applied."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endostream.model.network import NetConfig, PolypNet
from endostream.model.scheduler import MaskScheduler
from endostream.training.clips import ClipSampler
from endostream.training.coarse_errors import degrade, degrade_coarse
from endostream.training.train import train_step
from tests.test_training import _samples


def _square() -> torch.Tensor:
    p = torch.full((1, 40, 40), 0.02)
    p[0, 12:28, 10:30] = 0.97
    return p


def test_each_error_is_the_kind_it_names():
    p, gen = _square(), torch.Generator().manual_seed(3)
    inside = p > 0.5
    area = int(inside.sum())
    grown = degrade(p, "dilate", gen) > 0.5
    assert grown.sum() > area and grown[inside].all()  # the outline moved out, nothing lost
    shrunk = degrade(p, "erode", gen) > 0.5
    assert 0 < shrunk.sum() < area and inside[shrunk].all()  # moved in, nothing added
    blob = degrade(p, "false_blob", gen)
    assert (blob >= p).all() and ((blob > 0.5) & ~inside).any()  # a confident false part added, nothing removed
    cut = degrade(p, "cut", gen)
    assert (cut <= p).all() and ((cut < 0.5) & inside).any()  # part of the polyp missed
    unsure = degrade(p, "soften", gen)
    assert torch.equal(unsure > 0.5, inside) and unsure.max() < p.max() - 0.1  # same shape, less sure
    with pytest.raises(ValueError, match="unknown coarse-mask error"):
        degrade(p, "fog", gen)


def test_only_the_drawn_share_of_samples_changes():
    logits = torch.logit(_square().clamp(1e-4, 1 - 1e-4)).expand(64, 1, 40, 40).contiguous()
    gen = torch.Generator().manual_seed(0)
    assert degrade_coarse(logits, 0.0, gen) is logits
    changed = (degrade_coarse(logits, 0.5, gen) - logits).abs().amax((1, 2, 3)) > 1e-3
    assert 16 < int(changed.sum()) < 48  # about half of 64
    # all of them, but for the odd false component drawn inside the polyp, where it changes nothing
    assert int(((degrade_coarse(logits, 1.0, gen) - logits).abs().amax((1, 2, 3)) > 1e-3).sum()) >= 60


def test_the_step_sees_the_errors_and_the_k0_head_does_not():
    """With every sample's coarse mask degraded, the K=0 output and its loss are exactly the clean
    run's (the errors are the step's input only); the step's conditioning, and so its loss, differ."""
    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64, refine_inputs=True))
    torch.nn.init.normal_(net.denoiser.refine.weight, std=0.5)  # zero-initialised: make it read its input
    batch = ClipSampler(_samples(), [], size=64, past=2, negative_p=0.0, seed=2).batch(4)

    def step(share: float) -> dict[str, float]:
        return train_step(net, None, torch.optim.SGD(net.parameters(), lr=0.0), None, batch, MaskScheduler(),
                          timesteps="sampler", gen=torch.Generator().manual_seed(5), coarse_error_p=share,
                          bf16=False)

    clean, degraded = step(0.0), step(1.0)
    assert degraded["aux"] == clean["aux"]
    assert abs(degraded["mask"] - clean["mask"]) > 1e-4, (clean, degraded)

    x = torch.from_numpy(batch.images[:, -1])
    mem, valid = net.empty_memory(4)
    net.eval()
    with torch.no_grad():
        a = net.encode_frame(x, mem, valid)
        b = net.encode_frame(x, mem, valid, coarse_errors=lambda z: -z)
    assert torch.equal(a["aux_logits"], b["aux_logits"]) and not torch.allclose(a["feat"], b["feat"])


def test_a_step_with_non_finite_gradients_is_skipped_not_applied():
    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64))
    batch = ClipSampler(_samples(), [], size=64, past=2, negative_p=0.0, seed=2).batch(4)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    ok = train_step(net, None, opt, None, batch, MaskScheduler(), gen=torch.Generator().manual_seed(5), bf16=False)
    assert ok["skipped"] == 0.0
    before = {k: v.clone() for k, v in net.state_dict().items() if v.is_floating_point()}
    batch.images[0, -1, 0, 0, 0] = np.nan  # one poisoned pixel: every gradient becomes NaN
    bad = train_step(net, None, opt, None, batch, MaskScheduler(), gen=torch.Generator().manual_seed(5), bf16=False)
    assert bad["skipped"] == 1.0 and not np.isfinite(bad["total"])
    after = net.state_dict()
    for k, v in before.items():
        if "running_" not in k and "num_batches" not in k:  # batch-norm statistics are not the optimiser's
            assert torch.equal(v, after[k]), k


def test_training_stops_with_one_clear_error_after_steps_that_cannot_be_applied(tmp_path):
    """Weights that turn every gradient into NaN (one NaN in the step's last layer): each step is
    skipped, and after ``MAX_SKIPPED_STEPS`` of them the run stops with a clear error instead of
    spending its budget on nothing. A share outside [0, 1], or errors for a step without a
    coarse-mask input, are refused before any work."""
    from endostream.cli import compose
    from endostream.model.io import save_weights
    from endostream.training.train import MAX_SKIPPED_STEPS, run
    from tests.test_training import _tiny_data_root, _tiny_run

    data = _tiny_data_root(tmp_path / "data")
    cfg = compose("train", _tiny_run(data, tmp_path / "run", f"train.init_weights={tmp_path / 'nan.pt'}",
                                     f"train.budget_steps={MAX_SKIPPED_STEPS + 5}"))
    net = PolypNet(NetConfig.from_dict(dict(cfg.model)))  # the network this command builds
    with torch.no_grad():
        net.denoiser.out.weight[0].fill_(float("nan"))
    save_weights(net, tmp_path / "nan.pt", meta={"trained": True})
    with pytest.raises(RuntimeError, match=f"{MAX_SKIPPED_STEPS} steps in a row with non-finite gradients"):
        run(cfg)
    for bad in (["train.coarse_error_p=1.5"], ["train.coarse_error_p=0.5", "model.refine_inputs=false"]):
        with pytest.raises(ValueError, match="coarse_error_p"):
            run(compose("train", _tiny_run(data, tmp_path / "refused", "train.budget_steps=1", *bad)))
