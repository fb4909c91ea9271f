"""Losses of the multi-task objective and the training-only discriminator."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def soft_dice_error(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per sample (B,) of (B,1,H,W) logits against {0,1} targets."""
    p = torch.sigmoid(logits.float())
    inter = (p * target).sum(dim=(1, 2, 3))
    denom = p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return 1.0 - (2 * inter + eps) / (denom + eps)


def dice_bce(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice + BCE on (B,1,H,W) logits against {0,1} targets; Dice averaged per sample."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce + soft_dice_error(logits, target, eps).mean()


def boundary_weights(target: torch.Tensor, kernel: int = 31, gain: float = 5.0) -> torch.Tensor:
    """1 + gain x |local mean of the mask - mask|: near 1 inside and far outside the polyp, up to
    1 + gain/2 on its outline, where half of the validation split's lost Dice is."""
    local = F.avg_pool2d(target, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return 1.0 + gain * (local - target).abs()


def structure_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Boundary-weighted BCE + boundary-weighted soft IoU (the structure loss of the polyp
    literature: PraNet, Polyp-PVT), per sample, on (B,1,H,W) logits against {0,1} targets."""
    logits = logits.float()
    w = boundary_weights(target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (w * bce).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))
    p = torch.sigmoid(logits)
    inter = (w * p * target).sum(dim=(1, 2, 3))
    union = (w * (p + target)).sum(dim=(1, 2, 3))
    wiou = 1.0 - (inter + eps) / (union - inter + eps)
    return (wbce + wiou).mean()


MASK_LOSSES = {"dice_bce": dice_bce, "structure": structure_loss}


def box_l1(pred: torch.Tensor, target: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """L1 on normalised (cx, cy, w, h), only where a polyp is present."""
    per = (pred.float() - target).abs().sum(1) * present
    return per.sum() / present.sum().clamp(min=1.0)


class FrameDiscriminator(nn.Module):
    """PatchGAN-style critic on 64x64 RGB frames: real current frame vs the predicted one."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(4 * width, 1, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def generator_adv_loss(disc: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for the generator: the fake is NOT detached and is labelled real,
    so the gradient flows through the discriminator into the frame predictor and the temporal
    values (Diff-VPS's public code detached it, so its generator never learned from it)."""
    logits = disc(fake)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    lr, lf = disc(real), disc(fake.detach())
    return (F.binary_cross_entropy_with_logits(lr, torch.ones_like(lr))
            + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf))) * 0.5
