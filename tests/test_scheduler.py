"""The few-step scheduler: exact timesteps, add_noise/step round trips, numpy == torch."""

import numpy as np
import pytest
import torch

from endostream.model.scheduler import MaskScheduler


def test_trailing_timesteps_are_exact():
    s = MaskScheduler(1000)
    assert s.set_timesteps(1) == [999]
    assert s.set_timesteps(2) == [999, 499]
    assert s.set_timesteps(4) == [999, 749, 499, 249]
    assert s.set_timesteps(2, start_t=499) == [499, 249]
    with pytest.raises(ValueError):
        s.set_timesteps(0)


def test_schedule_is_monotonic_and_ends_near_pure_noise():
    a = MaskScheduler(1000).alphas_cumprod
    assert np.all(np.diff(a) < 0)
    assert a[0] > 0.99 and a[-1] < 1e-3


def test_perfect_x0_prediction_is_a_fixed_point_of_step():
    """If the network predicts the true x0, DDIM must land exactly on it, from any start."""
    s = MaskScheduler(1000)
    rng = np.random.default_rng(0)
    mask = (rng.random((1, 1, 8, 8)) > 0.5).astype(np.float32)
    x0 = s.mask_to_signal(mask)
    logits = np.where(mask > 0, 30.0, -30.0).astype(np.float32)  # ~certain prediction of x0
    sample = rng.standard_normal(x0.shape).astype(np.float32)
    for t in s.set_timesteps(4):
        sample, prob = s.step(logits, t, sample)
    np.testing.assert_allclose(sample, x0, atol=1e-6)
    np.testing.assert_allclose(prob, mask, atol=1e-6)


def test_step_passes_the_estimate_on():
    """The next sample carries the current x0 estimate: different logits -> different samples."""
    s = MaskScheduler(1000)
    s.set_timesteps(2)
    sample = np.zeros((1, 1, 4, 4), np.float32)
    a, _ = s.step(np.full_like(sample, 5.0), 999, sample)
    b, _ = s.step(np.full_like(sample, -5.0), 999, sample)
    assert np.all(a > b)


def test_add_noise_matches_closed_form_and_torch_equals_numpy():
    s = MaskScheduler(1000)
    x0 = np.ones((2, 1, 4, 4), np.float32)
    noise = np.full_like(x0, 0.5)
    out = s.add_noise(x0, noise, 499)
    a = s.alphas_cumprod[499]
    np.testing.assert_allclose(out, np.sqrt(a) * x0 + np.sqrt(1 - a) * noise, rtol=1e-6)
    per = s.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.tensor([499, 0]))
    np.testing.assert_allclose(per[0].numpy(), out[0], rtol=1e-5)
    np.testing.assert_allclose(per[1].numpy(), np.sqrt(s.alphas_cumprod[0]) * x0[1] + np.sqrt(1 - s.alphas_cumprod[0]) * 0.5, rtol=1e-5)
    s.set_timesteps(2)
    logits = np.linspace(-3, 3, 16, dtype=np.float32).reshape(1, 1, 4, 4)
    n_sample, n_prob = s.step(logits, 999, noise[:1])
    t_sample, t_prob = s.step(torch.from_numpy(logits), 999, torch.from_numpy(noise[:1]))
    np.testing.assert_allclose(t_sample.numpy(), n_sample, atol=1e-5)
    np.testing.assert_allclose(t_prob.numpy(), n_prob, atol=1e-6)


def test_scheduler_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, endostream.model.scheduler, endostream.inference.segmenter; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
