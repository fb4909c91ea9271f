"""Multi-task heads on the deepest features: polyp presence and the polyp's box."""

from __future__ import annotations

import torch
from torch import nn


class GlobalHeads(nn.Module):
    """c5 (B, C, h, w) -> presence logit (B,) and box (B, 4) as normalised (cx, cy, w, h) in [0, 1].

    Average and max pooling together: a small polyp barely moves the average but shows in the max.
    """

    def __init__(self, channels: int = 160, hidden: int = 64) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU(inplace=True))
        self.presence = nn.Linear(hidden, 1)
        self.box = nn.Linear(hidden, 4)

    def forward(self, c5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = torch.cat([c5.mean(dim=(2, 3)), c5.amax(dim=(2, 3))], dim=1)
        h = self.shared(pooled)
        return self.presence(h).squeeze(1), torch.sigmoid(self.box(h))
