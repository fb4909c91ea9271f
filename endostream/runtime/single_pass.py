"""Backends for a single-pass segmentation graph (a user's ONNX model, or the shipped network's
K=0 pass exported by ``endostream export single_pass=true``): one call per frame, image in,
mask out. No torch import on the ONNX Runtime path.

- ONNX Runtime: CPU, or the CUDA / TensorRT execution providers on a GPU, with the same provider
  order, thread and spinning rules as the shipped model's backend (runtime/ort_backend.py).
- TensorRT: an engine built from the graph with the shipped backend's builder and engine cache
  (runtime/trt_backend.py), device memory through cuda-python, both imported lazily. Written
  against TensorRT 10/11's and cuda-python's documented APIs and tested against a stand-in of them
  (tests/tensorrt_standin.py); **it has not run on a real TensorRT** (no machine available to this
  project has TensorRT).

Each backend's ``run`` takes the prepared input batch (numpy, the contract's layout) and returns
the graph's output for it as numpy float32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from endostream.runtime.cuda_memory import CudaMemory
from endostream.runtime.graph_contract import GraphSpec

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")
OPTIONS = {"onnxruntime": {"max_batch", "spin"},
           "tensorrt": {"precision", "max_batch", "opt_batch", "engine_cache"}}


def _batches(x: np.ndarray, fixed: int | None) -> list[np.ndarray]:
    """A graph with a fixed batch of 1 runs a batch one frame at a time."""
    return [x] if fixed is None or x.shape[0] == fixed else [x[i:i + 1] for i in range(x.shape[0])]


class OrtSinglePass:
    """One ONNX Runtime session on the graph."""

    def __init__(self, spec: GraphSpec, *, threads: int = 2, device: str = "cpu", max_batch: int = 1,
                 spin: bool = True) -> None:
        from endostream.runtime.ort_backend import (CPU_EP, SHORT_NAMES, TRT_EP, available_providers, ort,
                                                    provider_options, provider_order, session_options)

        if ort is None:
            raise RuntimeError("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)")
        c = spec.contract
        order = provider_order(available_providers(), device)
        device_id = int(device.split(":")[1]) if ":" in device else 0
        shapes = {c.input: spec.input_dims("batch")} if TRT_EP in order else None
        opts = provider_options(order, device_id, shapes, (c.input,) if shapes else (), int(max_batch))
        # One session runs per frame, nothing beside it: its threads may spin between operators
        # (ort_backend.session_options says what that measured for the shipped K=0 pass).
        self.session = ort.InferenceSession(str(c.path), session_options(threads, spin=bool(spin)), providers=opts)
        self.providers = list(self.session.get_providers())
        if self.providers[0] != order[0]:
            log.warning("onnxruntime: %s did not start, running on %s", order[0], self.providers)
        first = SHORT_NAMES.get(self.providers[0], self.providers[0])
        self.name = "onnxruntime" if self.providers[0] == CPU_EP else f"onnxruntime-{first}"
        self.spec, self.device, self.threads = spec, device, int(threads)
        self.max_batch = 1 if spec.batch == 1 else int(max_batch)
        self._dtype = np.float16 if spec.input_type == "float16" else np.float32

    def run(self, x: np.ndarray) -> np.ndarray:
        c = self.spec.contract
        outs = [self.session.run([c.output], {c.input: np.ascontiguousarray(part, self._dtype)})[0]
                for part in _batches(x, self.spec.batch)]
        return np.asarray(outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0), np.float32)


def fixed_size_graph(spec: GraphSpec, root: Path) -> Path:
    """A copy of the graph with its dynamic height/width written as the contract's size (TensorRT's
    profile fixes every dim but the batch), cached by the graph's sha256 and the size."""
    import onnx

    from endostream.fileutil import atomic_write_bytes, file_sha256

    c = spec.contract
    if spec.input_shape_fixed:
        return Path(c.path)
    f = root / f"{Path(c.path).stem}-{file_sha256(c.path)[:16]}-{spec.height}x{spec.width}.onnx"
    if not f.is_file():
        model = onnx.load(str(c.path))
        vi = next(v for v in model.graph.input if v.name == c.input)
        for d, want in zip(vi.type.tensor_type.shape.dim, spec.input_dims(0)):
            if want and not (d.HasField("dim_value") and d.dim_value > 0):
                d.dim_value = int(want)
        # The output's symbolic height/width follow from the fixed input: let shape inference
        # write them (the batch stays symbolic).
        for out in model.graph.output:
            for d in list(out.type.tensor_type.shape.dim)[1:]:
                if not d.dim_value:
                    d.Clear()
        model = onnx.shape_inference.infer_shapes(model)
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(f, model.SerializeToString())
    return f


class TrtSinglePass(CudaMemory):
    """A TensorRT engine of the graph (one profile over batch 1..max_batch; larger batches run in
    chunks), device buffers allocated once through cuda-python, as the shipped model's TensorRT
    backend holds them. Tested against the stand-in of TensorRT's and cuda-python's APIs
    (tests/tensorrt_standin.py); not run on a real TensorRT (module docstring)."""

    def __init__(self, spec: GraphSpec, *, device: str = "cuda", precision: str = "fp16", max_batch: int = 1,
                 opt_batch: int | None = None, engine_cache: str | Path | None = None) -> None:
        from endostream.fileutil import file_sha256
        from endostream.runtime.artifacts import cache_dir
        from endostream.runtime.trt_backend import ensure_engine, import_cudart, import_tensorrt

        trt = import_tensorrt()
        cudart = import_cudart()
        self.trt, self.cudart, self.spec = trt, cudart, spec
        self._allocations: list[int] = []
        _, props, gpu = self._select_gpu(device)
        self.max_batch = 1 if spec.batch == 1 else int(max_batch)
        root = Path(engine_cache) if engine_cache else cache_dir() / "trt"
        graph = fixed_size_graph(spec, root / "graphs")
        f = ensure_engine(trt, graph, file_sha256(graph), gpu, (int(props.major), int(props.minor)), precision,
                          self.max_batch, int(opt_batch) if opt_batch is not None else self.max_batch, root)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(f.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load the cached engine {f} (delete it to rebuild)")
        self.context = self.engine.create_execution_context()
        self.stream = self._check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        c = spec.contract
        self.buffers: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}
        for name in (c.input, c.output):
            item = tuple(int(d) for d in tuple(self.engine.get_tensor_shape(name))[1:])
            if any(d < 0 for d in item):
                raise RuntimeError(f"TensorRT engine tensor {name} has a dynamic dimension besides the batch {item}")
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            ptr = self._check(cudart.cudaMalloc(self.max_batch * int(np.prod(item)) * dtype.itemsize), "cudaMalloc")
            self._allocations.append(int(ptr))
            self.buffers[name] = (int(ptr), item, dtype)
        self._batch = 0
        self.name = f"tensorrt-{precision}"

    def _run(self, x: np.ndarray) -> np.ndarray:
        c, cudart = self.spec.contract, self.cudart
        b = int(x.shape[0])
        (iptr, iitem, idt), (optr, oitem, odt) = self.buffers[c.input], self.buffers[c.output]
        if self._batch != b:  # a new batch size: set the shape, (re)bind the buffers
            if not self.context.set_input_shape(c.input, (b, *iitem)):
                raise RuntimeError(f"TensorRT refused input shape {(b, *iitem)} for {c.input}")
            for name, ptr in ((c.input, iptr), (c.output, optr)):
                if not self.context.set_tensor_address(name, ptr):
                    raise RuntimeError(f"TensorRT refused the address of {name}")
            self._batch = b
        host_in = np.ascontiguousarray(x, idt)  # must outlive its asynchronous copy
        self._check(cudart.cudaMemcpyAsync(iptr, host_in.ctypes.data, host_in.nbytes,
                                           cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), "cudaMemcpyAsync")
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execution failed")
        return self._to_host(optr, (b, *oitem), odt)

    def run(self, x: np.ndarray) -> np.ndarray:
        outs = [self._run(x[i:i + self.max_batch]) for i in range(0, int(x.shape[0]), self.max_batch)]
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)



def create_single_pass(name: str, spec: GraphSpec, *, threads: int = 2, device: str = "cpu",
                       **options: Any) -> Any:
    """The backend ``name`` (auto | onnxruntime | tensorrt) for a checked graph. ``auto`` takes
    what the shipped model's ``auto`` takes on this machine when that can run a graph (TensorRT,
    ONNX Runtime on its GPU providers), else ONNX Runtime CPU."""
    if name == "auto":
        from endostream.runtime.registry import auto_backend

        name, device = auto_backend()
        if name not in OPTIONS:  # torch CUDA, or a CPU path of the shipped model only: the CPU session
            name, device = "onnxruntime", "cpu"
        options = {k: v for k, v in options.items() if k in OPTIONS[name]}
    if name not in OPTIONS:
        raise ValueError(f"backend {name!r} cannot run a single-pass graph; expected one of: {', '.join(BACKENDS)}")
    unknown = sorted(set(options) - OPTIONS[name])
    if unknown:
        raise ValueError(f"backend {name} takes no option {', '.join(unknown)} for a single-pass graph; "
                         f"it takes {', '.join(sorted(OPTIONS[name]))}")
    if name == "onnxruntime":
        return OrtSinglePass(spec, threads=threads, device=device, **options)
    return TrtSinglePass(spec, device=device, **options)
