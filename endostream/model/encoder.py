"""Image encoders giving features at strides 4, 8, 16 and 32: EfficientNet-Lite (ImageNet-pretrained
in training) or the small from-scratch CNN of the first generation (kept so its weights still load)."""

from __future__ import annotations

import torch
from torch import nn

from endostream.model.blocks import ConvBNReLU, ResBlock
from endostream.model.efficientnet_lite import (IMAGENET_MEAN, IMAGENET_STD, VARIANTS, EfficientNetLite,
                                                load_imagenet)


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


class LiteEncoder(nn.Module):
    """EfficientNet-Lite backbone: (B, 3, S, S) RGB in [-1, 1] -> (c2, c3, c4, c5), S divisible by 32.

    The pipeline's [-1, 1] input is turned into the ImageNet normalisation the weights expect
    here (two constants folded into the graph), so preprocessing stays one function for every
    encoder.
    """

    def __init__(self, variant: str = "lite0") -> None:
        super().__init__()
        self.net = EfficientNetLite(variant)
        self.widths = self.net.widths
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        # x01 = (x + 1) / 2; (x01 - mean) / std = x * a + b
        self.register_buffer("in_scale", 0.5 / std, persistent=False)
        self.register_buffer("in_shift", (0.5 - mean) / std, persistent=False)

    def load_imagenet(self, state: dict[str, torch.Tensor]) -> None:
        """Initialise from the weights package's ImageNet state dict (strict; see efficientnet_lite)."""
        load_imagenet(self.net, state)

    def forward_to_c4(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Only up to stride 16: enough for the temporal memory features of a past frame."""
        c2, c3, c4 = self.net.forward_to(x * self.in_scale + self.in_shift, 3)
        return c2, c3, c4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        c2, c3, c4, c5 = self.net.forward_to(x * self.in_scale + self.in_shift, 4)
        return c2, c3, c4, c5


ENCODERS = ("cnn", *(f"efficientnet_{v}" for v in VARIANTS))


def build_encoder(name: str, widths: tuple[int, int, int, int], blocks: tuple[int, int, int, int]) -> nn.Module:
    """``cnn`` (the first generation, from scratch) or ``efficientnet_lite0/1/2``."""
    if name == "cnn":
        return Encoder(widths, blocks)
    if name.startswith("efficientnet_") and name.removeprefix("efficientnet_") in VARIANTS:
        return LiteEncoder(name.removeprefix("efficientnet_"))
    raise ValueError(f"model.encoder={name!r}; expected one of {', '.join(ENCODERS)}")
