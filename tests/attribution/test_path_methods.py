"""Integrated Gradients and GradientSHAP: Captum oracles, completeness, baselines, batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import GradientShap, IntegratedGradients
from scipy.ndimage import gaussian_filter

from wsol.attribution import (
    gaussian_blur,
    gradient_shap,
    gradient_shap_from_draws,
    integrated_gradients,
    make_baseline,
    quadrature,
)
from wsol.errors import UnknownNameError
from wsol.models import build_model, softplus


def _setup(arch: str = "small-cnn", n: int = 3, size: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(arch, 4, input_size=size).double().eval()
    x = torch.rand(n, 3, size, size, dtype=torch.float64)
    target = torch.arange(n) % 4
    return model, x, target


def test_quadrature_rules() -> None:
    a, w = quadrature(4, "trapezoid")
    torch.testing.assert_close(a, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    torch.testing.assert_close(w, torch.tensor([0.125, 0.25, 0.25, 0.25, 0.125], dtype=torch.float64))
    a, w = quadrature(4, "riemann_middle")
    torch.testing.assert_close(a, torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64))
    assert float(w.sum()) == pytest.approx(1.0)
    with pytest.raises(UnknownNameError, match="integration rule"):
        quadrature(4, "simpson")


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle"])
def test_ig_riemann_matches_captum(rule: str) -> None:
    model, x, target = _setup()
    baseline = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    # Captum builds its path positions with a float32 linspace; with 8 steps they are exact.
    expected = IntegratedGradients(model).attribute(x, baselines=baseline, target=target, n_steps=8, method=rule)
    ours = integrated_gradients(model, x, target, n_steps=8, rule=rule, baseline=baseline, internal_batch_size=7)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("arch", ["small-cnn", "wrn-16-2"])
def test_ig_trapezoid_matches_captum_up_to_its_weight_sum(arch: str) -> None:
    # Captum's riemann_trapezoid over n + 1 points weights them 1/(n+1) (ends halved): a total of
    # n/(n+1) instead of 1. Our trapezoid over the same points is the exact rule. Captum holds the
    # weight 1/(n+1) in float32, hence the tolerance.
    model, x, target = _setup(arch)
    n = 8
    expected = IntegratedGradients(model).attribute(x, target=target, n_steps=n + 1, method="riemann_trapezoid")
    ours = integrated_gradients(model, x, target, n_steps=n, rule="trapezoid", baseline="black")
    torch.testing.assert_close(ours * n / (n + 1), expected, rtol=1e-6, atol=1e-12)


def _completeness_error(model, x, target, baseline, n_steps, rule="trapezoid", objective="logit"):
    ref = make_baseline(x, baseline, seed=3)
    ig = integrated_gradients(model, x, target, n_steps=n_steps, rule=rule, baseline=ref, objective=objective)
    if objective == "logit":
        gap = model(x).gather(1, target[:, None])[:, 0] - model(ref).gather(1, target[:, None])[:, 0]
    else:
        ce = [F.cross_entropy(model(z), target, reduction="none") for z in (x, ref)]
        gap = ce[0] - ce[1]
    return (ig.sum(dim=(1, 2, 3)) - gap.detach()).abs().max().item(), gap.abs().min().item()


@pytest.mark.parametrize("baseline", ["black", "uniform", "blur"])
def test_ig_completeness_improves_with_steps(baseline: str) -> None:
    model, x, target = _setup(size=8)
    with softplus(model, beta=5.0):
        errors = [_completeness_error(model, x, target, baseline, n)[0] for n in (2, 8, 32, 128)]
        _, gap = _completeness_error(model, x, target, baseline, 2)
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-3 * gap, (errors, gap)


def test_ig_completeness_for_ce_objective_and_riemann_rule() -> None:
    model, x, target = _setup(size=8)
    with softplus(model, beta=5.0):
        coarse, gap = _completeness_error(model, x, target, "black", 4, "riemann_right", "ce")
        fine, _ = _completeness_error(model, x, target, "black", 256, "riemann_right", "ce")
    # the right Riemann rule's error is O(1/n): 64 times more steps, about 64 times smaller
    assert fine < coarse / 30 and fine < 0.05 * gap, (coarse, fine, gap)


def test_ig_chunking_and_baselines() -> None:
    model, x, target = _setup()
    whole = integrated_gradients(model, x, target, n_steps=10, internal_batch_size=None)
    torch.testing.assert_close(integrated_gradients(model, x, target, n_steps=10, internal_batch_size=1), whole)
    torch.testing.assert_close(integrated_gradients(model, x, target, n_steps=10, internal_batch_size=7), whole)
    torch.testing.assert_close(make_baseline(x, "black"), torch.zeros_like(x))
    u1, u2 = make_baseline(x, "uniform", seed=1), make_baseline(x, "uniform", seed=1)
    torch.testing.assert_close(u1, u2)
    assert 0 <= float(u1.min()) and float(u1.max()) < 1 and not torch.equal(u1, make_baseline(x, "uniform", seed=2))
    with pytest.raises(UnknownNameError, match="IG baseline"):
        make_baseline(x, "gray")
    with pytest.raises(ValueError, match="does not fit"):
        make_baseline(x, torch.zeros(3, 8, 8))


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_gaussian_blur_matches_scipy(sigma: float) -> None:
    x = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    expected = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=3.0)
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_gradshap_matches_captum_given_the_same_draws() -> None:
    # Captum draws (in order) baseline indices with np.random.choice, noise with torch.normal,
    # then path positions with np.random.uniform. Re-drawing them from the same seeds and passing
    # them explicitly makes the comparison exact.
    model, x, target = _setup()
    pool = torch.rand(5, 3, 16, 16, dtype=torch.float64)
    samples, std = 4, 0.1
    np.random.seed(7)
    torch.manual_seed(11)
    expected = GradientShap(model).attribute(x, baselines=pool, n_samples=samples, stdevs=std, target=target)
    np.random.seed(7)
    torch.manual_seed(11)
    idx = np.random.choice(5, samples * 3)
    noise = torch.normal(0, torch.tensor(std).repeat((3 * samples, 3, 16, 16))).view(3, samples, 3, 16, 16)
    alphas = torch.tensor(np.random.uniform(0, 1, 3 * samples)).view(3, samples)
    refs = pool[idx].view(3, samples, 3, 16, 16)
    ours = gradient_shap_from_draws(model, x, target, refs, alphas, noise.double(), internal_batch_size=7)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-14)


def test_gradshap_seeded_and_converges_to_ig_for_a_black_baseline() -> None:
    model, x, target = _setup(n=2)
    a = gradient_shap(model, x, target, n_samples=8, seed=4)
    torch.testing.assert_close(a, gradient_shap(model, x, target, n_samples=8, seed=4, internal_batch_size=3))
    assert not torch.allclose(a, gradient_shap(model, x, target, n_samples=8, seed=5))
    pool = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    assert gradient_shap(model, x, target, n_samples=4, baselines=pool, stdev=0.05).shape == x.shape
    # With a black reference, expected gradients are IG with uniformly drawn path positions.
    small, xs, ts = _setup(n=1, size=8)
    with softplus(small, beta=5.0):
        mc = gradient_shap(small, xs, ts, n_samples=500, baselines="black", seed=0, internal_batch_size=512)
        ig = integrated_gradients(small, xs, ts, n_steps=64, baseline="black")
    rel = ((mc - ig).norm() / ig.norm()).item()
    assert rel < 0.05, rel
    with pytest.raises(UnknownNameError, match="GradientSHAP baseline"):
        gradient_shap(model, x, target, baselines="white")
