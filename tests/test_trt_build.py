"""TensorRT 10 and 11 build paths against the stand-in of the two Python APIs
(tests/tensorrt_standin.py; no GPU, no TensorRT here).

The stand-in mirrors the documented API shape of each version, so a call the version lacks fails:
TensorRT 11 has no ``BuilderFlag.FP16/INT8/BF16/OBEY_PRECISION_CONSTRAINTS``, no
``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``, no ``ICudaEngine.device_memory_size``, and
every network is strongly typed; TensorRT 10 networks are weakly typed unless created with
``STRONGLY_TYPED``, and a strongly typed build with a precision flag fails. The parser reads the
real exported ONNX graphs (names, shapes, dtypes), and the builder checks the optimisation
profile against them, as TensorRT does. The run-time half is tested in tests/test_trt_runtime.py.
The real TensorRT path has not run on this machine.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tensorrt_standin import PRECISION_FLAGS, CudaStandIn, fake_tensorrt, read_plan
from endostream.runtime import trt_backend
from endostream.runtime.artifacts import check_artifacts, graph_paths

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"
# The shipped network's input size and its stride-4 grid (shapes below follow the weights).
S = json.loads((ROOT / "weights" / "polyp.json").read_text())["config"]["input_size"]
G = S // 4



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
    return read_plan(plan)


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
    backend then stops at the GPU check (the CUDA runtime stand-in with no device) with one line."""
    from endostream.runtime.registry import create_backend

    w = graphs["weights"]["pt"]
    seen = []
    real = trt_backend.TensorRTBackend.__init__

    def spy(self, encode_path, denoise_path, sidecar, **kw):
        seen.append((Path(encode_path).name, sidecar.get("precision", "fp32")))  # shipped sidecars predate the key
        return real(self, encode_path, denoise_path, sidecar, **kw)

    CudaStandIn(devices=0).install(monkeypatch)
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
