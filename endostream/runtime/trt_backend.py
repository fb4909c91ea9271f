"""TensorRT backend (TensorRT 10 Python API): engines built from the exported ONNX graphs.

- FP16 or FP32 (TF32 cleared for FP32, so FP32 means FP32); graph I/O stays float32.
- Engine cache keyed by GPU model + compute capability, TensorRT version, graph sha256,
  precision and batch range; a timing cache per GPU + TensorRT version makes rebuilds fast.
- Device buffers allocated once for ``max_batch`` (torch CUDA tensors) and reused; the
  denoiser's ``feat`` input is bound to the encoder's ``feat`` output, so it is never copied.
- Optional CUDA-graph capture of each execute (per kind and batch size).
``import tensorrt`` happens here only, when the backend is built.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from endostream.fileutil import atomic_write_bytes
from endostream.runtime.artifacts import (DENOISE_INPUTS, DENOISE_OUTPUTS, ENCODE_INPUTS, ENCODE_OUTPUTS,
                                          cache_dir)

NOT_INSTALLED = ("TensorRT is not installed (python module 'tensorrt'): install TensorRT 10 from NVIDIA, "
                 "or use backend=onnxruntime or backend=torch")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError(NOT_INSTALLED) from exc
    return trt


def engine_key(gpu: str, capability: tuple[int, int], trt_version: str, graph_sha256: str,
               precision: str, max_batch: int) -> str:
    """Everything an engine depends on; a change in any of them means a rebuild."""
    blob = json.dumps([gpu, list(capability), trt_version, graph_sha256, precision, int(max_batch)])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def build_engine(trt: Any, onnx_path: Path, precision: str, max_batch: int, opt_batch: int,
                 timing_cache: Path, workspace_bytes: int = 2 << 30) -> bytes:
    """Parse the ONNX graph and build a serialized engine with one profile over the batch range."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        rest = tuple(inp.shape)[1:]
        profile.set_shape(inp.name, (1, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


class TensorRTBackend:
    def __init__(self, encode_path: str | Path, denoise_path: str | Path, sidecar: dict[str, Any], *,
                 device: str = "cuda", precision: str = "fp16", cuda_graphs: bool = True, max_batch: int = 1,
                 engine_cache: str | Path | None = None) -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("backend=tensorrt needs a CUDA GPU, and torch sees none")
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"tensorrt precision must be fp16 or fp32, got {precision!r}")

        self.torch, self.trt = torch, trt
        self.device = torch.device(device if device.startswith("cuda") else "cuda")
        torch.cuda.set_device(self.device)
        self.config = dict(sidecar["config"])
        self.precision, self.cuda_graphs, self.max_batch = precision, bool(cuda_graphs), int(max_batch)
        self.name = f"tensorrt-{precision}" + ("-graphs" if cuda_graphs else "")
        gpu = torch.cuda.get_device_name(self.device)
        cap = torch.cuda.get_device_capability(self.device)
        root = Path(engine_cache) if engine_cache else cache_dir() / "trt"
        root.mkdir(parents=True, exist_ok=True)
        timing = root / f"timing-{hashlib.sha256(f'{gpu}{cap}{trt.__version__}'.encode()).hexdigest()[:16]}.cache"
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines: dict[str, Any] = {}
        self.engine_files: dict[str, Path] = {}
        for part, path in (("encode", Path(encode_path)), ("denoise", Path(denoise_path))):
            key = engine_key(gpu, cap, trt.__version__, sidecar["onnx"][part]["sha256"], precision, self.max_batch)
            f = root / f"{path.stem}-{key}.engine"
            if not f.is_file():
                atomic_write_bytes(f, build_engine(trt, path, precision, self.max_batch,
                                                   min(self.max_batch, 1), timing))
            engine = runtime.deserialize_cuda_engine(f.read_bytes())
            if engine is None:
                raise RuntimeError(f"TensorRT could not load the cached engine {f} (delete it to rebuild)")
            self.engines[part], self.engine_files[part] = engine, f
        self.contexts = {p: e.create_execution_context() for p, e in self.engines.items()}
        self.stream = torch.cuda.Stream(self.device)
        self.buffers = self._allocate()
        self._shapes: dict[str, int] = {}
        self._graphs: dict[tuple[str, int], Any] = {}

    def _allocate(self) -> dict[str, dict[str, Any]]:
        """Max-batch buffers, allocated once; denoise's ``feat`` aliases encode's ``feat``."""
        torch, trt = self.torch, self.trt
        bufs: dict[str, dict[str, Any]] = {"encode": {}, "denoise": {}}
        for part, names in (("encode", (*ENCODE_INPUTS, *ENCODE_OUTPUTS)), ("denoise", (*DENOISE_INPUTS, *DENOISE_OUTPUTS))):
            engine = self.engines[part]
            present = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
            for name in names:
                if name not in present:  # e.g. memory/valid of a network without the temporal module
                    continue
                if part == "denoise" and name == "feat":
                    bufs[part][name] = bufs["encode"]["feat"]
                    continue
                shape = (self.max_batch, *tuple(engine.get_tensor_shape(name))[1:])
                dtype = torch.float16 if engine.get_tensor_dtype(name) == trt.DataType.HALF else torch.float32
                bufs[part][name] = torch.zeros(shape, dtype=dtype, device=self.device)
        return bufs

    def _execute(self, part: str, batch: int) -> None:
        ctx, bufs = self.contexts[part], self.buffers[part]
        if self._shapes.get(part) != batch:  # shape change: rebind views of the same buffers
            for name in (n for n in (ENCODE_INPUTS if part == "encode" else DENOISE_INPUTS) if n in bufs):
                ctx.set_input_shape(name, tuple(bufs[name][:batch].shape))
            for name, buf in bufs.items():
                ctx.set_tensor_address(name, buf[:batch].data_ptr())
            self._shapes[part] = batch
        if not self.cuda_graphs:
            ctx.execute_async_v3(self.stream.cuda_stream)
            return
        key = (part, batch)
        if key not in self._graphs:
            ctx.execute_async_v3(self.stream.cuda_stream)  # TRT's docs: run once before capture
            self.stream.synchronize()
            graph = self.torch.cuda.CUDAGraph()
            with self.torch.cuda.graph(graph, stream=self.stream):
                ctx.execute_async_v3(self.stream.cuda_stream)
            self._graphs[key] = graph
        self._graphs[key].replay()

    def _run(self, part: str, names: tuple[str, ...], inputs: tuple[Any, ...]) -> int:
        batch = int(inputs[0].shape[0])
        if batch > self.max_batch:
            raise ValueError(f"batch {batch} exceeds this engine's max_batch={self.max_batch}")
        cur = self.torch.cuda.current_stream(self.device)
        self.stream.wait_stream(cur)
        with self.torch.cuda.stream(self.stream):
            for name, x in zip(names, inputs):
                if name not in self.buffers[part]:
                    continue
                dst = self.buffers[part][name][:batch]
                src = self.from_numpy(x)
                if src.data_ptr() != dst.data_ptr():
                    dst.copy_(src.reshape(dst.shape))
            self._execute(part, batch)
        cur.wait_stream(self.stream)
        return batch

    def encode(self, image: np.ndarray, memory: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        b = self._run("encode", ENCODE_INPUTS, (image, memory, valid))
        return {k: self.buffers["encode"][k][:b] for k in ENCODE_OUTPUTS}

    def denoise(self, feat: Any, noisy_mask: Any, t: np.ndarray) -> Any:
        b = self._run("denoise", DENOISE_INPUTS, (feat, noisy_mask, np.asarray(t, np.float32).reshape(-1)))
        return self.buffers["denoise"]["logits"][:b]

    def from_numpy(self, x: Any) -> Any:
        if isinstance(x, self.torch.Tensor):
            return x.to(self.device, self.torch.float32)
        return self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().float().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)
