"""Single-pass ONNX models (model.kind=onnx): the shipped network's K=0 pass exported as one plain
graph and fed back through its contract gives the native K=0 masks on real validation frames;
contracts that do not match their graph fail in one line naming the mismatch; predict and batch
take such a model; the bench compares it with the shipped model in one run.

Small graphs for the contract checks are built with onnx.helper and run for real in ONNX Runtime."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from conftest import DATA_ROOT, ENV, need_data
from endostream.cli import main
from endostream.inference.segmenter import load_segmenter
from endostream.inference.single_pass import polyp_probability
from endostream.runtime.graph_contract import ContractError, GraphContract

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights" / "polyp.pt"


def validation_frames(n: int = 8) -> list[np.ndarray]:
    """Real validation frames (the split of training/dataset.py with split seed 0): the first n of
    ClinicDB's validation sequences and n of the 90 validation Kvasir images."""
    from endostream.training.dataset import VAL_CLINIC_SEQUENCES, VAL_KVASIR_COUNT, clinicdb_rows

    need_data("cvc-clinicdb/sequences.csv")
    kvasir = need_data("kvasir-seg/images")
    rows = [r for r in clinicdb_rows(DATA_ROOT / "cvc-clinicdb") if r[1] in VAL_CLINIC_SEQUENCES]
    step = max(1, len(rows) // n)  # spread over the sequences
    ids = sorted(p.stem for p in kvasir.glob("*.jpg"))
    val = sorted(np.random.default_rng(0).permutation(ids)[:VAL_KVASIR_COUNT].tolist())[:n]
    return [cv2.imread(str(r[2])) for r in rows[::step][:n]] + [cv2.imread(str(kvasir / f"{i}.jpg")) for i in val]


@pytest.fixture(scope="module")
def k0(tmp_path_factory) -> dict:
    """`endostream export single_pass=true`: the graph and its contract file."""
    out = tmp_path_factory.mktemp("k0")
    assert main(["export", f"weights={WEIGHTS}", f"out={out}", "single_pass=true"]) == 0
    return yaml.safe_load((out / "polyp.k0.contract.yaml").read_text())


def tiny_graph(path: Path, in_shape: list, out_shape: list, nodes: list, opset: int = 17,
               in_name: str = "image", out_name: str = "logits") -> str:
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def nhwc_graph(path: Path) -> str:
    """NHWC image -> the mean over its channels as one NHWC logit map (a TensorFlow-style graph)."""
    return tiny_graph(path, [1, 64, 64, 3], [1, 64, 64, 1],
                      [helper.make_node("ReduceMean", ["image"], ["logits"], axes=[3], keepdims=1)])


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


# ------------------------------------------------------------------ parity with the native K=0 path


def test_exported_k0_graph_gives_the_native_masks(k0):
    frames = validation_frames()
    single = load_segmenter(kind="onnx", graph=k0, backend="onnxruntime", threads=1)
    # The native pass on a stream's first frame (empty memory) with the presence gate open: the
    # single-pass graph has neither memory nor gate.
    native = load_segmenter(weights=str(WEIGHTS), backend="onnxruntime", steps=0, warm_start=False,
                            use_temporal=False, presence_threshold=0.0, threads=1)
    assert single.info["kind"] == "onnx" and single.info["weights_sha256"] != native.info["weights_sha256"]
    agree, total, positive = 0, 0, 0
    for frame in frames:
        a, b = single.segment(frame), native.segment(frame)
        assert a.mask.shape == frame.shape[:2] and a.box is None and not a.gated
        agree += int((a.mask == b.mask).sum())
        total += a.mask.size
        positive += int(b.mask.sum())
    assert positive > 0.01 * total  # the frames hold polyps: agreement is not all-background
    assert agree / total > 0.995, f"mask agreement {agree / total:.5f}"


def test_k0_export_of_weights_with_refinement_inputs(tmp_path):
    """Fifth-generation networks (refine_inputs: the encode pass also conditions the denoiser on
    the K=0 mask and the image) export their K=0 pass alike, and it still equals the native pass
    (here the torch backend on a randomly initialised network of that shape)."""
    import torch

    from endostream.model.io import save_weights
    from endostream.model.network import NetConfig, PolypNet
    from endostream.runtime.export import export_single_pass

    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=128, encoder="efficientnet_lite0", refine_inputs=True)).eval()
    weights = tmp_path / "gen5.pt"
    save_weights(net, weights, {"trained": False})
    contract = export_single_pass(weights, tmp_path)
    assert contract["size"] == 128 and contract["output"] == "logits"
    single = load_segmenter(kind="onnx", graph=contract, backend="onnxruntime", threads=1)
    native = load_segmenter(weights=str(weights), backend="torch", steps=0, warm_start=False, use_temporal=False,
                            presence_threshold=0.0, threads=1)
    for frame in validation_frames(2):
        a, b = single.segment(frame), native.segment(frame)
        assert np.abs(a.prob - b.prob).max() < 1e-4


def test_onnx_yaml_repeats_the_contract_defaults():
    block = yaml.safe_load((ROOT / "configs" / "model" / "onnx.yaml").read_text())["graph"]
    block.pop("path")
    defaults = GraphContract(path="x").to_dict()
    defaults.pop("path")
    assert block == defaults


# ------------------------------------------------------------------ contracts that do not match


def test_nhwc_graph_declared_nchw_is_one_line(tmp_path):
    path = nhwc_graph(tmp_path / "nhwc.onnx")
    with pytest.raises(ContractError) as exc:
        load_segmenter(kind="onnx", graph={"path": path, "layout": "NCHW"}, backend="onnxruntime")
    assert "that is NHWC" in one_line(exc) and "layout NCHW" in str(exc.value)
    # Declared right, the same graph runs: the mean of the normalised channels, thresholded.
    seg = load_segmenter(kind="onnx", graph={"path": path, "layout": "NHWC"}, backend="onnxruntime", threads=1,
                         fov=False)
    bright = np.full((48, 80, 3), 250, np.uint8)
    bright[:, :40] = 10  # left half dark: (10/255 - .5) / .5 < 0, right half > 0
    pred = seg.segment(bright)
    assert pred.mask[:, 45:].all() and not pred.mask[:, :35].any()


def test_missing_output_name_is_one_line(k0):
    with pytest.raises(ContractError) as exc:
        load_segmenter(kind="onnx", graph={**k0, "output": "mask"}, backend="onnxruntime")
    assert "no output 'mask'" in one_line(exc) and "logits" in str(exc.value)
    with pytest.raises(ContractError) as exc:
        load_segmenter(kind="onnx", graph={**k0, "input": "x"}, backend="onnxruntime")
    assert "no input 'x'" in one_line(exc)


def test_five_d_input_is_one_line(tmp_path):
    path = tiny_graph(tmp_path / "5d.onnx", [1, 3, 1, 64, 64], [1, 1, 64, 64],
                      [helper.make_node("ReduceMean", ["image"], ["logits"], axes=[1, 2], keepdims=0)])
    with pytest.raises(ContractError) as exc:
        load_segmenter(kind="onnx", graph={"path": path}, backend="onnxruntime")
    assert "rank 5" in one_line(exc) and "[1, 3, 1, 64, 64]" in str(exc.value)


def test_dynamic_size_needs_a_size_and_then_runs(tmp_path):
    path = tiny_graph(tmp_path / "dyn.onnx", ["n", 3, "h", "w"], ["n", 1, "h", "w"],
                      [helper.make_node("ReduceMean", ["image"], ["logits"], axes=[1], keepdims=1)])
    with pytest.raises(ContractError) as exc:
        load_segmenter(kind="onnx", graph={"path": path}, backend="onnxruntime")
    assert "dynamic size" in one_line(exc) and "model.graph.size" in str(exc.value)
    seg = load_segmenter(kind="onnx", graph={"path": path, "size": [96, 128]}, backend="onnxruntime", threads=1,
                         max_batch=2)
    preds = seg.segment_batch([np.full((60, 80, 3), 250, np.uint8), np.full((60, 80, 3), 5, np.uint8)], [0, 1])
    assert preds[0].mask.all() and not preds[1].mask.any() and seg.max_batch == 2


def test_wrong_fixed_size_and_channels_are_one_line(k0, tmp_path):
    with pytest.raises(ContractError) as exc:
        load_segmenter(kind="onnx", graph={**k0, "size": 352}, backend="onnxruntime")
    assert "320x320" in one_line(exc) and "352x352" in str(exc.value)
    with pytest.raises(ContractError) as exc:
        load_segmenter(kind="onnx", graph={**k0, "output_type": "class_logits"}, backend="onnxruntime")
    assert "1 channel(s)" in one_line(exc)
    with pytest.raises(ContractError) as exc:
        GraphContract.from_mapping({"path": "x.onnx", "layout": "CHW"})
    assert "NCHW, NHWC" in one_line(exc)
    with pytest.raises(ContractError) as exc:  # model=onnx without model.graph.path
        GraphContract.from_mapping({"path": "???"})
    assert "set model.graph.path" in one_line(exc)


def test_output_types_give_one_probability():
    z = np.linspace(-4, 4, 2 * 5 * 7, dtype=np.float32).reshape(2, 1, 5, 7)
    base = {"path": "x.onnx"}
    sig = polyp_probability(z, GraphContract(**base))
    assert np.allclose(sig, 1 / (1 + np.exp(-z[:, 0])), atol=1e-6)
    assert np.allclose(polyp_probability(sig[:, None], GraphContract(**base, output_type="probabilities")), sig)
    # Two-class logits (background 0, polyp z): the softmax's polyp channel is sigmoid(z).
    two = np.concatenate([np.zeros_like(z), z], axis=1)
    assert np.allclose(polyp_probability(two, GraphContract(**base, output_type="class_logits")), sig, atol=1e-6)
    nhwc = two.transpose(0, 2, 3, 1)
    assert np.allclose(polyp_probability(nhwc, GraphContract(**base, output_type="class_logits", layout="NHWC")),
                       sig, atol=1e-6)
    three = np.stack([1 - sig, sig * 0.25, sig * 0.75], axis=1)
    got = polyp_probability(three, GraphContract(**base, output_type="class_probabilities", polyp_channel=2))
    assert np.allclose(got, sig * 0.75)
    with pytest.raises(ContractError):
        polyp_probability(two, GraphContract(**base, output_type="class_logits", polyp_channel=2))


def test_cli_names_the_mismatch_in_one_line(tmp_path):
    path = nhwc_graph(tmp_path / "nhwc.onnx")
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    p = subprocess.run([sys.executable, "-m", "endostream.cli", "predict", f"input={tmp_path / 'in'}",
                        f"output={tmp_path / 'out'}", "model=onnx", f"model.graph.path={path}"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "that is NHWC" in lines[0] and lines[0].startswith("endostream predict: error:")


# ------------------------------------------------------------------ TensorRT (through the stand-in)


@pytest.mark.parametrize("version", ["10.13.3.9", "11.0.0.1"])
def test_tensorrt_single_pass_equals_onnxruntime(k0, monkeypatch, tmp_path, version):
    """The TensorRT path run through tests/tensorrt_standin.py (TensorRT's and cuda-python's
    documented APIs, the engine computed by ONNX Runtime on host memory): engine built from the
    graph with one batch profile, device buffers, copies; a batch of 3 on a max_batch-2 engine
    runs in chunks. Its masks equal the ONNX Runtime session's."""
    from tensorrt_standin import CudaStandIn

    frames = validation_frames(2)[:3]
    ref = load_segmenter(kind="onnx", graph=k0, backend="onnxruntime", threads=1, max_batch=4)
    gpu = CudaStandIn()
    gpu.install(monkeypatch, version)
    seg = load_segmenter(kind="onnx", graph=k0, backend="tensorrt", device="cuda", max_batch=2,
                         backend_options={"precision": "fp32", "engine_cache": str(tmp_path / "engines")})
    assert seg.info["backend"] == "tensorrt-fp32" and seg.max_batch == 2
    got = seg.segment_batch(frames, list(range(len(frames))))
    want = ref.segment_batch(frames, list(range(len(frames))))
    for g, w in zip(got, want):
        assert np.abs(g.prob - w.prob).max() < 1e-5 and (g.mask == w.mask).all()
    assert gpu.stats["malloc"] == 2 and gpu.stats["kernels"] == 2  # two chunks: 2 + 1 frames
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 1


def test_tensorrt_fixes_a_dynamic_size_from_the_contract(monkeypatch, tmp_path):
    from tensorrt_standin import CudaStandIn

    path = tiny_graph(tmp_path / "dyn.onnx", ["n", 3, "h", "w"], ["n", 1, "h", "w"],
                      [helper.make_node("ReduceMean", ["image"], ["logits"], axes=[1], keepdims=1)])
    CudaStandIn().install(monkeypatch)
    seg = load_segmenter(kind="onnx", graph={"path": path, "size": 64}, backend="tensorrt", device="cuda",
                         backend_options={"precision": "fp32", "engine_cache": str(tmp_path / "engines")})
    fixed = list((tmp_path / "engines" / "graphs").glob("*.onnx"))
    assert len(fixed) == 1 and [d.dim_value for d in onnx.load(str(fixed[0])).graph.input[0].type.tensor_type.shape.dim][1:] == [3, 64, 64]
    pred = seg.segment(np.full((40, 50, 3), 250, np.uint8))
    assert pred.mask.all()


# ------------------------------------------------------------------ predict, batch, bench


def test_predict_with_the_user_model(k0, tmp_path):
    folder = need_data("kvasir-seg/images")
    (tmp_path / "in").mkdir()
    images = sorted(folder.glob("*.jpg"))[:3]
    for p in images:
        (tmp_path / "in" / p.name).write_bytes(p.read_bytes())
    assert main(["predict", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "model=onnx",
                 f"model.graph.path={k0['path']}", "model.backend=onnxruntime", "model.threads=1"]) == 0
    native = load_segmenter(weights=str(WEIGHTS), backend="onnxruntime", steps=0, warm_start=False,
                            use_temporal=False, presence_threshold=0.0, threads=1)
    for p in images:
        got = cv2.imread(str(tmp_path / "out" / f"{p.stem}.png"), cv2.IMREAD_GRAYSCALE)
        want = native.segment(cv2.imread(str(p))).mask
        assert got.shape == want.shape and ((got > 0) == want).mean() > 0.995


def write_clip(path: Path, images: list[np.ndarray], gray: bool = False) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1" if gray else "libx264", rate=Fraction(25))
        s.height, s.width = images[0].shape[:2]
        s.pix_fmt = "gray" if gray else "yuv420p"
        for i, img in enumerate(images):
            vf = av.VideoFrame.from_ndarray(img, format="gray" if gray else "bgr24")
            vf.pts = i
            for pk in s.encode(vf):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)


def test_batch_over_a_clip_with_the_user_model(k0, tmp_path):
    clinic = need_data("cvc-clinicdb")
    ids = list(range(1, 11))
    write_clip(tmp_path / "clip.mp4", [cv2.imread(str(clinic / "images" / f"{i}.png")) for i in ids])
    write_clip(tmp_path / "clip_masks.mkv", [cv2.imread(str(clinic / "masks" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
                                             for i in ids], gray=True)
    out = tmp_path / "out"
    args = ["batch", f"input={tmp_path / 'clip.mp4'}", f"output={out}", "model=onnx",
            f"model.graph.path={k0['path']}", "model.backend=onnxruntime", "progress=false", "workers=1"]
    assert main(args) == 0
    folder = out / "clip"
    with av.open(str(folder / "overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == len(ids)
    assert len(list((folder / "masks").glob("*.png"))) == len(ids)
    rows = list(csv.DictReader(open(folder / "detections.csv")))
    assert [int(r["frame"]) for r in rows] == list(range(len(ids)))
    s = json.loads((folder / "summary.json").read_text())
    assert s["status"] == "done" and s["kind"] == "onnx" and s["steps"] == 0
    assert 0.3 < s["metrics"]["dice@0.5"] <= 1  # real frames with their ground truth
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"done": 1, "failed": 0, "pending": 0}
    assert manifest["config"]["model"]["kind"] == "onnx"
    assert main(args) == 0  # unchanged: the re-run skips it
    assert json.loads((out / "clip" / "summary.json").read_text())["elapsed_s"] == s["elapsed_s"]


def test_bench_compares_the_shipped_model_with_a_user_graph(k0, tmp_path):
    """One live pipeline run, two models interleaved, the demo clip with its ground truth streamed:
    per model its time, mask age, rooms served and the Dice of the masks shown."""
    out = tmp_path / "bench"
    variants = f"{{shipped:{{}},user:{{model:{{kind:onnx,graph:{{path:'{k0['path']}'}}}}}}}}"
    assert main(["bench", "scenario=pipeline", "frames=40", "warmup=5", f"out={out}", "send_gt=true",
                 "model.backend=onnxruntime", "model.threads=1", "progress=false", "compare.rounds=1",
                 f"compare.variants={variants}", "sinks=[none]"]) == 0
    rep = json.loads((out / "report.json").read_text())
    v = rep["compare"]["variants"]
    assert v["shipped"]["kind"] == "diffusion" and v["user"]["kind"] == "onnx"
    assert v["user"]["model_file"] == k0["path"] and v["user"]["steps"] == 0
    for name in ("shipped", "user"):
        assert v[name]["model_ms"]["p50_ms"] > 0 and v[name]["mask_end_to_end"]["p50_ms"] > 0
        assert v[name]["rooms_served"]["by_model_time"] >= 0 and v[name]["rooms_served"]["streams"] == 1
        assert 0 < v[name]["dice"]["mean"] <= 1 and v[name]["dice"]["frames"] > 10
    assert "single-pass model" in v["user"]["consumer"]["hud_note"]
    assert "single-pass" not in (v["shipped"]["consumer"]["hud_note"] or "")
    assert "## Models" in (out / "summary.md").read_text()
