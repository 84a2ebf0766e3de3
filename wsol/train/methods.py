"""Training methods: one plain function each, all with the same signature, sharing one loop.

A method takes the (possibly DistributedDataParallel-wrapped) model, a batch of [0, 1] images and
labels and the run's :class:`~wsol.config.TrainConfig`, and returns a :class:`StepResult` whose
``loss`` the loop backpropagates. Attacks run on the unwrapped model (no gradient-sync hooks, no
parameter gradients: they only take input gradients); the losses that train the parameters go
through ``model`` itself, so under DDP the single ``loss.backward()`` is the one that syncs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attacks import art_attack, attribution_loss, pgd_attack, unwrap
from wsol.config import TrainConfig
from wsol.registry import Registry


@dataclass
class StepResult:
    """What one training step produced: the loss to minimize, logged terms, and logits for accuracy."""

    loss: torch.Tensor
    logits: torch.Tensor
    terms: Dict[str, torch.Tensor] = field(default_factory=dict)


Method = Callable[..., StepResult]
METHODS: Registry = Registry("training method")


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y)


@METHODS.register("natural")
def natural_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *, init_delta: Optional[torch.Tensor] = None
) -> StepResult:
    """Cross-entropy on the clean batch."""
    logits = model(x)
    ce = _cross_entropy(logits, y)
    return StepResult(ce, logits, {"ce": ce.detach()})


@METHODS.register("pgd")
def pgd_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *, init_delta: Optional[torch.Tensor] = None
) -> StepResult:
    """Madry PGD-n adversarial training: cross-entropy on ℓ∞ PGD examples (random start, sign steps)."""
    p = config.pgd
    x_adv = pgd_attack(
        unwrap(model), x, y, p.eps, p.step_size, p.steps, random_start=p.random_start, init_delta=init_delta
    )
    logits = model(x_adv)
    ce = _cross_entropy(logits, y)
    return StepResult(ce, logits, {"ce": ce.detach()})


def _batched(config: TrainConfig) -> bool:
    """Whether ART takes both input gradients from one doubled-batch backward (``art.batched``)."""
    return config.art.batched


def art_objective(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, config: TrainConfig) -> StepResult:
    """L_ce(x̃) on the ReLU path + λ·L_attr on x̃; with ``art.clean_and_adv`` L_attr is taken over
    [x; x̃] with the official code's pair mining (each row also scored against its partner)."""
    a = config.art
    logits = model(x_adv)
    ce = _cross_entropy(logits, y)
    rows, labels = (torch.cat([x, x_adv]), torch.cat([y, y])) if a.clean_and_adv else (x_adv, y)
    attr = attribution_loss(
        model,
        rows,
        labels,
        a.beta,
        normalized_cosine=a.normalized_cosine,
        channel_mean=a.channel_mean,
        batched=_batched(config),
        pair_mining=a.clean_and_adv,
    ).mean()
    loss = ce + a.lam * attr
    return StepResult(loss, logits, {"ce": ce.detach(), "attr": attr.detach()})


def _art_perturbation(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, ce_weight: float, init_delta: Optional[torch.Tensor]
) -> torch.Tensor:
    a = config.art
    return art_attack(
        unwrap(model),
        x,
        y,
        a.eps,
        a.step_size,
        a.steps,
        a.beta,
        random_start=a.random_start,
        topk=a.topk,
        normalized_cosine=a.normalized_cosine,
        channel_mean=a.channel_mean,
        ce_weight=ce_weight,
        init_delta=init_delta,
        batched=_batched(config),
    )


@METHODS.register("art")
def art_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *, init_delta: Optional[torch.Tensor] = None
) -> StepResult:
    """ART (Algorithm 1): x̃ from ``art.steps`` sign-ascent steps on L_attr, then L_ce(x̃) + λ·L_attr(x̃)."""
    x_adv = _art_perturbation(model, x, y, config, 0.0, init_delta)
    return art_objective(model, x, x_adv, y, config)


@METHODS.register("art-pgd")
def art_pgd_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *, init_delta: Optional[torch.Tensor] = None
) -> StepResult:
    """ART + PGD (App. C): x̃ maximizes L_attr + L_ce (ReLU path); the objective is ART's."""
    x_adv = _art_perturbation(model, x, y, config, 1.0, init_delta)
    return art_objective(model, x, x_adv, y, config)


def get_method(name: str) -> Method:
    """The step function of a training method (one-line error listing the choices)."""
    return METHODS.get(name)
