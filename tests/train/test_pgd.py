"""ℓ∞ PGD: projection, ascent, no side effects on parameter gradients."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from wsol.attacks import pgd_attack, project_linf
from wsol.models import build_model


def _model():
    torch.manual_seed(0)
    return build_model("small-cnn", 4, input_size=16).eval()


def test_projection_onto_ball_and_box() -> None:
    x = torch.tensor([0.0, 0.5, 1.0, 0.02])
    moved = torch.tensor([-0.3, 0.9, 1.2, 0.01])
    out = project_linf(moved, x, 0.1)
    assert torch.allclose(out, torch.tensor([0.0, 0.6, 1.0, 0.01]))


def test_pgd_stays_in_ball_and_raises_the_loss() -> None:
    model = _model()
    x = torch.rand(6, 3, 16, 16)
    x[0] = 1.0
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    eps = 8 / 255
    gen = torch.Generator().manual_seed(0)
    x_adv = pgd_attack(model, x, y, eps, 2 / 255, 7, generator=gen)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
    assert all(p.grad is None for p in model.parameters())


def test_pgd_is_reproducible_and_takes_a_given_start() -> None:
    model = _model()
    x = torch.rand(2, 3, 16, 16)
    y = torch.tensor([0, 1])
    a = pgd_attack(model, x, y, 0.03, 0.01, 2, generator=torch.Generator().manual_seed(5))
    b = pgd_attack(model, x, y, 0.03, 0.01, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    start = torch.full_like(x, 0.03)
    c = pgd_attack(model, x, y, 0.03, 0.01, 0, init_delta=start)
    assert torch.allclose(c, (x + 0.03).clamp(0, 1))
    no_start = pgd_attack(model, x, y, 0.03, 0.01, 0, random_start=False)
    assert torch.equal(no_start, x)
