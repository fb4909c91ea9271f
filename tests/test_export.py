"""`endostream export`: graph names, shapes, dtypes, embedded weights, sidecar, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from endostream.runtime.artifacts import (DENOISE_INPUTS, DENOISE_OUTPUTS, ENCODE_INPUTS, ENCODE_OUTPUTS,
                                          check_artifacts, graph_paths)

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "polyp.pt"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    from endostream.runtime.export import export_onnx

    out = tmp_path_factory.mktemp("export")
    return out, export_onnx(WEIGHTS, out)


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graphs_have_documented_names_shapes_dtypes(exported) -> None:
    out, side = exported
    for part, ins, outs in (("encode", ENCODE_INPUTS, ENCODE_OUTPUTS), ("denoise", DENOISE_INPUTS, DENOISE_OUTPUTS)):
        model = onnx.load(str(out / side["onnx"][part]["file"]))
        assert [i.name for i in model.graph.input] == list(ins)
        assert [o.name for o in model.graph.output] == list(outs)
        assert model.opset_import[0].version == 17
        for vi in (*model.graph.input, *model.graph.output):
            assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            assert _dims(vi) == side["shapes"][part][vi.name], vi.name
        # weights embedded, nothing external; the training-only frame predictor is absent
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
        assert not any("frame_predictor" in t.name for t in model.graph.initializer)


def test_batch_dimension_is_dynamic(exported) -> None:
    import onnxruntime as ort

    out, side = exported
    sess = ort.InferenceSession(str(out / side["onnx"]["denoise"]["file"]), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        r = sess.run(None, {"feat": np.zeros((b, 24, 64, 64), np.float32),
                            "noisy_mask": np.zeros((b, 1, 64, 64), np.float32), "t": np.full((b,), 499, np.float32)})
        assert r[0].shape == (b, 1, 64, 64)


def test_sidecar_and_reproducibility(exported, tmp_path) -> None:
    from endostream.runtime.export import export_onnx

    out, side = exported
    assert side["config"]["input_size"] == 256 and side["opset"] == 17
    assert json.loads(graph_paths(WEIGHTS, out)["sidecar"].read_text())["sha256"] == side["sha256"]
    assert check_artifacts(WEIGHTS, out_dir=out)[0] is not None
    again = export_onnx(WEIGHTS, tmp_path)
    assert {p: again["onnx"][p]["sha256"] for p in again["onnx"]} == {p: side["onnx"][p]["sha256"] for p in side["onnx"]}


def test_shipped_graphs_match_shipped_weights() -> None:
    side, reason = check_artifacts(WEIGHTS)
    assert side is not None, f"{reason}: run `endostream export weights=weights/polyp.pt out=weights/`"


def test_tampered_graph_is_detected(exported, tmp_path) -> None:
    import shutil

    out, side = exported
    for f in out.iterdir():
        shutil.copy(f, tmp_path / f.name)
    g = tmp_path / side["onnx"]["denoise"]["file"]
    g.write_bytes(g.read_bytes()[:-1] + b"\0")
    side2, reason = check_artifacts(WEIGHTS, out_dir=tmp_path)
    assert side2 is None and "sha256" in reason


def test_network_without_temporal_module_runs_through_onnxruntime(tmp_path) -> None:
    """The exporter drops the unused memory/valid inputs of such a network; the backend must
    feed only the inputs the graph declares (a retraining ablation found this)."""
    import torch

    from endostream.model.io import save_weights
    from endostream.model.network import NetConfig, PolypNet
    from endostream.inference.segmenter import load_segmenter

    torch.manual_seed(0)
    save_weights(PolypNet(NetConfig(input_size=64, temporal=False)).eval(), tmp_path / "plain.pt")
    seg = load_segmenter(weights=str(tmp_path / "plain.pt"), backend="onnxruntime", threads=1, steps=2,
                         warm_start=False, presence_threshold=0.0)
    frame = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    for _ in range(2):  # the second frame has a (non-empty) memory to offer
        out = seg.segment(frame)
    assert out.mask.shape == (90, 120)
