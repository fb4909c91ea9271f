"""TensorRT backend (TensorRT 10 and 11 Python APIs): engines built from the exported ONNX graphs.

- The version decides how FP16 is asked for. TensorRT 11 has only strongly typed networks (its
  weak-typing builder flags ``BuilderFlag.FP16/INT8/BF16/...`` are gone): each tensor keeps the
  type the graph gives it, so FP16 comes from the FP16 export (``endostream export
  precision=fp16``: FP16 inside, float32 I/O). TensorRT 10 reads the FP32 graph and keeps the
  builder flag ``BuilderFlag.FP16``. FP32 clears TF32 on both, so FP32 means FP32.
- Engine cache keyed by GPU model + compute capability, TensorRT version, graph sha256,
  precision and batch profile; a timing cache per GPU + TensorRT version makes rebuilds fast. An
  engine or timing cache of another TensorRT version is never loaded.
- One optimisation profile per engine over batch 1..``max_batch`` (kernels tuned at
  ``opt_batch``, default ``max_batch``): cross-stream batching sends any batch in that range.
- Device buffers allocated once for ``max_batch`` (torch CUDA tensors) and reused; the
  denoiser's ``feat`` input is bound to the encoder's ``feat`` output, so it is never copied.
- Optional CUDA-graph capture of each execute (per kind and batch size).
``import tensorrt`` happens here only, when the backend is built. The build logic is unit-tested
against fakes of both APIs (tests/test_trt_build.py); it has not run on a real TensorRT.
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

NOT_INSTALLED = ("TensorRT is not installed (python module 'tensorrt'): install TensorRT 10 or 11 from NVIDIA, "
                 "or use backend=onnxruntime or backend=torch")
PRECISIONS = ("fp16", "fp32")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError(NOT_INSTALLED) from exc
    trt_major(trt)  # an unsupported version fails here, before any graph is exported or built
    return trt


def trt_major(trt: Any) -> int:
    """The TensorRT major version (10 or 11); anything else is refused with one line."""
    version = str(getattr(trt, "__version__", "?"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = -1
    if major not in (10, 11):
        raise RuntimeError(f"TensorRT {version} is not supported: this backend is written for TensorRT 10 and 11")
    return major


def graph_precision(trt: Any, precision: str) -> str:
    """Which exported graph an engine of ``precision`` is built from: TensorRT 11 (strongly typed)
    takes FP16 from the FP16 graph; TensorRT 10 reads the FP32 graph and sets BuilderFlag.FP16."""
    if precision not in PRECISIONS:
        raise ValueError(f"tensorrt precision must be fp16 or fp32, got {precision!r}")
    return precision if trt_major(trt) >= 11 else "fp32"


def engine_key(gpu: str, capability: tuple[int, int], trt_version: str, graph_sha256: str,
               precision: str, max_batch: int, opt_batch: int | None = None) -> str:
    """Everything an engine depends on; a change in any of them means a rebuild."""
    blob = json.dumps([gpu, list(capability), trt_version, graph_sha256, precision, int(max_batch),
                       int(opt_batch if opt_batch is not None else max_batch)])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def timing_cache_path(root: Path, gpu: str, capability: tuple[int, int], trt_version: str) -> Path:
    """One timing cache per GPU + TensorRT version (TensorRT rejects another version's cache)."""
    tag = hashlib.sha256(f"{gpu}{tuple(capability)}{trt_version}".encode()).hexdigest()[:16]
    return root / f"timing-trt{trt_version}-{tag}.cache"


def build_engine(trt: Any, onnx_path: Path, precision: str, max_batch: int, opt_batch: int,
                 timing_cache: Path, workspace_bytes: int = 2 << 30) -> bytes:
    """Parse the ONNX graph and build a serialized engine with one profile over batch 1..max_batch.

    ``onnx_path`` must be the graph ``graph_precision`` names: on TensorRT 11 the network is
    strongly typed and its types come from the graph alone."""
    if not 1 <= int(opt_batch) <= int(max_batch):
        raise ValueError(f"need 1 <= opt_batch <= max_batch, got opt_batch={opt_batch} max_batch={max_batch}")
    major = trt_major(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # 10: no flag = weakly typed, explicit batch (the only mode since 10.0), FP16 by the flag below.
    # 11: every network is strongly typed; its STRONGLY_TYPED flag is deprecated and ignored, and
    # EXPLICIT_BATCH is gone, so no flag is passed either.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # TF32 is on by default in both versions
    elif major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        rest = tuple(inp.shape)[1:]
        profile.set_shape(inp.name, (1, *rest), (int(opt_batch), *rest), (int(max_batch), *rest))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    timing_cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


def ensure_engine(trt: Any, onnx_path: Path, graph_sha256: str, gpu: str, capability: tuple[int, int],
                  precision: str, max_batch: int, opt_batch: int, root: Path) -> Path:
    """The cached engine file for these inputs, built first if absent. Returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    key = engine_key(gpu, capability, trt.__version__, graph_sha256, precision, max_batch, opt_batch)
    f = root / f"{onnx_path.stem}-trt{trt.__version__}-{key}.engine"
    if not f.is_file():
        timing = timing_cache_path(root, gpu, capability, trt.__version__)
        atomic_write_bytes(f, build_engine(trt, onnx_path, precision, max_batch, opt_batch, timing))
    return f


class TensorRTBackend:
    def __init__(self, encode_path: str | Path, denoise_path: str | Path, sidecar: dict[str, Any], *,
                 device: str = "cuda", precision: str = "fp16", cuda_graphs: bool = True, max_batch: int = 1,
                 opt_batch: int | None = None, engine_cache: str | Path | None = None) -> None:
        trt = import_tensorrt()
        want = graph_precision(trt, precision)
        if sidecar.get("precision", "fp32") != want:
            raise ValueError(f"TensorRT {trt.__version__} {precision} engines are built from the {want} graphs, "
                             f"got {sidecar.get('precision', 'fp32')} graphs")
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("backend=tensorrt needs a CUDA GPU, and torch sees none")

        self.torch, self.trt = torch, trt
        self.device = torch.device(device if device.startswith("cuda") else "cuda")
        torch.cuda.set_device(self.device)
        self.config = dict(sidecar["config"])
        self.precision, self.cuda_graphs, self.max_batch = precision, bool(cuda_graphs), int(max_batch)
        self.opt_batch = int(opt_batch) if opt_batch is not None else self.max_batch
        self.name = f"tensorrt-{precision}" + ("-graphs" if cuda_graphs else "")
        gpu = torch.cuda.get_device_name(self.device)
        cap = tuple(torch.cuda.get_device_capability(self.device))
        root = Path(engine_cache) if engine_cache else cache_dir() / "trt"
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines: dict[str, Any] = {}
        self.engine_files: dict[str, Path] = {}
        for part, path in (("encode", Path(encode_path)), ("denoise", Path(denoise_path))):
            f = ensure_engine(trt, path, sidecar["onnx"][part]["sha256"], gpu, cap, precision, self.max_batch,
                              self.opt_batch, root)
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
