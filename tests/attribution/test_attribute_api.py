"""The registry front door, differentiability through attributions, and model state."""
from __future__ import annotations

import pytest
import torch

from wsol.attribution import ATTRIBUTIONS, attribute
from wsol.errors import ConfigError, UnknownNameError
from wsol.models import build_model, softplus

METHODS = ["grad", "smoothgrad", "ig", "gradshap", "cam", "gradcam", "gradcampp"]
GRADIENT_FAMILY = {"grad", "smoothgrad", "ig", "gradshap"}
FAST = {"smoothgrad": {"n_samples": 3}, "ig": {"n_steps": 4}, "gradshap": {"n_samples": 3}}


def _setup(n: int = 2, h: int = 16, w: int = 16, dtype=torch.float64):
    torch.manual_seed(0)
    model = build_model("small-cnn", 4, input_size=16).to(dtype).eval()
    x = torch.rand(n, 3, h, w, dtype=dtype)
    return model, x, torch.tensor([1, 3])[:n]


def test_registry_names() -> None:
    assert ATTRIBUTIONS.names() == sorted(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_the_input_spatial_size(method: str) -> None:
    model, x, target = _setup(h=16, w=24, dtype=torch.float32)
    out = attribute(model, x, target, method, **FAST.get(method, {}))
    reduced = attribute(model, x, target, method, reduce="mean_abs", **FAST.get(method, {}))
    assert not out.requires_grad and torch.isfinite(out).all()
    assert reduced.shape == (2, 16, 24)
    if method in GRADIENT_FAMILY:
        assert out.shape == x.shape
        torch.testing.assert_close(reduced, out.abs().mean(1))
    else:
        assert out.shape == (2, 16, 24)


def test_unknown_names_and_options() -> None:
    model, x, target = _setup()
    with pytest.raises(UnknownNameError, match="unknown attribution 'saliency'"):
        attribute(model, x, target, "saliency")
    with pytest.raises(ConfigError, match="'cam' has no option 'n_steps'"):
        attribute(model, x, target, "cam", n_steps=3)
    with pytest.raises(UnknownNameError, match="objective"):
        attribute(model, x, target, "grad", objective="prob")
    with pytest.raises(UnknownNameError, match="channel reduction"):
        attribute(model, x, target, "grad", reduce="max")
    with pytest.raises(ValueError, match="target has 3 entries"):
        attribute(model, x, torch.tensor([0, 1, 2]), "grad")


@pytest.mark.parametrize("method", METHODS)
def test_create_graph_differentiates_through_the_map(method: str) -> None:
    model, x, target = _setup()
    params = [p for p in model.parameters()]
    x = x.clone().requires_grad_(True)
    with softplus(model, beta=10.0):
        maps = attribute(model, x, target, method, create_graph=True, **FAST.get(method, {}))
        loss = (maps**2).sum()
        grads = torch.autograd.grad(loss, [x, *params], allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    conv_weight_grad = grads[1]
    assert conv_weight_grad is not None and conv_weight_grad.abs().sum() > 0
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("method", ["grad", "ig", "gradshap", "gradcam", "gradcampp"])
def test_create_graph_is_the_true_derivative(method: str) -> None:
    # Directional derivatives of L = <map, w> along random directions in x and in a conv weight,
    # from autograd through the map, against central finite differences.
    torch.manual_seed(0)
    model = build_model("small-cnn", 4, input_size=8).double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    target = torch.tensor([2, 0])
    weight = model.net.features[2].weight
    opts = {"ig": {"n_steps": 3}, "gradshap": {"n_samples": 2, "seed": 3}}.get(method, {})
    w = torch.randn_like(attribute(model, x, target, method, **opts))
    dx, dw = torch.randn_like(x), torch.randn_like(weight)

    def loss(z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        return (attribute(model, z, target, method, create_graph=create_graph, **opts) * w).sum()

    with softplus(model, beta=5.0):
        z = x.clone().requires_grad_(True)
        gx, gw = torch.autograd.grad(loss(z, create_graph=True), [z, weight])
        eps = 1e-5
        fd_x = (loss(x + eps * dx) - loss(x - eps * dx)) / (2 * eps)
        with torch.no_grad():
            weight.add_(eps * dw)
            plus = loss(x)
            weight.sub_(2 * eps * dw)
            minus = loss(x)
            weight.add_(eps * dw)
        fd_w = (plus - minus) / (2 * eps)
    assert (gx * dx).sum().item() == pytest.approx(fd_x.item(), rel=1e-5, abs=1e-12)
    assert (gw * dw).sum().item() == pytest.approx(fd_w.item(), rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("training", [False, True])
def test_model_state_is_left_alone(training: bool) -> None:
    model, x, target = _setup()
    model.train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for method in METHODS:
            out = attribute(model, x, target, method, **FAST.get(method, {}))
            assert out.abs().sum() > 0, method
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_model_still_gives_attributions() -> None:
    model, x, target = _setup()
    for p in model.parameters():
        p.requires_grad_(False)
    for method in METHODS:
        assert attribute(model, x, target, method, **FAST.get(method, {})).abs().sum() > 0, method
