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
from torch.autograd.function import once_differentiable


_LINEAR_ABOVE = 20.0  # F.softplus's default threshold


class _SoftplusBeta(torch.autograd.Function):
    """softplus_β whose backward is one multiply by the saved slope σ(βx).

    ART differentiates the input gradient again (double backpropagation). PyTorch's own softplus
    recomputes exp(βx) in its backward and builds a composite of several kernels for the second
    derivative; here the slope is computed once in the forward and both derivatives reuse it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float) -> torch.Tensor:  # type: ignore[override]
        scaled = x * beta
        # PyTorch's softplus is linear above βx = 20 (slope exactly 1, no curvature): keep that.
        slope = torch.sigmoid(scaled).masked_fill_(scaled > _LINEAR_ABOVE, 1.0)
        ctx.save_for_backward(x, slope)
        ctx.beta = beta
        return F.softplus(x, beta=beta)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, slope = ctx.saved_tensors
        return _SlopeProduct.apply(grad_out, x, slope, ctx.beta), None


class _SlopeProduct(torch.autograd.Function):
    """grad_out · σ(βx), differentiable once more in grad_out and x (softplus'' = β σ (1 − σ))."""

    @staticmethod
    def forward(ctx, grad_out: torch.Tensor, x: torch.Tensor, slope: torch.Tensor, beta: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(grad_out, slope)
        ctx.beta = beta
        return grad_out * slope

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_grad: torch.Tensor):  # type: ignore[override]
        grad_out, slope = ctx.saved_tensors
        d_grad_out = grad_grad * slope if ctx.needs_input_grad[0] else None
        d_x = None
        if ctx.needs_input_grad[1]:
            d_x = grad_grad * grad_out
            d_x.mul_(slope - slope * slope).mul_(ctx.beta)
        return d_grad_out, d_x, None, None


def softplus_beta(x: torch.Tensor, beta: float) -> torch.Tensor:
    """log(1 + exp(βx)) / β with first and second derivatives from one saved σ(βx).

    Equal to ``F.softplus(x, beta)`` with its derivatives, threshold included (linear where
    βx > 20). Differentiable twice, as ART needs; a third derivative raises.
    """
    return _SoftplusBeta.apply(x, beta)


class SwitchableReLU(nn.Module):
    """ReLU by default; softplus_β(x) = log(1 + exp(βx)) / β while ``beta`` is set."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.beta: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.beta is None:
            return F.relu(x, inplace=self.inplace)
        return softplus_beta(x, self.beta)

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
