"""Save and load the network strictly: a missing or unexpected key is an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from endostream.model.network import NetConfig, PolypNet


def save_weights(model: PolypNet, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Weights only (fp32 state dict + config + metadata), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    torch.save({"config": model.cfg.to_dict(), "state_dict": state, "meta": meta or {}}, tmp)
    tmp.replace(path)


def load_weights(path: str | Path, map_location: str = "cpu") -> tuple[PolypNet, dict[str, Any]]:
    """Build the network from the file's own config and load it strictly. Returns (model, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or "state_dict" not in blob or "config" not in blob:
        raise ValueError(f"{path} is not an endostream weights file (expected config + state_dict)")
    model = PolypNet(NetConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"], strict=True)
    return model.eval(), dict(blob.get("meta", {}))
