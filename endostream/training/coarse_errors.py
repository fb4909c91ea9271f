"""Errors put into the K=0 mask the diffusion step refines, while the step trains (issue #24, item 2).

The step sees the K=0 head's probability as one of its inputs (``model.refine_inputs``). On the
training images that mask is nearly right (the network has fitted them), so the step learns that
copying it is enough and, on the fifth generation, learnt to ignore it (its refinement weights
stayed near zero). SegRefiner trains its refiner on coarse masks degraded on purpose; here the
model's own K=0 probability is degraded, per sample, by one of the errors the K=0 head really
makes on validation frames (the card's breakdown: outlines off by a few pixels, parts missed,
leaks, false components), so the step has a reason to check the mask against the features.
Only the step's input changes: the K=0 head's own output and its loss are untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("dilate", "erode", "false_blob", "cut", "soften")


def _blob(h: int, w: int, cy: float, cx: float, sigma: float, device: torch.device) -> torch.Tensor:
    """A (h, w) Gaussian bump peaking at 1 at (cy, cx)."""
    y = torch.arange(h, device=device, dtype=torch.float32).view(h, 1)
    x = torch.arange(w, device=device, dtype=torch.float32).view(1, w)
    return torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2.0 * sigma * sigma))


def _random_cell(where: torch.Tensor, gen: torch.Generator) -> tuple[float, float] | None:
    """A random cell where ``where`` (h, w, bool) holds, or None when it holds nowhere."""
    ys, xs = torch.nonzero(where, as_tuple=True)
    if len(ys) == 0:
        return None
    i = int(torch.randint(len(ys), (1,), generator=gen))
    return float(ys[i]), float(xs[i])


def degrade(p: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """One sample's probability map (1, h, w) in [0, 1] with one error of ``kind``; a new tensor."""
    _, h, w = p.shape
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=gen))  # noqa: E731
    if kind in ("dilate", "erode"):  # the outline a few stride-4 cells (4-12 input pixels) off
        k = 2 * int(torch.randint(1, 4, (1,), generator=gen)) + 1
        src = p if kind == "dilate" else 1.0 - p
        grown = F.max_pool2d(src.unsqueeze(0), k, stride=1, padding=k // 2).squeeze(0)
        return grown if kind == "dilate" else 1.0 - grown
    if kind == "false_blob":  # a confident component, anywhere (one drawn inside the polyp changes little)
        blob = _blob(h, w, u(0, h - 1), u(0, w - 1), u(1.0, 0.08 * max(h, w)), p.device) * u(0.6, 1.0)
        return torch.maximum(p, blob.unsqueeze(0))
    if kind == "cut":  # part of the polyp missed
        at = _random_cell(p[0] > 0.5, gen)
        if at is None:
            return p.clone()
        blob = _blob(h, w, at[0], at[1], u(1.5, 0.12 * max(h, w)), p.device)
        return p * (1.0 - blob.unsqueeze(0))
    if kind == "soften":  # an unsure mask: the same shape, its logits shrunk toward 0.5
        logit = torch.logit(p.clamp(1e-4, 1 - 1e-4))
        return torch.sigmoid(logit * u(0.2, 0.6))
    raise ValueError(f"unknown coarse-mask error {kind!r}; expected one of {KINDS}")


def degrade_coarse(coarse_logits: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """The step's coarse-mask input (B, 1, h, w logits, detached) with a share ``share`` of the samples
    given one error each (kind drawn uniformly); the other samples come back unchanged."""
    if share <= 0.0:
        return coarse_logits
    p = torch.sigmoid(coarse_logits.detach().float())
    out = p.clone()
    for i in range(p.shape[0]):
        if float(torch.rand((), generator=gen)) < share:
            kind = KINDS[int(torch.randint(len(KINDS), (1,), generator=gen))]
            out[i] = degrade(p[i], kind, gen)
    return torch.logit(out.clamp(1e-4, 1 - 1e-4)).to(coarse_logits.dtype)
