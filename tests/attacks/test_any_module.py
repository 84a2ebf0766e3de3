"""ART's loss and attack, input gradients and the gradient-family attributions on models not built by wsol."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from wsol.attacks import art_attack, attribution_loss, input_gradients
from wsol.attribution import attribute
from wsol.errors import WsolError
from wsol.models import build_model, softplus
from wsol.models.activations import SwitchableReLU, softplus_beta


def _relu_sequential(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


def _silu_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.SiLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.GELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 8, 8, generator=gen), torch.tensor([0, 1, 2])


def _second_derivative_norm(model: nn.Module, x: torch.Tensor) -> float:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, 0].sum(), x, create_graph=True)
    if not grad.requires_grad:
        return 0.0
    (second,) = torch.autograd.grad(grad.sum(), x, allow_unused=True)
    return 0.0 if second is None else second.abs().sum().item()


def test_plain_relus_become_softplus_and_back() -> None:
    model = _relu_sequential().double()
    x, _ = _batch()
    x = x.double()
    relu_out = model(x)
    assert _second_derivative_norm(model, x) == 0.0
    with softplus(model, 5.0):
        h = model[0](x)
        torch.testing.assert_close(model[1](h), nn.functional.softplus(h, beta=5.0), rtol=0, atol=0)
        assert _second_derivative_norm(model, x) > 0.0
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert torch.equal(model(x), relu_out)
    assert _second_derivative_norm(model, x) == 0.0


def test_switchable_and_plain_relu_models_give_identical_numbers() -> None:
    torch.manual_seed(0)
    built = build_model("small-cnn-bn", 4).train()
    plain = copy.deepcopy(built)
    for module in list(plain.modules()):
        for name, child in module.named_children():
            if isinstance(child, SwitchableReLU):
                setattr(module, name, nn.ReLU())
    assert not any(isinstance(m, SwitchableReLU) for m in plain.modules())
    x = torch.rand(2, 3, 32, 32)
    y = torch.tensor([1, 3])
    with softplus(built, 10.0):
        a = built(x)
    with softplus(plain, 10.0):
        b = plain(x)
    assert torch.equal(a, b)
    assert torch.equal(attribution_loss(built, x, y, 10.0), attribution_loss(plain, x, y, 10.0))


def test_softplus_nests_and_restores() -> None:
    model = _relu_sequential()
    x, _ = _batch()
    with softplus(model, 2.0):
        with softplus(model, 7.0):
            inner = model(x)
        outer = model(x)
    h = model[0](x)
    torch.testing.assert_close(model[1](h), torch.relu(h), rtol=0, atol=0)
    assert not torch.equal(inner, outer)


def test_smooth_model_is_left_alone() -> None:
    model = _silu_net()
    x, _ = _batch()
    before = model(x)
    with softplus(model, 5.0):
        assert torch.equal(model(x), before)


@pytest.mark.parametrize("act", [nn.LeakyReLU(0.1), nn.ReLU6(), nn.Hardswish()])
def test_kinked_activations_are_refused(act: nn.Module) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(WsolError, match=type(act).__name__):
        with softplus(model, 5.0):
            pass


@pytest.mark.parametrize("make", [_relu_sequential, _silu_net])
def test_art_loss_and_attack_on_any_module(make) -> None:
    model = make()
    x, y = _batch()
    before = model(x)
    loss = attribution_loss(model, x, y, 5.0)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    eps = 8 / 255
    x_adv = art_attack(model, x, y, eps, 2 / 255, 3, beta=5.0, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= eps + 1e-6 and (x_adv - x).abs().max() > eps / 2
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert torch.equal(model(x), before)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_input_gradients_of_plain_relu_model_are_softplus_gradients() -> None:
    model = _relu_sequential().double()
    x, y = _batch()
    x = x.double()
    g_y, _, _, _ = input_gradients(model, x, y, 5.0, create_graph=False)
    smooth = nn.Sequential(*[_Softplus(5.0) if isinstance(m, nn.ReLU) else m for m in model])
    inp = x.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(smooth(inp).gather(1, y.view(-1, 1)).sum(), inp)
    torch.testing.assert_close(g_y, ref)


class _Softplus(nn.Module):
    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return softplus_beta(x, self.beta)


@pytest.mark.parametrize("method,opts", [("grad", {}), ("ig", {"n_steps": 4}), ("gradshap", {"n_samples": 4}), ("smoothgrad", {"n_samples": 4})])
@pytest.mark.parametrize("make", [_relu_sequential, _silu_net])
def test_gradient_attributions_differentiate_through_any_module(make, method: str, opts: dict) -> None:
    model = make()
    x, y = _batch()
    x = x.clone().requires_grad_(True)
    with softplus(model, 5.0):
        maps = attribute(model, x, y, method, create_graph=True, **opts)
        (dx,) = torch.autograd.grad(maps.abs().sum(), x)
    assert maps.shape == x.shape
    assert torch.isfinite(dx).all() and dx.abs().sum() > 0
