"""Grow a trained segmenter into one with a deeper EfficientNet-Lite encoder (Lite0 -> Lite1).

Lite1 has Lite0's channel widths and one more MBConv block in each of stages 1-5. Every block of
the trained network keeps its place (the first blocks of its stage); each added block takes the
ImageNet filters of its place in the deeper backbone with its projection's batch-norm scale and
shift set to zero, so the residual block starts as the identity (Net2DeeperNet, zero-init residual).
The grown network therefore computes exactly what the trained one did at step 0, and training can
only add from there; the neck, heads and denoiser load unchanged.
"""

from __future__ import annotations

import re

import torch

from endostream.model.efficientnet_lite import imagenet_weights_path, load_imagenet, stage_repeats
from endostream.model.encoder import LiteEncoder
from endostream.model.network import PolypNet

_BLOCK = re.compile(r"^encoder\.net\.blocks\.(\d+)\.(.*)$")


def block_map(shallow: str, deep: str) -> tuple[dict[int, int], list[int]]:
    """(shallow block index -> deep block index, the deep blocks that are new), stage by stage."""
    short, long = stage_repeats(shallow), stage_repeats(deep)
    if any(b < a for a, b in zip(short, long)):
        raise ValueError(f"cannot grow {shallow} into {deep}: {deep} has fewer blocks in some stage")
    mapping, new, i, j = {}, [], 0, 0
    for a, b in zip(short, long):
        mapping.update({i + k: j + k for k in range(a)})
        new.extend(range(j + a, j + b))
        i, j = i + a, j + b
    return mapping, new


def grow_from(model: PolypNet, shallow: PolypNet, imagenet: dict[str, torch.Tensor] | None = None) -> list[int]:
    """Load ``shallow``'s weights into the deeper ``model`` (see the module doc); returns the new blocks.

    ``imagenet``: the deeper backbone's ImageNet state (default: the weights package's file)."""
    enc, src = model.encoder, shallow.encoder
    if not (isinstance(enc, LiteEncoder) and isinstance(src, LiteEncoder)):
        raise ValueError("growing needs EfficientNet-Lite encoders on both sides")
    if tuple(enc.widths) != tuple(src.widths):
        raise ValueError(f"cannot grow {src.net.variant} into {enc.net.variant}: channel widths differ "
                         f"({src.widths} vs {enc.widths}); only deeper, not wider, encoders can start exact")
    mapping, new = block_map(src.net.variant, enc.net.variant)
    if imagenet is None:
        imagenet = torch.load(imagenet_weights_path(enc.net.variant), map_location="cpu", weights_only=True)
    load_imagenet(enc.net, imagenet)
    state = model.state_dict()
    for key, value in shallow.state_dict().items():
        m = _BLOCK.match(key)
        target = f"encoder.net.blocks.{mapping[int(m.group(1))]}.{m.group(2)}" if m else key
        if target not in state or state[target].shape != value.shape:
            raise ValueError(f"grow: {key} has no place of its shape in the deeper network ({target})")
        state[target] = value
    for b in new:  # the added residual block adds zero: project's BN scale and shift at 0
        state[f"encoder.net.blocks.{b}.project.bn.weight"].zero_()
        state[f"encoder.net.blocks.{b}.project.bn.bias"].zero_()
    model.load_state_dict(state, strict=True)
    return new
