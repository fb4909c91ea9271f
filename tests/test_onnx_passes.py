"""The exact graph rewrites: the Pad-into-Conv fold (same outputs, no Pad left, and pads it must
not touch are kept) and dropping the encode graph's ``feat`` at K=0 (the other outputs unchanged,
the denoiser's conditioning no longer computed)."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from endostream.model.efficientnet_lite import ConvBN
from endostream.runtime.onnx_passes import drop_outputs, fold_pads_into_convs


class Net(nn.Module):
    """Two TF-"SAME" stride-2 convolutions (depthwise and dense), plus pads that are not zeros
    before a Conv: a reflect pad and a constant-1 pad (they must survive the fold)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = ConvBN(3, 8, 3, 2)
        self.b = ConvBN(8, 8, 5, 2, groups=8)
        self.c = nn.Conv2d(8, 4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.b(self.a(x))
        return self.c(F.pad(y, (1, 1, 1, 1), mode="reflect")), self.c(F.pad(y, (0, 1, 0, 1), value=1.0))


def _export(net: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(net.eval(), (x,), buf, input_names=["x"], output_names=["r", "c"], opset_version=17,
                      do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


@pytest.mark.parametrize("size", [64, 70])
def test_fold_keeps_outputs_and_removes_zero_pads(size: int) -> None:
    torch.manual_seed(0)
    net = Net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics so a misplaced zero shows
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 3, size, size) * 2 - 1
    model = _export(net, x)
    before = _run(model, x.numpy())
    pads_before = sum(n.op_type == "Pad" for n in model.graph.node)
    assert fold_pads_into_convs(model) == 2
    onnx.checker.check_model(model, full_check=True)
    assert sum(n.op_type == "Pad" for n in model.graph.node) == pads_before - 2 == 2  # reflect and value 1 stay
    after = _run(model, x.numpy())
    for a, b in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_exported_segmenter_has_no_pad(tmp_path) -> None:
    from endostream.model.io import save_weights
    from endostream.model.network import NetConfig, PolypNet
    from endostream.runtime.export import export_onnx

    net = PolypNet(NetConfig(input_size=64, encoder="efficientnet_lite0"))
    save_weights(net, tmp_path / "m.pt", meta={"trained": False})
    export_onnx(tmp_path / "m.pt")
    enc = onnx.load(str(tmp_path / "m.encode.onnx"))
    assert not [n for n in enc.graph.node if n.op_type == "Pad"]


@pytest.mark.parametrize("steps,samples,want", [(0, 0, "1"), (2, 0, "0"), (0, 4, "0")])
def test_encode_spins_only_when_it_runs_alone(steps: int, samples: int, want: str) -> None:
    from endostream.inference.segmenter import load_segmenter

    seg = load_segmenter("weights/polyp.pt", backend="onnxruntime", steps=steps, uncertainty_samples=samples)
    spin = lambda s: s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")  # noqa: E731
    assert spin(seg.backend.encode_session) == want
    assert spin(seg.backend.denoise_session) == "0"


def test_dropping_feat_leaves_the_other_outputs_exactly_and_removes_what_only_it_needed(tmp_path) -> None:
    from endostream.model.io import save_weights
    from endostream.model.network import NetConfig, PolypNet
    from endostream.runtime.export import export_onnx

    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64, encoder="efficientnet_lite0", refine_inputs=True))
    save_weights(net, tmp_path / "m.pt", meta={"trained": False})
    export_onnx(tmp_path / "m.pt")
    full = onnx.load(str(tmp_path / "m.encode.onnx"))
    pruned = onnx.load(str(tmp_path / "m.encode.onnx"))
    assert drop_outputs(pruned, {"feat"}) > 0
    onnx.checker.check_model(pruned, full_check=True)
    assert [o.name for o in pruned.graph.output] == [o.name for o in full.graph.output if o.name != "feat"]
    # the refinement input (pixel-unshuffle: a 6-D Transpose) and its convolution are gone
    assert any(n.op_type == "Transpose" for n in full.graph.node)
    assert not any(n.op_type == "Transpose" for n in pruned.graph.node)
    assert "net.denoiser.refine.weight" not in {t.name for t in pruned.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.random([d.dim_value or 1 for d in i.type.tensor_type.shape.dim], np.float32)
             for i in full.graph.input}
    want = dict(zip([o.name for o in full.graph.output], _run_feeds(full, feeds)))
    got = dict(zip([o.name for o in pruned.graph.output], _run_feeds(pruned, feeds)))
    for name, value in got.items():
        np.testing.assert_array_equal(value, want[name])
    with pytest.raises(ValueError, match="no output nope"):
        drop_outputs(onnx.load(str(tmp_path / "m.encode.onnx")), {"nope"})


def _run_feeds(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("steps,samples,computed", [(0, 0, False), (1, 0, True), (0, 4, True)])
def test_feat_is_computed_only_where_the_denoiser_runs(backend: str, steps: int, samples: int,
                                                       computed: bool) -> None:
    from endostream.inference.segmenter import load_segmenter

    if backend == "openvino":
        pytest.importorskip("openvino")
    seg = load_segmenter("weights/polyp.pt", backend=backend, steps=steps, uncertainty_samples=samples, threads=1)
    seen: list[set[str]] = []
    encode = seg.backend.encode
    seg.backend.encode = lambda *a: seen.append(set(out := encode(*a))) or out  # type: ignore[method-assign]
    frame = np.random.default_rng(1).integers(0, 256, (288, 352, 3), np.uint8)
    frame[60:200, 100:260] = (60, 90, 200)  # a reddish blob, so the mask is not empty either way
    got = seg.segment(frame, 0)
    assert seen and all(("feat" in keys) is computed for keys in seen)
    if not computed:  # the same mask as the full graph gives
        full = load_segmenter("weights/polyp.pt", backend=backend, steps=0, threads=1, backend_options={"feat": True})
        want = full.segment(frame, 0)
        np.testing.assert_array_equal(got.mask, want.mask)
        np.testing.assert_allclose(got.prob, want.prob, atol=1e-6)
        assert got.presence == pytest.approx(want.presence, abs=1e-6)
