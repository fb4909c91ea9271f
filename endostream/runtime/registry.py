"""Backend construction by name. Heavy imports (torch, onnxruntime, tensorrt) happen only
for the backend asked for, so the ONNX Runtime path runs without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def create_backend(name: str, weights: str | Path, *, threads: int = 2, device: str = "cpu",
                   model: Any = None) -> Any:
    """Return a backend (see ``runtime.base.Backend``). ``model`` short-circuits loading for
    the torch backend (training-time validation uses the live network)."""
    if name == "torch":
        from endostream.model.io import load_weights
        from endostream.runtime.torch_backend import TorchBackend

        net = model if model is not None else load_weights(weights)[0]
        return TorchBackend(net, device=device, threads=threads)
    raise ValueError(f"unknown backend {name!r}; expected one of: torch")
