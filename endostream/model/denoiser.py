"""The light denoiser: (fused features, noisy mask, timestep) -> clean-mask logits.

It runs K times per frame on features computed once, so it is small and works at stride 4.
Its first convolution is linear in (features, noisy mask), so it is split: the feature half
(``condition``) runs once per frame inside the encoder pass, and each step (``step``) only
convolves the 1-channel noisy mask and adds it; this is the same function as one convolution
over the concatenation, with 40 % fewer FLOPs per step.
The noisy mask is an input of the first convolution; a test checks that changing it changes
the output (the flaw of Diff-VPS's public code, where a constant went in, cannot return).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(t: torch.Tensor, dim: int, num_train_steps: int = 1000) -> torch.Tensor:
    """Sinusoidal embedding of float timesteps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / half))
    args = (t.float() * (1000.0 / num_train_steps)).unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class FiLMBlock(nn.Module):
    """3x3 conv, timestep FiLM (scale and shift), ReLU, with a residual connection."""

    def __init__(self, channels: int, t_dim: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.film = nn.Linear(t_dim, 2 * channels)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(temb).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x + torch.relu(self.conv(x) * (1.0 + scale) + shift)


# Refinement inputs (fifth generation): the K=0 head's own mask (self-conditioning, as in Analog
# Bits and SegRefiner's coarse-mask input) and the image at full resolution folded to stride 4
# (pixel-unshuffle, 3 x 4 x 4 = 48 channels): the boundary detail the stride-4 features lost.
REFINE_CHANNELS = 1 + 3 * 4 * 4


class Denoiser(nn.Module):
    def __init__(self, feat_channels: int = 48, hidden: int = 32, t_dim: int = 64,
                 dilations: tuple[int, ...] = (1, 2, 4), num_train_steps: int = 1000,
                 refine_inputs: bool = False) -> None:
        super().__init__()
        self.t_dim = t_dim
        self.feat_channels = feat_channels
        self.num_train_steps = num_train_steps
        self.t_mlp = nn.Sequential(nn.Linear(t_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.inp = nn.Conv2d(feat_channels + 1, hidden, 3, padding=1)
        self.blocks = nn.ModuleList([FiLMBlock(hidden, t_dim, d) for d in dilations])
        self.out = nn.Conv2d(hidden, 1, 1)
        # Zero-initialised, so a network from an earlier generation starts out unchanged.
        self.refine = nn.Conv2d(REFINE_CHANNELS, hidden, 3, padding=1, bias=False) if refine_inputs else None
        if self.refine is not None:
            nn.init.zeros_(self.refine.weight)

    def condition(self, feat: torch.Tensor, coarse_logits: torch.Tensor | None = None,
                  image: torch.Tensor | None = None) -> torch.Tensor:
        """Once per frame: feat (B, F, H, W) -> the feature half of the first convolution (B, hidden, H, W).

        With refinement inputs, the K=0 mask's probability (B, 1, H, W) and the image (B, 3, 4H, 4W)
        are added here, still once per frame, so each step's cost and signature do not change.
        The coarse mask is detached: the K=0 head learns from its own loss only and the steps
        learn to correct it."""
        cond = F.conv2d(feat, self.inp.weight[:, :self.feat_channels], self.inp.bias, padding=1)
        if self.refine is None:
            return cond
        if coarse_logits is None or image is None:
            raise ValueError("this denoiser needs the coarse mask and the image (refine_inputs=True)")
        extra = torch.cat([torch.sigmoid(coarse_logits.detach()).to(cond.dtype),
                           F.pixel_unshuffle(image.to(cond.dtype), 4)], dim=1)
        return cond + self.refine(extra)

    def step(self, cond: torch.Tensor, noisy_mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """cond from ``condition``; noisy_mask (B, 1, H, W) in signal space; t (B,) float -> logits (B, 1, H, W)."""
        temb = self.t_mlp(timestep_embedding(t, self.t_dim, self.num_train_steps))
        mask_part = F.conv2d(noisy_mask.to(cond.dtype), self.inp.weight[:, self.feat_channels:], padding=1)
        x = torch.relu(cond + mask_part)
        for block in self.blocks:
            x = block(x, temb)
        return self.out(x)
