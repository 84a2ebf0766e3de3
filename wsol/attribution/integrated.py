"""Path attributions: Integrated Gradients (Sundararajan et al. 2017) and GradientSHAP.

Both multiply the input–baseline difference by gradients averaged along the straight path from
the baseline to the input; IG integrates with a fixed quadrature rule, GradientSHAP (the
"expected gradients" estimator, Lundberg & Lee 2017) samples baselines and path positions.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attribution.common import (
    Target,
    check_choice,
    check_images,
    chunk_size,
    finish,
    make_generator,
    point_gradients,
    rand_like,
    reduce_channels,
    resolve_target,
)

RULES = ("riemann_left", "riemann_right", "riemann_middle", "trapezoid")
IG_BASELINES = ("black", "uniform", "blur")
SHAP_BASELINES = ("black", "uniform", "black+uniform")


def quadrature(n_steps: int, rule: str = "trapezoid") -> Tuple[torch.Tensor, torch.Tensor]:
    """Path positions α ∈ [0, 1] and weights (summing to 1) of a rule with ``n_steps`` intervals.

    Riemann rules use n points: left k/n (k = 0..n−1), right k/n (k = 1..n), middle (k + ½)/n,
    each weighted 1/n. "trapezoid" uses the n + 1 points k/n (k = 0..n) with weights 1/n and 1/(2n)
    at both ends: the ART metric's 100 steps over 101 points. Captum's "riemann_trapezoid" with
    n_steps = n + 1 puts the same points but weights 1/(n + 1) (ends halved), which sum to
    n/(n + 1); its maps are this rule's times n/(n + 1).
    """
    check_choice(rule, RULES, "integration rule")
    if n_steps < 1:
        raise ValueError(f"the number of IG steps must be positive, got {n_steps}")
    k = torch.arange(n_steps + (rule == "trapezoid"), dtype=torch.float64)
    weights = torch.full_like(k, 1.0 / n_steps)
    if rule == "riemann_left":
        alphas = k / n_steps
    elif rule == "riemann_right":
        alphas = (k + 1) / n_steps
    elif rule == "riemann_middle":
        alphas = (k + 0.5) / n_steps
    else:
        alphas = k / n_steps
        weights[0] /= 2
        weights[-1] /= 2
    return alphas, weights


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of N×C×H×W images (radius 3σ, borders replicated)."""
    if sigma <= 0:
        raise ValueError(f"blur sigma must be positive, got {sigma}")
    radius = max(1, int(math.ceil(3 * sigma)))
    grid = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(grid**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_baseline(
    x: torch.Tensor,
    baseline: Union[str, torch.Tensor] = "black",
    blur_sigma: float = 5.0,
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The IG reference image for each input, N×C×H×W.

    "black" is all zeros in [0, 1] space; "uniform" is seeded U[0, 1) noise, one image per input;
    "blur" is the input blurred with a Gaussian of ``blur_sigma`` pixels; a tensor (C×H×W,
    1×C×H×W or N×C×H×W) is used as given.
    """
    if isinstance(baseline, torch.Tensor):
        b = baseline.to(device=x.device, dtype=x.dtype)
        if b.dim() == 3:
            b = b[None]
        try:
            return b.expand_as(x)
        except RuntimeError:
            shape = tuple(baseline.shape)
            raise ValueError(f"baseline of shape {shape} does not fit images {tuple(x.shape)}") from None
    check_choice(baseline, IG_BASELINES, "IG baseline")
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "uniform":
        return rand_like(x, x.shape, make_generator(seed, generator), normal=False)
    return gaussian_blur(x, blur_sigma)


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    n_steps: int = 50,
    rule: str = "trapezoid",
    baseline: Union[str, torch.Tensor] = "black",
    blur_sigma: float = 5.0,
    objective: str = "logit",
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
    internal_batch_size: Optional[int] = 256,
    create_graph: bool = False,
    reduce: Optional[str] = None,
    detach_factor: bool = False,
) -> torch.Tensor:
    """Integrated Gradients (x − x̄) ⊙ ∫₀¹ ∇f(x̄ + α(x − x̄)) dα, N×C×H×W.

    The integral uses :func:`quadrature` (``n_steps`` intervals, ``rule``). Completeness: the map
    sums to f(x) − f(x̄) up to the quadrature error, which vanishes as ``n_steps`` grows.
    ``objective`` "logit" (default) or "ce" (the ART metric's cross-entropy). The path points go
    through the model in passes of at most ``internal_batch_size`` rows (at least one step for
    every image), so memory is bounded. With ``create_graph`` everything stays differentiable,
    including the (x − x̄) factor and a "blur" baseline's dependence on x, unless
    ``detach_factor`` makes that factor a constant (the official ART/RAR IFIA attack's chain
    rule, which differentiates only through the path points).
    ``target=None`` uses the class predicted for x.
    """
    check_images(x)
    t = resolve_target(model, x, target)
    base = x if create_graph else x.detach()
    ref = make_baseline(base, baseline, blur_sigma, seed, generator)
    alphas, weights = quadrature(n_steps, rule)
    alphas = alphas.to(device=x.device, dtype=x.dtype)
    weights = weights.to(device=x.device, dtype=x.dtype)
    diff = base - ref
    step = chunk_size(x.shape[0], alphas.numel(), internal_batch_size)
    avg_grad = torch.zeros_like(base)
    for k0 in range(0, alphas.numel(), step):
        a = alphas[k0 : k0 + step].view(1, -1, 1, 1, 1)
        points = ref[:, None] + a * diff[:, None]
        grads = point_gradients(model, points, t, objective, create_graph)
        avg_grad = avg_grad + (grads * weights[k0 : k0 + step].view(1, -1, 1, 1, 1)).sum(dim=1)
    factor = diff.detach() if detach_factor else diff
    return reduce_channels(finish(factor * avg_grad, create_graph), reduce)


def gradient_shap_from_draws(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    references: torch.Tensor,
    alphas: torch.Tensor,
    noise: Optional[torch.Tensor] = None,
    objective: str = "logit",
    internal_batch_size: Optional[int] = 256,
    create_graph: bool = False,
    reduce: Optional[str] = None,
) -> torch.Tensor:
    """GradientSHAP from explicit random draws, N×C×H×W.

    With S samples per image: ``references`` N×S×C×H×W baselines, ``alphas`` N×S path positions,
    ``noise`` N×S×C×H×W or None. Sample s of image i contributes (x̃ − r) ⊙ ∇f(r + α(x̃ − r)) with
    x̃ = x_i + noise_is and r = references_is; the map is the mean over s. This is Captum's
    GradientShap (NoiseTunnel "smoothgrad" over InputBaselineXGradient) given the same draws.
    """
    check_images(x)
    n = x.shape[0]
    s = alphas.shape[1] if alphas.dim() == 2 else -1
    if alphas.shape != (n, s) or references.shape != (n, s, *x.shape[1:]):
        raise ValueError(
            f"for images {tuple(x.shape)} references must be N×S×C×H×W and alphas N×S, "
            f"got {tuple(references.shape)} and {tuple(alphas.shape)}"
        )
    if noise is not None and noise.shape != references.shape:
        raise ValueError(f"noise must have the shape of references, got {tuple(noise.shape)}")
    t = resolve_target(model, x, target)
    base = x if create_graph else x.detach()
    references = references.to(device=x.device, dtype=x.dtype)
    alphas = alphas.to(device=x.device, dtype=x.dtype)
    step = chunk_size(n, s, internal_batch_size)
    acc = torch.zeros_like(base)
    for s0 in range(0, s, step):
        ref = references[:, s0 : s0 + step]
        noisy = base[:, None].expand_as(ref)
        if noise is not None:
            noisy = noisy + noise[:, s0 : s0 + step].to(device=x.device, dtype=x.dtype)
        a = alphas[:, s0 : s0 + step].reshape(n, -1, 1, 1, 1)
        points = ref + a * (noisy - ref)
        grads = point_gradients(model, points, t, objective, create_graph)
        acc = acc + ((noisy - ref) * grads).sum(dim=1)
    return reduce_channels(finish(acc / s, create_graph), reduce)


def draw_shap_samples(
    x: torch.Tensor,
    baselines: Union[str, torch.Tensor],
    n_samples: int,
    stdev: float,
    generator: torch.Generator,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """References, alphas and noise for :func:`gradient_shap_from_draws`, in that drawing order.

    A tensor of R reference images is sampled uniformly with replacement (as Captum does);
    "black" gives zeros, "uniform" a fresh U[0, 1) image per sample, "black+uniform" each of
    those with probability ½. Noise is N(0, stdev²) per pixel (none when stdev is 0); alphas
    are U[0, 1).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    n = x.shape[0]
    shape = (n, n_samples, *x.shape[1:])
    if isinstance(baselines, torch.Tensor):
        pool = baselines.to(device=x.device, dtype=x.dtype)
        pool = pool[None] if pool.dim() == 3 else pool
        if pool.dim() != 4 or pool.shape[1:] != x.shape[1:]:
            raise ValueError(f"baselines must be R×C×H×W like the images, got {tuple(baselines.shape)}")
        idx = torch.randint(pool.shape[0], (n * n_samples,), generator=generator, device=generator.device)
        references = pool[idx.to(x.device)].reshape(shape)
    else:
        check_choice(baselines, SHAP_BASELINES, "GradientSHAP baseline distribution")
        if baselines == "black":
            references = torch.zeros(shape, device=x.device, dtype=x.dtype)
        elif baselines == "uniform":
            references = rand_like(x, shape, generator, normal=False)
        else:
            black = rand_like(x, (n, n_samples, 1, 1, 1), generator, normal=False) < 0.5
            references = rand_like(x, shape, generator, normal=False).masked_fill(black, 0.0)
    noise = rand_like(x, shape, generator, normal=True) * stdev if stdev > 0 else None
    alphas = rand_like(x, (n, n_samples), generator, normal=False)
    return references, alphas, noise


def gradient_shap(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    n_samples: int = 20,
    baselines: Union[str, torch.Tensor] = "black+uniform",
    stdev: float = 0.0,
    objective: str = "logit",
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
    internal_batch_size: Optional[int] = 256,
    create_graph: bool = False,
    reduce: Optional[str] = None,
) -> torch.Tensor:
    """GradientSHAP / expected gradients with ``n_samples`` random (baseline, α, noise) draws.

    ``baselines`` is the reference distribution: a tensor R×C×H×W (sampled with replacement, as
    in Captum, which requires one) or "black", "uniform", "black+uniform" (default: half black
    images, half U[0, 1) noise images). ``stdev`` adds Gaussian noise to the input per sample
    (Captum's ``stdevs``, default 0). Draws come from ``generator`` or a CPU generator seeded
    with ``seed`` (see :func:`draw_shap_samples`). ``target=None`` uses the predicted class.
    """
    check_images(x)
    gen = make_generator(seed, generator)
    references, alphas, noise = draw_shap_samples(x.detach(), baselines, n_samples, stdev, gen)
    return gradient_shap_from_draws(
        model, x, target, references, alphas, noise, objective, internal_batch_size, create_graph, reduce
    )
