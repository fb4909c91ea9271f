"""The one call signature every backend implements. No torch import here.

A backend runs the two halves of the network: ``encode`` once per frame and ``denoise`` once
per sampling step. Arrays come in as numpy float32; what a backend returns may be its own
array type (numpy for ONNX Runtime, torch tensors for torch) as long as the scheduler's
arithmetic (``*``, ``+``, ``-`` with floats) works on it; ``to_numpy`` brings results home.

Shapes (S = input size, T = memory frames, N = memory channels, F = denoiser conditioning channels, the config's denoiser_hidden):
  encode(image (1,3,S,S), memory (1,T,N,S/16,S/16), valid (1,T)) ->
      {"feat": (1,F,S/4,S/4), "aux_logits": (1,1,S/4,S/4), "presence_logit": (1,),
       "box": (1,4), "memory_out": (1,N,S/16,S/16)}
  denoise(feat, noisy_mask (1,1,S/4,S/4), t (1,) float32) -> logits (1,1,S/4,S/4)
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

ENCODE_OUTPUTS = ("feat", "aux_logits", "presence_logit", "box", "memory_out")


class Backend(Protocol):
    name: str

    def encode(self, image: np.ndarray, memory: np.ndarray, valid: np.ndarray) -> dict[str, Any]: ...

    def denoise(self, feat: Any, noisy_mask: Any, t: np.ndarray) -> Any: ...

    def from_numpy(self, x: np.ndarray) -> Any: ...

    def to_numpy(self, x: Any) -> np.ndarray: ...
