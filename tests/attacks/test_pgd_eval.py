import pytest
import torch

from wsol.attacks.autoattack import ladder_attack
from wsol.attacks.pgd_eval import epsilon_sweep, margin_loss, pgd_attack_fn, pgd_evaluate
from wsol.errors import ConfigError


def test_margin_loss_is_positive_exactly_when_misclassified():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    assert torch.allclose(margin_loss(logits, torch.tensor([0, 0])), torch.tensor([-2.0, 2.0]))


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 1.0)])
@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_pgd_keeps_ball_and_never_beats_clean(tiny_cnn, tiny_batch, norm, eps, loss):
    x, y = tiny_batch
    r = pgd_evaluate(tiny_cnn, x, y, eps=eps, steps=10, restarts=2, norm=norm, loss=loss,
                     generator=torch.Generator().manual_seed(0))
    d = (r.x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.robust_accuracy <= float(r.clean_correct.float().mean())
    with torch.no_grad():
        assert torch.equal(tiny_cnn(r.x_adv).argmax(1), r.adv_pred)
    assert torch.equal(r.robust, r.clean_correct & (r.adv_pred == y))


def test_more_restarts_only_remove_robust_points(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    one = pgd_evaluate(tiny_cnn, x, y, eps=2 / 255, steps=3, restarts=1, generator=torch.Generator().manual_seed(5))
    four = pgd_evaluate(tiny_cnn, x, y, eps=2 / 255, steps=3, restarts=4, generator=torch.Generator().manual_seed(5))
    assert not (four.robust & ~one.robust).any()


def test_pgd_finds_the_known_confusion(known):
    model, x, y = known
    for norm, eps in (("linf", 4 / 255), ("l2", 0.05)):
        r = pgd_evaluate(model, x, y, eps=eps, steps=10, norm=norm, generator=torch.Generator().manual_seed(0))
        assert torch.equal(~r.robust, y == 3)
        assert (r.adv_pred[y == 3] == 5).all()
    safe = pgd_evaluate(model, x, y, eps=2 / 255, steps=10, generator=torch.Generator().manual_seed(0))
    assert safe.robust.all()


def test_bad_options_are_user_errors(known):
    model, x, y = known
    with pytest.raises(ConfigError):
        pgd_evaluate(model, x, y, eps=0.1, norm="l1")
    with pytest.raises(ConfigError):
        pgd_evaluate(model, x, y, eps=0.1, loss="hinge")
    with pytest.raises(ConfigError):
        epsilon_sweep(model, pgd_attack_fn(model), x, y, [0, 2 / 255, 1 / 255])


def test_incremental_sweep_is_monotone_and_matches_independent_runs(known):
    model, x, y = known
    eps = [e / 255 for e in range(9)]
    attack = pgd_attack_fn(model, steps=10, generator=torch.Generator().manual_seed(0))
    inc = epsilon_sweep(model, attack, x, y, eps)
    ind = epsilon_sweep(model, attack, x, y, eps, incremental=False)
    assert not (inc.robust[1:] & ~inc.robust[:-1]).any()
    assert torch.equal(inc.robust, ind.robust)
    assert torch.equal(inc.adv_pred, ind.adv_pred)
    assert inc.robust[:3].all() and torch.equal(~inc.robust[3], y == 3)
    assert inc.attacked[0] == 0 and sum(inc.attacked) < sum(ind.attacked)
    assert inc.attacked[-1] == int((y != 3).sum())


def test_sweep_with_the_autoattack_ladder_is_reproducible(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    attack = ladder_attack(tiny_cnn, "apgd-ce,apgd-dlr", seed=0, n_iter=5, n_restarts=1)
    a = epsilon_sweep(tiny_cnn, attack, x, y, [0, 1 / 255, 2 / 255])
    b = epsilon_sweep(tiny_cnn, attack, x, y, [0, 1 / 255, 2 / 255])
    assert torch.equal(a.robust, b.robust) and torch.equal(a.adv_pred, b.adv_pred)
    assert not (a.robust[1:] & ~a.robust[:-1]).any()


def test_presets_run_as_documented(known):
    from wsol.attacks.pgd_eval import PRESETS

    model, x, y = known
    r = pgd_evaluate(model, x[:4], y[:4], **{**PRESETS["pgd40-l2"], "steps": 2}, generator=torch.Generator().manual_seed(0))
    assert ((r.x_adv - x[:4]).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()


def _matched_filter_problem(n: int = 120, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A linear classifier on 3×8×8 images whose exact ℓ∞ robustness falls over 0..8/255 at different rates per class."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, 2, (10, 192), generator=g).float() * 2 - 1
    y = torch.randint(0, 10, (n,), generator=g)
    x = (0.5 + ((1.0 + 0.8 * y[:, None]) / 255) * templates[y] + 0.02 * torch.randn(n, 192, generator=g)).clamp(0, 1)
    linear = torch.nn.Linear(192, 10)
    with torch.no_grad():
        linear.weight.copy_(templates)
        linear.bias.copy_(-0.5 * templates.sum(1))
    return torch.nn.Sequential(torch.nn.Flatten(), linear).eval(), x.view(n, 3, 8, 8), y


@pytest.mark.parametrize("incremental", [True, False])
@pytest.mark.parametrize("attack_name", ["pgd", "apgd-ce"])
def test_the_sweep_on_a_linear_model_finds_its_exact_robustness(attack_name, incremental):
    """The exact ℓ∞ robustness of a linear model is known: a sweep never breaks an exactly robust point (that would
    be a step outside the ball or a wrong bookkeeping) and misses almost none of the breakable ones."""
    from wsol.metrics.robustness import linear_linf_robust

    model, x, y = _matched_filter_problem()
    grid = [k / 255 for k in range(9)]
    attack = (pgd_attack_fn(model, steps=10, generator=torch.Generator().manual_seed(0)) if attack_name == "pgd"
              else ladder_attack(model, "apgd-ce", n_iter=10, n_restarts=1))
    res = epsilon_sweep(model, attack, x, y, grid, incremental=incremental)
    truth = torch.stack([linear_linf_robust(model[1].weight, model[1].bias, x, y, e) for e in grid])
    assert not (truth & ~res.robust).any()
    assert 0.2 < truth[1:].float().mean() < 0.8  # the grid spans robust and broken points
    assert (res.robust & ~truth).sum() <= 2
