"""`endostream export`: the network's two inference halves as ONNX graphs + a JSON sidecar.

Split (encode once per frame, denoise per step) rather than one unrolled graph: measured as
fast in ONNX Runtime (see docs/RUNTIME.md) and it keeps K, warm starts and per-step stage
stamps in the one sampling loop above the backends. The training-only frame predictor is not
reachable from either graph, so it is not exported.

``precision=fp16`` exports the same two graphs with FP16 weights and arithmetic: the network is
converted the way the torch CUDA fast path converts it (half weights; every Conv/Linear casts its
input to its weight dtype, so the float32 timestep embedding stays float32 up to the first Linear),
and casts at the graph edges keep every input and output float32. TensorRT 11 needs this graph for
FP16 (strong typing); ONNX Runtime CPU loads and runs it too (tested), though not faster than FP32.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from endostream.fileutil import atomic_write_bytes, atomic_write_json, file_sha256
from endostream.model.io import load_weights
from endostream.model.network import PolypNet
from endostream.runtime.onnx_passes import fold_pads_into_convs
from endostream.runtime.artifacts import (DENOISE_INPUTS, DENOISE_OUTPUTS, ENCODE_INPUTS, ENCODE_OUTPUTS,
                                          OPSET, SIDECAR_FORMAT, check_precision, graph_paths, io_shapes)
from endostream.runtime.torch_backend import _cast_input_hook

FLOAT32_INSIDE = ("t",)  # inputs not cast to half: the timestep embedding is computed in float32


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


class HalfEdges(nn.Module):
    """A graph module run in FP16 with float32 I/O: inputs cast to half on the way in (except
    ``FLOAT32_INSIDE``), every floating output cast back to float32 on the way out."""

    def __init__(self, inner: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.inner, self.half_in = inner, tuple(name not in FLOAT32_INSIDE for name in inputs)

    def forward(self, *args: torch.Tensor) -> Any:
        out = self.inner(*(a.half() if h else a for a, h in zip(args, self.half_in)))
        return tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()


def half_network(net: PolypNet) -> PolypNet:
    """A half-precision copy of ``net``, converted as the torch CUDA FP16 path converts it."""
    half = copy.deepcopy(net).eval().half()
    for m in half.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_pre_hook(_cast_input_hook)
    return half


def graph_modules(net: PolypNet, precision: str = "fp32") -> dict[str, nn.Module]:
    """The two exported modules, FP32 as the network is, or FP16 with float32 edges."""
    if check_precision(precision) == "fp32":
        return {"encode": EncodeGraph(net), "denoise": DenoiseGraph(net)}
    half = half_network(net)
    return {"encode": HalfEdges(EncodeGraph(half), ENCODE_INPUTS),
            "denoise": HalfEdges(DenoiseGraph(half), DENOISE_INPUTS)}


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


def export_onnx(weights: str | Path, out_dir: str | Path | None = None, opset: int = OPSET,
                precision: str = "fp32") -> dict[str, Any]:
    """Export ``weights`` (.pt) to ``<stem>.encode.onnx`` + ``<stem>.denoise.onnx`` and write the
    sidecar ``<stem>.json`` (``precision=fp16``: ``<stem>.fp16.*``, see ``runtime.artifacts``);
    returns the sidecar dict. Files are written atomically."""
    import onnx

    weights = Path(weights)
    net, meta = load_weights(weights)
    paths = graph_paths(weights, out_dir, precision)
    paths["sidecar"].parent.mkdir(parents=True, exist_ok=True)
    ex = example_inputs(net, batch=2)
    modules = graph_modules(net, precision)
    graphs: dict[str, Any] = {}
    with torch.no_grad():
        for part, ins, outs in (("encode", ENCODE_INPUTS, ENCODE_OUTPUTS), ("denoise", DENOISE_INPUTS, DENOISE_OUTPUTS)):
            model = onnx.load_from_string(onnx_bytes(modules[part], ex[part], ins, outs, opset))
            stamp_shapes(model, io_shapes(net.cfg.to_dict())[part])
            fold_pads_into_convs(model)  # TF-"SAME" stride-2 zeros into the Conv (onnx_passes)
            onnx.checker.check_model(model, full_check=True)
            data = model.SerializeToString()
            atomic_write_bytes(paths[part], data)
            graphs[part] = {"file": paths[part].name, "sha256": file_sha256(paths[part]),
                            "inputs": list(ins), "outputs": list(outs)}
    cfg = net.cfg.to_dict()
    side = {"format": SIDECAR_FORMAT, "weights": weights.name, "sha256": file_sha256(weights),
            "config": cfg, "meta": meta, "onnx": graphs, "opset": opset, "precision": precision, "dtype": "float32",
            "shapes": io_shapes(cfg), "exported_with": {"torch": torch.__version__, "onnx": onnx.__version__}}
    atomic_write_json(paths["sidecar"], side)
    return side


class SinglePassGraph(nn.Module):
    """The K=0 pass alone, as a user's single-pass model would be: image (B,3,S,S) RGB in [-1, 1]
    -> the aux head's mask logits (B,1,S/4,S/4), with an empty temporal memory (a stream's first
    frame; what the native path computes with ``use_temporal=False``). Neither the presence/box
    heads nor the denoiser's conditioning are reached, so every generation's weights export
    alike, with or without the refinement inputs."""

    def __init__(self, net: PolypNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        c, s = self.net.cfg, self.net.cfg.input_size // 16
        memory = image.new_zeros((image.shape[0], c.memory_frames, c.neck_channels, s, s))
        valid = image.new_zeros((image.shape[0], c.memory_frames))
        feat, _ = self.net.neck(self.net.encoder(image), memory, valid)
        return self.net.aux_head(feat)


def single_pass_paths(weights: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """``<stem>.k0.onnx`` and its contract ``<stem>.k0.contract.yaml``, beside the weights unless ``out_dir``."""
    w = Path(weights)
    d = Path(out_dir) if out_dir is not None else w.parent
    return {"graph": d / f"{w.stem}.k0.onnx", "contract": d / f"{w.stem}.k0.contract.yaml"}


def export_single_pass(weights: str | Path, out_dir: str | Path | None = None, opset: int = OPSET) -> dict[str, Any]:
    """Write the shipped network's K=0 pass as one plain single-pass graph (image in, mask logits
    out) and its contract (the keys of configs/model/onnx.yaml's ``graph`` block, provenance in
    comments). Fed back with ``model.kind=onnx`` and this contract it gives the native K=0 masks
    (tests/test_single_pass.py). Returns the contract."""
    import onnx
    import yaml

    from endostream.runtime.graph_contract import GraphContract

    weights = Path(weights)
    net, _ = load_weights(weights)
    paths = single_pass_paths(weights, out_dir)
    paths["graph"].parent.mkdir(parents=True, exist_ok=True)
    s, g = net.cfg.input_size, net.cfg.input_size // 4
    image = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        model = onnx.load_from_string(onnx_bytes(SinglePassGraph(net), (image,), ("image",), ("logits",), opset))
    stamp_shapes(model, {"image": ["batch", 3, s, s], "logits": ["batch", 1, g, g]})
    fold_pads_into_convs(model)
    onnx.checker.check_model(model, full_check=True)
    atomic_write_bytes(paths["graph"], model.SerializeToString())
    # The native input is RGB scaled to [-1, 1]: x / 255 then (x - 0.5) / 0.5 (inference/preprocess.py).
    contract = GraphContract(path=str(paths["graph"]), input="image", size=s, layout="NCHW", color="rgb",
                             scale=1.0 / 255.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), output="logits",
                             output_type="logits", threshold=0.5).to_dict()
    head = (f"# Single-pass contract of {paths['graph'].name}: the K=0 pass of {weights.name}\n"
            f"# (sha256 {file_sha256(weights)}), graph sha256 {file_sha256(paths['graph'])}, opset {opset},\n"
            f"# torch {torch.__version__}. Output: mask logits at 1/4 of the input size (the pasted\n"
            "# probability is resized into the field of view). Use: model=onnx model.graph.path=<graph>.\n")
    atomic_write_bytes(paths["contract"], (head + yaml.safe_dump(contract, sort_keys=False)).encode())
    return contract


def run(cfg: Any) -> int:
    """`endostream export weights=weights/polyp.pt out=weights/ [precision=fp16|int8] [single_pass=true]`."""
    out = cfg.get("out") or None
    if cfg.get("single_pass"):
        contract = export_single_pass(cfg.weights, out, int(cfg.get("opset", OPSET)))
        paths = single_pass_paths(cfg.weights, out)
        print(f"{paths['graph']}  sha256={file_sha256(paths['graph'])[:16]}  (K=0 pass: input {contract['input']} "
              f"-> output {contract['output']}, {contract['output_type']})")
        print(f"{paths['contract']}  (use: model=onnx model.graph.path={paths['graph']})")
        return 0
    precision = str(cfg.get("precision") or "fp32")
    if precision == "int8":  # calibrated on training frames, checked on the validation split
        from endostream.runtime.quantize import export_int8

        side = export_int8(cfg.weights, str(cfg.calibration_data), out, int(cfg.get("threads", 2)))
        v = side["validation"]
        print(f"{graph_paths(cfg.weights, out, 'int8')['encode']}  sha256={side['onnx']['encode']['sha256'][:16]}  "
              f"({side['calibration']['frames']} calibration frames)")
        print(f"validation mean Dice at K=0: int8 {v['dice_int8']:.4f}, float32 {v['dice_fp32']:.4f} "
              f"(drop {v['drop']:+.4f}, at most {v['max_drop']}): {'kept' if v['kept'] else 'NOT kept: auto will not use it'}")
        return 0
    side = export_onnx(cfg.weights, out, int(cfg.get("opset", OPSET)), check_precision(precision))
    d = graph_paths(cfg.weights, out, precision)
    for part in ("encode", "denoise"):
        print(f"{d[part]}  sha256={side['onnx'][part]['sha256'][:16]}")
    print(f"{d['sidecar']}  (weights sha256={side['sha256'][:16]}, precision {precision}, float32 I/O)")
    return 0
