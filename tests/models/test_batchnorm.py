"""The fused train-mode batch norm: PyTorch's values, first and second derivatives, running stats."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from wsol.models.batchnorm import batch_norm_double_backward, fused_batch_norm


def _layer(channels: int, dtype: torch.dtype, momentum=0.1) -> nn.BatchNorm2d:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(channels, momentum=momentum).to(dtype)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    return bn


def _second_order(fused: bool, dtype: torch.dtype, momentum=0.1):
    """Values and gradients of a loss on the input gradient and weight gradient of one BN layer."""
    bn = _layer(3, dtype, momentum)
    x = torch.randn(4, 3, 5, 6, dtype=dtype, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    with fused_batch_norm(bn) if fused else torch.enable_grad():
        y = bn(x)
        y2 = bn(x * 1.5)  # a second call: running statistics and num_batches_tracked accumulate
    if fused:  # else a silent fall-back to PyTorch's batch norm would compare PyTorch with itself
        assert {type(y.grad_fn).__name__, type(y2.grad_fn).__name__} == {"_BatchNormTrainBackward"}
    weights = torch.linspace(0, 1, y.numel(), dtype=dtype).view_as(y)
    gx, gw, gb = torch.autograd.grad((y.sin() * weights).sum() + y2.square().mean(), (x, bn.weight, bn.bias), create_graph=True)
    loss = gx.square().sum() + gw.pow(3).sum() + (gb * gx.mean()).sum()
    second = torch.autograd.grad(loss, (x, bn.weight, bn.bias))
    buffers = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    return (y, gx, gw, gb, *second), buffers


@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_torch_to_second_order(momentum) -> None:
    ours, our_buffers = _second_order(True, torch.float64, momentum)
    theirs, their_buffers = _second_order(False, torch.float64, momentum)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for a, b in zip(our_buffers, their_buffers):
        assert torch.equal(a, b)
    ours32, _ = _second_order(True, torch.float32)
    theirs32, _ = _second_order(False, torch.float32)
    for a, b in zip(ours32, theirs32):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_gradgradcheck() -> None:
    bn = _layer(2, torch.float64)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64, requires_grad=True)

    def f(inp, weight, bias):
        with fused_batch_norm(bn):
            out = torch.func.functional_call(bn, {"weight": weight, "bias": bias}, (inp,))
        assert type(out.grad_fn).__name__ == "_BatchNormTrainBackward"
        return out

    weight = bn.weight.detach().clone().requires_grad_(True)
    bias = bn.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, weight, bias))
    assert torch.autograd.gradgradcheck(f, (x, weight, bias))


def test_double_backward_function_against_autograd() -> None:
    gen = torch.Generator().manual_seed(5)
    x, gy, u = (torch.randn(6, 4, 3, 5, dtype=torch.float64, generator=gen) for _ in range(3))
    weight = torch.rand(4, dtype=torch.float64, generator=gen) + 0.5
    mean = x.mean((0, 2, 3))
    invstd = (x.var((0, 2, 3), unbiased=False) + 1e-5).rsqrt()
    xr, wr, gyr = (t.clone().requires_grad_(True) for t in (x, weight, gy))
    y = nn.functional.batch_norm(xr, None, None, wr, None, training=True, eps=1e-5)
    (gx,) = torch.autograd.grad(y, xr, gyr, create_graph=True)
    expected = torch.autograd.grad(gx, (gyr, xr, wr), u)
    for a, b in zip(batch_norm_double_backward(x, gy, u, weight, mean, invstd), expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    u[0, 1, 0, 0] = float("nan")  # a NaN upstream reaches the outputs (the loop's NaN stop relies on it)
    d_gy, d_x, d_w = batch_norm_double_backward(x, gy, u, weight, mean, invstd)
    assert d_gy[:, 1].isnan().all() and d_x[:, 1].isnan().all() and d_w[1].isnan() and not d_w[0].isnan()


def test_only_inside_the_block_and_only_where_it_applies() -> None:
    bn = _layer(3, torch.float32)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    with fused_batch_norm(bn):
        assert type(bn(x).grad_fn).__name__ == "_BatchNormTrainBackward"
        bn.eval()
        assert type(bn(x).grad_fn).__name__ != "_BatchNormTrainBackward"  # eval mode: PyTorch's path
        bn.train()
    assert "forward" not in vars(bn)
    assert type(bn(x).grad_fn).__name__ != "_BatchNormTrainBackward"
