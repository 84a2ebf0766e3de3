"""Switchable activations: softplus_β → ReLU as β grows; second derivatives exist only under softplus."""
from __future__ import annotations

import pytest
import timm
import torch

from wsol.models import build_model, softplus
from wsol.models.activations import SwitchableReLU, count_switchable, make_switchable


def test_every_relu_is_switchable_including_timm() -> None:
    model = build_model("resnet50", 3)
    assert count_switchable(model) > 10
    assert not any(type(m) is torch.nn.ReLU for m in model.modules())


def test_softplus_approaches_relu_as_beta_grows() -> None:
    torch.manual_seed(0)
    model = build_model("wrn-16-2", 4).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        relu_out = model(x)
        errors = []
        for beta in (1.0, 10.0, 100.0, 1000.0):
            with softplus(model, beta):
                errors.append((model(x) - relu_out).abs().max().item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-2


def test_context_restores_relu_and_shares_weights() -> None:
    model = build_model("small-cnn", 3).eval()
    x = torch.rand(1, 3, 16, 16)
    before = model(x)
    params_before = [p.data_ptr() for p in model.parameters()]
    with softplus(model, 5.0):
        assert all(m.beta == 5.0 for m in model.modules() if isinstance(m, SwitchableReLU))
        assert [p.data_ptr() for p in model.parameters()] == params_before
    torch.testing.assert_close(model(x), before)


def _input_hessian_diag_norm(model: torch.nn.Module, x: torch.Tensor) -> float:
    x = x.clone().requires_grad_(True)
    logit = model(x)[:, 0].sum()
    (grad,) = torch.autograd.grad(logit, x, create_graph=True)
    if not grad.requires_grad:
        return 0.0
    (second,) = torch.autograd.grad((grad * torch.ones_like(grad)).sum(), x, allow_unused=True)
    return 0.0 if second is None else second.abs().sum().item()


def test_second_derivative_nonzero_under_softplus_zero_under_relu() -> None:
    torch.manual_seed(0)
    model = build_model("small-cnn", 3, input_size=16).double().eval()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert _input_hessian_diag_norm(model, x) == 0.0
    with softplus(model, 50.0):
        assert _input_hessian_diag_norm(model, x) > 0.0


def test_make_switchable_on_plain_timm_model() -> None:
    net = make_switchable(timm.create_model("resnet18", pretrained=False, num_classes=2))
    assert count_switchable(net) > 0
    with pytest.raises(ValueError, match="positive"):
        with softplus(net, -1.0):
            pass


def test_fused_softplus_matches_torch_to_second_order() -> None:
    from wsol.models.activations import softplus_beta

    torch.manual_seed(0)
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 0.2).requires_grad_(True)
    w = torch.randn_like(x).requires_grad_(True)
    for beta in (1.0, 10.0, 50.0):
        ours = softplus_beta(x, beta)
        ref = torch.nn.functional.softplus(x, beta=beta)
        assert torch.allclose(ours, ref, atol=1e-12)
        (g_ours,) = torch.autograd.grad((ours * w).sum(), x, create_graph=True)
        (g_ref,) = torch.autograd.grad((ref * w).sum(), x, create_graph=True)
        assert torch.allclose(g_ours, g_ref, atol=1e-9)
        # Second order: a loss of the input gradient, as in ART, differentiated again.
        h_ours = torch.autograd.grad((g_ours * g_ours.detach().sign()).sum() + (g_ours**2).sum(), (x, w))
        h_ref = torch.autograd.grad((g_ref * g_ref.detach().sign()).sum() + (g_ref**2).sum(), (x, w))
        for a, b in zip(h_ours, h_ref):
            assert torch.allclose(a, b, rtol=1e-7, atol=1e-9)
    assert torch.autograd.gradcheck(lambda t: softplus_beta(t, 5.0), (x,))
    assert torch.autograd.gradgradcheck(lambda t: softplus_beta(t, 5.0), (x,))
