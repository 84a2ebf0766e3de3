"""Shared pieces of the attribution methods: targets, objectives, batched input gradients.

Every gradient here is taken with ``torch.autograd.grad`` (never ``.backward()``), so parameter
``.grad`` fields and the model's train/eval mode are left exactly as the caller set them. With
``create_graph=True`` the returned maps stay in the autograd graph: a loss on them can be
differentiated w.r.t. the input (when it requires grad) and w.r.t. the model's weights.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.errors import UnknownNameError, did_you_mean
from wsol.utils.seeding import draw

Target = Union[None, int, Sequence[int], torch.Tensor]

OBJECTIVES = ("logit", "ce")
REDUCTIONS = (None, "mean_abs", "sum_abs")


def check_choice(value: object, choices: Sequence[object], what: str) -> None:
    """Raise a one-line :class:`UnknownNameError` when ``value`` is not one of ``choices``."""
    if value not in choices:
        names = ", ".join(repr(c) for c in choices)
        raise UnknownNameError(f"unknown {what} {value!r}; choose one of: {names}{did_you_mean(value, choices)}")


def check_images(x: torch.Tensor) -> None:
    """Images must be a floating N×C×H×W tensor."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected floating images of shape N×C×H×W, got {shape}")


def as_target(target: Target, n: int, device: torch.device) -> Optional[torch.Tensor]:
    """Turn ``target`` (None, one int, a sequence or a tensor) into an N-long LongTensor or None."""
    if target is None:
        return None
    t = torch.as_tensor(target, device=device).long().flatten()
    if t.numel() == 1 and n != 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"target has {t.numel()} entries for a batch of {n} images")
    return t


def predicted_class(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Top-1 class of each image (no graph is kept)."""
    with torch.no_grad():
        return model(x.detach()).argmax(dim=1)


def resolve_target(model: nn.Module, x: torch.Tensor, target: Target) -> torch.Tensor:
    """``target`` as an N-long LongTensor, the predicted class where it is None."""
    t = as_target(target, x.shape[0], x.device)
    return predicted_class(model, x) if t is None else t


def objective_value(logits: torch.Tensor, target: torch.Tensor, objective: str) -> torch.Tensor:
    """Scalar whose gradient w.r.t. each row's input is that row's attribution objective.

    ``"logit"`` sums the target logits; ``"ce"`` sums the per-image cross-entropy (reduction
    "sum", so a row's gradient does not depend on the batch size). ∇CE = Σ_k p_k ∇z_k − ∇z_t,
    i.e. minus the gradient of the target's log-softmax.
    """
    check_choice(objective, OBJECTIVES, "attribution objective")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"target classes must lie in [0, {logits.shape[1]}), got {target.tolist()}")
    if objective == "logit":
        return logits.gather(1, target[:, None]).sum()
    return F.cross_entropy(logits, target, reduction="sum")


def point_gradients(
    model: nn.Module,
    points: torch.Tensor,
    target: torch.Tensor,
    objective: str = "logit",
    create_graph: bool = False,
) -> torch.Tensor:
    """Gradients of the objective at ``points`` (N×K×C×H×W, K evaluation points per image).

    The N·K points go through the model as one batch; image i's points all use ``target[i]``.
    """
    n, k = points.shape[:2]
    flat = points.reshape(n * k, *points.shape[2:])
    if not create_graph:
        flat = flat.detach()
    if not flat.requires_grad:
        flat.requires_grad_(True)
    with torch.enable_grad():
        logits = model(flat)
        value = objective_value(logits, target.repeat_interleave(k), objective)
        (grads,) = torch.autograd.grad(value, flat, create_graph=create_graph)
    return grads.reshape(points.shape)


def chunk_size(n_images: int, n_points: int, internal_batch_size: Optional[int]) -> int:
    """Evaluation points per image in one forward pass, so a pass holds ≤ internal_batch_size rows."""
    if internal_batch_size is None:
        return n_points
    if internal_batch_size < 1:
        raise ValueError(f"internal_batch_size must be positive, got {internal_batch_size}")
    return max(1, min(n_points, internal_batch_size // max(n_images, 1)))


def reduce_channels(maps: torch.Tensor, reduce: Optional[str]) -> torch.Tensor:
    """None keeps N×C×H×W; "mean_abs"/"sum_abs" give N×H×W (mean/sum over channels of abs)."""
    check_choice(reduce, REDUCTIONS, "channel reduction")
    if reduce is None:
        return maps
    if reduce == "mean_abs":
        return maps.abs().mean(dim=1)
    return maps.abs().sum(dim=1)


def finish(maps: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Detach results unless the caller asked to differentiate through them."""
    return maps if create_graph else maps.detach()


def make_generator(seed: int, generator: Optional[Union[torch.Generator, Sequence[torch.Generator]]]) -> Union[torch.Generator, Sequence[torch.Generator]]:
    """The caller's generator (or one per image), or a fresh CPU generator seeded with ``seed``."""
    return generator if generator is not None else torch.Generator().manual_seed(int(seed))


def rand_like(x: torch.Tensor, shape: Sequence[int], generator: Union[torch.Generator, Sequence[torch.Generator]], normal: bool) -> torch.Tensor:
    """Uniform [0, 1) or standard normal draws (:func:`wsol.utils.seeding.draw`: one generator, or one per
    image) in ``x``'s dtype (float64 draws for a float64 ``x``) on ``x``'s device."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return draw(shape, generator, x.device, dtype, normal).to(dtype=x.dtype)
