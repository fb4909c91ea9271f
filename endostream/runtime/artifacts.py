"""What an export leaves beside the weights, and how to check it is current. No torch import.

Files (for weights ``<dir>/<stem>.pt``):
  <stem>.encode.onnx   image (B,3,S,S), memory (B,T,N,S/16,S/16), valid (B,T)
                       -> feat (B,F,S/4,S/4), aux_logits (B,1,S/4,S/4), presence_logit (B,),
                          box (B,4), memory_out (B,N,S/16,S/16)
  <stem>.denoise.onnx  feat (B,F,S/4,S/4), noisy_mask (B,1,S/4,S/4), t (B,) -> logits (B,1,S/4,S/4)
  <stem>.json          the sidecar: net config, weights sha256, the .pt's meta, graph files + sha256
F = denoiser_hidden: ``feat`` is the denoiser's per-frame conditioning (its first convolution's
feature half), computed once per frame. All graph inputs and outputs are float32; B is the only
dynamic dimension ("batch").

``precision=fp16`` (``endostream export precision=fp16``) writes a second set beside the first,
``<stem>.fp16.encode.onnx``, ``<stem>.fp16.denoise.onnx`` and ``<stem>.fp16.json``: FP16 weights
and arithmetic inside, casts at the edges, so the I/O stays float32 and every backend feeds both
sets alike. TensorRT 11 takes its FP16 from this graph (strong typing; it has no FP16 flag).

``precision=int8`` (``endostream export precision=int8``, ``runtime.quantize``) writes
``<stem>.int8.encode.onnx`` (QDQ, calibrated on training frames) and ``<stem>.int8.json``, whose
denoise entry is the float32 ``<stem>.denoise.onnx``; the sidecar records the validation check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from endostream.fileutil import file_sha256

SIDECAR_FORMAT = 1
OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8")
ENCODE_INPUTS = ("image", "memory", "valid")
ENCODE_OUTPUTS = ("feat", "aux_logits", "presence_logit", "box", "memory_out")
DENOISE_INPUTS = ("feat", "noisy_mask", "t")
DENOISE_OUTPUTS = ("logits",)


def cache_dir() -> Path:
    """Where exported graphs and engines are cached when the weights' folder is read-only."""
    return Path(os.environ.get("ENDOSTREAM_CACHE", Path.home() / ".cache" / "endostream"))


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"graph precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def graph_paths(weights: str | Path, out_dir: str | Path | None = None, precision: str = "fp32") -> dict[str, Path]:
    """Where the graphs and sidecar of ``weights`` live (beside it unless ``out_dir``); FP16
    graphs carry a ``.fp16`` infix and their own sidecar, so both sets can live side by side."""
    w = Path(weights)
    d = Path(out_dir) if out_dir is not None else w.parent
    stem = w.stem if check_precision(precision) == "fp32" else f"{w.stem}.{precision}"
    # INT8 quantizes the encode graph only; its sidecar names the float32 denoise graph.
    denoise = w.stem if precision == "int8" else stem
    return {"encode": d / f"{stem}.encode.onnx", "denoise": d / f"{denoise}.denoise.onnx",
            "sidecar": d / f"{stem}.json"}


def io_shapes(cfg: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """The documented shapes of every graph input and output ("batch" is the dynamic dim)."""
    s, t, n, f = int(cfg["input_size"]), int(cfg["memory_frames"]), int(cfg["neck_channels"]), int(cfg["denoiser_hidden"])
    b, g, m = "batch", s // 4, s // 16
    return {
        "encode": {"image": [b, 3, s, s], "memory": [b, t, n, m, m], "valid": [b, t],
                   "feat": [b, f, g, g], "aux_logits": [b, 1, g, g], "presence_logit": [b],
                   "box": [b, 4], "memory_out": [b, n, m, m]},
        "denoise": {"feat": [b, f, g, g], "noisy_mask": [b, 1, g, g], "t": [b], "logits": [b, 1, g, g]},
    }


def check_artifacts(weights: str | Path, weights_sha256: str | None = None,
                    out_dir: str | Path | None = None, precision: str = "fp32") -> tuple[dict[str, Any] | None, str]:
    """Return ``(sidecar, "")`` when the ``precision`` graphs beside ``weights`` were exported
    from exactly this .pt and are intact, else ``(None, reason)``. Hashes are checked every time:
    a stale graph silently running old weights is the failure this guards against."""
    paths = graph_paths(weights, out_dir, precision)
    if not paths["sidecar"].is_file():
        return None, f"no sidecar {paths['sidecar']}"
    try:
        side = json.loads(paths["sidecar"].read_text())
    except (OSError, ValueError) as exc:
        return None, f"unreadable sidecar {paths['sidecar']}: {exc}"
    sha = weights_sha256 or file_sha256(weights)
    if side.get("sha256") != sha:
        return None, f"{paths['sidecar'].name} was exported from other weights (sha256 differs)"
    if side.get("precision", "fp32") != precision:  # sidecars before FP16 export carry no precision
        return None, f"{paths['sidecar'].name} records precision {side.get('precision')}, expected {precision}"
    graphs = side.get("onnx", {})
    for part in ("encode", "denoise"):
        entry = graphs.get(part, {})
        p = paths[part].parent / str(entry.get("file", ""))
        if not entry or not p.is_file():
            return None, f"missing ONNX graph {p}"
        if file_sha256(p) != entry.get("sha256"):
            return None, f"{p.name} does not match the sha256 recorded in {paths['sidecar'].name}"
    return side, ""
