"""Attacks on attribution maps that keep the prediction: IFIA (Ghorbani et al. 2019) and targeted
manipulation (Dombrowski et al. 2019).

Both work on a batch and return one record per sample, so a job can write one row per image.
The attack's gradient goes through the softplus_β surrogate of the model (``beta``; None attacks
the model as it is, for smooth models); every MEASURED map (the acceptance test and the reported
metrics) comes from the model as given (ReLU).

Convention (``preset="consistent"``, the default): the attack, the acceptance test and the metrics
all use the same map: the attribution of the class-y logit, preprocessed by
:func:`~wsol.metrics.ranking.preprocess_map` (mean over channels of |·|, sum-normalized); IG is
differentiated fully, (x − x̄) factor included, with the trapezoid rule over ``ig_steps``
intervals. Each sample keeps the accepted step (prediction still y) that scores highest on the
attack's own objective measured on the ReLU map: lowest mass on the original top-k pixels
(``topk``, ``random``), largest centre shift (``mass-center``). Kendall τ is over the full map.

``preset="official"`` (IG only) reproduces the official ART CIFAR evaluation: attack map = logit IG
with right Riemann points (i + 1)/n and the (x − x̄) factor held constant, a uniform random start,
the kept step = lowest Kendall τ between the original and attacked attack-maps both multiplied by
the original top-k mask; metric map = cross-entropy IG with the trapezoid rule (n + 1 points).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attacks.core import Generators, normal_noise, project_linf, sign_ascent
from wsol.attribution import attribute
from wsol.attribution.common import check_choice
from wsol.errors import ConfigError
from wsol.metrics.ranking import (
    center_of_mass,
    center_shift,
    check_k,
    kendall_tau_b,
    pearson,
    preprocess_map,
    spearman,
    ssim,
    topk_intersection,
    topk_mask,
)
from wsol.models.activations import softplus

IFIA_OBJECTIVES = ("topk", "mass-center", "random")
ATTACK_ATTRIBUTIONS = ("grad", "ig", "gradshap", "smoothgrad")
PRESETS = ("consistent", "official")

MapFn = Callable[[torch.Tensor, bool], torch.Tensor]
"""(images, create_graph) → preprocessed N×H×W maps of the attacked classes."""

NOT_ATTACKED_MISCLASSIFIED = "misclassified"
NOT_KEPT = "no step kept the label"
CONSTANT_MAP = "constant map: Kendall and Spearman undefined"


def _surrogate(model: nn.Module, beta: Optional[float]) -> contextlib.AbstractContextManager:
    """softplus_β for the attack's gradient, or the model itself when ``beta`` is None."""
    return contextlib.nullcontext(model) if beta is None else softplus(model, beta)


STOCHASTIC_ATTRIBUTIONS = ("gradshap", "smoothgrad")


def _map_fn(model: nn.Module, y: torch.Tensor, method: str, options: Dict[str, Any], map_seeds: Optional[Sequence[int]] = None) -> MapFn:
    """Maps of ``method``; a stochastic method draws the same noise on every call: from one generator per
    image seeded with ``map_seeds`` when given, else from the method's default seed for the whole batch."""
    def maps(x: torch.Tensor, create_graph: bool) -> torch.Tensor:
        extra: Dict[str, Any] = {}
        if map_seeds is not None and method in STOCHASTIC_ATTRIBUTIONS:
            extra["generator"] = [torch.Generator().manual_seed(s) for s in map_seeds]
        return preprocess_map(attribute(model, x, y, method, create_graph=create_graph, **options, **extra))

    return maps


def _per_sample(generator: Generators, where: torch.Tensor) -> tuple[Generators, Optional[List[int]]]:
    """The generators of the rows ``where`` selects and a map-noise seed drawn from each (per-sample
    generators only; a single generator or None is returned as it is, with no map seeds)."""
    if not isinstance(generator, Sequence):
        return generator, None
    chosen = [generator[i] for i in where.nonzero().flatten().tolist()]
    return chosen, [int(torch.randint(2**62, (1,), generator=g)) for g in chosen]


def map_options(
    attribution: str, preset: str, ig_steps: int, internal_batch_size: Optional[int]
) -> tuple[Dict[str, Any], Dict[str, Any]]:
    """(attack options, metric options) for ``attribute`` under ``preset``."""
    check_choice(attribution, ATTACK_ATTRIBUTIONS, "attribution for attacks")
    check_choice(preset, PRESETS, "IFIA preset")
    if preset == "official" and attribution != "ig":
        raise ConfigError("the 'official' IFIA preset is defined for attribution 'ig' only; use preset 'consistent'")
    common: Dict[str, Any] = {} if attribution == "grad" else {"internal_batch_size": internal_batch_size}
    if attribution != "ig":
        return dict(common), dict(common)
    if preset == "official":
        attack = dict(common, n_steps=ig_steps, rule="riemann_right", objective="logit", detach_factor=True)
        metric = dict(common, n_steps=ig_steps, rule="trapezoid", objective="ce")
        return attack, metric
    same = dict(common, n_steps=ig_steps, rule="trapezoid", objective="logit")
    return same, dict(same)


@dataclass
class IFIAResult:
    """Per-sample outcome of :func:`ifia` (N-long tensors; metrics are NaN where nothing was kept).

    ``attacked``: the sample was correctly classified and so attacked. ``kept``: some step kept
    the label. ``best_step``: the kept step (1-based, 0 = the random start), −1 if none.
    ``topk``/``kendall``/``spearman`` compare the original and attacked metric maps (fractions,
    ×100 for the paper's percent); ``center_shift`` is in pixels. Maps are N×H×W when requested
    (the attacked map equals the original where nothing was kept).
    """

    attacked: torch.Tensor
    kept: torch.Tensor
    best_step: torch.Tensor
    x_adv: torch.Tensor
    topk: torch.Tensor
    kendall: torch.Tensor
    spearman: torch.Tensor
    center_shift: torch.Tensor
    original_maps: Optional[torch.Tensor] = None
    attacked_maps: Optional[torch.Tensor] = None

    @property
    def reasons(self) -> List[str]:
        """Why each sample has no metrics, or some of them NaN ("" when it has them all)."""
        return [
            NOT_ATTACKED_MISCLASSIFIED if not a else (NOT_KEPT if not k else (CONSTANT_MAP if math.isnan(tau) else ""))
            for a, k, tau in zip(self.attacked.tolist(), self.kept.tolist(), self.kendall.tolist())
        ]

    def rows(self) -> List[Dict[str, Any]]:
        """One plain dict per sample, ready for a CSV writer."""
        out = []
        for i, reason in enumerate(self.reasons):
            out.append(
                {
                    "attacked": bool(self.attacked[i]),
                    "kept_prediction": bool(self.kept[i]),
                    "reason": reason,
                    "best_step": int(self.best_step[i]),
                    "topk_intersection": float(self.topk[i]),
                    "kendall": float(self.kendall[i]),
                    "spearman": float(self.spearman[i]),
                    "center_shift": float(self.center_shift[i]),
                }
            )
        return out


def _scatter(values: torch.Tensor, where: torch.Tensor, fill: float) -> torch.Tensor:
    """An N-long tensor holding ``values`` at ``where`` and ``fill`` elsewhere."""
    out = torch.full(where.shape, fill, dtype=values.dtype, device=values.device)
    out[where] = values
    return out


def predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Top-1 class of the model as given (no graph)."""
    with torch.no_grad():
        return model(x.detach()).argmax(dim=1)


def ifia(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    objective: str = "topk",
    attribution: str = "ig",
    k: int = 100,
    eps: float = 8 / 255,
    step_size: float = 1 / 255,
    steps: int = 50,
    beta: Optional[float] = 50.0,
    ig_steps: int = 100,
    preset: str = "consistent",
    random_start: Optional[bool] = None,
    generator: Generators = None,
    internal_batch_size: Optional[int] = 1024,
    return_maps: bool = False,
) -> IFIAResult:
    """Iterative feature-importance attack: ℓ∞ sign steps that change the map but keep the label.

    Only samples the model classifies as ``y`` are attacked. ``objective``: "topk" lowers the map's
    mass on the original k largest pixels, "mass-center" moves its centre of mass, "random" takes
    random sign steps of the same size (a baseline). ``random_start`` None follows the preset.
    ``generator`` drives the random start, the random steps and (one generator per sample only) the
    noise of gradshap/smoothgrad maps; one generator per sample (:func:`~wsol.attacks.core.sample_generators`)
    makes each sample's result independent of the batch it is attacked in.
    """
    check_choice(objective, IFIA_OBJECTIVES, "IFIA objective")
    attack_opts, metric_opts = map_options(attribution, preset, ig_steps, internal_batch_size)
    y = torch.as_tensor(y, device=x.device).long()
    n = x.shape[0]
    check_k(k, x.shape[2] * x.shape[3])
    attacked = predictions(model, x) == y
    x_adv = x.detach().clone()
    nan = torch.full((n,), float("nan"), dtype=torch.float64, device=x.device)
    result = IFIAResult(attacked, torch.zeros_like(attacked), torch.full_like(y, -1), x_adv, nan, nan.clone(), nan.clone(), nan.clone())
    if not attacked.any():
        if return_maps:
            empty = torch.full((n, *x.shape[2:]), float("nan"), dtype=x.dtype, device=x.device)
            result.original_maps, result.attacked_maps = empty, empty.clone()
        return result
    xs, ys = x[attacked].detach(), y[attacked]
    gens, map_seeds = _per_sample(generator, attacked)
    attack_map = _map_fn(model, ys, attribution, attack_opts, map_seeds)
    metric_map = _map_fn(model, ys, attribution, metric_opts, map_seeds)
    reference = attack_map(xs, False)
    mask = topk_mask(reference, k).view_as(reference).to(reference.dtype)
    centre = center_of_mass(reference)

    def climb(xa: torch.Tensor) -> torch.Tensor:
        if objective == "random":
            return (xa * normal_noise(xa.shape, gens, xa.device).to(xa)).flatten(1).sum(dim=1)
        with _surrogate(model, beta):
            m = attack_map(xa, True)
        if objective == "mass-center":
            return (center_of_mass(m) - centre).pow(2).sum(dim=1)
        return -(m * mask).flatten(1).sum(dim=1)

    def accept(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept = predictions(model, xa) == ys
        m = attack_map(xa, False)
        if preset == "official":
            return kept, -kendall_tau_b(m * mask, reference * mask)
        if objective == "mass-center":
            return kept, center_shift(m, reference)
        return kept, -(m * mask).flatten(1).sum(dim=1)

    start = preset == "official" if random_start is None else random_start
    ascent = sign_ascent(
        climb, xs, eps, step_size, steps, random_start=start, generator=gens, acceptance=accept, score_start=start
    )
    kept = ascent.best_step >= 0
    before = reference if metric_opts == attack_opts else metric_map(xs, False)
    after = metric_map(ascent.x_adv, False)
    sub_nan = lambda v: torch.where(kept, v.double(), torch.full_like(v.double(), float("nan")))  # noqa: E731
    result.kept[attacked] = kept
    result.best_step[attacked] = ascent.best_step
    result.x_adv[attacked] = ascent.x_adv
    result.topk = _scatter(sub_nan(topk_intersection(before, after, k)), attacked, float("nan"))
    result.kendall = _scatter(sub_nan(kendall_tau_b(before, after)), attacked, float("nan"))
    result.spearman = _scatter(sub_nan(spearman(before, after)), attacked, float("nan"))
    result.center_shift = _scatter(sub_nan(center_shift(before, after)), attacked, float("nan"))
    if return_maps:
        result.original_maps = _scatter_maps(before, attacked, x)
        result.attacked_maps = _scatter_maps(after, attacked, x)
    return result


def _scatter_maps(maps: torch.Tensor, where: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    out = torch.full((x.shape[0], *maps.shape[1:]), float("nan"), dtype=maps.dtype, device=maps.device)
    out[where] = maps.detach()
    return out


def shuffled_targets(n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """For each of n samples the index of another sample (a seeded random cycle; itself only if n = 1)."""
    perm = torch.randperm(n, generator=generator, device=generator.device if generator else None).cpu()
    out = torch.empty(n, dtype=torch.long)
    out[perm] = perm.roll(-1)
    return out


@dataclass
class TargetedResult:
    """Per-sample outcome of :func:`targeted_manipulation`.

    ``targets``: the index in the batch of each sample's target image (−1 where ``target_images``
    were given). ``kept``: the returned x_adv keeps the
    prediction (the best such iterate; x itself where none did). ``to_target`` and
    ``to_original``: SSIM, Pearson, MSE and top-k intersection of the final (ReLU) map against the
    target's map and the sample's original map.
    """

    targets: torch.Tensor
    kept: torch.Tensor
    x_adv: torch.Tensor
    to_target: Dict[str, torch.Tensor] = field(default_factory=dict)
    to_original: Dict[str, torch.Tensor] = field(default_factory=dict)
    maps: Optional[torch.Tensor] = None

    def rows(self) -> List[Dict[str, Any]]:
        """One plain dict per sample."""
        out = []
        for i in range(self.targets.shape[0]):
            row: Dict[str, Any] = {"target_index": int(self.targets[i]), "kept_prediction": bool(self.kept[i])}
            row.update({f"target_{name}": float(v[i]) for name, v in self.to_target.items()})
            row.update({f"original_{name}": float(v[i]) for name, v in self.to_original.items()})
            out.append(row)
        return out


def map_similarity(a: torch.Tensor, b: torch.Tensor, k: int) -> Dict[str, torch.Tensor]:
    """SSIM, Pearson, MSE (maps scaled to mean 1) and top-k intersection of N×H×W maps."""
    d = a[0].numel()
    mse = (preprocess_map(a, d) - preprocess_map(b, d)).pow(2).flatten(1).mean(dim=1).double()
    return {"ssim": ssim(a, b), "pearson": pearson(a, b), "mse": mse, "topk": topk_intersection(a, b, k)}


def beta_schedule(steps: int, beta: Optional[float], growth: Optional[tuple[float, float]]) -> List[Optional[float]]:
    """β per iteration: constant, or geometric from growth[0] to growth[1] (Dombrowski's β growth)."""
    if growth is None:
        return [beta] * steps
    lo, hi = growth
    if not all(math.isfinite(b) and b > 0 for b in (lo, hi)):
        raise ConfigError(f"beta growth needs two positive finite values, got {growth}")
    return [lo * (hi / lo) ** (t / max(steps - 1, 1)) for t in range(steps)]


def targeted_manipulation(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target_index: Optional[int] = None,
    target_images: Optional[torch.Tensor] = None,
    generator: Generators = None,
    attribution: str = "grad",
    eps: float = 8 / 255,
    steps: int = 100,
    lr: float = 1 / 255,
    gamma: float = 1e3,
    beta: Optional[float] = 50.0,
    beta_growth: Optional[tuple[float, float]] = None,
    k: int = 100,
    ig_steps: int = 30,
    internal_batch_size: Optional[int] = 1024,
    return_maps: bool = False,
) -> TargetedResult:
    """Drive the map of each x towards another image's map inside the ε-ball, keeping the prediction.

    Targets: ``target_images`` (N×C×H×W, one per sample, e.g. chosen outside the batch so that a
    sample's target does not depend on its batch), else image ``target_index`` for every sample, else
    a seeded shuffle of the batch (:func:`shuffled_targets`, from ``generator`` when it is a single
    generator). One generator per sample draws the noise of gradshap/smoothgrad maps per sample. Loss (Dombrowski et al.): MSE(map(x̃), target map) + γ·MSE(softmax(x̃),
    softmax(x)), maps scaled to mean 1; Adam with ``lr`` on the perturbation, projected to the
    ε-ball and [0, 1] after every step. The maps being attacked are those of the predicted class.
    ``beta_growth`` (β₀, β₁) replaces ``beta`` by a geometric schedule over the iterations.
    """
    options, _ = map_options(attribution, "consistent", ig_steps, internal_batch_size)
    n = x.shape[0]
    check_k(k, x.shape[2] * x.shape[3])
    if target_index is not None and not 0 <= target_index < n:
        raise ConfigError(f"target_index must lie in [0, {n}), got {target_index}")
    if target_images is not None and target_images.shape != x.shape:
        raise ValueError(f"target_images must be shaped like x {tuple(x.shape)}, got {tuple(target_images.shape)}")
    if target_images is not None:
        targets = torch.full((n,), -1, dtype=torch.long)
    elif target_index is not None:
        targets = torch.full((n,), target_index, dtype=torch.long)
    else:
        targets = shuffled_targets(n, generator if isinstance(generator, torch.Generator) else None)
    targets = targets.to(x.device)
    x = x.detach()
    goal_x = x[targets] if target_images is None else target_images.detach().to(x)
    with torch.no_grad():
        probs = F.softmax(model(x), dim=1)
        goal_y = model(goal_x).argmax(dim=1)
    y = probs.argmax(dim=1)
    d = x.shape[2] * x.shape[3]
    _, map_seeds = _per_sample(generator, torch.ones(n, dtype=torch.bool))
    original = _map_fn(model, y, attribution, options, map_seeds)(x, False)
    goal = _map_fn(model, goal_y, attribution, options, map_seeds)(goal_x, False)
    attack_map = _map_fn(model, y, attribution, options, map_seeds)
    delta = torch.zeros_like(x, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    best_x, best_err = x.clone(), torch.full((n,), float("inf"), dtype=torch.float64, device=x.device)
    kept_any = torch.zeros(n, dtype=torch.bool, device=x.device)
    for b in beta_schedule(steps, beta, beta_growth):
        xa = x + delta
        with torch.enable_grad(), _surrogate(model, b):
            m = preprocess_map(attack_map(xa, True), d)
            out = F.softmax(model(xa), dim=1)
            loss = (m - goal * d).pow(2).flatten(1).mean(dim=1) + gamma * (out - probs).pow(2).mean(dim=1)
            (grad,) = torch.autograd.grad(loss.sum(), delta)
        opt.zero_grad(set_to_none=True)
        delta.grad = grad
        opt.step()
        with torch.no_grad():
            delta.copy_(project_linf(x + delta, x, eps) - x)
        cand = (x + delta).detach()
        kept = predictions(model, cand) == y
        err = map_similarity(attack_map(cand, False), goal, k)["mse"]
        better = kept & (err < best_err)
        best_x[better], best_err[better] = cand[better], err[better]
        kept_any |= kept
    final = attack_map(best_x, False)
    result = TargetedResult(targets, kept_any, best_x, map_similarity(final, goal, k), map_similarity(final, original, k))
    if return_maps:
        result.maps = final.detach()
    return result
