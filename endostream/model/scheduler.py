"""Noise schedule and deterministic few-step sampler for mask diffusion. No torch import.

Follows diffusers' DDIM scheduler in shape: the scheduler owns the timesteps, the noise and the
update rule and never touches the network. The arithmetic uses only ``*``, ``+``, ``-`` and
scalar ``float`` factors, so it works unchanged on numpy arrays (the ONNX Runtime path, which
runs without torch) and on torch tensors (training and the torch backend).

Masks live in "signal space": background -> ``-scale``, polyp -> ``+scale``. The network
predicts the clean mask (x0) as logits; ``step`` turns the logits into the x0 estimate, derives
the implied noise and moves to the next, less noisy timestep (eta = 0, deterministic). The x0
estimate itself is carried to the next step through the noisy sample (unlike Diff-VPS's public
code, which fed a constant into every refinement pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


def _sigmoid(x: Any) -> Any:
    """Elementwise sigmoid for numpy arrays or torch tensors (dispatch on the type's method)."""
    if hasattr(x, "sigmoid"):
        return x.sigmoid()
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def cosine_alphas_cumprod(num_train_steps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal cosine schedule: alpha_bar(t) for t = 0..T-1, float64, decreasing."""
    t = np.arange(num_train_steps + 1, dtype=np.float64) / num_train_steps
    f = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alphas_bar = f / f[0]
    betas = np.clip(1 - alphas_bar[1:] / alphas_bar[:-1], 0, 0.999)
    return np.cumprod(1.0 - betas)


@dataclass
class MaskScheduler:
    """Cosine-schedule mask diffusion with x0 prediction and trailing DDIM timesteps.

    ``scale`` shrinks the +-1 mask so noise dominates sooner, which helps segmentation
    diffusion (Chen et al., "Analog Bits"); 1.0 keeps plain +-1 masks.
    """

    num_train_steps: int = 1000
    scale: float = 1.0

    def __post_init__(self) -> None:
        self.alphas_cumprod = cosine_alphas_cumprod(self.num_train_steps)
        self.timesteps: list[int] = []

    # -- training ---------------------------------------------------------------------
    def mask_to_signal(self, mask01: Any) -> Any:
        """{0,1} mask -> {-scale, +scale} signal."""
        return (mask01 * 2.0 - 1.0) * self.scale

    def add_noise(self, x0: Any, noise: Any, t: Any) -> Any:
        """q(x_t | x0) = sqrt(a_t) x0 + sqrt(1 - a_t) noise. ``t`` an int or a per-sample array
        (torch tensor of shape (B,) is broadcast over (B, C, H, W))."""
        a = self._alpha_bar(t, like=x0)
        return a ** 0.5 * x0 + (1.0 - a) ** 0.5 * noise

    def _alpha_bar(self, t: Any, like: Any) -> Any:
        if isinstance(t, (int, np.integer)):
            return float(self.alphas_cumprod[int(t)])
        if hasattr(t, "device"):  # torch tensor of timesteps -> same-device float tensor
            table = like.new_tensor(self.alphas_cumprod)
            return table[t.long()].view(-1, *([1] * (like.dim() - 1)))
        a = self.alphas_cumprod[np.asarray(t, dtype=np.int64)].astype(np.float32)
        return a.reshape(-1, *([1] * (np.ndim(like) - 1)))

    # -- sampling ---------------------------------------------------------------------
    def set_timesteps(self, num_steps: int, start_t: int | None = None) -> list[int]:
        """Trailing spacing: K steps from ``start_t`` (default T-1) down, evenly spaced.

        K=1 -> [999]; K=2 -> [999, 499]; K=4 -> [999, 749, 499, 249]. Starting at the last
        training step matters when K is tiny: the first step then sees what training saw for
        pure noise. A warm start passes a smaller ``start_t``.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        top = self.num_train_steps if start_t is None else int(start_t) + 1
        if not 1 <= top <= self.num_train_steps:
            raise ValueError(f"start_t must be in [0, {self.num_train_steps - 1}], got {start_t}")
        ratio = top / num_steps
        steps = np.round(np.arange(top, 0, -ratio)).astype(np.int64) - 1
        self.timesteps = [int(s) for s in steps[:num_steps]]
        return self.timesteps

    def prev_timestep(self, t: int) -> int:
        """The timestep after ``t`` in the current schedule, or -1 after the last one."""
        i = self.timesteps.index(t)
        return self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1

    def step(self, x0_logits: Any, t: int, sample: Any) -> tuple[Any, Any]:
        """One deterministic DDIM update.

        Returns ``(prev_sample, x0_prob)``: the sample at the next timestep (or the x0 signal
        itself after the last step) and the current estimate of the clean mask as a
        probability in [0, 1].
        """
        prob = _sigmoid(x0_logits)
        x0 = (prob * 2.0 - 1.0) * self.scale
        t_prev = self.prev_timestep(t)
        if t_prev < 0:
            return x0, prob
        a_t = float(self.alphas_cumprod[t])
        a_prev = float(self.alphas_cumprod[t_prev])
        eps = (sample - a_t ** 0.5 * x0) * (1.0 / (1.0 - a_t) ** 0.5)
        return a_prev ** 0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps, prob
