"""CPU inference paths: the capability probe, the path ``auto`` picks from it (and its fallback
on a CPU without bf16 units, forced through ENDOSTREAM_CPU_FLAGS), and each reduced-precision
path against float32 on real validation frames with the shipped weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from endostream.runtime.cpu_caps import FLAGS_ENV, CpuCaps, choose_cpu_path, has_openvino, parse_cpuinfo, probe
from tests.conftest import REPO, need_data

WEIGHTS = REPO / "weights" / "polyp.pt"
needs_openvino = pytest.mark.skipif(not has_openvino(), reason="openvino is not installed (pip install openvino)")


def test_parse_cpuinfo_reads_the_first_processor() -> None:
    text = ("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
            "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    model, flags = parse_cpuinfo(text)
    assert model == "AMD EPYC 9R14"
    assert flags == {"fpu", "avx2", "avx512f", "avx512_bf16"}


@pytest.mark.parametrize("flags, openvino, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, True, ("openvino", "bf16")),  # AMD Zen 4, Cooper Lake
    ({"avx2", "amx_tile", "amx_bf16"}, True, ("openvino", "bf16")),  # Sapphire Rapids and later
    ({"avx2", "avx512f", "avx512_vnni"}, True, ("openvino", "fp32")),  # AVX-512 without bf16
    ({"avx2", "fma"}, True, ("openvino", "fp32")),  # AVX2 only
    ({"avx2", "fma"}, False, ("onnxruntime", "fp32")),  # no OpenVINO installed
    ({"avx512_bf16"}, False, ("onnxruntime", "fp32")),  # the units, but no OpenVINO installed
])
def test_choose_cpu_path(flags: set[str], openvino: bool, expected: tuple[str, str]) -> None:
    assert choose_cpu_path(CpuCaps("cpu", frozenset(flags)), openvino) == expected


def test_forced_flags_replace_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FLAGS_ENV, "avx2 fma")
    caps = probe()
    assert caps.forced and not caps.bf16 and caps.flags == {"avx2", "fma"}
    assert caps.model  # the model name is still the processor's own


@needs_openvino
def test_without_bf16_units_auto_and_bf16_fall_back_to_float32(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    from endostream.runtime.registry import create_backend

    monkeypatch.setenv(FLAGS_ENV, "avx2 fma avx512f")
    # the shipped INT8 graph would come first under auto (its 7-bit weights run exactly here)
    no_int8 = _weights_copy(tmp_path, drop_int8=True)
    assert create_backend("auto", no_int8, threads=1).name == "openvino-fp32"
    with caplog.at_level(logging.WARNING):
        be = create_backend("openvino", WEIGHTS, threads=1, precision="bf16")
    assert be.name == "openvino-fp32" and be.precision == "fp32"
    assert "no bf16 units" in caplog.text
    assert create_backend("openvino", no_int8, threads=1, precision="auto").name == "openvino-fp32"


@needs_openvino
def test_auto_picks_bf16_or_int8_where_the_cpu_has_the_units() -> None:
    from endostream.runtime.registry import create_backend

    if not probe().bf16:
        pytest.skip(f"this CPU ({probe().model}) has no bf16 units (avx512_bf16/amx_bf16)")
    # with int8 dot products as well, the shipped INT8 encode graph goes first where its check kept it
    import json

    kept = json.loads((REPO / "weights" / "polyp.int8.json").read_text())["validation"]["kept"]
    assert create_backend("auto", WEIGHTS, threads=1).name == ("openvino-int8" if probe().int8 and kept
                                                               else "openvino-bf16")


def test_openvino_refuses_a_bad_precision_and_device() -> None:
    from endostream.runtime.openvino_backend import resolve_precision
    from endostream.runtime.registry import create_backend

    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int4", CpuCaps("cpu", frozenset()), ["FP32"])
    with pytest.raises(ValueError, match="device=cpu only"):
        create_backend("openvino", WEIGHTS, device="cuda")


@pytest.fixture(scope="module")
def val_frames() -> list[np.ndarray]:
    """Real validation frames of both sets (the training split's held-out part), 16 of each."""
    need_data()
    from tests.conftest import DATA_ROOT
    from endostream.training.dataset import load_splits
    import cv2

    val = load_splits(DATA_ROOT, val_only=True).val
    picked = [s for src in ("kvasir", "clinicdb") for s in [v for v in val if v.source == src][:16]]
    assert len(picked) == 32, f"expected 16 validation frames of each set, got {len(picked)}"
    return [cv2.imread(s.original_path, cv2.IMREAD_COLOR) for s in picked]


def _masks(backend: str, frames: list[np.ndarray], **options: object) -> tuple[str, list[np.ndarray]]:
    """The shipped K=0 mask of each frame on its own (memory reset: the stills are independent)."""
    from endostream.inference.segmenter import load_segmenter

    seg = load_segmenter(str(WEIGHTS), backend=backend, steps=0, threads=1, backend_options=options)
    out = []
    for image in frames:
        seg.reset()
        out.append(seg.segment(image, 0).mask.copy())
    return seg.info["backend"], out


REDUCED = {"openvino-bf16": ("openvino", {"precision": "bf16"}), "openvino-int8": ("openvino", {"precision": "int8"})}


@needs_openvino
@pytest.mark.parametrize("path", sorted(REDUCED))
def test_reduced_precision_mask_agrees_with_float32(path: str, val_frames: list[np.ndarray]) -> None:
    backend, options = REDUCED[path]
    if "bf16" in path and not probe().bf16:
        pytest.skip(f"this CPU ({probe().model}) has no bf16 units (avx512_bf16/amx_bf16): {path} would run float32")
    if "int8" in path:
        from endostream.runtime.registry import usable_int8

        if usable_int8(WEIGHTS) is None:
            pytest.skip(f"no current, kept INT8 graph that runs exactly on this CPU ({probe().model})")
    _, ref = _masks("onnxruntime", val_frames)
    name, got = _masks(backend, val_frames, **options)
    assert name == path
    agree = np.mean([np.mean(a == b) for a, b in zip(ref, got)])
    assert agree > 0.99, f"{path}: masks agree with float32 on {agree:.4%} of pixels"
    # Pixels are mostly background: the masks' own overlap (Dice between the two, frames where
    # either has a mask) must hold too.
    dice = [2 * np.sum(a & b) / (a.sum() + b.sum()) for a, b in zip(ref, got) if a.any() or b.any()]
    assert len(dice) >= 20 and np.mean(dice) > 0.97, f"{path}: mask Dice with float32 {np.mean(dice):.4f}"


@needs_openvino
def test_openvino_float32_matches_onnxruntime(val_frames: list[np.ndarray]) -> None:
    _, ref = _masks("onnxruntime", val_frames[:4])
    name, got = _masks("openvino", val_frames[:4], precision="fp32")
    assert name == "openvino-fp32"
    assert np.mean([np.mean(a == b) for a, b in zip(ref, got)]) > 0.9999


def test_int8_units_come_from_the_vnni_and_amx_flags() -> None:
    assert CpuCaps("cpu", frozenset({"avx512f", "avx512_vnni"})).int8
    assert CpuCaps("cpu", frozenset({"avx_vnni"})).int8 and CpuCaps("cpu", frozenset({"amx_int8"})).int8
    assert not CpuCaps("cpu", frozenset({"avx2", "fma", "avx512f", "avx512_bf16"})).int8


def test_shipped_int8_graph_is_current_and_its_check_names_the_cpu() -> None:
    """The INT8 encode graph beside the shipped weights was exported from them (a retrained .pt
    makes it stale: re-run `endostream export precision=int8`), its validation check was recorded
    with the CPU it ran on, and ``kept`` follows the drop. A check run on a CPU with int8 units must
    have kept the graph (that is where ``auto`` runs it); one run without them may record it not
    kept (their INT8 kernels lose about 0.016 Dice for any weights: weights/MODEL_CARD.md)."""
    from endostream.runtime.artifacts import check_artifacts
    from endostream.runtime.quantize import MAX_DICE_DROP

    side, reason = check_artifacts(WEIGHTS, precision="int8")
    assert side is not None, reason
    v = side["validation"]
    assert v["kept"] == (v["drop"] <= MAX_DICE_DROP) and v["dice_int8"] > 0.85, v
    assert v["cpu"]["model"] and isinstance(v["cpu"]["int8_units"], bool), v
    # 7-bit weights compute the same integers with or without VNNI: the check holds on any x86
    # CPU, so the shipped graph must have passed it.
    assert side["calibration"]["weight_bits"] == 7 and v["kept"], (side["calibration"], v)
    assert side["onnx"]["denoise"]["file"] == "polyp.denoise.onnx"  # the float32 denoise graph


def test_shipped_int8_graph_has_7_bit_weights_and_its_first_blocks_float() -> None:
    """What the sidecar claims, read from the graph: every quantized convolution's weights fit 7
    bits (no 16-bit sum can saturate without VNNI) and the first two MBConv blocks stay float32."""
    import onnx
    from onnx import numpy_helper

    from endostream.runtime.quantize import FLOAT_NODES

    g = onnx.load(str(REPO / "weights" / "polyp.int8.encode.onnx")).graph
    init = {t.name: t for t in g.initializer}
    made_by = {o: n for n in g.node for o in n.output}
    quantized = float_convs = 0
    for conv in (n for n in g.node if n.op_type == "Conv"):
        src = made_by.get(conv.input[1])
        if src is not None and src.op_type == "DequantizeLinear":
            w = numpy_helper.to_array(init[src.input[0]])
            assert w.dtype == np.int8 and w.min() >= -64 and w.max() <= 64, (conv.name, w.min(), w.max())
            assert not conv.name.startswith(FLOAT_NODES), conv.name
            quantized += 1
        else:
            assert conv.input[1] in init and numpy_helper.to_array(init[conv.input[1]]).dtype == np.float32
            float_convs += conv.name.startswith(FLOAT_NODES)
    assert quantized >= 40 and float_convs >= 4, (quantized, float_convs)


def _weights_copy(tmp_path, edit_int8_sidecar=None, drop_int8: bool = False):
    """The shipped weights and graphs in a folder of their own; optionally edit the INT8 sidecar
    or leave the INT8 graph out."""
    import json
    import shutil

    for p in (REPO / "weights").glob("polyp.*"):
        if not p.name.startswith("polyp.fp16") and not (drop_int8 and p.name.startswith("polyp.int8")):
            shutil.copy(p, tmp_path / p.name)
    if edit_int8_sidecar is not None:
        side_path = tmp_path / "polyp.int8.json"
        side = json.loads(side_path.read_text())
        edit_int8_sidecar(side)
        side_path.write_text(json.dumps(side))
    return tmp_path / "polyp.pt"


def _auto_path() -> str:
    """What OpenVINO's auto precision runs once INT8 is out: bf16 needs the (forced) flags and
    also OpenVINO's own BF16 report on the real CPU (an AVX2-only EPYC has none)."""
    import openvino as ov

    real = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "openvino-bf16" if real and probe().bf16 else "openvino-fp32"


@needs_openvino
def test_int8_is_used_only_where_current_kept_and_exact_on_the_cpu(
        tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from endostream.runtime.registry import create_backend

    # a graph whose check kept it (the shipped one's may not be: it names the CPU that checked it)
    weights = _weights_copy(tmp_path, lambda side: side["validation"].update(kept=True, drop=0.002))
    monkeypatch.setenv(FLAGS_ENV, "avx2 fma avx512f avx512_bf16 avx512_vnni")
    assert create_backend("openvino", weights, threads=1).name == "openvino-int8"
    monkeypatch.setenv(FLAGS_ENV, "avx2 fma")  # no int8 dot products: the 7-bit graph still runs exactly
    assert create_backend("openvino", weights, threads=1).name == "openvino-int8"
    (tmp_path / "eight").mkdir()  # a graph with 8-bit weights (before 2026-12-07's last round)
    eight = _weights_copy(tmp_path / "eight", lambda side: side.update(
        validation={**side["validation"], "kept": True, "drop": 0.002},
        calibration={**side["calibration"], "weight_bits": 8}))
    assert create_backend("openvino", eight, threads=1).name == _auto_path()  # its sums would saturate
    with caplog.at_level(logging.WARNING):  # asked by name: it runs, and says what it loses
        assert create_backend("openvino", eight, threads=1, precision="int8").name == "openvino-int8"
    assert "without int8 dot-product units" in caplog.text and "saturate" in caplog.text
    monkeypatch.setenv(FLAGS_ENV, "avx2 fma avx512f avx512_vnni")  # with VNNI the 8-bit graph is exact
    assert create_backend("openvino", eight, threads=1).name == "openvino-int8"


@needs_openvino
def test_int8_that_failed_its_check_or_is_stale_falls_back_in_one_line(
        tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from endostream.runtime.registry import create_backend

    monkeypatch.setenv(FLAGS_ENV, "avx2 fma avx512f avx512_bf16 avx512_vnni")
    weights = _weights_copy(tmp_path, lambda side: side["validation"].update(kept=False, drop=0.01))
    assert create_backend("openvino", weights, threads=1).name == _auto_path()  # auto: quietly the next path
    with caplog.at_level(logging.WARNING):
        assert create_backend("openvino", weights, threads=1, precision="int8").name == _auto_path()
    assert caplog.text.count("int8 unusable") == 1 and "not kept" in caplog.text
    caplog.clear()
    (tmp_path / "stale").mkdir()
    stale = _weights_copy(tmp_path / "stale", lambda side: side.update(sha256="0" * 64))
    with caplog.at_level(logging.WARNING):  # new weights, old INT8 graph: said even under auto
        assert create_backend("openvino", stale, threads=1).name == _auto_path()
    assert "int8 unusable" in caplog.text and "precision=int8" in caplog.text


@needs_openvino
def test_openvino_keeps_compiled_models_in_the_cache_or_says_it_cannot(
        tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A restarted consumer reads its compiled graphs back instead of compiling them again; a
    cache folder that cannot be made costs only that, in one line."""
    from endostream.runtime.registry import create_backend

    monkeypatch.setenv("ENDOSTREAM_CACHE", str(tmp_path / "cache"))
    be = create_backend("openvino", WEIGHTS, threads=1, precision="fp32")
    assert be.cache == tmp_path / "cache" / "openvino"
    assert any(p.stat().st_size > 100_000 for p in be.cache.iterdir())  # a compiled blob
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("ENDOSTREAM_CACHE", str(tmp_path / "a-file"))
    with caplog.at_level(logging.WARNING):
        be = create_backend("openvino", WEIGHTS, threads=1, precision="fp32")
    assert be.cache is None and "no compiled-model cache" in caplog.text
    assert be.encode(np.zeros((1, 3, 320, 320), np.float32), np.zeros((1, 2, 64, 20, 20), np.float32),
                     np.zeros((1, 2), np.float32))["aux_logits"].shape[0] == 1


@needs_openvino
def test_int8_float_layers_run_float32_even_with_bf16_units() -> None:
    """The INT8 graph's float layers (blocks 0-1, the denoise graph) run float32 on a CPU with bf16
    units too: the arithmetic export's check scored, so its verdict holds on every CPU (in bf16 they
    cost the AMX Xeon 0.0011 Dice that no check had seen); bf16 asked for by name still runs bf16."""
    from endostream.runtime.artifacts import graph_paths
    from endostream.runtime.openvino_backend import OpenVinoBackend

    amx = CpuCaps("Intel(R) Xeon(R) Processor", frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                                                           "amx_tile", "amx_bf16", "amx_int8"}))
    int8 = graph_paths(WEIGHTS, precision="int8")
    be = OpenVinoBackend(int8["encode"], int8["denoise"], {}, threads=1, precision="int8", caps=amx)
    assert be.name == "openvino-int8"
    assert be._encode.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert be._denoise.config["INFERENCE_PRECISION_HINT"] == "f32"
    fp32 = graph_paths(WEIGHTS)
    bf16 = OpenVinoBackend(fp32["encode"], fp32["denoise"], {}, threads=1, precision="bf16", caps=amx)
    assert bf16._encode.config["INFERENCE_PRECISION_HINT"] == "bf16"
