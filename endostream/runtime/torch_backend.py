"""The reference backend: the PyTorch network itself; eager on CPU, and on CUDA a fast path.

CUDA fast path: half precision (fp16/bf16 weights; every Linear/Conv casts its input to its
weight dtype, so the float32 timestep embedding needs no change to the model), CUDA-graph
capture of ``encode`` and of one ``denoise`` step per input shape (static input buffers;
launch overhead, not arithmetic, bounds batch-1 latency on a big GPU), and optionally
``torch.compile``. Outputs of a graphed call are its static buffers: valid until the next call
of the same kind, which is all the sampling loop needs.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from endostream.model.network import PolypNet

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _cast_input_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    dtype = module.weight.dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


class _Graphed:
    """One CUDA graph around ``fn`` for one set of input shapes, with static inputs/outputs."""

    def __init__(self, fn: Callable[..., Any], inputs: tuple[torch.Tensor, ...], warmup: int = 3) -> None:
        self.static_in = tuple(x.clone() for x in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as torch's docs require
            for _ in range(warmup):
                fn(*self.static_in)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = fn(*self.static_in)

    def __call__(self, *inputs: torch.Tensor) -> Any:
        for buf, x in zip(self.static_in, inputs):
            if buf.data_ptr() != x.data_ptr():
                buf.copy_(x)
        self.graph.replay()
        return self.static_out


class TorchBackend:
    def __init__(self, model: PolypNet, device: str = "cpu", threads: int | None = None, *,
                 precision: str = "fp32", cuda_graphs: bool = False, compile: bool = False) -> None:
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        on_cuda = self.device.type == "cuda"
        if on_cuda and not torch.cuda.is_available():
            raise RuntimeError(f"device={device} but torch sees no CUDA GPU")
        if (cuda_graphs or precision != "fp32") and not on_cuda:
            raise ValueError("precision fp16/bf16 and cuda_graphs need device=cuda")
        self.dtype = DTYPES[precision]
        self.model = model.to(self.device).eval()
        if self.dtype != torch.float32:
            self.model = self.model.to(self.dtype)
            for m in self.model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.register_forward_pre_hook(_cast_input_hook)
        self.config = model.cfg.to_dict()
        self.precision = precision
        self.cuda_graphs = bool(cuda_graphs)
        self.name = "torch" if not on_cuda else f"torch-cuda-{precision}" + ("-graphs" if cuda_graphs else "")
        self._encode_fn: Callable[..., Any] = self._encode_tuple
        self._denoise_fn: Callable[..., Any] = self.model.denoise
        if compile:  # dynamic=False: fixed shapes per graph; our own CUDA graphs wrap it
            self._encode_fn = torch.compile(self._encode_fn, dynamic=False)
            self._denoise_fn = torch.compile(self._denoise_fn, dynamic=False)
        self._graphs: dict[tuple[Any, ...], _Graphed] = {}

    def _encode_tuple(self, image: torch.Tensor, memory: torch.Tensor, valid: torch.Tensor) -> dict[str, Any]:
        return self.model.encode_frame(image, memory, valid)

    def _run(self, kind: str, fn: Callable[..., Any], *inputs: torch.Tensor) -> Any:
        if not self.cuda_graphs:
            return fn(*inputs)
        key = (kind, *(tuple(x.shape) for x in inputs))
        if key not in self._graphs:
            self._graphs[key] = _Graphed(fn, inputs)
        return self._graphs[key](*inputs)

    @torch.inference_mode()
    def encode(self, image: np.ndarray, memory: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        return self._run("encode", self._encode_fn, self.from_numpy(image), self.from_numpy(memory),
                         self.from_numpy(valid))

    @torch.inference_mode()
    def denoise(self, feat: Any, noisy_mask: Any, t: np.ndarray) -> Any:
        t = self.from_numpy(np.asarray(t, np.float32).reshape(-1)).float()  # exact integers in any dtype
        return self._run("denoise", self._denoise_fn, self.from_numpy(feat), self.from_numpy(noisy_mask), t)

    def from_numpy(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(np.ascontiguousarray(x))
        x = x.to(self.device, non_blocking=True)
        return x.to(self.dtype) if x.is_floating_point() else x

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
