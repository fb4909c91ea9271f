"""A stand-in for TensorRT's Python API (10 and 11) and cuda-python's CUDA runtime bindings, for
testing ``endostream/runtime/trt_backend.py`` on a machine without a GPU or TensorRT.

This is a test double of two external libraries, written to their documentation, not to our
backend: the calls, argument orders and return conventions are theirs (TensorRT reports errors
through its logger and a False/None return, never an exception; every ``cudart`` call returns
``(cudaError_t, *values)``). It really computes: the "engine" is the ONNX graph it was built
from and ``execute_async_v3`` runs it with ONNX Runtime on host memory standing in for device
memory, so allocation sizes, bindings, batch limits of the optimisation profile, copies in and
out, stream ordering and CUDA-graph capture/replay are exercised and their numbers compared with
the ONNX Runtime backend. What it checks, as the real libraries do:
- TensorRT 10 vs 11 builder API (11 lacks ``BuilderFlag.FP16/INT8/BF16/...``, ``EXPLICIT_BATCH``,
  ``ICudaEngine.device_memory_size``; every 11 network is strongly typed; a TensorRT 10 strongly
  typed build with a precision flag fails), dynamic inputs need a profile, profile min<=opt<=max;
- ``set_input_shape`` outside the profile returns False; ``execute_async_v3`` without every input
  shape and every address set returns False; addresses must be 256-byte aligned;
- device memory: ``cudaMalloc`` returns 256-byte aligned blocks; a copy or a kernel touching
  bytes outside an allocation is an illegal address (sticky error); a host-to-device copy whose
  destination is not device memory (or the reverse) is an invalid value;
- streams run their work in order when synchronised (reading a host buffer before
  ``cudaStreamSynchronize`` sees stale data, as it may on a GPU); during stream capture work is
  recorded, not run, and a pageable host copy is not allowed; a graph launch replays the
  recorded work with the addresses and shapes it was captured with.
Not modelled: FP16 kernels (an FP16 engine computes with the graph's own precision), timing,
multiple devices, events.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

ALIGN = 256  # cudaMalloc's alignment (the CUDA programming guide: at least 256 bytes)


class CudaError(enum.IntEnum):
    """The cudaError_t values this stand-in returns (numbers as in CUDA's driver_types.h)."""
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


class MemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class CaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class _Handle:
    """cudaStream_t / cudaGraph_t / cudaGraphExec_t: opaque, ``int()`` gives the handle."""

    _next = 0x1000

    def __init__(self) -> None:
        _Handle._next += 16
        self.handle = _Handle._next

    def __int__(self) -> int:
        return self.handle


class _Stream(_Handle):
    def __init__(self) -> None:
        super().__init__()
        self.queue: list[Callable[[], None]] = []
        self.capture: list[Callable[[], None]] | None = None


class _Graph(_Handle):
    def __init__(self, work: list[Callable[[], None]]) -> None:
        super().__init__()
        self.work = list(work)


class _Props:
    """The fields of cudaDeviceProp the backend reads."""

    def __init__(self) -> None:
        self.name = b"Stand-in GPU (ONNX Runtime on host)" + b"\0" * 8
        self.major, self.minor = 9, 0


class CudaStandIn:
    """One "GPU" and a module shaped like ``cuda.bindings.runtime`` (``self.cudart``) over it.
    ``stats`` counts what ran: mallocs, frees, copies, kernels, graph captures and launches."""

    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.allocations: dict[int, np.ndarray] = {}  # aligned address -> its backing bytes
        self.streams: dict[int, _Stream] = {}
        self.sticky: CudaError | None = None
        self.stats = {k: 0 for k in ("malloc", "free", "h2d", "d2h", "kernels", "captures", "launches", "syncs")}
        self.cudart = self._module()

    # -- device memory
    def _block(self, ptr: int, nbytes: int) -> np.ndarray | None:
        """The bytes [ptr, ptr + nbytes) inside one allocation, or None."""
        for base, buf in self.allocations.items():
            if base <= ptr and ptr + nbytes <= base + buf.nbytes:
                return buf[ptr - base:ptr - base + nbytes]
        return None

    def view(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """Device memory at ``ptr`` as an array (for the kernels); out of bounds is illegal."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        block = self._block(ptr, nbytes)
        if block is None:
            raise _Illegal(f"kernel access of {nbytes} bytes at {ptr:#x} is outside every allocation")
        return block.view(dtype).reshape(shape)

    def enqueue(self, stream_handle: int, work: Callable[[], None]) -> bool:
        stream = self.streams.get(int(stream_handle))
        if stream is None:
            raise ValueError(f"stand-in: {stream_handle:#x} is not a stream of this device")
        (stream.capture if stream.capture is not None else stream.queue).append(work)
        return True

    def _module(self) -> types.ModuleType:
        gpu = self
        m = types.ModuleType("cuda.bindings.runtime")
        m.cudaError_t, m.cudaMemcpyKind, m.cudaStreamCaptureMode = CudaError, MemcpyKind, CaptureMode
        ok = CudaError.cudaSuccess

        def fail(err: CudaError) -> tuple:
            return (err,)

        def cudaGetDeviceCount() -> tuple:
            return (ok, gpu.devices) if gpu.devices else (CudaError.cudaErrorNoDevice, 0)

        def cudaSetDevice(device: int) -> tuple:
            return (ok,) if 0 <= int(device) < gpu.devices else fail(CudaError.cudaErrorInvalidDevice)

        def cudaGetDeviceProperties(device: int) -> tuple:
            if not 0 <= int(device) < gpu.devices:
                return (CudaError.cudaErrorInvalidDevice, None)
            return (ok, _Props())

        def cudaMalloc(size: int) -> tuple:
            if int(size) <= 0:
                return (CudaError.cudaErrorInvalidValue, 0)
            raw = np.zeros(int(size) + ALIGN, np.uint8)
            offset = (-raw.ctypes.data) % ALIGN
            buf = raw[offset:offset + int(size)]
            gpu.allocations[buf.ctypes.data] = buf
            gpu.stats["malloc"] += 1
            return (ok, buf.ctypes.data)

        def cudaFree(ptr: int) -> tuple:
            if gpu.allocations.pop(int(ptr), None) is None:
                return fail(CudaError.cudaErrorInvalidValue)
            gpu.stats["free"] += 1
            return (ok,)

        def cudaStreamCreate() -> tuple:
            s = _Stream()
            gpu.streams[s.handle] = s
            return (ok, s)

        def cudaMemcpyAsync(dst: int, src: int, count: int, kind: MemcpyKind, stream: Any) -> tuple:
            dst, src, count, kind = int(dst), int(src), int(count), MemcpyKind(kind)
            s = gpu.streams.get(int(stream))
            if s is None:
                return fail(CudaError.cudaErrorInvalidResourceHandle)
            if kind == MemcpyKind.cudaMemcpyHostToDevice:
                if gpu._block(dst, count) is None or gpu._block(src, 1) is not None:
                    return fail(CudaError.cudaErrorInvalidValue)
            elif kind == MemcpyKind.cudaMemcpyDeviceToHost:
                if gpu._block(src, count) is None or gpu._block(dst, 1) is not None:
                    return fail(CudaError.cudaErrorInvalidValue)
            else:
                return fail(CudaError.cudaErrorInvalidValue)  # the backend needs only these two
            if s.capture is not None:  # pageable host memory cannot be captured
                s.capture = None
                return fail(CudaError.cudaErrorStreamCaptureUnsupported)
            key = "h2d" if kind == MemcpyKind.cudaMemcpyHostToDevice else "d2h"

            def copy() -> None:
                ctypes.memmove(dst, src, count)
                gpu.stats[key] += 1

            s.queue.append(copy)
            return (ok,)

        def cudaStreamSynchronize(stream: Any) -> tuple:
            s = gpu.streams.get(int(stream))
            if s is None:
                return fail(CudaError.cudaErrorInvalidResourceHandle)
            gpu.stats["syncs"] += 1
            work, s.queue = s.queue, []
            for w in work:
                if gpu.sticky is not None:
                    break
                try:
                    w()
                except _Illegal:
                    gpu.sticky = CudaError.cudaErrorIllegalAddress
            return (gpu.sticky,) if gpu.sticky is not None else (ok,)

        def cudaStreamBeginCapture(stream: Any, mode: CaptureMode) -> tuple:
            s = gpu.streams.get(int(stream))
            if s is None or s.capture is not None:
                return fail(CudaError.cudaErrorInvalidValue)
            CaptureMode(mode)
            s.capture = []
            return (ok,)

        def cudaStreamEndCapture(stream: Any) -> tuple:
            s = gpu.streams.get(int(stream))
            if s is None or s.capture is None:
                return (CudaError.cudaErrorStreamCaptureInvalidated, None)
            graph, s.capture = _Graph(s.capture), None
            gpu.stats["captures"] += 1
            return (ok, graph)

        def cudaGraphInstantiate(graph: _Graph, flags: int) -> tuple:
            if not isinstance(graph, _Graph):
                return (CudaError.cudaErrorInvalidValue, None)
            return (ok, _Graph(graph.work))

        def cudaGraphLaunch(graph_exec: _Graph, stream: Any) -> tuple:
            s = gpu.streams.get(int(stream))
            if s is None or not isinstance(graph_exec, _Graph):
                return fail(CudaError.cudaErrorInvalidValue)

            def launch() -> None:
                gpu.stats["launches"] += 1
                for w in graph_exec.work:
                    w()

            s.queue.append(launch)
            return (ok,)

        for f in (cudaGetDeviceCount, cudaSetDevice, cudaGetDeviceProperties, cudaMalloc, cudaFree, cudaStreamCreate,
                  cudaMemcpyAsync, cudaStreamSynchronize, cudaStreamBeginCapture, cudaStreamEndCapture,
                  cudaGraphInstantiate, cudaGraphLaunch):
            setattr(m, f.__name__, f)
        return m

    def install(self, monkeypatch: Any, version: str = "10.13.3.9") -> types.ModuleType:
        """Make ``import tensorrt`` and ``from cuda.bindings import runtime`` find the stand-ins
        (for one test, through pytest's ``monkeypatch``). Returns the tensorrt module."""
        trt = fake_tensorrt(version, self)
        cuda = types.ModuleType("cuda")
        cuda.__spec__ = importlib.machinery.ModuleSpec("cuda", None, is_package=True)
        cuda.__path__ = []
        bindings = types.ModuleType("cuda.bindings")
        bindings.__spec__ = importlib.machinery.ModuleSpec("cuda.bindings", None, is_package=True)
        bindings.__path__ = []
        bindings.runtime = self.cudart
        cuda.bindings = bindings
        for name, mod in (("tensorrt", trt), ("cuda", cuda), ("cuda.bindings", bindings),
                          ("cuda.bindings.runtime", self.cudart)):
            monkeypatch.setitem(sys.modules, name, mod)
        return trt


class _Illegal(Exception):
    """An out-of-bounds device access inside queued work (becomes cudaErrorIllegalAddress)."""


def read_plan(data: bytes) -> dict:
    """The JSON header of a stand-in engine plan (what the build recorded)."""
    return json.loads(bytes(data).partition(b"\n")[0])


# BuilderFlag values as in the TensorRT 10 and 11 headers (11 dropped the weak-typing flags).
FLAGS_10 = {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5,
            "TF32": 6, "SPARSE_WEIGHTS": 7, "SAFETY_SCOPE": 8, "OBEY_PRECISION_CONSTRAINTS": 9,
            "PREFER_PRECISION_CONSTRAINTS": 10, "DIRECT_IO": 11, "REJECT_EMPTY_ALGORITHMS": 12,
            "VERSION_COMPATIBLE": 13, "EXCLUDE_LEAN_RUNTIME": 14, "FP8": 15, "ERROR_ON_TIMING_CACHE_MISS": 16,
            "BF16": 17, "DISABLE_COMPILATION_CACHE": 18, "STRIP_PLAN": 19, "REFIT_IDENTICAL": 20,
            "WEIGHT_STREAMING": 21, "INT4": 22, "REFIT_INDIVIDUAL": 23, "STRICT_NANS": 24, "MONITOR_MEMORY": 25,
            "FP4": 26, "EDITABLE_TIMING_CACHE": 27, "DISTRIBUTIVE_INDEPENDENCE": 28}
FLAGS_11 = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "DISABLE_TIMING_CACHE": 5, "TF32": 6, "SPARSE_WEIGHTS": 7,
            "SAFETY_SCOPE": 8, "DIRECT_IO": 11, "VERSION_COMPATIBLE": 12, "EXCLUDE_LEAN_RUNTIME": 13,
            "ERROR_ON_TIMING_CACHE_MISS": 15, "DISABLE_COMPILATION_CACHE": 17, "STRIP_PLAN": 18,
            "REFIT_IDENTICAL": 19, "WEIGHT_STREAMING": 20, "REFIT_INDIVIDUAL": 22, "STRICT_NANS": 23,
            "MONITOR_MEMORY": 24, "EDITABLE_TIMING_CACHE": 26, "DISTRIBUTIVE_INDEPENDENCE": 27,
            "REQUIRE_USER_ALLOCATION": 28}
PRECISION_FLAGS = ("FP16", "INT8", "BF16", "FP8", "INT4", "FP4")
ONNX_TO_TRT = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF"}


def fake_tensorrt(version: str, gpu: "CudaStandIn | None" = None) -> types.ModuleType:
    """A module shaped like ``tensorrt`` ``version`` (10.x or 11.x): the build calls, and the
    run-time calls on ``gpu`` (a ``CudaStandIn``, whose streams ``execute_async_v3`` runs on)."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # importlib.util.find_spec works
    trt.__version__ = version
    trt.builds = []  # every build_serialized_network call, for the tests
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", FLAGS_10 if major == 10 else FLAGS_11)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major == 10
        else {"STRONGLY_TYPED": 0})  # 11: deprecated and ignored, always strongly typed
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4})
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    trt.errors = []  # what the Logger would print at ERROR severity (TensorRT returns False, no exception)

    def nptype(dtype: enum.IntEnum) -> type:
        """As tensorrt.nptype: the numpy type of a DataType."""
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                "BOOL": np.bool_}[trt.DataType(dtype).name]

    trt.nptype = nptype

    class Logger:
        WARNING, ERROR, INFO = 2, 1, 3

        def __init__(self, severity: int = 2) -> None:
            self.severity = severity

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: enum.IntEnum) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

    class Network:
        def __init__(self, flags: int) -> None:
            known = sum(1 << int(f) for f in trt.NetworkDefinitionCreationFlag)
            if flags & ~known:
                raise ValueError(f"unknown NetworkDefinitionCreationFlags {flags}")
            strong_bit = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            self.strongly_typed = major >= 11 or bool(flags & strong_bit)
            self.inputs: list[Tensor] = []
            self.outputs: list[Tensor] = []
            self.half_weights = False
            self.onnx = b""

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

        def parse(self, data: bytes) -> bool:
            try:
                model = onnx.load_from_string(data)
            except Exception as exc:  # noqa: BLE001 - TensorRT reports parse errors, never raises
                self.errors.append(f"ModelImporter: {exc}")
                return False

            def tensor(vi: onnx.ValueInfoProto) -> Tensor:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
                return Tensor(vi.name, dims, trt.DataType[ONNX_TO_TRT[vi.type.tensor_type.elem_type]])

            self.network.inputs = [tensor(v) for v in model.graph.input]
            self.network.outputs = [tensor(v) for v in model.graph.output]
            self.network.onnx = bytes(data)
            self.network.half_weights = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
            return True

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            if blob and json.loads(blob)["version"] != version:
                raise RuntimeError(f"timing cache from TensorRT {json.loads(blob)['version']}, this is {version}")
            self.blob = blob

        def serialize(self) -> bytes:
            return json.dumps({"version": version}).encode()

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:  # noqa: A002 - TensorRT's names
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags = {trt.BuilderFlag.TF32}  # on by default, as documented
            self.pools: dict[int, int] = {}
            self.profiles: list[Profile] = []
            self.cache: TimingCache | None = None

        def set_flag(self, flag: enum.IntEnum) -> None:
            self.flags.add(trt.BuilderFlag(flag))

        def clear_flag(self, flag: enum.IntEnum) -> None:
            self.flags.discard(trt.BuilderFlag(flag))

        def get_flag(self, flag: enum.IntEnum) -> bool:
            return trt.BuilderFlag(flag) in self.flags

        def set_memory_pool_limit(self, pool: enum.IntEnum, size: int) -> None:
            self.pools[int(trt.MemoryPoolType(pool))] = int(size)

        def create_timing_cache(self, blob: bytes) -> TimingCache:
            return TimingCache(bytes(blob))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            return Network(int(flags))

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
            """Checks what TensorRT checks before it builds; None (not an exception) on failure."""
            names = {f.name for f in config.flags}
            if network.strongly_typed and names & set(PRECISION_FLAGS):
                return None  # precision flags are not allowed on a strongly typed network
            for inp in network.inputs:
                if -1 not in inp.shape:
                    continue
                if not config.profiles or inp.name not in config.profiles[0].shapes:
                    return None  # a dynamic input without a profile
                for dims in config.profiles[0].shapes[inp.name]:
                    if len(dims) != len(inp.shape) or any(d != s for d, s in zip(dims, inp.shape) if s != -1):
                        return None
                lo, opt, hi = config.profiles[0].shapes[inp.name]
                if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
                    return None
            half = network.half_weights or "FP16" in names
            plan = {"version": version, "strongly_typed": network.strongly_typed, "flags": sorted(names),
                    "fp16_kernels": half, "profile": {k: [list(x) for x in v] for k, v in config.profiles[0].shapes.items()},
                    "io": {t.name: [list(t.shape), t.dtype.name] for t in (*network.inputs, *network.outputs)},
                    "inputs": [t.name for t in network.inputs]}
            trt.builds.append(plan)
            # The "plan": a JSON header line, then the graph the stand-in engine will run.
            return json.dumps(plan).encode() + b"\n" + network.onnx

    class Engine:
        """ICudaEngine: I/O tensors by name with their build-time shapes (-1 = dynamic), dtypes,
        modes and profile limits; computes by running the plan's graph with ONNX Runtime."""

        def __init__(self, plan: dict, graph: bytes) -> None:
            self.plan, self._names = plan, list(plan["io"])
            self.graph = graph
            self.num_optimization_profiles = 1
            self._session = None
            if major == 10:  # removed in 11 (with device_memory_size_v2)
                self.device_memory_size = 1 << 20

        @property
        def num_io_tensors(self) -> int:
            return len(self._names)

        def get_tensor_name(self, i: int) -> str:
            return self._names[i]

        def get_tensor_dtype(self, name: str) -> enum.IntEnum:
            return trt.DataType[self.plan["io"][name][1]]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return tuple(self.plan["io"][name][0])

        def get_tensor_mode(self, name: str) -> enum.IntEnum:
            if name not in self.plan["io"]:
                return trt.TensorIOMode.NONE
            return trt.TensorIOMode.INPUT if name in self.plan["inputs"] else trt.TensorIOMode.OUTPUT

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            return [tuple(d) for d in self.plan["profile"][name]]

        def create_execution_context(self) -> "Context":
            if gpu is None:
                raise RuntimeError("stand-in: no CudaStandIn given, this engine cannot run")
            return Context(self)

        def session(self) -> Any:
            if self._session is None:
                so = ort.SessionOptions()
                so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
                self._session = ort.InferenceSession(self.graph, so, providers=["CPUExecutionProvider"])
            return self._session

    class Context:
        """IExecutionContext: input shapes within the profile, one address per I/O tensor, and
        ``execute_async_v3`` enqueuing the engine's work on a stream (it runs when the stream does)."""

        def __init__(self, engine: Engine) -> None:
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def _error(self, msg: str) -> bool:
            trt.errors.append(msg)
            return False

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            e = self.engine
            if e.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                return self._error(f"setInputShape: {name} is not an input tensor")
            lo, _, hi = e.get_tensor_profile_shape(name, 0)
            shape = tuple(int(d) for d in shape)
            if len(shape) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
                return self._error(f"setInputShape: {name} {shape} is outside the profile {lo}..{hi}")
            self.shapes[name] = shape
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            """An input's set shape, or an output's shape at the current batch (-1 while unknown)."""
            if name in self.shapes:
                return self.shapes[name]
            dims = self.engine.get_tensor_shape(name)
            batches = {s[0] for s in self.shapes.values()}
            return (batches.pop(), *dims[1:]) if len(batches) == 1 else dims

        def set_tensor_address(self, name: str, address: int) -> bool:
            if name not in self.engine.plan["io"]:
                return self._error(f"setTensorAddress: no tensor {name}")
            if int(address) % 256:
                return self._error(f"setTensorAddress: {name} address is not 256-byte aligned")
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            e = self.engine
            for name in e.plan["io"]:
                if e.get_tensor_mode(name) == trt.TensorIOMode.INPUT and name not in self.shapes:
                    return self._error(f"enqueueV3: input shape of {name} not set")
                if name not in self.addresses:
                    return self._error(f"enqueueV3: address of {name} not set")
            # What the kernels see is fixed now (a captured graph replays these addresses).
            io = {n: (self.addresses[n], self.get_tensor_shape(n), e.get_tensor_dtype(n)) for n in e.plan["io"]}
            inputs = [n for n in e.plan["io"] if e.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            outputs = [n for n in e.plan["io"] if e.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

            def kernel() -> None:
                feeds = {n: gpu.view(io[n][0], io[n][1], nptype(io[n][2])).copy() for n in inputs}
                results = e.session().run(outputs, feeds)
                for n, r in zip(outputs, results):
                    dst = gpu.view(io[n][0], io[n][1], nptype(io[n][2]))
                    if r.shape != dst.shape:
                        raise RuntimeError(f"stand-in: {n} computed {r.shape}, bound as {dst.shape}")
                    dst[...] = r
                gpu.stats["kernels"] += 1

            return gpu.enqueue(int(stream_handle), kernel)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            header, _, graph = bytes(data).partition(b"\n")
            try:
                plan = json.loads(header)
            except ValueError:
                return None  # TensorRT logs a deserialization error and returns None
            return Engine(plan, graph) if plan.get("version") == version else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt
