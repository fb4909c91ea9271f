"""The alternative we measured and did not ship: one ONNX graph with encode + K steps unrolled.

The DDIM update is inside the graph; its per-step coefficients come in as an input (K, 4) so
cold and warm starts share one graph. ``compare_split_unrolled`` times it against the shipped
split graphs (encode + K x denoise with the numpy scheduler) in ONNX Runtime.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from endostream.model.io import load_weights
from endostream.model.network import PolypNet
from endostream.model.scheduler import MaskScheduler
from endostream.runtime.export import example_inputs, onnx_bytes


class UnrolledGraph(nn.Module):
    def __init__(self, net: PolypNet, steps: int) -> None:
        super().__init__()
        self.net, self.steps, self.scale = net, steps, float(net.cfg.mask_scale)

    def forward(self, image: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor, sample: torch.Tensor,
                t: torch.Tensor, coef: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """coef[k] = (sqrt(a_t), 1/sqrt(1-a_t), sqrt(a_prev), sqrt(1-a_prev)); t (K,)."""
        out = self.net.encode_frame(image, memory, valid)
        b = image.shape[0]
        prob = sample
        for k in range(self.steps):
            logits = self.net.denoise(out["feat"], sample, t[k].expand(b))
            prob = torch.sigmoid(logits)
            x0 = (prob * 2.0 - 1.0) * self.scale
            eps = (sample - coef[k, 0] * x0) * coef[k, 1]
            sample = coef[k, 2] * x0 + coef[k, 3] * eps
        return prob, out["presence_logit"], out["box"], out["memory_out"]


def step_coefficients(sch: MaskScheduler, timesteps: list[int]) -> np.ndarray:
    rows = []
    for i, t in enumerate(timesteps):
        a_t = float(sch.alphas_cumprod[t])
        a_p = float(sch.alphas_cumprod[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        rows.append([a_t ** 0.5, 1.0 / (1.0 - a_t) ** 0.5, a_p ** 0.5, (1.0 - a_p) ** 0.5])
    return np.asarray(rows, np.float32)


def compare_split_unrolled(weights: str | Path, steps: int = 2, threads: int = 2, iters: int = 30,
                           warmup: int = 5) -> dict[str, Any]:
    """Median and p90 ms per frame (batch 1) of split vs unrolled graphs, same inputs, same session
    options; also the max abs difference of the final probabilities (they must agree)."""
    from endostream.runtime.ort_backend import OrtBackend, ort, session_options
    from endostream.runtime.registry import resolve_graphs

    net, _ = load_weights(weights)
    paths, side = resolve_graphs(weights)
    split = OrtBackend(paths["encode"], paths["denoise"], side["config"], threads=threads)
    sch = MaskScheduler(net.cfg.num_train_steps, net.cfg.mask_scale)
    ts = sch.set_timesteps(steps)
    image, memory, valid = (x.numpy() for x in example_inputs(net, 1)["encode"])
    g = net.cfg.input_size // 4
    noise = np.random.default_rng(0).standard_normal((1, 1, g, g)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        f = Path(tmp) / "unrolled.onnx"
        args = (torch.from_numpy(image), torch.from_numpy(memory), torch.from_numpy(valid), torch.from_numpy(noise),
                torch.tensor(ts, dtype=torch.float32), torch.from_numpy(step_coefficients(sch, ts)))
        f.write_bytes(onnx_bytes(UnrolledGraph(net, steps), args, ("image", "memory", "valid", "sample", "t", "coef"),
                                 ("prob", "presence_logit", "box", "memory_out")))
        sess = ort.InferenceSession(str(f), session_options(threads), providers=["CPUExecutionProvider"])
    feeds = {k: v.numpy() for k, v in zip(("image", "memory", "valid", "sample", "t", "coef"), args)}

    def run_split() -> np.ndarray:
        out = split.encode(image, memory, valid)
        sample, prob = noise, None
        for t in ts:
            sample, prob = sch.step(split.denoise(out["feat"], sample, np.array([t], np.float32)), t, sample)
        return prob

    def run_unrolled() -> np.ndarray:
        return sess.run(["prob"], feeds)[0]

    res: dict[str, Any] = {"steps": steps, "threads": threads, "iters": iters,
                           "max_abs_diff": float(np.abs(run_split() - run_unrolled()).max())}
    fns = {"split": run_split, "unrolled": run_unrolled}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    ms: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(iters):  # interleaved, so a shifting background load hits both alike
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ms[name].append((time.perf_counter() - t0) * 1e3)
    for name, v in ms.items():
        res[name] = {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90))}
    return res
