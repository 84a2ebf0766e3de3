"""With one generator per sample, an attacked sample's result does not depend on the other samples of its batch."""
from __future__ import annotations

import pytest
import torch

from wsol.attacks.attributional import ifia, targeted_manipulation
from wsol.attacks.core import sample_generators
from wsol.models import build_model


def _setup():
    torch.manual_seed(0)
    model = build_model("small-cnn", 3, input_size=16).double().eval()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


@pytest.mark.parametrize("attribution,objective", [("smoothgrad", "random"), ("gradshap", "topk")])
def test_ifia_row_is_the_same_alone_and_in_a_batch(attribution: str, objective: str) -> None:
    model, x, y = _setup()
    keys = [4, 9, 2]
    kw = dict(attribution=attribution, objective=objective, k=20, steps=2, step_size=2 / 255, random_start=True)
    batch = ifia(model, x, y, generator=sample_generators(0, keys), **kw)
    alone = ifia(model, x[1:2], y[1:2], generator=sample_generators(0, keys[1:2]), **kw)
    assert torch.equal(batch.x_adv[1:2], alone.x_adv)
    assert batch.rows()[1] == pytest.approx(alone.rows()[0], nan_ok=True)
    assert not torch.equal(batch.x_adv[1:2], ifia(model, x[1:2], y[1:2], generator=sample_generators(1, keys[1:2]), **kw).x_adv)


def test_targeted_row_is_the_same_alone_and_in_a_batch() -> None:
    model, x, _ = _setup()
    goal = x.flip(0)
    kw = dict(attribution="gradshap", steps=2, k=20)
    batch = targeted_manipulation(model, x, target_images=goal, generator=sample_generators(0, [0, 1, 2]), **kw)
    alone = targeted_manipulation(model, x[2:], target_images=goal[2:], generator=sample_generators(0, [2]), **kw)
    assert torch.allclose(batch.x_adv[2:], alone.x_adv, atol=1e-9)  # Adam steps: batched convolutions round differently
    assert batch.rows()[2] == pytest.approx(alone.rows()[0], rel=1e-6)
