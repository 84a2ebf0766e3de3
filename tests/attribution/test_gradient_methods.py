"""Input gradients and SmoothGrad against Captum and against independent formulas."""
from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import NoiseTunnel, Saliency

from wsol.attribution import input_gradient, smoothgrad
from wsol.models import build_model


def _setup(arch: str = "small-cnn", n: int = 3, size: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(arch, 4, input_size=size).double().eval()
    x = torch.rand(n, 3, size, size, dtype=torch.float64)
    target = torch.arange(n) % 4
    return model, x, target


@pytest.mark.parametrize("arch", ["small-cnn", "wrn-16-2"])
def test_grad_matches_captum_saliency(arch: str) -> None:
    model, x, target = _setup(arch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = Saliency(model).attribute(x.clone(), target=target, abs=False)
    ours = input_gradient(model, x, target)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-14)


def test_ce_gradient_is_softmax_combination_of_logit_gradients() -> None:
    model, x, target = _setup()
    probs = torch.softmax(model(x), dim=1).detach()
    per_class = torch.stack([input_gradient(model, x, torch.full_like(target, k)) for k in range(4)], dim=1)
    expected = (probs[:, :, None, None, None] * per_class).sum(1) - per_class[torch.arange(3), target]
    ours = input_gradient(model, x, target, objective="ce")
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-13)
    # a confident-ish prediction: the CE gradient points against the logit gradient
    assert (ours * per_class[torch.arange(3), target]).sum() < 0


def test_grad_target_none_is_predicted_class_and_reduce() -> None:
    model, x, _ = _setup()
    pred = model(x).argmax(1)
    torch.testing.assert_close(input_gradient(model, x, None), input_gradient(model, x, pred))
    g = input_gradient(model, x, pred)
    torch.testing.assert_close(input_gradient(model, x, pred, reduce="mean_abs"), g.abs().mean(1))
    torch.testing.assert_close(input_gradient(model, x, pred, reduce="sum_abs"), g.abs().sum(1))


def test_smoothgrad_matches_captum_noise_tunnel_with_the_same_noise() -> None:
    model, x, target = _setup()
    samples, std = 4, 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(5)
        expected = NoiseTunnel(Saliency(model)).attribute(
            x.clone(), nt_type="smoothgrad", nt_samples=samples, stdevs=std, target=target, abs=False
        )
    # Captum draws torch.normal(0, std) for the N·S rows of input.repeat_interleave(S).
    torch.manual_seed(5)
    noise = torch.normal(0, torch.tensor(std).repeat((3 * samples, 3, 16, 16)))
    ours = smoothgrad(model, x, target, noise=noise.view(3, samples, 3, 16, 16), internal_batch_size=5)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-13)


def test_smoothgrad_seeding_noise_scale_and_chunking() -> None:
    model, x, target = _setup()
    a = smoothgrad(model, x, target, n_samples=6, seed=1)
    b = smoothgrad(model, x, target, n_samples=6, seed=1, internal_batch_size=3)
    c = smoothgrad(model, x, target, n_samples=6, seed=2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    tiny = smoothgrad(model, x, target, n_samples=3, noise_level=1e-9)
    torch.testing.assert_close(tiny, input_gradient(model, x, target), rtol=1e-5, atol=1e-9)
    # noise std = level × per-image range: a constant image gets no noise at all
    flat = torch.full_like(x[:1], 0.3)
    expected = input_gradient(model, flat, target[:1])
    torch.testing.assert_close(smoothgrad(model, flat, target[:1], n_samples=3), expected)
