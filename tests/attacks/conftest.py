"""A hand-built linear model with a known confusion pattern, shared by the robustness tests.

Ten classes read pixels 0..9 of a 1×4×4 image: logit j = 10·pixel j. Every class sits at 0.9 on its
own pixel and 0.3 elsewhere, except class 3, which sits at 0.52 with class 5's pixel at 0.50. So
class 3 flips into class 5 once 2ε > 0.02 (ε ≥ 3/255) and every other class needs ε > 0.3.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

WEAK, INTO = 3, 5


def known_model() -> nn.Module:
    linear = nn.Linear(16, 10, bias=False)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[:, :10] = 10 * torch.eye(10)
    return nn.Sequential(nn.Flatten(), linear).eval()


def known_data(per_class: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(10).repeat_interleave(per_class)
    x = torch.full((len(y), 16), 0.3)
    x[:, 10:] = torch.rand(len(y), 6, generator=g)
    x[torch.arange(len(y)), y] = 0.9
    x[y == WEAK, WEAK] = 0.52
    x[y == WEAK, INTO] = 0.50
    return x.view(-1, 1, 4, 4), y


@pytest.fixture
def known() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return (known_model(), *known_data())


@pytest.fixture
def tiny_cnn() -> nn.Module:
    """A seeded untrained CNN whose last bias is zeroed: with its bias the logits barely depend on the input
    (every image is class 4 and no attack at any ε breaks one), without it an 8/255 attack breaks some points, not all."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        model[-1].bias.zero_()
    return model.eval()


@pytest.fixture
def tiny_batch(tiny_cnn) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = tiny_cnn(x).argmax(1)
    y[:3] = (y[:3] + 1) % 10
    return x, y
