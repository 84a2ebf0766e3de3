"""ℓ∞ projected gradient descent (Madry et al.): the attack used by PGD training and evaluation.

Images are in [0, 1] and the model normalizes inside, so ``eps`` and ``step_size`` are in pixel
units (8/255 means eight grey levels). Only the input gradient is taken (``torch.autograd.grad``),
so parameter ``.grad`` fields are never touched and the model's train/eval mode is left as the
caller set it.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def uniform_noise(
    shape: torch.Size | tuple, generator: Optional[torch.Generator] = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """U[−1, 1] noise of ``shape`` drawn from ``generator`` (or the global RNG) and moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    noise = torch.rand(shape, generator=generator, device=gen_device) * 2 - 1
    return noise.to(device) if device is not None else noise


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the ℓ∞ ball of radius ``eps`` around ``x`` and onto [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def random_start_point(
    x: torch.Tensor, eps: float, generator: Optional[torch.Generator] = None, init_delta: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``x`` + U[−ε, ε] (or ``x + init_delta``), projected to the ε-ball and to [0, 1]."""
    delta = init_delta.to(x) if init_delta is not None else eps * uniform_noise(x.shape, generator, x.device).to(x.dtype)
    return project_linf(x.detach() + delta, x.detach(), eps)


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    loss_fn: Optional[LossFn] = None,
    generator: Optional[torch.Generator] = None,
    init_delta: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Untargeted ℓ∞ PGD: ``steps`` sign-gradient ascent steps on ``loss_fn(model(x̃), y)``.

    ``loss_fn`` defaults to the summed cross-entropy (a sum, so every sample's step is its own
    gradient sign). With ``random_start`` the search starts at ``x + U[−ε, ε]`` drawn from
    ``generator`` (or ``x + init_delta`` when a starting perturbation is given, which lets callers
    make the start a function of the sample rather than of the batch split). Every iterate is
    projected to the ε-ball and to [0, 1]. Returns the detached adversarial images.
    """
    if eps < 0 or step_size < 0 or steps < 0:
        raise ValueError("eps, step_size and steps must not be negative")
    loss_fn = loss_fn or _summed_cross_entropy
    x = x.detach()
    if random_start and eps > 0:
        x_adv = random_start_point(x, eps, generator, init_delta)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project_linf(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()



def _summed_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="sum")
