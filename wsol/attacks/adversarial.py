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

from wsol.attacks.core import sign_ascent

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    loss_fn = loss_fn or _summed_cross_entropy
    result = sign_ascent(
        lambda x_adv: loss_fn(model(x_adv), y), x, eps, step_size, steps,
        random_start=random_start, generator=generator, init_delta=init_delta,
    )
    return result.x_adv



def _summed_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="sum")
