"""Exact rewrites of an exported ONNX graph that ONNX Runtime does not do itself.

EfficientNet's TF-"SAME" stride-2 convolutions pad asymmetrically (one more zero at the bottom
and right), which ``torch.nn.Conv2d`` cannot express, so the export holds a ``Pad`` before each
of them. ONNX's ``Conv`` takes asymmetric ``pads`` directly; folding the zeros into it removes
five Pad nodes that measured 2.9 of 29 ms per frame at 320 in ONNX Runtime (docs/RUNTIME.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


# Ops whose outputs are computed at export time when all their inputs are constants: the
# TorchScript exporter builds each Pad's amounts with such a chain (a Slice with step -1 that its
# own constant folding skips), which also keeps ONNX Runtime from fusing the Pad itself.
_FOLDABLE = {"Constant", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze",
             "Squeeze", "Gather", "Identity"}


def _constant_values(model: Any) -> dict[str, np.ndarray]:
    """Tensors known at export time: initializers and the outputs of constant-only chains."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:  # topologically sorted
        inputs = [i for i in node.input if i]
        if node.op_type not in _FOLDABLE or not all(i in values for i in inputs):
            continue
        outs = ReferenceEvaluator(node).run(None, {i: values[i] for i in inputs})
        values.update(zip(node.output, (np.asarray(o) for o in outs)))
    return values


def remove_dead_nodes(model: Any) -> int:
    """Drop nodes none of whose outputs is used (by a node or as a graph output); returns how many."""
    graph, removed = model.graph, 0
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return removed
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)


def _pad_amounts(node: Any, values: dict[str, np.ndarray]) -> list[int] | None:
    """[top, left, bottom, right] of a zero Pad on the spatial dims of an NCHW tensor, else None."""
    for attr in node.attribute:
        if attr.name == "mode" and attr.s not in (b"constant", b""):
            return None
    if len(node.input) < 2 or node.input[1] not in values:
        return None
    if len(node.input) > 2 and node.input[2]:
        fill = values.get(node.input[2])
        if fill is None or np.any(fill != 0):
            return None
    if len(node.input) > 3 and node.input[3]:  # explicit axes: rare, left alone
        return None
    pads = [int(p) for p in values[node.input[1]].reshape(-1)]
    if len(pads) != 8 or any(p < 0 for p in pads) or any(pads[i] for i in (0, 1, 4, 5)):
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


def fold_pads_into_convs(model: Any) -> int:
    """Remove every zero ``Pad`` whose only consumers are ``Conv`` data inputs, adding its
    amounts to their ``pads``; returns how many were folded. The result computes the same
    function (a test compares outputs)."""
    from onnx import helper

    graph = model.graph
    values = _constant_values(model)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    folded = []
    for pad in graph.node:
        if pad.op_type != "Pad" or pad.output[0] in graph_outputs:
            continue
        amounts = _pad_amounts(pad, values)
        users = consumers.get(pad.output[0], [])
        if amounts is None or not users:
            continue
        if any(u.op_type != "Conv" or u.input[0] != pad.output[0] or len(u.input) > 1 and pad.output[0] in u.input[1:]
               for u in users):
            continue
        if any(a.name == "auto_pad" and a.s not in (b"NOTSET", b"") for u in users for a in u.attribute):
            continue
        for conv in users:
            old = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
            kept = [a for a in conv.attribute if a.name != "pads"]
            del conv.attribute[:]
            conv.attribute.extend(kept)
            conv.attribute.append(helper.make_attribute("pads", [o + a for o, a in zip(old, amounts)]))
            conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    if folded:
        remove_dead_nodes(model)  # the chains that computed the folded amounts
    return len(folded)


def drop_outputs(model: Any, names: set[str] | frozenset[str]) -> int:
    """Remove the graph outputs ``names``, then every node and initializer that only they needed;
    returns how many nodes went. Exact for the outputs that stay (nothing they read changes).

    At K=0 nobody reads the encode graph's ``feat`` (the denoiser's conditioning), yet a graph
    output is always computed: its pixel-unshuffle of the full-size image (a 6-D transpose) and
    the refinement convolution; without them the segment call's p50 went from 26.5 to 21.8 ms with
    ONNX Runtime and from 25.3 to 24.0 ms with OpenVINO on the AVX2 EPYC (docs/RUNTIME.md)."""
    graph = model.graph
    unknown = set(names) - {o.name for o in graph.output}
    if unknown:
        raise ValueError(f"graph has no output {', '.join(sorted(unknown))}")
    keep = [o for o in graph.output if o.name not in names]
    del graph.output[:]
    graph.output.extend(keep)
    removed = remove_dead_nodes(model)
    used = {i for n in graph.node for i in n.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:
        graph.initializer.remove(t)
    return removed


def graph_without(path: str | Path, outputs: set[str]) -> bytes:
    """The ONNX file at ``path`` without ``outputs`` (``drop_outputs``), serialised for a session."""
    import onnx

    model = onnx.load(str(path))
    drop_outputs(model, outputs)
    return model.SerializeToString()
