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
- Device memory through the CUDA runtime bindings of cuda-python (``cudaMalloc``,
  ``cudaMemcpyAsync``, streams and graphs, as NVIDIA's TensorRT Python samples do), allocated
  once for ``max_batch`` and reused; the denoiser's ``feat`` input is bound to the encoder's
  ``feat`` output, so between an encode and its denoise steps it never leaves the GPU. Other
  outputs come back as numpy (a few small arrays per call; the sampler's arithmetic runs on host).
- A batch larger than the profile's ``max_batch`` runs in chunks (the uncertainty pass sends S
  noise samples of one frame in one call).
- Optional CUDA-graph capture of each execute (per kind and batch size).
``import tensorrt`` and the CUDA bindings happen here only, when the backend is built. Tested
without a GPU against a stand-in of both documented APIs that computes with ONNX Runtime on
host memory (tests/tensorrt_standin.py); it has not run on a real TensorRT.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from endostream.fileutil import atomic_write_bytes
from endostream.runtime.artifacts import ENCODE_OUTPUTS, cache_dir
from endostream.runtime.cuda_memory import CudaMemory

NOT_INSTALLED = ("TensorRT is not installed (python module 'tensorrt'): install TensorRT 10 or 11 from NVIDIA, "
                 "or use backend=onnxruntime or backend=torch")
PRECISIONS = ("fp16", "fp32")
NO_CUDA_BINDINGS = ("the CUDA runtime bindings are not installed (python module 'cuda', package cuda-python): "
                    "pip install cuda-python, or use backend=onnxruntime or backend=torch")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeError(NOT_INSTALLED) from exc
    trt_major(trt)  # an unsupported version fails here, before any graph is exported or built
    return trt


def import_cudart() -> Any:
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` (cuda-python >= 12.6), else the
    older ``cuda.cudart`` name of the same module."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise RuntimeError(NO_CUDA_BINDINGS) from exc
    return cudart


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


class DeviceTensor:
    """An output left on the GPU (the encoder's ``feat``): ``denoise`` takes it without a copy,
    ``to_numpy`` copies it home. Valid until the next ``encode``."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.ptr, self.shape, self.dtype = int(ptr), tuple(shape), np.dtype(dtype)


class TensorRTBackend(CudaMemory):
    def __init__(self, encode_path: str | Path, denoise_path: str | Path, sidecar: dict[str, Any], *,
                 device: str = "cuda", precision: str = "fp16", cuda_graphs: bool = True, max_batch: int = 1,
                 opt_batch: int | None = None, engine_cache: str | Path | None = None) -> None:
        trt = import_tensorrt()
        want = graph_precision(trt, precision)
        if sidecar.get("precision", "fp32") != want:
            raise ValueError(f"TensorRT {trt.__version__} {precision} engines are built from the {want} graphs, "
                             f"got {sidecar.get('precision', 'fp32')} graphs")
        cudart = import_cudart()
        self.trt, self.cudart = trt, cudart
        _, props, gpu = self._select_gpu(device)
        cap = (int(props.major), int(props.minor))

        self.config = dict(sidecar["config"])
        self.precision, self.cuda_graphs, self.max_batch = precision, bool(cuda_graphs), int(max_batch)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.opt_batch = int(opt_batch) if opt_batch is not None else self.max_batch
        self.name = f"tensorrt-{precision}" + ("-graphs" if cuda_graphs else "")
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
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._allocations: list[int] = []
        self.buffers = self._allocate()
        self._shapes: dict[str, int] = {}
        self._graphs: dict[tuple[str, int], Any] = {}

    def _allocate(self) -> dict[str, dict[str, tuple[int, tuple[int, ...], np.dtype]]]:
        """Max-batch device buffers (pointer, per-item shape, dtype), allocated once; denoise's
        ``feat`` aliases encode's ``feat``. Shapes and dtypes come from the engines."""
        bufs: dict[str, dict[str, tuple[int, tuple[int, ...], np.dtype]]] = {"encode": {}, "denoise": {}}
        for part in ("encode", "denoise"):
            engine = self.engines[part]
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                if part == "denoise" and name == "feat":
                    bufs[part][name] = bufs["encode"]["feat"]
                    continue
                item = tuple(int(d) for d in tuple(engine.get_tensor_shape(name))[1:])
                if any(d < 0 for d in item):
                    raise RuntimeError(f"TensorRT engine tensor {name} has a dynamic dimension besides the batch")
                dtype = np.dtype(self.trt.nptype(engine.get_tensor_dtype(name)))
                ptr = self._check(self.cudart.cudaMalloc(self.max_batch * int(np.prod(item)) * dtype.itemsize),
                                  "cudaMalloc")
                self._allocations.append(int(ptr))
                bufs[part][name] = (int(ptr), item, dtype)
        return bufs

    def _execute(self, part: str, batch: int) -> None:
        ctx, bufs, engine = self.contexts[part], self.buffers[part], self.engines[part]
        if self._shapes.get(part) != batch:  # a new batch size: set shapes, (re)bind the buffers
            for name, (ptr, item, _) in bufs.items():
                if engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                    if not ctx.set_input_shape(name, (batch, *item)):
                        raise RuntimeError(f"TensorRT refused input shape {(batch, *item)} for {name}")
                if not ctx.set_tensor_address(name, ptr):
                    raise RuntimeError(f"TensorRT refused the address of {name}")
            self._shapes[part] = batch
        stream = int(self.stream)
        if not self.cuda_graphs:
            if not ctx.execute_async_v3(stream):
                raise RuntimeError(f"TensorRT {part} execution failed")
            return
        key = (part, batch)
        if key not in self._graphs:
            # TensorRT's docs: run once before capture, so deferred shape work is not captured.
            if not ctx.execute_async_v3(stream):
                raise RuntimeError(f"TensorRT {part} execution failed")
            self._check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            cudart = self.cudart
            self._check(cudart.cudaStreamBeginCapture(self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
                        "cudaStreamBeginCapture")
            ok = ctx.execute_async_v3(stream)
            graph = self._check(cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
            if not ok:
                raise RuntimeError(f"TensorRT {part} execution failed during CUDA-graph capture")
            self._graphs[key] = self._check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._check(self.cudart.cudaGraphLaunch(self._graphs[key], self.stream), "cudaGraphLaunch")

    def _run(self, part: str, given: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """One engine call on a batch of at most ``max_batch``: copy the inputs in, execute,
        copy the outputs out (those in ``keep`` stay on the GPU as ``DeviceTensor``)."""
        cudart, bufs, engine = self.cudart, self.buffers[part], self.engines[part]
        batch = int(next(iter(given.values())).shape[0])
        hold = []  # host arrays must outlive their asynchronous copies
        for name, x in given.items():
            if name not in bufs:
                continue  # e.g. memory/valid of a network without the temporal module
            ptr, item, dtype = bufs[name]
            if isinstance(x, DeviceTensor):
                if x.ptr != ptr or x.shape != (batch, *item):
                    raise ValueError(f"{name}: a GPU tensor from another buffer or batch")
                continue
            host = np.ascontiguousarray(np.asarray(x, dtype).reshape(batch, *item))
            hold.append(host)
            self._check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes,
                                               cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream),
                        "cudaMemcpyAsync")
        self._execute(part, batch)
        out: dict[str, Any] = {}
        for name, (ptr, item, dtype) in bufs.items():
            if engine.get_tensor_mode(name) != self.trt.TensorIOMode.OUTPUT:
                continue
            if name in keep:
                out[name] = DeviceTensor(ptr, (batch, *item), dtype)
                continue
            host = np.empty((batch, *item), dtype)
            self._check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes,
                                               cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream),
                        "cudaMemcpyAsync")
            out[name] = host
        self._check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return {k: (v if isinstance(v, DeviceTensor) else v.astype(np.float32, copy=False)) for k, v in out.items()}

    def _chunked(self, part: str, given: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """``_run`` over any batch: the profile's ``max_batch`` at a time, outputs concatenated
        on the host (only a single chunk may leave an output on the GPU)."""
        batch = int(next(iter(given.values())).shape[0])
        if batch <= self.max_batch:
            return self._run(part, given, keep)
        given = {k: self.to_numpy(v) for k, v in given.items()}
        parts = [self._run(part, {k: v[i:i + self.max_batch] for k, v in given.items()})
                 for i in range(0, batch, self.max_batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def encode(self, image: np.ndarray, memory: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
        out = self._chunked("encode", {"image": image, "memory": memory, "valid": valid}, keep=("feat",))
        return {k: out[k] for k in ENCODE_OUTPUTS}

    def denoise(self, feat: Any, noisy_mask: Any, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, np.float32).reshape(-1)
        return self._chunked("denoise", {"feat": feat, "noisy_mask": noisy_mask, "t": t})["logits"]

    def from_numpy(self, x: Any) -> Any:
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        if not isinstance(x, DeviceTensor):
            return np.asarray(x)
        return self._to_host(x.ptr, x.shape, x.dtype)

