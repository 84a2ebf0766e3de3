"""IFIA and targeted manipulation on tiny models: ε-ball, kept labels, constant maps, real effect, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from wsol.attacks.attributional import NOT_KEPT, ifia, shuffled_targets, targeted_manipulation
from wsol.attribution import integrated_gradients
from wsol.errors import WsolError
from wsol.metrics.ranking import preprocess_map, topk_mask
from wsol.models import build_model

EPS = 8 / 255


def _setup(n: int = 4, size: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("small-cnn", 3, input_size=size).double().eval()
    x = torch.rand(n, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return model, x, y


def _within(values: torch.Tensor, lo: float, hi: float) -> bool:
    return bool(((values >= lo) & (values <= hi)).all())


def _check_ball(x_adv: torch.Tensor, x: torch.Tensor) -> None:
    assert (x_adv - x).abs().max().item() <= EPS + 1e-9
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


@pytest.mark.parametrize("attribution,objective", [("ig", "topk"), ("grad", "mass-center"), ("smoothgrad", "random"), ("gradshap", "topk")])
def test_ifia_stays_in_the_ball_and_keeps_the_label(attribution: str, objective: str) -> None:
    model, x, y = _setup()
    model, x, y = model, x[:3], y[:3]
    res = ifia(model, x, y, attribution=attribution, objective=objective, k=20, steps=3, step_size=2 / 255, ig_steps=4,
               generator=torch.Generator().manual_seed(0), return_maps=True)
    _check_ball(res.x_adv, x)
    assert res.attacked.all()
    kept = res.kept
    with torch.no_grad():
        assert torch.equal(model(res.x_adv[kept]).argmax(dim=1), y[kept])
    assert torch.equal(res.x_adv[~kept], x[~kept])
    assert (res.best_step[kept] >= 1).all() and (res.best_step[~kept] == -1).all()
    assert _within(res.topk[kept], 0, 1) and _within(res.kendall[kept], -1, 1)
    assert res.original_maps.shape == (3, 16, 16)
    assert len(res.rows()) == 3


def test_misclassified_samples_are_not_attacked() -> None:
    model, x, y = _setup()
    wrong = y.clone()
    wrong[1] = (y[1] + 1) % 3
    res = ifia(model, x, wrong, attribution="grad", k=10, steps=2)
    assert res.attacked.tolist() == [True, False, True, True]
    assert res.reasons[1] == "misclassified" and res.best_step[1] == -1
    assert torch.isnan(res.topk[1]) and torch.equal(res.x_adv[1], x[1])
    assert not torch.isnan(res.topk[res.kept]).any()


class _Knife(nn.Module):
    """Class 0 only at ``x0`` exactly (logit −1000·Σ|x − x0| against a constant −1e-6): any step off it flips the label."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("x0", x0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - self.x0).abs().flatten(1).sum(dim=1)
        return torch.stack([-1000 * d, torch.full_like(d, -1e-6)], dim=1)


def test_a_sample_whose_every_step_flips_the_label_keeps_its_image_and_gets_no_metrics() -> None:
    """The attacked-but-nothing-kept path, which the models above never reach (every sample keeps a step)."""
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    model = _Knife(x[:1])
    y = torch.tensor([0, 1])  # sample 0 sits on the knife edge, sample 1 is class 1 by a wide margin
    res = ifia(model, x, y, attribution="grad", objective="random", beta=None, k=10, steps=3, step_size=2 / 255,
               generator=torch.Generator().manual_seed(0))
    assert res.attacked.tolist() == [True, True] and res.kept.tolist() == [False, True]
    assert res.best_step[0] == -1 and res.best_step[1] >= 1
    assert torch.equal(res.x_adv[0], x[0]) and not torch.equal(res.x_adv[1], x[1])
    assert torch.equal(model(res.x_adv).argmax(dim=1), y)
    row = res.rows()[0]
    assert row["reason"] == NOT_KEPT and not row["kept_prediction"]
    assert all(math.isnan(row[key]) for key in ("topk_intersection", "kendall", "spearman", "center_shift"))
    assert res.rows()[1]["topk_intersection"] == 1.0  # a linear map is constant: the kept sample's map cannot move


class _Linear(nn.Module):
    """A linear classifier: its gradient map is W whatever x is, so an attack cannot move it."""

    def __init__(self, d: int, c: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("objective", ["topk", "mass-center"])
def test_a_linear_model_map_cannot_change(objective: str) -> None:
    torch.manual_seed(1)
    model = _Linear(3 * 12 * 12, 3).double()
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64)
    y = model(x).argmax(dim=1)
    res = ifia(model, x, y, attribution="grad", objective=objective, beta=None, k=15, steps=5)
    assert res.kept.all()
    assert res.topk.tolist() == [1.0] * 3
    assert res.kendall.tolist() == pytest.approx([1.0] * 3)
    assert res.center_shift.tolist() == pytest.approx([0.0] * 3, abs=1e-9)


def test_topk_attack_lowers_the_top_k_mass_more_than_random_steps() -> None:
    model, x, y = _setup(n=4, seed=3)
    k = 25
    clean = preprocess_map(integrated_gradients(model, x, y, n_steps=8, reduce="mean_abs"))
    mask = topk_mask(clean, k).view_as(clean)

    def mass(res):
        maps = preprocess_map(integrated_gradients(model, res.x_adv, y, n_steps=8, reduce="mean_abs"))
        return (maps * mask).flatten(1).sum(dim=1)

    common = dict(attribution="ig", k=k, steps=5, step_size=2 / 255, ig_steps=8)
    attacked = ifia(model, x, y, objective="topk", **common)
    random = ifia(model, x, y, objective="random", generator=torch.Generator().manual_seed(0), **common)
    before = (clean * mask).flatten(1).sum(dim=1)
    assert attacked.kept.all() and random.kept.all()
    assert (mass(attacked) < before).all()
    assert mass(attacked).mean() < mass(random).mean()
    assert attacked.topk.mean() < 1.0


def test_official_preset_runs_with_a_random_start() -> None:
    model, x, y = _setup(n=3)
    res = ifia(model, x, y, preset="official", k=20, steps=3, ig_steps=4, generator=torch.Generator().manual_seed(0))
    _check_ball(res.x_adv, x)
    assert res.attacked.all() and (res.best_step[res.kept] >= 0).all()
    assert _within(res.kendall[res.kept], -1, 1)


def test_ig_detach_factor_keeps_the_map_and_drops_its_factor_gradient() -> None:
    model, x, y = _setup(n=2)
    xa = x.clone().requires_grad_(True)
    full = integrated_gradients(model, xa, y, n_steps=4, create_graph=True)
    cut = integrated_gradients(model, xa, y, n_steps=4, create_graph=True, detach_factor=True)
    torch.testing.assert_close(full, cut)
    (g_full,) = torch.autograd.grad(full.sum(), xa, retain_graph=True)
    (g_cut,) = torch.autograd.grad(cut.sum(), xa)
    factor_only = integrated_gradients(model, x, y, n_steps=4) / x  # avg gradient: d(sum x·avg)/dx through x alone
    torch.testing.assert_close(g_full - g_cut, factor_only)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=257), "k=257"),
        (dict(objective="center"), "unknown IFIA objective"),
        (dict(attribution="cam"), "unknown attribution for attacks"),
        (dict(preset="official", attribution="grad"), "official"),
    ],
)
def test_bad_arguments_raise_one_line(kwargs: dict, match: str) -> None:
    model, x, y = _setup(n=2)
    with pytest.raises(WsolError, match=match) as info:
        ifia(model, x, y, steps=1, **kwargs)
    assert "\n" not in str(info.value)


def test_shuffled_targets_are_a_seeded_cycle() -> None:
    t = shuffled_targets(7, torch.Generator().manual_seed(3))
    assert sorted(t.tolist()) == list(range(7)) and (t != torch.arange(7)).all()
    assert torch.equal(t, shuffled_targets(7, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("growth", [None, (5.0, 50.0)])
def test_targeted_manipulation_moves_the_map_towards_the_target(growth) -> None:
    model, x, _ = _setup(n=4, seed=2)
    res = targeted_manipulation(model, x, generator=torch.Generator().manual_seed(0), steps=15, lr=2 / 255,
                                beta_growth=growth, k=20)
    _check_ball(res.x_adv, x)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
        assert torch.equal(model(res.x_adv[res.kept]).argmax(dim=1), y[res.kept])
    assert res.kept.all()
    clean = targeted_manipulation(model, x, generator=torch.Generator().manual_seed(0), steps=1, lr=0.0, k=20)
    assert torch.equal(clean.targets, res.targets)
    assert (res.to_target["mse"] < clean.to_target["mse"]).all()
    assert res.to_target["pearson"].mean() > clean.to_target["pearson"].mean()
    assert len(res.rows()) == 4 and "target_ssim" in res.rows()[0]


def test_targeted_manipulation_rejects_a_bad_target_index() -> None:
    model, x, _ = _setup(n=2)
    with pytest.raises(WsolError, match="target_index"):
        targeted_manipulation(model, x, target_index=5, steps=1)


class _Sum(nn.Module):
    """Logits c·Σx: every pixel has the same gradient, so every map is constant."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor([[1.0, -1.0]], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(dim=1, keepdim=True) * self.c


def test_a_constant_map_says_why_kendall_is_nan() -> None:
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    res = ifia(_Sum(), x, torch.zeros(2, dtype=torch.long), attribution="grad", beta=None, k=5, steps=2)
    assert res.kept.all() and torch.isnan(res.kendall).all()
    assert [r["reason"] for r in res.rows()] == ["constant map: Kendall and Spearman undefined"] * 2


@pytest.mark.parametrize("growth", [(float("nan"), 50.0), (5.0, float("inf")), (0.0, 50.0)])
def test_beta_growth_needs_two_positive_finite_values(growth) -> None:
    model, x, _ = _setup(n=2)
    with pytest.raises(WsolError, match="beta growth"):
        targeted_manipulation(model, x, steps=1, beta_growth=growth, k=5)
