"""Each training method: its loss is the objective at the attack's point, and one SGD step lowers it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wsol.attacks import pgd_attack
from wsol.config import load_config
from wsol.models import build_model
from wsol.attacks import art_attack
from wsol.train.methods import METHODS, art_objective, get_method


def test_every_method_is_registered() -> None:
    assert METHODS.names() == ["art", "art-pgd", "natural", "pgd"]


@pytest.mark.parametrize("method", ["natural", "pgd", "art", "art-pgd"])
def test_one_step_decreases_the_loss(method: str) -> None:
    torch.manual_seed(0)
    model = build_model("wrn-16-2", 3, input_size=16).train()
    x = torch.rand(6, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    config = load_config(None, {"method": method, "arch": "wrn-16-2", "pgd.steps": 2})
    delta = (torch.rand_like(x) * 2 - 1) * 8 / 255
    a, p = config.art, config.pgd
    # the training point the method's attack finds (deterministic given the start)
    if method == "natural":
        x_adv = x
    elif method == "pgd":
        x_adv = pgd_attack(model, x, y, p.eps, p.step_size, p.steps, init_delta=delta)
    else:
        x_adv = art_attack(model, x, y, a.eps, a.step_size, a.steps, a.beta, init_delta=delta, ce_weight=float(method == "art-pgd"))

    def objective() -> torch.Tensor:
        if method in ("natural", "pgd"):
            return F.cross_entropy(model(x_adv), y)
        return art_objective(model, x, x_adv, y, config).loss

    result = get_method(method)(model, x, y, config, init_delta=delta)
    assert set(result.terms) == ({"ce", "attr"} if method.startswith("art") else {"ce"})
    before = result.loss
    assert torch.allclose(before, objective(), rtol=1e-5, atol=1e-6)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt.zero_grad()
    before.backward()
    opt.step()
    assert objective().item() < before.item()
