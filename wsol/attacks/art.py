"""ART's attribution loss and its attack (Singh et al., ECCV 2020, §3.2 and Algorithm 1).

g^i(x) = ∇ₓ f(x)_i is the input gradient of logit i, computed with every ReLU switched to
softplus_β (same weights, :func:`wsol.models.softplus`). With y the true class and
i* = argmax_{i≠y} f(x)_i (the strongest wrong class, from the same softplus forward),

    d(g, x) = 1 − cos(g, x)                                   (flattened over C·H·W)
    L_attr(x, y) = log(1 + exp(−(d(g^{i*}, x) − d(g^y, x))))   (soft-margin triplet)

The attack (Algorithm 1) starts at x + U[−ε, ε] (clamped to [0, 1]) and takes ``steps`` sign-ascent
steps on L_attr, projecting to the ε-ball and to [0, 1] after each.

Cost: both input gradients come from one softplus forward (no model copy: the activations are
switched in place) and two backward passes that share it, and the attack runs with the parameters
frozen (no weight branches in its graphs). ``batched=True`` instead runs one forward of [x; x] and
one backward with per-half batch-norm statistics: the same numbers from fewer, larger kernels, but
more arithmetic (the forward runs twice), so it is slower on CPUs; see :func:`input_gradients`.
(Without the per-half statistics the doubled batch is NOT exact under train-mode batch norm: the
batch statistics couple the two halves' gradients.)

Options reproducing the official code (github nupurkmr9/Attributional-Robustness), all off by
default: ``normalized_cosine`` (cosine against the mean/std-normalized image, gradients taken
w.r.t. the normalized input, i.e. std·∂/∂x per channel), ``channel_mean`` (compare the channel
means of |x| and |g|: the CUB setting), ``pair_mining`` (the code's triplet mining over each
clean/perturbed pair) and in the attack ``topk`` (restrict L_attr to the k positions with the
largest |g^y| at the random start, ReLU path).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attacks.core import sign_ascent
from wsol.attacks.gradients import channel_scale, frozen_parameters, input_gradients, unwrap

_NORM_EPS = 1e-12


def _features(t: torch.Tensor, channel_mean: bool) -> torch.Tensor:
    """Flatten per sample: C·H·W signed entries, or the H·W channel mean of |t| (CUB setting)."""
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    if channel_mean:
        return t.abs().mean(dim=1).flatten(1)
    return t.flatten(1)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row 1 − cos(a, b) of two B×D matrices (norms clamped away from zero)."""
    dot = (a * b).sum(dim=1)
    norms = a.norm(dim=1).clamp_min(_NORM_EPS) * b.norm(dim=1).clamp_min(_NORM_EPS)
    return 1.0 - dot / norms


def soft_margin_triplet(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(−(d(negative, anchor) − d(positive, anchor)))) per row."""
    return F.softplus(cosine_distance(positive, anchor) - cosine_distance(negative, anchor))


def paired_soft_margin_triplet(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """The official code's 'hard mining' over pairs: rows i and i + B (B = half the rows) are the
    clean and perturbed copies of one image; each row takes the larger anchor–positive distance and
    the smaller anchor–negative distance over its own and its partner's gradients."""
    n = anchor.shape[0]
    if n % 2:
        raise ValueError("pair mining needs an even number of rows: [clean; perturbed]")
    partner = torch.arange(n, device=anchor.device).roll(n // 2)
    d_ap = torch.maximum(cosine_distance(positive, anchor), cosine_distance(positive[partner], anchor))
    d_an = torch.minimum(cosine_distance(negative, anchor), cosine_distance(negative[partner], anchor))
    return F.softplus(d_ap - d_an)


def attribution_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 50.0,
    *,
    normalized_cosine: bool = False,
    channel_mean: bool = False,
    index: Optional[torch.Tensor] = None,
    create_graph: bool = True,
    batched: bool = False,
    pair_mining: bool = False,
) -> torch.Tensor:
    """Per-sample L_attr(x, y) (shape B); differentiable w.r.t. the parameters and ``x``.

    ``model`` is any ``nn.Module`` mapping [0, 1] images to logits whose ReLUs :func:`wsol.models.softplus`
    can switch (ReLU modules or smooth activations). ``normalized_cosine`` (needs a model with
    ``normalize`` and ``std``, e.g. a :class:`~wsol.models.classifier.Classifier`): anchor =
    ``model.normalize(x)`` and gradients w.r.t. the normalized input. ``channel_mean``: compare mean_c |·| maps (H·W entries).
    ``index`` (B×k, long): compare only these positions of the flattened vectors (the official
    attack's top-k restriction). ``batched``: see :func:`input_gradients` (same numbers).
    ``pair_mining``: ``x`` is [clean; perturbed] and each row is scored against its partner's
    gradients too (:func:`paired_soft_margin_triplet`, the official code's training loss).
    """
    g_y, g_i, _, _ = input_gradients(
        model, x, y, beta, create_graph=create_graph, normalized=normalized_cosine, batched=batched
    )
    anchor = unwrap(model).normalize(x) if normalized_cosine else x
    a, p, q = (_features(t, channel_mean) for t in (anchor, g_y, g_i))
    if index is not None:
        a, p, q = (t.gather(1, index) for t in (a, p, q))
    if pair_mining:
        return paired_soft_margin_triplet(a, p, q)
    return soft_margin_triplet(a, p, q)


def topk_positions(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, normalized: bool = False, channel_mean: bool = False
) -> torch.Tensor:
    """B×k indices of the largest |g^y| entries (ReLU path, no graph) in the flattened feature layout."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.gather(1, y.view(-1, 1)).sum(), x)
    scale = channel_scale(model, normalized)
    if scale is not None:
        grad = grad * scale
    saliency = _features(grad, channel_mean).abs()
    return saliency.topk(min(k, saliency.shape[1]), dim=1).indices


def art_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 8 / 255,
    step_size: float = 1.5 / 255,
    steps: int = 3,
    beta: float = 50.0,
    *,
    random_start: bool = True,
    topk: Optional[int] = None,
    normalized_cosine: bool = False,
    channel_mean: bool = False,
    ce_weight: float = 0.0,
    generator: Optional[torch.Generator] = None,
    init_delta: Optional[torch.Tensor] = None,
    batched: bool = False,
) -> torch.Tensor:
    """x̃ maximizing L_attr in the ℓ∞ ball (Algorithm 1, lines 4–8); returns detached images.

    :func:`~wsol.attacks.core.sign_ascent` from x + U[−ε, ε] (or ``x + init_delta``; from x itself
    without ``random_start``) on L = Σ L_attr (+ ``ce_weight``·Σ CE on the ReLU path, the "ART + PGD"
    variant of App. C), with the parameters frozen. ``topk`` restricts L_attr to the k largest |g^y|
    positions, found once at the starting point.
    """
    index: Optional[torch.Tensor] = None

    def objective(x_adv: torch.Tensor) -> torch.Tensor:
        nonlocal index
        if topk and index is None:
            index = topk_positions(model, x_adv.detach(), y, topk, normalized_cosine, channel_mean)
        loss = attribution_loss(
            model, x_adv, y, beta,
            normalized_cosine=normalized_cosine, channel_mean=channel_mean, index=index, batched=batched,
        ).sum()
        if ce_weight:
            loss = loss + ce_weight * F.cross_entropy(model(x_adv).float(), y, reduction="sum")
        return loss

    with frozen_parameters(model):
        result = sign_ascent(
            objective, x, eps, step_size, steps, random_start=random_start, generator=generator, init_delta=init_delta
        )
    return result.x_adv
