"""Train-mode batch norm whose double backward is one compiled pass per channel (CPU).

ART differentiates input gradients again, and every train-mode batch norm then runs PyTorch's
composite double backward, a chain of broadcast kernels per layer that took a fifth of an ART
step on the CPU (WRN-16-2, batch 32). The derivative has a closed form that needs five sums per
channel and one more pass over the data; :func:`fused_batch_norm` swaps it in for the duration
of a ``with`` block. Forward values, first derivatives and running statistics are PyTorch's own
kernels; only the second derivative is computed here (float64 sums), so results agree with
PyTorch to float rounding.
"""
from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from numba import njit
from torch.autograd.function import once_differentiable


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})  # keeps NaN/inf semantics
def _double_backward_channels(
    x: np.ndarray,
    gy: np.ndarray,
    ggx: np.ndarray,
    weight: np.ndarray,
    mean: np.ndarray,
    invstd: np.ndarray,
    ggw: np.ndarray,
    ggb: np.ndarray,
    d_gy: np.ndarray,
    d_x: np.ndarray,
    d_w: np.ndarray,
) -> None:
    """The second derivative of gx = γ s (gy − mean(gy) − x̂ mean(gy x̂)).

    Arrays are N×C×L (L = H·W). Given ggx (upstream gradient of gx) and ggw, ggb (of the weight
    and bias gradients Σ gy x̂, Σ gy), writes the gradients w.r.t. gy, x and γ.
    """
    n, channels, length = x.shape
    count = n * length
    for c in range(channels):
        mu, s, gamma = mean[c], invstd[c], weight[c]
        s_gy = s_gyx = s_u = s_ux = s_ugy = 0.0
        for i in range(n):
            for j in range(length):
                xh = (x[i, c, j] - mu) * s
                g = gy[i, c, j]
                u = ggx[i, c, j]
                s_gy += g
                s_gyx += g * xh
                s_u += u
                s_ux += u * xh
                s_ugy += u * g
        a, b = s_gy / count, s_gyx / count
        mu_u, mux = s_u / count, s_ux / count
        coupling = s_ugy - a * s_u - b * s_ux  # Σ u (gy − a − x̂ b)
        d_w[c] = s * coupling
        gs = gamma * s
        gw, gb = ggw[c], ggb[c]
        # g_x̂ = −γ s (b u + mux gy) + ggw gy; its mean and its mean against x̂ follow from the sums:
        mean_gxh = -gs * (b * mu_u + mux * a) + gw * a
        mean_gxh_xh = -2.0 * gs * b * mux + gw * b
        var_term = gamma * coupling * s * s / count  # through s = (var + eps)^-1/2 held explicitly
        # The element-wise pass runs in the data's dtype (float32 SIMD lanes for float32 input):
        # d_gy = k0 u + k1 x̂ + k2, d_x = k3 u + k4 gy + k5 x̂ + k6.
        cast = x.dtype.type
        mu_t, s_t = cast(mu), cast(s)
        k0, k1, k2 = cast(gs), cast(gw - gs * mux), cast(gb - gs * mu_u)
        k3, k4 = cast(-s * gs * b), cast(s * (gw - gs * mux))
        k5, k6 = cast(-s * mean_gxh_xh - var_term), cast(-s * mean_gxh)
        for i in range(n):
            for j in range(length):
                xh = (x[i, c, j] - mu_t) * s_t
                g = gy[i, c, j]
                u = ggx[i, c, j]
                d_gy[i, c, j] = k0 * u + k1 * xh + k2
                d_x[i, c, j] = k3 * u + k4 * g + k5 * xh + k6


def batch_norm_double_backward(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    grad_grad_in: torch.Tensor,
    weight: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    grad_grad_weight: Optional[torch.Tensor] = None,
    grad_grad_bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (w.r.t. grad_out, x, weight) of ⟨grad_grad_in, gx⟩ + ⟨ggw, gw⟩ + ⟨ggb, gb⟩, where
    (gx, gw, gb) is train-mode batch norm's backward of ``grad_out`` at ``x`` (batch ``mean`` and
    ``invstd`` per channel). CPU tensors N×C×…. One thread: the two passes are bound by memory
    bandwidth (docs/benchmarks.md, "Training step cost", compares two threads)."""
    shape = x.shape
    n, c = shape[0], shape[1]

    def flat(t: torch.Tensor) -> np.ndarray:
        return t.detach().contiguous().reshape(n, c, -1).numpy()

    def per_channel(t: Optional[torch.Tensor]) -> np.ndarray:
        if t is None:
            return np.zeros(c, np.float64)
        return t.detach().to(torch.float64).contiguous().numpy()

    xs, gys, ggxs = flat(x), flat(grad_out.to(x.dtype)), flat(grad_grad_in.to(x.dtype))
    args = (per_channel(weight), per_channel(mean), per_channel(invstd), per_channel(grad_grad_weight), per_channel(grad_grad_bias))
    d_gy, d_x = np.empty_like(xs), np.empty_like(xs)
    d_w = np.empty(c, np.float64)
    _double_backward_channels(xs, gys, ggxs, *args, d_gy, d_x, d_w)
    return torch.from_numpy(d_gy).reshape(shape), torch.from_numpy(d_x).reshape(shape), torch.from_numpy(d_w).to(weight.dtype)


class _BatchNormTrain(torch.autograd.Function):
    """Train-mode batch norm (PyTorch's forward kernel) whose backward is :class:`_BatchNormBackward`."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float):  # type: ignore[override]
        out, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        gx, gw, gb = _BatchNormBackward.apply(grad_out, x, weight, mean, invstd, ctx.eps)
        return gx, gw, gb, None, None, None, None


class _BatchNormBackward(torch.autograd.Function):
    """PyTorch's batch-norm backward kernel, differentiable once more through the compiled pass."""

    @staticmethod
    def forward(ctx, grad_out, x, weight, mean, invstd, eps: float):  # type: ignore[override]
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad_out, x, weight, None, None, mean, invstd, True, eps, [True, True, True]
        )
        ctx.save_for_backward(grad_out, x, weight, mean, invstd)
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(ctx, ggx, ggw, ggb):  # type: ignore[override]
        grad_out, x, weight, mean, invstd = ctx.saved_tensors
        if ggx is None:
            ggx = torch.zeros_like(x)
        d_gy, d_x, d_w = batch_norm_double_backward(x, grad_out, ggx, weight, mean, invstd, ggw, ggb)
        return d_gy.to(grad_out.dtype), d_x, d_w, None, None, None


def _fused_forward(self: nn.modules.batchnorm._BatchNorm, inp: torch.Tensor) -> torch.Tensor:
    """nn.BatchNorm2d's forward, with :class:`_BatchNormTrain` where it applies (train mode, CPU,
    float32/64, affine, running statistics kept)."""
    fits = (
        self.training and inp.device.type == "cpu" and inp.dtype in (torch.float32, torch.float64)
        and self.affine and self.track_running_stats and self.running_mean is not None and inp.dim() == 4
    )
    if not fits:
        return type(self).forward(self, inp)
    self._check_input_dim(inp)
    self.num_batches_tracked.add_(1)
    momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
    return _BatchNormTrain.apply(inp, self.weight, self.bias, self.running_mean, self.running_var, momentum, self.eps)


@contextmanager
def patched_forward(modules: List[nn.Module], forward: Callable[..., torch.Tensor]) -> Iterator[None]:
    """Inside the block each of ``modules`` runs ``forward`` (bound to it) instead of its class's."""
    for module in modules:
        module.forward = types.MethodType(forward, module)
    try:
        yield
    finally:
        for module in modules:
            del module.forward


@contextmanager
def fused_batch_norm(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model's BatchNorm2d layers (not SyncBatchNorm) use the compiled double
    backward on CPU tensors in train mode; everything else is unchanged."""
    with patched_forward([m for m in model.modules() if type(m) is nn.BatchNorm2d], _fused_forward):
        yield model


@contextmanager
def split_batch_norm(model: nn.Module, groups: int) -> Iterator[None]:
    """Inside the block, train-mode batch norm normalizes each of ``groups`` equal slices of the batch
    with that slice's own statistics; running statistics are updated from the first slice only."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if any(isinstance(m, nn.SyncBatchNorm) for m in norms):
        raise ValueError("split_batch_norm does not support SyncBatchNorm; use batched=False")
    with patched_forward(norms, _split_bn_forward(groups)):
        yield


def _split_bn_forward(groups: int):
    def forward(self: nn.modules.batchnorm._BatchNorm, inp: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return type(self).forward(self, inp)
        size = inp.shape[0] // groups
        parts = [type(self).forward(self, inp[:size])]
        for g in range(1, groups):
            chunk = inp[g * size:(g + 1) * size]
            parts.append(F.batch_norm(chunk, None, None, self.weight, self.bias, True, 0.0, self.eps))
        return torch.cat(parts)

    return forward


__all__ = ["batch_norm_double_backward", "fused_batch_norm", "patched_forward", "split_batch_norm"]
