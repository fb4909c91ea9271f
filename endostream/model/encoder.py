"""Image encoder: a small ResNet-style CNN giving features at strides 4, 8, 16 and 32."""

from __future__ import annotations

import torch
from torch import nn

from endostream.model.blocks import ConvBNReLU, ResBlock


class Encoder(nn.Module):
    """(B, 3, S, S) in [-1, 1] -> (c2, c3, c4, c5) at strides 4/8/16/32 with ``widths`` channels.

    ``blocks`` counts residual blocks per stage; the stride-16 stage gets the most because it
    feeds both the temporal memory and the top-down path.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (32, 48, 96, 160),
                 blocks: tuple[int, int, int, int] = (1, 1, 2, 1), stem: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvBNReLU(3, stem, stride=2), ConvBNReLU(stem, stem))
        stages, cin = [], stem
        for width, n in zip(widths, blocks):
            stages.append(nn.Sequential(ConvBNReLU(cin, width, stride=2), *[ResBlock(width) for _ in range(n)]))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.widths = widths

    def forward_to_c4(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Only stages 1-3: enough for the temporal memory features of a past frame."""
        x = self.stem(x)
        c2 = self.stages[0](x)
        c3 = self.stages[1](c2)
        return c2, c3, self.stages[2](c3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c2, c3, c4 = self.forward_to_c4(x)
        return c2, c3, c4, self.stages[3](c4)
