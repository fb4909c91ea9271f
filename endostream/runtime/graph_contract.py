"""The contract of a single-pass segmentation graph (image in, mask out, one call per frame) and
its check against the ONNX file at load. No torch, no onnxruntime: only the ``onnx`` package.

A contract says how a frame becomes the graph's input (name, size, layout, colour order, scaling,
mean/std) and how its output becomes a polyp probability (name, logits or probabilities, one
channel or per-class channels with the polyp channel named), and the mask threshold. The check
reads the graph's declared inputs and outputs and fails in one line naming the first thing that
does not match, before any session or engine is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

LAYOUTS = ("NCHW", "NHWC")
COLORS = ("rgb", "bgr")
# logits / probabilities: one polyp channel (sigmoid applied to logits); class_logits /
# class_probabilities: C channels, one per class (softmax over channels applied to logits), the
# polyp channel is ``polyp_channel``.
OUTPUT_TYPES = ("logits", "probabilities", "class_logits", "class_probabilities")
INPUT_TYPES = {1: "float32", 10: "float16"}  # onnx.TensorProto element types the input may have


class ContractError(ValueError):
    """A contract that does not match its graph (or is invalid in itself); one line."""


@dataclass(frozen=True)
class GraphContract:
    """What configs/model/onnx.yaml's ``graph`` block holds (the defaults are defined here only;
    tests/test_single_pass.py checks the YAML repeats them). The defaults describe the graph that
    ``endostream export single_pass=true`` writes: the shipped network's K=0 pass."""

    path: str = ""
    input: str = "image"
    size: int | tuple[int, int] | None = None  # (height, width) or one side; None: the graph's own
    layout: str = "NCHW"
    color: str = "rgb"
    scale: float = 1.0 / 255.0  # pixel values 0..255 are multiplied by this, then (x - mean) / std
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    output: str = "logits"
    output_type: str = "logits"
    output_layout: str | None = None  # None: the input's layout (a rank-3 output has no channel)
    polyp_channel: int = 1  # class_* outputs only
    threshold: float = 0.5  # on the polyp probability

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "GraphContract":
        """From a config block or a contract file; unknown keys and bad values are one line each."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ContractError(f"unknown graph contract key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        kw = {k: v for k, v in values.items() if v is not None or k in ("size", "output_layout")}
        for key in ("mean", "std"):
            if key in kw:
                kw[key] = tuple(float(x) for x in (kw[key] if isinstance(kw[key], Sequence) else [kw[key]]))
        if isinstance(kw.get("size"), Sequence) and not isinstance(kw["size"], str):
            kw["size"] = tuple(int(x) for x in kw["size"])
        c = cls(**kw)
        c.validate()
        return c

    def validate(self) -> None:
        if not self.path or self.path == "???":  # "???": configs/model/onnx.yaml's unset path
            raise ContractError("the graph contract names no ONNX file: set model.graph.path")
        if self.layout not in LAYOUTS:
            raise ContractError(f"graph layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.output_layout is not None and self.output_layout not in LAYOUTS:
            raise ContractError(f"graph output_layout must be one of {', '.join(LAYOUTS)} or null, got {self.output_layout!r}")
        if self.color not in COLORS:
            raise ContractError(f"graph color must be one of {', '.join(COLORS)}, got {self.color!r}")
        if self.output_type not in OUTPUT_TYPES:
            raise ContractError(f"graph output_type must be one of {', '.join(OUTPUT_TYPES)}, got {self.output_type!r}")
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, 3):
                raise ContractError(f"graph {key} takes 1 or 3 values, got {list(getattr(self, key))}")
        if any(s == 0 for s in self.std):
            raise ContractError(f"graph std must be non-zero, got {list(self.std)}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise ContractError(f"graph threshold must be within (0, 1), got {self.threshold}")
        if self.output_type.startswith("class_") and int(self.polyp_channel) < 0:
            raise ContractError(f"graph polyp_channel must be >= 0, got {self.polyp_channel}")
        size = self.size_hw
        if size is not None and min(size) < 8:
            raise ContractError(f"graph size must be at least 8 pixels a side, got {self.size}")

    @property
    def size_hw(self) -> tuple[int, int] | None:
        if self.size is None:
            return None
        if isinstance(self.size, tuple):
            if len(self.size) != 2:
                raise ContractError(f"graph size is one side or [height, width], got {list(self.size)}")
            return int(self.size[0]), int(self.size[1])
        return int(self.size), int(self.size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if isinstance(self.size, tuple):
            d["size"] = list(self.size)
        return d


@dataclass(frozen=True)
class GraphSpec:
    """What the check found: the input as it will be fed and the output as it will be read."""

    contract: GraphContract
    height: int
    width: int
    batch: int | None  # None: dynamic (any batch); else the graph's fixed batch (only 1 is taken)
    input_type: str  # float32 | float16
    output_rank: int  # 3 (N,H,W) or 4
    output_channels: int | None  # None: dynamic or rank 3
    input_shape_fixed: bool  # False: the graph's spatial dims are dynamic, fixed by the contract

    def input_dims(self, batch: int | str) -> list[int | str]:
        """The input's shape as fed, with ``batch`` first."""
        hw = [self.height, self.width]
        return [batch, 3, *hw] if self.contract.layout == "NCHW" else [batch, *hw, 3]


def _dims(value_info: Any) -> list[int | str | None]:
    """Declared dims: an int, a symbolic name, or None (unknown)."""
    out: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or None)
    return out


def _show(dims: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def load_graph_proto(path: str | Path) -> Any:
    """The ONNX model without external weights (only its declarations are read here)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX graph not found: {p}")
    try:
        return onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own types; one line either way
        raise ContractError(f"{p} is not a readable ONNX graph: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def check_graph(contract: GraphContract, model: Any | None = None) -> GraphSpec:
    """Check ``contract`` against its ONNX graph's declared inputs and outputs; returns the
    resolved spec or raises ContractError naming the first mismatch."""
    name = Path(contract.path).name
    model = load_graph_proto(contract.path) if model is None else model
    inits = {i.name for i in model.graph.initializer}
    inputs = {vi.name: vi for vi in model.graph.input if vi.name not in inits}
    outputs = {vi.name: vi for vi in model.graph.output}
    if contract.input not in inputs:
        raise ContractError(f"{name} has no input {contract.input!r} (its inputs: {', '.join(inputs) or 'none'}); "
                            "set model.graph.input")
    others = tuple(n for n in inputs if n != contract.input)
    if others:
        raise ContractError(f"{name} needs inputs {', '.join(others)} besides {contract.input!r}: a single-pass "
                            "model takes one image input")
    if contract.output not in outputs:
        raise ContractError(f"{name} has no output {contract.output!r} (its outputs: {', '.join(outputs)}); "
                            "set model.graph.output")
    vi = inputs[contract.input]
    elem = vi.type.tensor_type.elem_type
    if elem not in INPUT_TYPES:
        raise ContractError(f"{name} input {contract.input!r} has element type {elem} (onnx.TensorProto); "
                            "a single-pass input must be float32 or float16")
    dims = _dims(vi)
    if len(dims) != 4:
        raise ContractError(f"{name} input {contract.input!r} has rank {len(dims)} {_show(dims)}; a single-pass "
                            "image input is rank 4 (NCHW or NHWC)")
    c_axis, h_axis, w_axis = (1, 2, 3) if contract.layout == "NCHW" else (3, 1, 2)
    if dims[c_axis] not in (3, None) and not isinstance(dims[c_axis], str):
        other = "NHWC" if contract.layout == "NCHW" else "NCHW"
        o_axis = 3 if other == "NHWC" else 1
        if dims[o_axis] == 3:
            raise ContractError(f"{name} input {contract.input!r} is {_show(dims)}: that is {other}, but the contract "
                                f"says layout {contract.layout} (set model.graph.layout={other})")
        raise ContractError(f"{name} input {contract.input!r} is {_show(dims)}: {dims[c_axis]} channels where "
                            f"layout {contract.layout} puts them, expected 3")
    hw = [dims[h_axis], dims[w_axis]]
    want = contract.size_hw
    fixed = all(isinstance(d, int) for d in hw)
    if fixed:
        if want is not None and tuple(hw) != want:
            raise ContractError(f"{name} input {contract.input!r} is {_show(dims)} ({hw[0]}x{hw[1]}) but the contract "
                                f"says size {want[0]}x{want[1]}")
        height, width = int(hw[0]), int(hw[1])
    else:
        if want is None:
            raise ContractError(f"{name} input {contract.input!r} has a dynamic size {_show(dims)} and the contract "
                                "gives none to fix it: set model.graph.size")
        for d, w, what in ((hw[0], want[0], "height"), (hw[1], want[1], "width")):
            if isinstance(d, int) and d != w:
                raise ContractError(f"{name} input {contract.input!r} has {what} {d} {_show(dims)} but the contract "
                                    f"says size {want[0]}x{want[1]}")
        height, width = want
    batch = dims[0] if isinstance(dims[0], int) else None
    if batch is not None and batch != 1:
        raise ContractError(f"{name} input {contract.input!r} has a fixed batch of {batch} {_show(dims)}; a "
                            "single-pass graph needs batch 1 or a dynamic batch")
    odims = _dims(outputs[contract.output])
    if odims and len(odims) not in (3, 4):
        raise ContractError(f"{name} output {contract.output!r} has rank {len(odims)} {_show(odims)}; expected "
                            "(N,H,W) or (N,C,H,W) / (N,H,W,C)")
    channels = None
    if len(odims) == 4:
        layout = contract.output_layout or contract.layout
        cdim = odims[1] if layout == "NCHW" else odims[3]
        channels = cdim if isinstance(cdim, int) else None
    check_output_channels(contract, channels, odims)
    return GraphSpec(contract, height, width, batch, INPUT_TYPES[elem], len(odims) or 4, channels,
                     input_shape_fixed=fixed)


def check_output_channels(contract: GraphContract, channels: int | None, dims: Sequence[Any]) -> None:
    """One polyp channel for logits/probabilities; more than ``polyp_channel`` for class_*.
    ``channels`` None (dynamic, or a rank-3 output) passes here and is checked on the first call."""
    if channels is None:
        if contract.output_type.startswith("class_") and len(dims) == 3:
            raise ContractError(f"output {contract.output!r} is {_show(dims)} with no channel axis, but output_type "
                                f"{contract.output_type} needs per-class channels")
        return
    layout = contract.output_layout or contract.layout
    if contract.output_type.startswith("class_"):
        if channels < 2 or int(contract.polyp_channel) >= channels:
            raise ContractError(f"output {contract.output!r} has {channels} channel(s) {_show(dims)} ({layout}); "
                                f"output_type {contract.output_type} with polyp_channel {contract.polyp_channel} "
                                f"needs at least {max(2, int(contract.polyp_channel) + 1)}")
    elif channels != 1:
        raise ContractError(f"output {contract.output!r} has {channels} channels {_show(dims)} ({layout}); "
                            f"output_type {contract.output_type} needs 1 (per-class channels: class_logits or "
                            "class_probabilities with polyp_channel)")
