"""Shape and dtype contracts of every module, strict loading, temporal state, and the two
Diff-VPS flaws that must not return (constant denoiser input; adversarial loss not reaching
the generator)."""

import numpy as np
import pytest
import torch

from endostream.model.io import load_weights, save_weights
from endostream.model.network import NetConfig, PolypNet
from endostream.runtime.torch_backend import TorchBackend
from endostream.inference.segmenter import Segmenter
from endostream.training.losses import FrameDiscriminator, generator_adv_loss

S = 64  # tiny input: shapes scale with it


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return PolypNet(NetConfig(input_size=S)).eval()


def test_encode_and_denoise_shapes(net):
    mem, valid = net.empty_memory(2)
    out = net.encode_frame(torch.randn(2, 3, S, S), mem, valid)
    c = net.cfg
    assert out["feat"].shape == (2, c.denoiser_hidden, S // 4, S // 4)
    assert out["aux_logits"].shape == (2, 1, S // 4, S // 4)
    assert out["presence_logit"].shape == (2,)
    assert out["box"].shape == (2, 4) and float(out["box"].detach().min()) >= 0 and float(out["box"].detach().max()) <= 1
    assert out["memory_out"].shape == (2, c.neck_channels, S // 16, S // 16)
    assert mem.shape == (2, c.memory_frames, c.neck_channels, S // 16, S // 16)
    logits = net.denoise(out["feat"], torch.randn(2, 1, S // 4, S // 4), torch.tensor([999.0, 10.0]))
    assert logits.shape == (2, 1, S // 4, S // 4) and logits.dtype == torch.float32


def test_denoiser_output_depends_on_the_noisy_mask(net):
    feat = net.encode_frame(torch.randn(1, 3, S, S), *net.empty_memory(1))["feat"]
    t = torch.tensor([499.0])
    a = net.denoise(feat, torch.full((1, 1, S // 4, S // 4), -1.0), t)
    b = net.denoise(feat, torch.full((1, 1, S // 4, S // 4), 1.0), t)
    assert (a - b).abs().max() > 1e-4


def test_temporal_memory_changes_features_and_empty_memory_is_a_no_op(net):
    img = torch.randn(1, 3, S, S)
    mem, valid = net.empty_memory(1)
    base = net.encode_frame(img, mem, valid)["feat"]
    # garbage in invalid slots must be ignored entirely
    same = net.encode_frame(img, torch.randn_like(mem), valid)["feat"]
    torch.testing.assert_close(base, same)
    valid[:, -1] = 1
    used = net.encode_frame(img, torch.randn_like(mem) * 3, valid)["feat"]
    assert (used - base).abs().max() > 1e-4


def test_adversarial_loss_reaches_the_generator(net):
    net.train()
    disc = FrameDiscriminator()
    mem = torch.randn(2, net.cfg.memory_frames, net.cfg.neck_channels, S // 16, S // 16)
    valid = torch.ones(2, net.cfg.memory_frames)
    fake = net.frame_predictor(net.neck.temporal.values(mem), valid)
    net.zero_grad()
    generator_adv_loss(disc, fake).backward()
    for name, p in [("frame_predictor", next(net.frame_predictor.parameters())),
                    ("temporal.value", net.neck.temporal.value.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no adversarial gradient reached {name}"
    net.eval()


def test_strict_loading(tmp_path, net):
    path = tmp_path / "w.pt"
    save_weights(net, path, meta={"trained": False})
    loaded, meta = load_weights(path)
    assert meta == {"trained": False}
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["unexpected.weight"] = torch.zeros(1)
    torch.save(blob, path)
    with pytest.raises(RuntimeError, match="Unexpected"):
        load_weights(path)
    blob["state_dict"].pop("unexpected.weight")
    blob["state_dict"].pop("aux_head.bias")
    torch.save(blob, path)
    with pytest.raises(RuntimeError, match="Missing"):
        load_weights(path)
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "absent.pt")


def test_segmenter_state_is_per_stream_and_reset(net):
    seg = Segmenter(TorchBackend(net, threads=1), steps=2, warm_start=True)
    img = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    p = seg.segment(img, stream_id=1)
    assert p.prob.shape == (120, 160) and p.prob.dtype == np.float32 and p.mask.dtype == bool
    assert {"preprocess", "encoder", "step1", "step2", "postprocess"} <= set(p.stages_ns)
    seg.segment(img, stream_id=1)
    assert seg.state(1).valid.sum() == min(2, net.cfg.memory_frames)
    assert seg.state(2).frames_seen == 0  # another stream starts empty
    seg.reset(1)
    assert seg.state(1).frames_seen == 0 and seg.state(1).valid.sum() == 0 and seg.state(1).prev_prob is None
    # same stream replayed after a reset gives the same mask (seeded noise, cleared memory)
    q = seg.segment(img, stream_id=1)
    np.testing.assert_array_equal(p.prob, q.prob)
    with pytest.raises(ValueError):
        seg.segment(np.zeros((10, 10), np.uint8))


def test_k0_is_the_plain_decoder_pass(net):
    seg = Segmenter(TorchBackend(net, threads=1), steps=0)
    p = seg.segment(np.full((64, 64, 3), 128, np.uint8))
    assert "step1" not in p.stages_ns


def test_split_first_convolution_equals_one_convolution_over_the_concatenation(net):
    # The denoiser's feature half runs once per frame; each step adds only the mask half.
    d = net.denoiser
    feat = torch.randn(2, d.feat_channels, S // 4, S // 4)
    mask = torch.randn(2, 1, S // 4, S // 4)
    whole = d.inp(torch.cat([feat, mask], 1))
    split = d.condition(feat) + torch.nn.functional.conv2d(mask, d.inp.weight[:, d.feat_channels:], padding=1)
    assert torch.allclose(whole, split, atol=1e-5)
