"""Plain input gradients (Simonyan et al. 2014) and SmoothGrad (Smilkov et al. 2017)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from wsol.attribution.common import (
    Target,
    as_target,
    check_images,
    chunk_size,
    finish,
    make_generator,
    objective_value,
    point_gradients,
    rand_like,
    reduce_channels,
    resolve_target,
)


def input_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    objective: str = "logit",
    create_graph: bool = False,
    reduce: Optional[str] = None,
) -> torch.Tensor:
    """Gradient of the target's objective w.r.t. the [0, 1] input, N×C×H×W.

    ``objective="logit"`` (default) differentiates the target logit. ``objective="ce"``
    differentiates the cross-entropy at the target, as the official ART CUB code does (there the
    target is the predicted class). Its sign is opposite: ∇CE = Σ_k p_k ∇z_k − ∇z_t, so for a
    confident prediction it is close to −∇z_t; after "mean_abs" both give similar maps.
    ``target=None`` uses the predicted class, read from the same forward pass.
    """
    check_images(x)
    t = as_target(target, x.shape[0], x.device)
    xi = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xi)
        if t is None:
            t = logits.detach().argmax(dim=1)
        value = objective_value(logits, t, objective)
        (grads,) = torch.autograd.grad(value, xi, create_graph=create_graph)
    return reduce_channels(finish(grads, create_graph), reduce)


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    n_samples: int = 50,
    noise_level: float = 0.15,
    objective: str = "logit",
    seed: int = 0,
    generator: Optional[torch.Generator] = None,
    noise: Optional[torch.Tensor] = None,
    internal_batch_size: Optional[int] = 256,
    create_graph: bool = False,
    reduce: Optional[str] = None,
) -> torch.Tensor:
    """Mean input gradient over ``n_samples`` Gaussian-noised copies of each image, N×C×H×W.

    The noise standard deviation is ``noise_level`` × (max − min) of each image, the paper's
    σ/(x_max − x_min) (0.15 is its recommended level). Draws come from ``generator`` (else a CPU
    generator seeded with ``seed``). ``noise`` (N×S×C×H×W, already scaled) replaces the draws,
    e.g. to reproduce another library's samples. The noisy copies are not clamped to [0, 1].
    With ``create_graph`` the noise is a constant; the map depends on x through the noisy copies.
    ``target=None`` uses the class predicted for the clean image.
    """
    check_images(x)
    t = resolve_target(model, x, target)
    n = x.shape[0]
    if noise is None:
        if n_samples < 1:
            raise ValueError(f"n_samples must be positive, got {n_samples}")
        gen = make_generator(seed, generator)
        span = (x.detach().amax(dim=(1, 2, 3)) - x.detach().amin(dim=(1, 2, 3))).view(n, 1, 1, 1, 1)
        noise = rand_like(x, (n, n_samples, *x.shape[1:]), gen, normal=True) * (noise_level * span)
    elif noise.shape[:1] != x.shape[:1] or noise.shape[2:] != x.shape[1:]:
        raise ValueError(f"noise must be N×S×C×H×W for images {tuple(x.shape)}, got {tuple(noise.shape)}")
    noise = noise.to(device=x.device, dtype=x.dtype)
    base = x if create_graph else x.detach()
    total = noise.shape[1]
    step = chunk_size(n, total, internal_batch_size)
    acc = torch.zeros_like(base)
    for s0 in range(0, total, step):
        points = base[:, None] + noise[:, s0 : s0 + step]
        acc = acc + point_gradients(model, points, t, objective, create_graph).sum(dim=1)
    return reduce_channels(finish(acc / total, create_graph), reduce)
