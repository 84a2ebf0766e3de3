"""Switchable ReLU / softplus_β activations that share one model's weights.

ART needs input gradients of the logits through a smooth network (the second derivative of ReLU is
zero), while the classification loss uses the ordinary ReLU network. Every ``nn.ReLU`` of a model is
replaced once by :class:`SwitchableReLU`; :func:`softplus` flips all of them for the duration of a
``with`` block, so no model copy is ever made.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F


class SwitchableReLU(nn.Module):
    """ReLU by default; softplus_β(x) = log(1 + exp(βx)) / β while ``beta`` is set."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.beta: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.beta is None:
            return F.relu(x, inplace=self.inplace)
        return F.softplus(x, beta=self.beta)

    def extra_repr(self) -> str:
        return "relu" if self.beta is None else f"softplus(beta={self.beta})"


def make_switchable(model: nn.Module) -> nn.Module:
    """Replace every ``nn.ReLU`` inside ``model`` (in place) by a :class:`SwitchableReLU`."""
    for name, child in model.named_children():
        if isinstance(child, nn.ReLU):
            setattr(model, name, SwitchableReLU(inplace=child.inplace))
        else:
            make_switchable(child)
    return model


def count_switchable(model: nn.Module) -> int:
    """Number of switchable activations in ``model``."""
    return sum(isinstance(m, SwitchableReLU) for m in model.modules())


def set_activation(model: nn.Module, beta: float | None) -> None:
    """Switch every activation of ``model`` to softplus_β (``beta`` > 0) or back to ReLU (None)."""
    if beta is not None and beta <= 0:
        raise ValueError(f"softplus beta must be positive, got {beta}")
    for module in model.modules():
        if isinstance(module, SwitchableReLU):
            module.beta = beta


@contextmanager
def softplus(model: nn.Module, beta: float = 50.0) -> Iterator[nn.Module]:
    """Run the block with softplus_β activations; restores the previous state afterwards."""
    previous = [(m, m.beta) for m in model.modules() if isinstance(m, SwitchableReLU)]
    if not previous:
        raise ValueError("model has no switchable activations; build it with wsol.models.build_model")
    set_activation(model, beta)
    try:
        yield model
    finally:
        for module, old in previous:
            module.beta = old
