"""How much the diffusion step reads its coarse-mask input, per weights file (issue #24, item 2).

For each file: the mean |weight| of the refinement convolution on the coarse-mask channel and on the
image channels, and how far the K=1 probabilities on a ClinicDB frame move when the coarse mask is
inverted (max and mean over the frame). A step that refines from the coarse mask moves a lot; one
that ignores it barely moves. Usage: tools/step_reads_coarse.py weights/polyp.pt runs/genP/best.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from endostream.model.io import load_weights

FRAME = Path(__file__).resolve().parents[1].parent / "shared/data/cvc-clinicdb/images/1.png"


def reads(weights: str, image_bgr: np.ndarray) -> dict[str, float]:
    net, _ = load_weights(weights)
    net.eval()
    if net.denoiser.refine is None:
        raise SystemExit(f"{weights}: this step has no coarse-mask input (model.refine_inputs=false)")
    s = net.cfg.input_size
    x = cv2.resize(image_bgr, (s, s))[:, :, ::-1].astype(np.float32) / 127.5 - 1.0
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    mem, valid = net.empty_memory(1)
    t = torch.full((1,), 999.0)
    noise = torch.randn(1, 1, s // 4, s // 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net.encode_frame(x, mem, valid)
        feat = net.neck(net.encoder(x), mem, valid)[0]
        base = net.denoise(out["feat"], noise, t).sigmoid()
        inverted = net.denoise(net.denoiser.condition(feat, -out["aux_logits"], x), noise, t).sigmoid()
    w = net.denoiser.refine.weight.detach().abs()
    moved = (inverted - base).abs()
    return {"coarse_w": float(w[:, 0].mean()), "image_w": float(w[:, 1:].mean()),
            "inverted_max": float(moved.max()), "inverted_mean": float(moved.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+")
    ap.add_argument("--frame", default=str(FRAME), help="a BGR image file (default: ClinicDB frame 1)")
    args = ap.parse_args()
    img = cv2.imread(args.frame)
    if img is None:
        raise SystemExit(f"cannot read {args.frame}")
    for w in args.weights:
        r = reads(w, img)
        print(f"{w}: coarse-mask |w| {r['coarse_w']:.4f}, image |w| {r['image_w']:.4f}; coarse mask inverted: "
              f"K=1 probability moves {r['inverted_max']:.3f} at most, {r['inverted_mean']:.4f} on average")


if __name__ == "__main__":
    main()
