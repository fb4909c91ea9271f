"""The fifth generation's diffusion step: what it is given and what it is trained on."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from endostream.model.io import load_weights
from endostream.model.network import NetConfig, PolypNet
from endostream.model.scheduler import MaskScheduler
from endostream.training.endoscope_look import LookParams, apply_look
from endostream.training.train import _sampler_noisy_mask
from tests.conftest import REPO, need_data


def _shipped_frame():
    net, _ = load_weights(REPO / "weights/polyp.pt")
    img = cv2.imread(str(need_data("cvc-clinicdb/images/1.png")))
    s = net.cfg.input_size
    x = cv2.resize(img, (s, s))[:, :, ::-1].astype(np.float32) / 127.5 - 1.0
    return net, torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def test_shipped_step_reads_the_coarse_mask_and_the_image():
    """The step is conditioned on the K=0 mask and the full-resolution image: inverting the
    coarse mask, or blanking the image detail, moves the K=1 probabilities (refinement is wired
    and trained, not a zero convolution). Measured on the fifth generation: max change 0.030
    (coarse inverted) and 0.23 (image blanked); the step leans on the image detail far more than
    on the coarse mask (weights/MODEL_CARD.md)."""
    net, x = _shipped_frame()
    assert net.cfg.refine_inputs
    mem, valid = net.empty_memory(1)
    t = torch.full((1,), 999.0)
    noise = torch.randn(1, 1, x.shape[2] // 4, x.shape[3] // 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net.encode_frame(x, mem, valid)
        feat = net.neck(net.encoder(x), mem, valid)[0]
        base = net.denoise(out["feat"], noise, t).sigmoid()
        inverted = net.denoiser.condition(feat, -out["aux_logits"], x)
        flat = net.denoiser.condition(feat, out["aux_logits"], torch.zeros_like(x))
        assert torch.allclose(net.denoiser.condition(feat, out["aux_logits"], x), out["feat"], atol=1e-5)
        by_mask = (net.denoise(inverted, noise, t).sigmoid() - base).abs().max()
        by_image = (net.denoise(flat, noise, t).sigmoid() - base).abs().max()
    assert (base > 0.5).any()
    assert by_mask > 0.01, float(by_mask)
    assert by_image > 0.1, float(by_image)


def test_sampler_aligned_training_inputs_are_the_samplers_own():
    """Training feeds the denoiser what K=1 and K=2 sampling feed it: pure noise at t=999, and at
    t=499 the DDIM update of the model's OWN first estimate (no ground truth anywhere)."""
    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64, refine_inputs=True)).eval()
    sched = MaskScheduler()
    cond = torch.randn(3, net.cfg.denoiser_hidden, 16, 16)
    g = torch.Generator().manual_seed(7)
    x_t, t = _sampler_noisy_mask(net, cond, sched, 1.0, g)
    assert t.tolist() == [499, 499, 499]
    g = torch.Generator().manual_seed(7)
    noise = torch.randn((3, 1, 16, 16), generator=g)
    steps = MaskScheduler()
    first, _ = steps.set_timesteps(2)
    with torch.no_grad():
        expected, _ = steps.step(net.denoise(cond, noise, torch.full((3,), float(first))), first, noise)
    assert torch.allclose(x_t, expected, atol=1e-6)
    x_t, t = _sampler_noisy_mask(net, cond, sched, 0.0, torch.Generator().manual_seed(7))
    assert t.tolist() == [999, 999, 999] and torch.equal(x_t, noise)


def test_the_honest_control_starts_from_zeros_on_the_same_schedule():
    """train.denoiser_input=zeros: the deterministic head of the control sees an all-zero start at
    t=999 and, at t=499, the update of its own estimate from that zero start."""
    torch.manual_seed(0)
    net = PolypNet(NetConfig(input_size=64, refine_inputs=True)).eval()
    cond = torch.randn(2, net.cfg.denoiser_hidden, 16, 16)
    x_t, t = _sampler_noisy_mask(net, cond, MaskScheduler(), 0.0, torch.Generator().manual_seed(7), zero_noise=True)
    assert t.tolist() == [999, 999] and not x_t.any()
    x_t, t = _sampler_noisy_mask(net, cond, MaskScheduler(), 1.0, torch.Generator().manual_seed(7), zero_noise=True)
    steps = MaskScheduler()
    first, _ = steps.set_timesteps(2)
    zero = torch.zeros((2, 1, 16, 16))
    with torch.no_grad():
        expected, _ = steps.step(net.denoise(cond, zero, torch.full((2,), float(first))), first, zero)
    assert t.tolist() == [499, 499] and torch.allclose(x_t, expected, atol=1e-6)


def test_field_of_view_look_clears_the_mask_outside_it():
    img = np.full((64, 64, 3), 128, np.uint8)
    mask = np.ones((64, 64), np.float32)
    out, m = apply_look(img, mask, LookParams(fov=("circle", 0.45)))
    assert out[0, 0].sum() == 0 and m[0, 0] == 0  # a corner is outside the circle
    assert out[32, 32].sum() > 0 and m[32, 32] == 1
