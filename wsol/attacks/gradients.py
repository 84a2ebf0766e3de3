"""Input gradients of chosen logits, the building block of attribution losses and attacks.

:func:`input_gradients` gives g^y = ∇ₓ f(x)_y and g^{i*} = ∇ₓ f(x)_{i*} (i* the strongest wrong
class) from one forward with every ReLU switched to softplus_β (:func:`wsol.models.softplus`; the
same weights, any ``nn.Module``), differentiable again when ``create_graph`` (double
backpropagation). :func:`frozen_parameters` keeps weight branches out of attack graphs.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn

from wsol.models.activations import softplus
from wsol.models.batchnorm import fused_batch_norm, split_batch_norm


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (or ``model`` itself)."""
    return getattr(model, "module", model)


def strongest_wrong_class(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """i* = argmax_{i≠y} logits_i for every row (the true class is excluded even when it is the max)."""
    masked = logits.detach().clone()
    masked.scatter_(1, y.view(-1, 1), float("-inf"))
    return masked.argmax(dim=1)


def channel_scale(model: nn.Module, normalized: bool) -> Optional[torch.Tensor]:
    """The per-channel std (C×1×1) that turns ∂/∂x into ∂/∂(normalized x), or None when not ``normalized``."""
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
    :func:`wsol.models.batchnorm.fused_batch_norm` (same values, fewer operations; figures in docs/benchmarks.md). ``batched=True``: one forward of [x; x] and one backward of
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
    scale = channel_scale(model, normalized)
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
    scale = channel_scale(model, normalized)
    if scale is not None:
        grad = grad * scale
    return grad[:n], grad[n:], logits[:n], istar




@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Inside the block no parameter requires grad, so input-gradient graphs carry no weight branches
    (cheaper ART attack steps); the previous flags are restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
