"""TensorRT 10 and 11 build paths against fakes of the two Python APIs (no GPU, no TensorRT here).

The fakes mirror the documented API shape of each version, so a call the version lacks fails:
TensorRT 11 has no ``BuilderFlag.FP16/INT8/BF16/OBEY_PRECISION_CONSTRAINTS``, no
``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``, no ``ICudaEngine.device_memory_size``, and
every network is strongly typed; TensorRT 10 networks are weakly typed unless created with
``STRONGLY_TYPED``, and a strongly typed build with a precision flag fails. The parser reads the
real exported ONNX graphs (names, shapes, dtypes), and the builder checks the optimisation
profile against them, as TensorRT does. The real TensorRT path has not run on this machine.
"""

from __future__ import annotations

import enum
import json
import shutil
import sys
import types
from pathlib import Path

import onnx
import pytest

from endostream.runtime import trt_backend
from endostream.runtime.artifacts import check_artifacts, graph_paths

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"
# The shipped network's input size and its stride-4 grid (shapes below follow the weights).
S = json.loads((ROOT / "weights" / "polyp.json").read_text())["config"]["input_size"]
G = S // 4

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


def fake_tensorrt(version: str) -> types.ModuleType:
    """A module shaped like ``tensorrt`` ``version`` (10.x or 11.x) for the calls the build makes."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []  # every build_serialized_network call, for the tests
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", FLAGS_10 if major == 10 else FLAGS_11)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if major == 10
        else {"STRONGLY_TYPED": 0})  # 11: deprecated and ignored, always strongly typed
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
    trt.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4})

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
                    "io": {t.name: [list(t.shape), t.dtype.name] for t in (*network.inputs, *network.outputs)}}
            trt.builds.append(plan)
            return json.dumps(plan).encode()

    class Engine:
        def __init__(self, plan: dict) -> None:
            self.plan, self._names = plan, list(plan["io"])
            if major == 10:  # removed in 11 (with device_memory_size_v2)
                self.device_memory_size = 1 << 20

        @property
        def num_io_tensors(self) -> int:
            return len(self._names)

        def get_tensor_name(self, i: int) -> str:
            return self._names[i]

        def get_tensor_dtype(self, name: str) -> enum.IntEnum:
            return trt.DataType[self.plan["io"][name][1]]

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            plan = json.loads(data)
            return Engine(plan) if plan.get("version") == version else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """The shipped FP32 graphs and an FP16 export of the shipped weights (a copy, in tmp)."""
    from endostream.runtime.export import export_onnx

    d = tmp_path_factory.mktemp("fp16")
    w = d / WEIGHTS.name
    shutil.copy(WEIGHTS, w)
    export_onnx(w, d, precision="fp16")
    return {"fp32": graph_paths(WEIGHTS), "fp16": graph_paths(w, precision="fp16"), "weights": {"pt": w}}


def _build(trt, graphs, precision: str, tmp_path: Path, part: str = "encode", max_batch: int = 8, opt: int = 4) -> dict:
    onnx_path = graphs[trt_backend.graph_precision(trt, precision)][part]
    plan = trt_backend.build_engine(trt, onnx_path, precision, max_batch, opt, tmp_path / "timing.cache")
    return json.loads(plan)


def test_trt10_fp16_reads_the_fp32_graph_and_sets_the_builder_flag(graphs, tmp_path) -> None:
    trt = fake_tensorrt("10.13.3.9")
    assert trt_backend.graph_precision(trt, "fp16") == "fp32"
    plan = _build(trt, graphs, "fp16", tmp_path)
    assert not plan["strongly_typed"] and "FP16" in plan["flags"] and plan["fp16_kernels"]
    assert plan["io"]["image"] == [[-1, 3, S, S], "FLOAT"]
    assert plan["profile"]["image"] == [[1, 3, S, S], [4, 3, S, S], [8, 3, S, S]]
    assert plan["profile"]["memory"][2] == [8, 2, 64, S // 16, S // 16] and plan["profile"]["valid"][0] == [1, 2]


def test_trt11_fp16_is_strongly_typed_from_the_fp16_graph(graphs, tmp_path) -> None:
    trt = fake_tensorrt("11.4.1.2")
    assert trt_backend.graph_precision(trt, "fp16") == "fp16"
    for part in ("encode", "denoise"):
        plan = _build(trt, graphs, "fp16", tmp_path, part)
        assert plan["strongly_typed"] and plan["fp16_kernels"], part  # FP16 from the graph's own types
        assert not set(plan["flags"]) & set(PRECISION_FLAGS)
        assert all(dtype == "FLOAT" for _, dtype in plan["io"].values()), "float32 I/O, casts inside"
    assert plan["profile"]["t"] == [[1], [4], [8]]


def test_fp32_clears_tf32_on_both_versions(graphs, tmp_path) -> None:
    for version in ("10.13.3.9", "11.4.1.2"):
        trt = fake_tensorrt(version)
        assert trt_backend.graph_precision(trt, "fp32") == "fp32"
        plan = _build(trt, graphs, "fp32", tmp_path / version, "denoise", max_batch=1, opt=1)
        assert "TF32" not in plan["flags"] and not plan["fp16_kernels"], version
        assert plan["profile"]["feat"] == [[1, 24, G, G]] * 3


def test_the_fakes_refuse_what_each_version_lacks(graphs, tmp_path) -> None:
    """The TensorRT 10 build recipe fails on 11's API, and a weak-typing flag on a strongly
    typed network fails on 10: the fakes can catch a wrong call."""
    trt11 = fake_tensorrt("11.0.0.11")
    for missing in (lambda: trt11.BuilderFlag.FP16, lambda: trt11.NetworkDefinitionCreationFlag.EXPLICIT_BATCH):
        with pytest.raises(AttributeError):
            missing()
    engine = trt11.Runtime(trt11.Logger()).deserialize_cuda_engine(
        trt_backend.build_engine(trt11, graphs["fp16"]["denoise"], "fp16", 2, 2, tmp_path / "t.cache"))
    assert not hasattr(engine, "device_memory_size")
    trt10 = fake_tensorrt("10.13.3.9")
    b = trt10.Builder(trt10.Logger())
    net = b.create_network(1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt10.OnnxParser(net, trt10.Logger()).parse(graphs["fp32"]["denoise"].read_bytes())
    cfg = b.create_builder_config()
    cfg.set_flag(trt10.BuilderFlag.FP16)
    assert b.build_serialized_network(net, cfg) is None


def test_bad_batch_range_and_unsupported_versions_are_refused(graphs, tmp_path) -> None:
    with pytest.raises(ValueError, match="opt_batch"):
        trt_backend.build_engine(fake_tensorrt("11.4.1.2"), graphs["fp16"]["encode"], "fp16", 4, 8, tmp_path / "c")
    with pytest.raises(RuntimeError, match="TensorRT 8.6.1 is not supported"):
        trt_backend.graph_precision(fake_tensorrt("8.6.1"), "fp16")
    with pytest.raises(ValueError, match="fp16 or fp32"):
        trt_backend.graph_precision(fake_tensorrt("10.13.3.9"), "int8")


def test_engine_and_timing_caches_are_keyed_by_tensorrt_version(graphs, tmp_path) -> None:
    """Both versions build into one cache folder: each gets its own engine and timing cache (the
    fake, like TensorRT, rejects another version's timing cache), and a second call reuses the file."""
    files = {}
    for version in ("10.13.3.9", "11.4.1.2", "10.13.3.9"):
        trt = fake_tensorrt(version)
        prec = trt_backend.graph_precision(trt, "fp16")
        f = trt_backend.ensure_engine(trt, graphs[prec]["encode"], "sha-" + prec, "NVIDIA H200", (9, 0), "fp16",
                                      16, 16, tmp_path)
        assert trt.Runtime(trt.Logger()).deserialize_cuda_engine(f.read_bytes()) is not None
        files.setdefault(version, []).append((f, len(trt.builds)))
    (f10a, built_a), (f10b, built_b) = files["10.13.3.9"]
    assert f10a == f10b and built_a == 1 and built_b == 0  # cached: no second build
    assert files["11.4.1.2"][0][0] != f10a and "trt11.4.1.2" in files["11.4.1.2"][0][0].name
    assert len(list(tmp_path.glob("timing-trt10.13.3.9-*.cache"))) == 1
    assert len(list(tmp_path.glob("timing-trt11.4.1.2-*.cache"))) == 1
    key = trt_backend.engine_key("NVIDIA H200", (9, 0), "11.4.1.2", "s", "fp16", 16)
    assert key != trt_backend.engine_key("NVIDIA H200", (9, 0), "11.4.1.2", "s", "fp16", 16, opt_batch=1)


def test_registry_hands_tensorrt_11_the_fp16_graphs(graphs, monkeypatch) -> None:
    """create_backend("tensorrt", precision=fp16) on TensorRT 11 resolves the FP16 export; the
    backend then stops at the GPU check (none here) with one line."""
    from endostream.runtime.registry import create_backend

    w = graphs["weights"]["pt"]
    seen = []
    real = trt_backend.TensorRTBackend.__init__

    def spy(self, encode_path, denoise_path, sidecar, **kw):
        seen.append((Path(encode_path).name, sidecar.get("precision", "fp32")))  # shipped sidecars predate the key
        return real(self, encode_path, denoise_path, sidecar, **kw)

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.1.2"))
    monkeypatch.setattr(trt_backend.TensorRTBackend, "__init__", spy)
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        create_backend("tensorrt", w, device="cuda", precision="fp16", max_batch=4)
    assert seen == [("polyp.fp16.encode.onnx", "fp16")]
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.13.3.9"))
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        create_backend("tensorrt", WEIGHTS, device="cuda", precision="fp16")
    assert seen[-1] == ("polyp.encode.onnx", "fp32")
    side, _ = check_artifacts(w, precision="fp16")
    with pytest.raises(ValueError, match="built from the fp32 graphs"):  # wrong graph for TensorRT 10
        trt_backend.TensorRTBackend(graphs["fp16"]["encode"], graphs["fp16"]["denoise"], side, precision="fp16")
