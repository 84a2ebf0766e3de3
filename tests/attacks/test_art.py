"""ART's attribution loss and attack: closed-form check, i*, the ε-ball, the gradient strategies."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from wsol.models import build_model, softplus
from wsol.models.activations import make_switchable
from wsol.models.classifier import Classifier
from wsol.train import art_attack, attribution_loss, input_gradients, strongest_wrong_class
from wsol.attacks import topk_positions

BETA = 5.0


class _MLP(nn.Module):
    """flatten → Linear → ReLU → Linear: input gradients are known in closed form."""

    def __init__(self, dim: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU()
        self.fc = nn.Linear(hidden, classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc1(x.flatten(1)))

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(h)

    def get_classifier(self) -> nn.Linear:
        return self.fc


def _mlp_classifier(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = _MLP(2 * 3 * 3, 7, 4)
    model = Classifier(net, "mlp", 4, (0.4, 0.6), (0.2, 0.5), 3, "act")
    return make_switchable(model).double()


def _closed_form(model: Classifier, x: torch.Tensor, y: torch.Tensor, normalized: bool, channel_mean: bool) -> np.ndarray:
    """L_attr from the formulas with NumPy: g^k = s⁻¹ ⊙ W1ᵀ (W2[k] ⊙ σ(βz)), z = W1·vec(norm(x)) + b1."""
    w1 = model.net.fc1.weight.detach().numpy()
    b1 = model.net.fc1.bias.detach().numpy()
    w2 = model.net.fc.weight.detach().numpy()
    b2 = model.net.fc.bias.detach().numpy()
    mean = model.mean.numpy().reshape(1, -1, 1, 1)
    std = model.std.numpy().reshape(1, -1, 1, 1)
    xs = x.numpy()
    xn = (xs - mean) / std
    out = []
    for b in range(len(xs)):
        z = w1 @ xn[b].ravel() + b1
        h = np.log1p(np.exp(BETA * z)) / BETA
        logits = w2 @ h + b2
        sig = 1.0 / (1.0 + np.exp(-BETA * z))
        wrong = [k for k in range(len(logits)) if k != int(y[b])]
        istar = wrong[int(np.argmax(logits[wrong]))]

        def grad(k: int) -> np.ndarray:
            g_norm = (w1.T @ (w2[k] * sig)).reshape(xs.shape[1:])  # d f_k / d norm(x)
            return g_norm if normalized else g_norm / std[0]

        anchor = xn[b] if normalized else xs[b]
        vecs = [anchor, grad(int(y[b])), grad(istar)]
        if channel_mean:
            vecs = [np.abs(v).mean(axis=0) for v in vecs]
        a, p, n = (v.ravel() for v in vecs)

        def dist(g: np.ndarray) -> float:
            return 1.0 - float(g @ a) / (np.linalg.norm(g) * np.linalg.norm(a))

        out.append(np.log1p(np.exp(-(dist(n) - dist(p)))))
    return np.asarray(out)


@pytest.mark.parametrize("normalized,channel_mean", [(False, False), (True, False), (False, True)])
def test_attribution_loss_matches_closed_form(normalized: bool, channel_mean: bool) -> None:
    model = _mlp_classifier()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5, 2, 3, 3, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    got = attribution_loss(model, x, y, beta=BETA, normalized_cosine=normalized, channel_mean=channel_mean)
    want = _closed_form(model, x, y, normalized, channel_mean)
    assert got.shape == (5,)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-9, atol=1e-12)
    # batched=True gives the same numbers
    again = attribution_loss(model, x, y, beta=BETA, normalized_cosine=normalized, channel_mean=channel_mean, batched=True)
    np.testing.assert_allclose(again.detach().numpy(), want, rtol=1e-9, atol=1e-12)


def test_strongest_wrong_class_excludes_true_class() -> None:
    logits = torch.tensor([[5.0, 1.0, 3.0], [0.0, 9.0, 2.0], [1.0, 4.0, 4.5], [2.0, 2.0, 7.0]])
    y = torch.tensor([0, 1, 2, 2])
    assert strongest_wrong_class(logits, y).tolist() == [2, 2, 1, 0]
    # through the model: when the true class wins, i* is still a different class
    model = _mlp_classifier()
    x = torch.rand(6, 2, 3, 3, dtype=torch.float64)
    with torch.no_grad(), softplus(model, BETA):
        top = model(x).argmax(1)
    _, _, _, istar = input_gradients(model, x, top, beta=BETA)
    assert (istar != top).all()


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("wrn-16-2", 5, input_size=16).train()


def test_batched_gradients_equal_two_separate_autograd_calls() -> None:
    model = _bn_model().double()  # batch norm in train mode: the halves must not share statistics
    x = torch.rand(6, 3, 16, 16, dtype=torch.float64).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    with softplus(model, 50.0):
        logits = model(x)
    istar = strongest_wrong_class(logits, y)
    rows = torch.arange(6)
    g_y = torch.autograd.grad(logits[rows, y].sum(), x, create_graph=True, retain_graph=True)[0]
    g_i = torch.autograd.grad(logits[rows, istar].sum(), x, create_graph=True)[0]
    probe = torch.rand_like(x)
    ref_second = torch.autograd.grad((g_y * probe).sum() + (g_i * g_i).sum(), x)[0]
    for batched in (False, True):
        b_y, b_i, _, b_istar = input_gradients(model, x, y, beta=50.0, batched=batched)
        assert torch.equal(b_istar, istar)
        torch.testing.assert_close(b_y, g_y, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(b_i, g_i, rtol=1e-10, atol=1e-12)
        second = torch.autograd.grad((b_y * probe).sum() + (b_i * b_i).sum(), x)[0]
        torch.testing.assert_close(second, ref_second, rtol=1e-9, atol=1e-11)


def test_normalized_gradients_are_gradients_wrt_normalized_input() -> None:
    model = _bn_model().eval()
    x = torch.rand(3, 3, 16, 16)
    y = torch.tensor([1, 2, 3])
    g_y, _, _, _ = input_gradients(model, x, y, beta=50.0, normalized=True, create_graph=False)
    xn = model.normalize(x).requires_grad_(True)
    with softplus(model, 50.0):
        logits = model.forward_head(model.net.forward_features(xn))
    ref = torch.autograd.grad(logits[torch.arange(3), y].sum(), xn)[0]
    torch.testing.assert_close(g_y, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("topk,ce_weight", [(None, 0.0), (40, 0.0), (None, 1.0)])
def test_attack_stays_in_eps_ball_and_unit_box(topk, ce_weight) -> None:
    model = _bn_model()
    x = torch.rand(4, 3, 16, 16)
    x[0] = 0.0  # corners of the box: projection onto [0, 1] must bite
    x[1] = 1.0
    y = torch.tensor([0, 1, 2, 3])
    eps = 8 / 255
    x_adv = art_attack(model, x, y, eps, 5 / 255, 3, beta=50.0, topk=topk, ce_weight=ce_weight)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > eps / 2  # it moved
    assert all(p.grad is None for p in model.parameters())


def test_attack_increases_attribution_loss() -> None:
    model = _bn_model().eval()
    x = torch.rand(4, 3, 16, 16) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2, 3])
    start = torch.zeros_like(x)
    x_adv = art_attack(model, x, y, 8 / 255, 2 / 255, 5, beta=50.0, init_delta=start)
    before = attribution_loss(model, x, y, 50.0, create_graph=False).sum()
    after = attribution_loss(model, x_adv, y, 50.0, create_graph=False).sum()
    assert after > before


def test_topk_positions_pick_largest_gradient_entries() -> None:
    model = _mlp_classifier()
    x = torch.rand(2, 2, 3, 3, dtype=torch.float64)
    y = torch.tensor([1, 3])
    idx = topk_positions(model, x, y, 4)
    xr = x.clone().requires_grad_(True)
    g = torch.autograd.grad(model(xr)[torch.arange(2), y].sum(), xr)[0].abs().flatten(1)
    for b in range(2):
        assert set(idx[b].tolist()) == set(g[b].argsort(descending=True)[:4].tolist())
    restricted = attribution_loss(model, x, y, BETA, index=idx)
    assert restricted.shape == (2,) and torch.isfinite(restricted).all()


def test_pair_mining_takes_hardest_partner_distances() -> None:
    model = _mlp_classifier()
    gen = torch.Generator().manual_seed(3)
    clean = torch.rand(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    rows = torch.cat([clean, (clean + 0.05 * torch.randn(clean.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)])
    y = torch.tensor([0, 2, 3, 0, 2, 3])
    g_y, g_i, _, _ = input_gradients(model, rows, y, beta=BETA, create_graph=False)

    def d(g: torch.Tensor, a: torch.Tensor) -> float:
        return 1 - float(torch.dot(g.flatten(), a.flatten()) / (g.norm() * a.norm()))

    want = []
    for i in range(6):
        j = (i + 3) % 6
        d_ap = max(d(g_y[i], rows[i]), d(g_y[j], rows[i]))
        d_an = min(d(g_i[i], rows[i]), d(g_i[j], rows[i]))
        want.append(np.log1p(np.exp(d_ap - d_an)))
    got = attribution_loss(model, rows, y, BETA, pair_mining=True)
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-9)
    plain = attribution_loss(model, rows, y, BETA)
    assert (got >= plain - 1e-12).all()  # mining only ever makes the triplet harder
