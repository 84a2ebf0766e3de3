"""PGD robustness evaluation (SPEC §5) and the monotone ε sweep.

:func:`pgd_evaluate` runs k-step PGD with r random restarts, ℓ∞ (on the sign-ascent core) or ℓ2
(a normalized-gradient step and ℓ2-ball projection, defined here), on the cross-entropy or the
margin (CW) loss, and keeps per sample the worst case over restarts: a sample is robust only if no
restart misclassifies it.

:func:`epsilon_sweep` evaluates any ``attack(x, y, eps) -> x_adv`` over an increasing list of ε.
A perturbation valid at a smaller ε is valid at every larger one, so at each ε it attacks only the
points still robust at the previous ε: the robust sets are nested (the curve is monotone) and a
point broken at a smaller ε is never attacked again. Points that stay robust are attacked at every ε
either way, so the saving is only the attacks on points already broken.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attacks.autoattack import check_perturbation
from wsol.attacks.core import sign_ascent, uniform_noise
from wsol.errors import ConfigError

Attack = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
"""Maps (x N×C×H×W in [0, 1], labels N, ε) to adversarial images inside the ε-ball and [0, 1]."""

LOSSES = ("ce", "cw")
NORMS = ("linf", "l2")
PRESETS = {
    "pgd40": dict(eps=8 / 255, steps=40, norm="linf"),
    "pgd100": dict(eps=8 / 255, steps=100, norm="linf"),
    "pgd500": dict(eps=8 / 255, steps=500, norm="linf"),
    "pgd40-l2": dict(eps=1.0, steps=40, norm="l2"),
}
"""The paper's PGD evaluations (SPEC §5): ``pgd_evaluate(model, x, y, **PRESETS[name])``."""
DEFAULT_EPS_GRID = tuple(range(9))
"""ε = x/255 for x in 0..8: the per-class study's grid."""


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample CW margin max_{j≠y} z_j − z_y: positive exactly when the sample is misclassified."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - true


def _loss(name: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if name == "ce":
        return F.cross_entropy(logits.float(), y, reduction="none")
    return margin_loss(logits, y)


def project_l2(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto the ℓ2 ball of radius ``eps`` around ``x`` (per sample) and onto [0, 1]."""
    delta = (x_adv - x).flatten(1)
    scale = (eps / delta.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return (x + (delta * scale[:, None]).view_as(x)).clamp(0.0, 1.0)


def l2_ascent(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    *,
    random_start: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """ℓ2 counterpart of ``sign_ascent``: x̃ ← Proj_{ε, [0,1]}(x̃ + α·g/‖g‖₂), per sample.

    The random start is a uniform direction scaled by U[0, 1]·ε.
    """
    x = x.detach()
    x_adv = x.clone()
    if random_start and eps > 0:
        direction = uniform_noise(x.shape, generator, x.device).to(x.dtype).flatten(1)
        radius = (uniform_noise((x.shape[0],), generator, x.device).to(x.dtype) + 1) / 2 * eps
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12) * radius[:, None]
        x_adv = project_l2(x + direction.view_as(x), x, eps)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(objective(x_adv).sum(), x_adv)
        g = grad.flatten(1)
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        x_adv = project_l2(x_adv.detach() + step_size * g.view_as(x), x, eps)
    return x_adv.detach()


@dataclass
class PGDResult:
    """Per sample: the worst-case adversarial image over restarts, its prediction, loss and robustness."""

    x_adv: torch.Tensor
    adv_pred: torch.Tensor
    loss: torch.Tensor
    clean_correct: torch.Tensor
    robust: torch.Tensor

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.double().mean()) if self.robust.numel() else float("nan")


def pgd_evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int = 40,
    restarts: int = 1,
    norm: str = "linf",
    loss: str = "ce",
    step_size: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> PGDResult:
    """PGD-``steps`` with ``restarts`` random restarts; per sample the worst case over restarts.

    ``step_size`` defaults to 2.5·ε/steps (Madry et al.). Within a restart the last iterate is
    used; across restarts a sample keeps the first restart that misclassifies it, else the one with
    the highest loss. Every returned image is checked to lie in the ball and in [0, 1].
    """
    norm, loss = norm.lower(), loss.lower()
    if norm not in NORMS:
        raise ConfigError(f"unknown PGD norm {norm!r}: use one of {', '.join(NORMS)}")
    if loss not in LOSSES:
        raise ConfigError(f"unknown PGD loss {loss!r}: use one of {', '.join(LOSSES)}")
    if eps < 0 or steps < 0 or restarts < 1:
        raise ConfigError("PGD needs eps ≥ 0, steps ≥ 0 and at least one restart")
    x, y = x.detach(), y.detach()
    alpha = step_size if step_size is not None else (2.5 * eps / steps if steps else 0.0)

    def objective(x_adv: torch.Tensor) -> torch.Tensor:
        return _loss(loss, model(x_adv), y)

    with torch.no_grad():
        clean_pred = model(x).argmax(1)
    best_x, best_pred = x.clone(), clean_pred.clone()
    with torch.no_grad():
        best_loss = _loss(loss, model(x), y)
    fooled = clean_pred != y
    for _ in range(restarts):
        if norm == "linf":
            cand = sign_ascent(objective, x, eps, alpha, steps, random_start=True, generator=generator).x_adv
        else:
            cand = l2_ascent(objective, x, eps, alpha, steps, generator=generator)
        check_perturbation(cand, x, eps, norm)
        with torch.no_grad():
            logits = model(cand)
        cand_pred, cand_loss = logits.argmax(1), _loss(loss, logits, y)
        cand_fooled = cand_pred != y
        take = (~fooled) & (cand_fooled | (cand_loss > best_loss))
        best_x[take], best_pred[take], best_loss[take] = cand[take], cand_pred[take], cand_loss[take]
        fooled = fooled | cand_fooled
    clean_correct = clean_pred == y
    return PGDResult(best_x, best_pred, best_loss, clean_correct, clean_correct & (best_pred == y))


def pgd_attack_fn(model: nn.Module, **kwargs) -> Attack:
    """An ``attack(x, y, eps) -> x_adv`` callable running :func:`pgd_evaluate` with ``kwargs``."""

    def attack(x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return pgd_evaluate(model, x, y, eps=eps, **kwargs).x_adv

    return attack


@dataclass
class SweepResult:
    """``robust`` E×N bool and ``adv_pred`` E×N (the prediction that broke it, or the clean one) per ε."""

    eps: List[float]
    labels: torch.Tensor
    robust: torch.Tensor
    adv_pred: torch.Tensor
    attacked: List[int]


def epsilon_sweep(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list: Sequence[float],
    *,
    incremental: bool = True,
    norm: str = "linf",
    on_step: Optional[Callable[[int, int], None]] = None,
) -> SweepResult:
    """Robustness of each sample at each ε of an increasing ``eps_list``.

    ``incremental`` attacks at each ε only the points robust at the previous one (a point broken
    at a smaller ε counts as broken at every larger ε); otherwise every ε attacks every
    clean-correct point from scratch (the reference the incremental sweep is checked against).
    ``attacked`` counts the points handed to the attack at each ε; ``on_step(k, points)`` is called as the
    attack at ``eps_list[k]`` starts, for each ε > 0 (a job reports progress with it).
    """
    eps_list = [float(e) for e in eps_list]
    if any(b <= a for a, b in zip(eps_list, eps_list[1:])) or any(e < 0 for e in eps_list):
        raise ConfigError("the ε list must be non-negative and strictly increasing")
    x, y = x.detach(), y.detach()
    with torch.no_grad():
        clean_pred = model(x).argmax(1)
    clean_correct = clean_pred == y
    robust = torch.zeros(len(eps_list), len(y), dtype=torch.bool, device=y.device)
    adv_pred = clean_pred.repeat(len(eps_list), 1)
    attacked: List[int] = []
    current, current_pred = clean_correct.clone(), clean_pred.clone()
    for k, eps in enumerate(eps_list):
        if not incremental:
            current, current_pred = clean_correct.clone(), clean_pred.clone()
        idx = torch.nonzero(current & (eps > 0)).flatten()
        attacked.append(len(idx))
        if on_step is not None and eps > 0:  # ε = 0 is the clean pass: nothing is attacked there
            on_step(k, len(idx))
        if len(idx):
            cand = attack(x[idx], y[idx], eps).detach()
            check_perturbation(cand, x[idx], eps, norm)
            with torch.no_grad():
                pred = model(cand).argmax(1)
            hit = idx[pred != y[idx]]
            current[hit] = False
            current_pred[hit] = pred[pred != y[idx]]
        robust[k], adv_pred[k] = current, current_pred
    return SweepResult(eps_list, y, robust, adv_pred, attacked)


__all__ = [
    "Attack", "DEFAULT_EPS_GRID", "PRESETS", "PGDResult", "SweepResult", "epsilon_sweep", "l2_ascent",
    "margin_loss", "pgd_attack_fn", "pgd_evaluate", "project_l2",
]
