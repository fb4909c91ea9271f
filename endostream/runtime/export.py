"""`endostream export`: the network's two inference halves as ONNX graphs + a JSON sidecar.

Split (encode once per frame, denoise per step) rather than one unrolled graph: measured as
fast in ONNX Runtime (see docs/RUNTIME.md) and it keeps K, warm starts and per-step stage
stamps in the one sampling loop above the backends. The training-only frame predictor is not
reachable from either graph, so it is not exported.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from endostream.fileutil import atomic_write_bytes, atomic_write_json, file_sha256
from endostream.model.io import load_weights
from endostream.model.network import PolypNet
from endostream.runtime.artifacts import (DENOISE_INPUTS, DENOISE_OUTPUTS, ENCODE_INPUTS, ENCODE_OUTPUTS,
                                          OPSET, SIDECAR_FORMAT, graph_paths, io_shapes)


class EncodeGraph(nn.Module):
    """encode_frame with a fixed output order (ONNX outputs are positional)."""

    def __init__(self, net: PolypNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net.encode_frame(image, memory, valid)
        return tuple(out[k] for k in ENCODE_OUTPUTS)


class DenoiseGraph(nn.Module):
    def __init__(self, net: PolypNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, feat: torch.Tensor, noisy_mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net.denoise(feat, noisy_mask, t)


def example_inputs(net: PolypNet, batch: int = 1) -> dict[str, tuple[torch.Tensor, ...]]:
    """Deterministic example inputs; batch 2 at export so no size-1 dim gets specialised."""
    c = net.cfg
    g, s = c.input_size // 4, c.input_size
    gen = torch.Generator().manual_seed(0)
    mem, valid = net.empty_memory(batch)
    image = torch.rand(batch, 3, s, s, generator=gen) * 2 - 1
    feat = torch.randn(batch, c.denoiser_hidden, g, g, generator=gen)
    return {"encode": (image, mem, valid + 1.0),
            "denoise": (feat, torch.randn(batch, 1, g, g, generator=gen), torch.full((batch,), 999.0))}


def onnx_bytes(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: tuple[str, ...],
               outputs: tuple[str, ...], opset: int = OPSET) -> bytes:
    """TorchScript-based export (dynamo=False): needs no onnxscript and embeds the weights."""
    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in (*inputs, *outputs)}
    with warnings.catch_warnings():  # the legacy exporter is chosen on purpose (module docstring)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module.eval(), args, buf, input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    return buf.getvalue()


def stamp_shapes(model: Any, shapes: dict[str, list[Any]]) -> None:
    """Write the documented I/O shapes into the graph: the TorchScript exporter leaves
    generated names (e.g. ``Resizefeat_dim_2``) on spatial output dims it cannot infer."""
    for vi in (*model.graph.input, *model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for d, want in zip(dims, shapes[vi.name]):
            if isinstance(want, str):
                d.dim_param = want
            else:
                d.dim_value = int(want)


def export_onnx(weights: str | Path, out_dir: str | Path | None = None, opset: int = OPSET) -> dict[str, Any]:
    """Export ``weights`` (.pt) to ``<stem>.encode.onnx`` + ``<stem>.denoise.onnx`` and write the
    sidecar ``<stem>.json``; returns the sidecar dict. Files are written atomically."""
    import onnx

    weights = Path(weights)
    net, meta = load_weights(weights)
    paths = graph_paths(weights, out_dir)
    paths["sidecar"].parent.mkdir(parents=True, exist_ok=True)
    ex = example_inputs(net, batch=2)
    graphs: dict[str, Any] = {}
    with torch.no_grad():
        for part, module, ins, outs in (("encode", EncodeGraph(net), ENCODE_INPUTS, ENCODE_OUTPUTS),
                                        ("denoise", DenoiseGraph(net), DENOISE_INPUTS, DENOISE_OUTPUTS)):
            model = onnx.load_from_string(onnx_bytes(module, ex[part], ins, outs, opset))
            stamp_shapes(model, io_shapes(net.cfg.to_dict())[part])
            onnx.checker.check_model(model, full_check=True)
            data = model.SerializeToString()
            atomic_write_bytes(paths[part], data)
            graphs[part] = {"file": paths[part].name, "sha256": file_sha256(paths[part]),
                            "inputs": list(ins), "outputs": list(outs)}
    cfg = net.cfg.to_dict()
    side = {"format": SIDECAR_FORMAT, "weights": weights.name, "sha256": file_sha256(weights),
            "config": cfg, "meta": meta, "onnx": graphs, "opset": opset, "dtype": "float32",
            "shapes": io_shapes(cfg), "exported_with": {"torch": torch.__version__, "onnx": onnx.__version__}}
    atomic_write_json(paths["sidecar"], side)
    return side


def run(cfg: Any) -> int:
    """`endostream export weights=weights/polyp.pt out=weights/`."""
    out = cfg.get("out") or None
    side = export_onnx(cfg.weights, out, int(cfg.get("opset", OPSET)))
    d = graph_paths(cfg.weights, out)
    for part in ("encode", "denoise"):
        print(f"{d[part]}  sha256={side['onnx'][part]['sha256'][:16]}")
    print(f"{d['sidecar']}  (weights sha256={side['sha256'][:16]})")
    return 0
