"""The structure loss (train.mask_loss=structure) weights the polyp's outline and reaches the step."""

import torch

from endostream.model.network import NetConfig, PolypNet
from endostream.model.scheduler import MaskScheduler
from endostream.training.clips import ClipSampler
from endostream.training.losses import dice_bce, structure_loss
from endostream.training.train import train_step
from test_training import _samples


def _square(n: int = 2, size: int = 96) -> torch.Tensor:
    t = torch.zeros(n, 1, size, size)
    t[:, :, 30:66, 30:66] = 1
    return t


def test_an_error_on_the_outline_costs_more_than_the_same_error_far_from_it():
    t = _square()
    perfect = (t * 2 - 1) * 8
    on_outline = perfect.clone()
    on_outline[:, :, 30, 30:66] = -8  # 36 missed pixels along the top edge
    far = perfect.clone()
    far[:, :, 2, 0:36] = 8  # 36 false pixels in a far corner
    assert structure_loss(on_outline, t) > 2.0 * structure_loss(far, t)
    # dice_bce cannot tell the two apart this clearly (plain BCE weighs every pixel alike)
    assert dice_bce(on_outline, t) < 1.5 * dice_bce(far, t)


def test_structure_loss_is_near_zero_when_right_and_large_when_inverted():
    t = _square()
    perfect = (t * 2 - 1) * 8
    assert structure_loss(perfect, t) < 0.01
    assert structure_loss(-perfect, t) > 5.0


def test_train_step_uses_the_named_mask_loss():
    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64))
    batch = ClipSampler(_samples(), [], size=64, past=2, negative_p=0.0, seed=2).batch(4)
    frozen = torch.optim.SGD(net.parameters(), lr=0.0)

    def terms(name: str) -> dict[str, float]:
        return train_step(net, None, frozen, None, batch, MaskScheduler(), mask_loss=name, bf16=False,
                          gen=torch.Generator().manual_seed(5))

    plain, structure = terms("dice_bce"), terms("structure")
    # same weights, same batch, same noise: only the mask loss differs
    assert abs(plain["presence"] - structure["presence"]) < 1e-6
    assert abs(plain["aux"] - structure["aux"]) > 1e-3 and abs(plain["mask"] - structure["mask"]) > 1e-3
