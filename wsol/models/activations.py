"""Switch a model's ReLUs to softplus_β and back, sharing one model's weights.

ART needs input gradients of the logits through a smooth network (the second derivative of ReLU is
zero), while the classification loss uses the ordinary ReLU network. :func:`softplus` flips every
ReLU of ANY ``nn.Module`` for the duration of a ``with`` block, so no model copy is ever made:
:class:`SwitchableReLU` modules (what :func:`wsol.models.build_model` puts in place of each
``nn.ReLU``) get their ``beta`` set, and plain ``nn.ReLU`` modules run softplus_β in place of their
forward. Smooth activations (SiLU, GELU, Softplus, ELU, CELU, Mish, Tanh, Sigmoid) are left as they
are. Piecewise-linear activations that softplus_β does not replace (LeakyReLU, PReLU, RReLU, ReLU6,
Hardtanh, Hardswish, Hardsigmoid, SELU, Threshold) have zero curvature almost everywhere too, so
:func:`softplus` refuses such a model rather than return useless second derivatives. Functional
calls (``F.relu`` inside a ``forward``) are invisible to a module walk and stay ReLU: give such
models ``nn.ReLU`` modules (or call :func:`make_switchable` on a model that has them).
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from wsol.errors import WsolError


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


_KINKED = (
    nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SELU, nn.Threshold,
)
"""Non-smooth activations :func:`softplus` cannot switch (kinks that softplus_β would not replace)."""


@contextmanager
def softplus(model: nn.Module, beta: float = 50.0) -> Iterator[nn.Module]:
    """Run the block with every ReLU of ``model`` as softplus_β; restores the previous state afterwards.

    Works on any ``nn.Module``: :class:`SwitchableReLU` modules are switched (as
    :func:`set_activation` does) and plain ``nn.ReLU`` modules compute :func:`softplus_beta` for
    the duration; smooth activations are untouched. Raises :class:`~wsol.errors.WsolError` for a
    model with an activation from ``_KINKED``.
    """
    if beta <= 0:
        raise ValueError(f"softplus beta must be positive, got {beta}")
    kinked = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _KINKED)})
    if kinked:
        raise WsolError(
            f"the model uses {', '.join(kinked)}, which softplus_β cannot smooth; ART and smooth input gradients "
            "need ReLU (switched to softplus_β) or smooth activations such as SiLU, GELU or Softplus"
        )
    switchable = [(m, m.beta) for m in model.modules() if isinstance(m, SwitchableReLU)]
    relus: List[Tuple[nn.Module, object]] = [
        (m, m.__dict__.get("forward")) for m in model.modules() if isinstance(m, nn.ReLU)
    ]
    set_activation(model, beta)
    for module, _ in relus:
        module.forward = functools.partial(softplus_beta, beta=beta)
    try:
        yield model
    finally:
        for module, old in switchable:
            module.beta = old
        for module, forward in relus:
            if forward is None:
                del module.forward
            else:
                module.forward = forward
