"""The sign-ascent core: stays in the ε-ball and [0, 1], keeps the best accepted iterate, descends on request,
and reproduces the loop ART's attack used to write out by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from wsol.attacks import art_attack, attribution_loss, project_linf, random_delta, random_start_point, sign_ascent
from wsol.attacks.art import topk_positions
from wsol.attacks.gradients import frozen_parameters
from wsol.models import build_model


def _linear_objective(w: torch.Tensor):
    return lambda x: (x * w).flatten(1).sum(1)


def test_never_leaves_the_ball_or_the_box() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 5, 5, generator=gen)
    x[0], x[1] = 0.0, 1.0
    w = torch.randn(4, 3, 5, 5, generator=gen)
    eps = 0.05
    result = sign_ascent(_linear_objective(w), x, eps, 0.03, 6, random_start=True, generator=gen)
    assert (result.x_adv - x).abs().max() <= eps + 1e-7
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    # A linear objective is maximized at the ball's corner in the direction sign(w), clipped to [0, 1].
    torch.testing.assert_close(result.x_adv, project_linf(x + eps * w.sign(), x, eps))


def test_maximize_false_descends() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 4, 4, generator=gen) * 0.5 + 0.25
    w = torch.randn(2, 1, 4, 4, generator=gen)
    objective = _linear_objective(w)
    up = sign_ascent(objective, x, 0.1, 0.05, 3).x_adv
    down = sign_ascent(objective, x, 0.1, 0.05, 3, maximize=False).x_adv
    assert (objective(down) < objective(x)).all() and (objective(up) > objective(x)).all()
    torch.testing.assert_close(down, x - 0.1 * w.sign())


def test_acceptance_keeps_the_best_accepted_iterate() -> None:
    x = torch.full((3, 1, 1, 1), 0.5)
    limits = torch.tensor([0.75, 0.45, 10.0])  # sample 0: steps 1-2 accepted; 1: none; 2: all

    def objective(z: torch.Tensor) -> torch.Tensor:
        return z.flatten(1).sum(1)

    def acceptance(z: torch.Tensor):
        value = z.flatten(1).sum(1)
        return value <= limits, value

    result = sign_ascent(objective, x, 0.4, 0.1, 4, acceptance=acceptance)
    assert result.best_step.tolist() == [2, -1, 4]
    torch.testing.assert_close(result.x_adv.flatten(), torch.tensor([0.7, 0.5, 0.9]))
    assert result.accepted.tolist() == [True, False, True]
    assert result.best_score[1] == float("-inf")


def test_random_delta_shards_one_global_draw() -> None:
    x = torch.zeros(3, 2, 4, 4)
    whole = random_delta(torch.zeros(6, 2, 4, 4), 0.1, torch.Generator().manual_seed(4))
    parts = [random_delta(x, 0.1, torch.Generator().manual_seed(4), shard=(r, 2)) for r in range(2)]
    assert torch.equal(torch.stack(parts, 1).view(6, 2, 4, 4), whole)
    assert whole.abs().max() <= 0.1 and whole.abs().max() > 0.05
    start = random_start_point(x + 0.5, 0.1, torch.Generator().manual_seed(4))
    expected = project_linf(x + 0.5 + random_delta(x, 0.1, torch.Generator().manual_seed(4)), x + 0.5, 0.1)
    assert torch.equal(start, expected)


def _handwritten_art(model: nn.Module, x, y, eps, step_size, steps, beta, topk, ce_weight, gen) -> torch.Tensor:
    """ART's attack as the training code wrote it before it ran on sign_ascent (the reference)."""
    x_adv = random_start_point(x, eps, gen)
    with frozen_parameters(model):
        index = topk_positions(model, x_adv, y, topk) if topk else None
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = attribution_loss(model, x_adv, y, beta, index=index).sum()
                if ce_weight:
                    loss = loss + ce_weight * nn.functional.cross_entropy(model(x_adv).float(), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = project_linf(x_adv.detach() + step_size * grad.sign(), x, eps)
    return x_adv.detach()


@pytest.mark.parametrize("topk,ce_weight", [(None, 0.0), (30, 0.0), (None, 1.0)])
def test_art_attack_equals_the_handwritten_loop(topk, ce_weight) -> None:
    torch.manual_seed(0)
    model = build_model("small-cnn-bn", 4, input_size=16).train()
    x = torch.rand(3, 3, 16, 16)
    y = torch.tensor([0, 1, 3])
    args = (8 / 255, 2 / 255, 2, 5.0)
    ref = _handwritten_art(model, x, y, *args, topk, ce_weight, torch.Generator().manual_seed(2))
    out = art_attack(model, x, y, *args, topk=topk, ce_weight=ce_weight, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out, ref)
    assert not torch.equal(out, x)
