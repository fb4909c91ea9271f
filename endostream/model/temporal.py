"""Temporal reasoning: fuse a bounded memory of past frames' features into the current frame.

Memory slots hold the stride-16 lateral features of up to T previous frames, oldest first,
with a 0/1 ``valid`` flag per slot so the graph has fixed shapes (ONNX, TensorRT) while a
stream's first frames have fewer past frames. Attention is per location over the T slots; the
3x3 value/key convolutions give it a one-cell (16 px) tolerance to camera motion.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from endostream.model.blocks import ConvBNReLU


class TemporalFusion(nn.Module):
    def __init__(self, channels: int = 64, key_channels: int = 32) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.gate = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.key_scale = 1.0 / math.sqrt(key_channels)

    def values(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) memory -> (B, T, C, H, W) values (shared with the frame predictor)."""
        b, t, c, h, w = memory.shape
        return self.value(memory.reshape(b * t, c, h, w)).reshape(b, t, c, h, w)

    def forward(self, current: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """current (B, C, H, W); memory (B, T, C, H, W); valid (B, T) float 0/1 -> fused (B, C, H, W).

        With no valid slot the output equals ``current`` exactly (the gate sees zeros and the
        aggregate is multiplied by 0), so the first frame of a stream is a plain image pass.
        """
        b, t, c, h, w = memory.shape
        keys = self.key(memory.reshape(b * t, c, h, w)).reshape(b, t, -1, h, w)
        values = self.values(memory)
        query = self.query(current).unsqueeze(1)
        logits = (query * keys).sum(2) * self.key_scale + (valid.view(b, t, 1, 1) - 1.0) * 1e4
        weights = torch.softmax(logits, dim=1).unsqueeze(2)
        any_valid = valid.amax(dim=1).view(b, 1, 1, 1)
        agg = (weights * values).sum(1) * any_valid
        gate = torch.sigmoid(self.gate(torch.cat([current, agg], 1)))
        return current + gate * self.proj(agg) * any_valid


class FramePredictor(nn.Module):
    """Training-only auxiliary generator (Diff-VPS): predict the current frame, at 1/4 size,
    from the past frames' memory values alone. Its gradients shape the temporal values."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.decode = nn.Sequential(
            ConvBNReLU(channels, 48), nn.Upsample(scale_factor=2, mode="nearest"),
            ConvBNReLU(48, 32), nn.Upsample(scale_factor=2, mode="nearest"),
            ConvBNReLU(32, 16), nn.Conv2d(16, 3, 3, padding=1), nn.Tanh(),
        )

    def forward(self, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """values (B, T, C, H, W), valid (B, T) -> predicted RGB (B, 3, 4H, 4W) in [-1, 1]."""
        w = valid.view(*valid.shape, 1, 1, 1)
        pooled = (values * w).sum(1) / w.sum(1).clamp(min=1.0)
        return self.decode(pooled)
