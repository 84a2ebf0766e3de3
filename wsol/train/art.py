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

from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attacks.adversarial import project_linf, random_start_point
from wsol.models.activations import softplus
from wsol.models.batchnorm import fused_batch_norm, patched_forward

_NORM_EPS = 1e-12


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


def strongest_wrong_class(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """i* = argmax_{i≠y} logits_i for every row (the true class is excluded even when it is the max)."""
    masked = logits.detach().clone()
    masked.scatter_(1, y.view(-1, 1), float("-inf"))
    return masked.argmax(dim=1)


def _channel_scale(model: nn.Module, normalized: bool) -> Optional[torch.Tensor]:
    if not normalized:
        return None
    std = getattr(unwrap(model), "std", None)
    if std is None:
        raise ValueError("normalized_cosine needs a Classifier (a model with mean/std normalization inside)")
    return std


def input_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float = 50.0,
    create_graph: bool = True,
    normalized: bool = False,
    batched: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g^y, g^{i*}, softplus logits, i*) of ``x`` from one softplus forward (same weights).

    Gradients are w.r.t. the [0, 1] image, or w.r.t. the normalized image when ``normalized``
    (std · ∂/∂x per channel). With ``create_graph`` they stay differentiable (for the attack and for
    the training loss); they depend on the parameters and on ``x`` if it requires grad.

    ``batched=False`` (default): one forward of the batch and two backward passes sharing it (the
    fewest operations); on CPU tensors its train-mode batch norms differentiate twice through
    :func:`wsol.models.batchnorm.fused_batch_norm` (same values, about 4× cheaper). ``batched=True``: one forward of [x; x] and one backward of
    Σ f_y(first half) + Σ f_{i*}(second half); batch norm in train mode then normalizes each half
    with its own statistics (equal to the batch's) so that no gradient leaks between the halves
    and the result is the same. Fewer, larger kernels: worth trying on GPUs.
    """
    if batched:
        return _input_gradients_doubled(model, x, y, beta, create_graph, normalized)
    inp = x if x.requires_grad else x.detach().requires_grad_(True)
    with torch.enable_grad(), softplus(model, beta), fused_batch_norm(model):
        logits = model(inp)
    istar = strongest_wrong_class(logits, y)
    rows = torch.arange(len(y), device=y.device)
    (g_y,) = torch.autograd.grad(logits[rows, y].sum(), inp, create_graph=create_graph, retain_graph=True)
    (g_i,) = torch.autograd.grad(logits[rows, istar].sum(), inp, create_graph=create_graph)
    scale = _channel_scale(model, normalized)
    if scale is not None:
        g_y, g_i = g_y * scale, g_i * scale
    return g_y, g_i, logits, istar


def _input_gradients_doubled(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, beta: float, create_graph: bool, normalized: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n = x.shape[0]
    doubled = torch.cat([x, x])
    if not doubled.requires_grad:
        doubled.requires_grad_(True)
    with torch.enable_grad(), softplus(model, beta), split_batch_norm(model, 2):
        logits = model(doubled)
    istar = strongest_wrong_class(logits[:n], y)
    target = logits[:n].gather(1, y.view(-1, 1)).sum() + logits[n:].gather(1, istar.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(target, doubled, create_graph=create_graph)
    scale = _channel_scale(model, normalized)
    if scale is not None:
        grad = grad * scale
    return grad[:n], grad[n:], logits[:n], istar


@contextmanager
def split_batch_norm(model: nn.Module, groups: int) -> Iterator[None]:
    """Inside the block, train-mode batch norm normalizes each of ``groups`` equal slices of the batch
    with that slice's own statistics; running statistics are updated from the first slice only."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if any(isinstance(m, nn.SyncBatchNorm) for m in norms):
        raise ValueError("split_batch_norm does not support SyncBatchNorm; use batched=False")
    with patched_forward(norms, _split_bn_forward(groups)):
        yield


def _split_bn_forward(groups: int):
    def forward(self: nn.modules.batchnorm._BatchNorm, inp: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return type(self).forward(self, inp)
        size = inp.shape[0] // groups
        parts = [type(self).forward(self, inp[:size])]
        for g in range(1, groups):
            chunk = inp[g * size:(g + 1) * size]
            parts.append(F.batch_norm(chunk, None, None, self.weight, self.bias, True, 0.0, self.eps))
        return torch.cat(parts)

    return forward


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

    ``model`` maps [0, 1] images to logits and must have switchable activations (every model from
    :func:`wsol.models.build_model`). ``normalized_cosine``: anchor = ``model.normalize(x)`` and
    gradients w.r.t. the normalized input. ``channel_mean``: compare mean_c |·| maps (H·W entries).
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


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Inside the block no parameter requires grad, so input-gradient graphs carry no weight branches
    (about 10% faster ART attack steps); the previous flags are restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def topk_positions(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, normalized: bool = False, channel_mean: bool = False
) -> torch.Tensor:
    """B×k indices of the largest |g^y| entries (ReLU path, no graph) in the flattened feature layout."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.gather(1, y.view(-1, 1)).sum(), x)
    scale = _channel_scale(model, normalized)
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
    topk: Optional[int] = None,
    normalized_cosine: bool = False,
    channel_mean: bool = False,
    ce_weight: float = 0.0,
    generator: Optional[torch.Generator] = None,
    init_delta: Optional[torch.Tensor] = None,
    batched: bool = False,
) -> torch.Tensor:
    """x̃ maximizing L_attr in the ℓ∞ ball (Algorithm 1, lines 4–8); returns detached images.

    Start at x + U[−ε, ε] clamped to [0, 1] (or at ``x + init_delta``); then ``steps`` times
    x̃ ← Proj(x̃ + α·sign(∇ L)) with L = Σ L_attr (+ ``ce_weight``·Σ CE on the ReLU path, the
    "ART + PGD" variant of App. C). ``topk`` restricts L_attr to the k largest |g^y| positions found
    once at the random start.
    """
    x = x.detach()
    x_adv = random_start_point(x, eps, generator, init_delta) if eps > 0 else x.clone()
    with frozen_parameters(model):
        return _art_steps(model, x, x_adv, y, eps, step_size, steps, beta, topk, normalized_cosine, channel_mean, ce_weight, batched)


def _art_steps(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    beta: float,
    topk: Optional[int],
    normalized_cosine: bool,
    channel_mean: bool,
    ce_weight: float,
    batched: bool,
) -> torch.Tensor:
    index = topk_positions(model, x_adv, y, topk, normalized_cosine, channel_mean) if topk else None
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = attribution_loss(
                model,
                x_adv,
                y,
                beta,
                normalized_cosine=normalized_cosine,
                channel_mean=channel_mean,
                index=index,
                batched=batched,
            ).sum()
            if ce_weight:
                loss = loss + ce_weight * F.cross_entropy(model(x_adv).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project_linf(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()
