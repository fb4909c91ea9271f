"""The reference backend: the PyTorch network itself, eager, on CPU (or CUDA)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from endostream.model.network import PolypNet


class TorchBackend:
    name = "torch"

    def __init__(self, model: PolypNet, device: str = "cpu", threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.cfg.to_dict()

    @torch.inference_mode()
    def encode(self, image: np.ndarray, memory: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        return self.model.encode_frame(self.from_numpy(image), self.from_numpy(memory), self.from_numpy(valid))

    @torch.inference_mode()
    def denoise(self, feat: Any, noisy_mask: Any, t: np.ndarray) -> Any:
        return self.model.denoise(feat, self.from_numpy(noisy_mask), self.from_numpy(np.asarray(t, np.float32)))

    def from_numpy(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
