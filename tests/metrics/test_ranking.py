"""Ranking and similarity metrics against scipy / numpy / skimage, ties included."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from skimage.metrics import structural_similarity

from wsol.errors import WsolError
from wsol.metrics.ranking import (
    average_ranks,
    center_of_mass,
    center_shift,
    input_gradient_cosine,
    kendall_tau_b,
    pearson,
    preprocess_map,
    spearman,
    ssim,
    topk_intersection,
    topk_mask,
)
from wsol.models import build_model


def _pairs(n: int, d: int, levels: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rows; with ``levels`` the values are drawn from few integers, so ties are frequent."""
    g = torch.Generator().manual_seed(seed)
    if levels is None:
        return torch.rand(n, d, generator=g), torch.rand(n, d, generator=g)
    return (torch.randint(levels, (n, d), generator=g).float(), torch.randint(levels, (n, d), generator=g).float())


@pytest.mark.parametrize("d,levels", [(2, None), (7, None), (100, None), (100, 3), (257, 5), (1000, 20), (33, 2)])
def test_kendall_and_spearman_match_scipy(d: int, levels: int | None) -> None:
    a, b = _pairs(4, d, levels, seed=d)
    tau, rho = kendall_tau_b(a, b), spearman(a, b)
    for i in range(4):
        want_tau = stats.kendalltau(a[i].numpy(), b[i].numpy()).statistic
        want_rho = stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic
        assert tau[i].item() == pytest.approx(want_tau, abs=1e-12)
        assert rho[i].item() == pytest.approx(want_rho, abs=1e-12)


def test_kendall_on_4096_entries_with_ties_matches_scipy() -> None:
    a, b = _pairs(2, 64 * 64, 50, seed=1)
    a[1] = b[1] + 0.5 * (a[1] > 25)  # strongly correlated row
    tau = kendall_tau_b(a.view(2, 64, 64), b.view(2, 64, 64))
    for i in range(2):
        assert tau[i].item() == pytest.approx(stats.kendalltau(a[i].numpy(), b[i].numpy()).statistic, abs=1e-12)


def test_kendall_of_a_constant_row_is_nan_as_in_scipy() -> None:
    a = torch.ones(1, 10)
    b = torch.rand(1, 10)
    assert torch.isnan(kendall_tau_b(a, b)).all()
    assert np.isnan(stats.kendalltau(a[0].numpy(), b[0].numpy()).statistic)


def test_average_ranks_match_rankdata() -> None:
    a, _ = _pairs(3, 50, 6, seed=3)
    np.testing.assert_allclose(average_ranks(a).numpy(), np.stack([stats.rankdata(r) for r in a.numpy()]))


def test_pearson_matches_numpy() -> None:
    a, b = _pairs(3, 60, None, seed=4)
    want = [np.corrcoef(a[i].numpy(), b[i].numpy())[0, 1] for i in range(3)]
    np.testing.assert_allclose(pearson(a, b).numpy(), want, atol=1e-6)


def test_topk_intersection_counts_common_indices() -> None:
    a = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    b = torch.tensor([[5.0, 1.0, 4.0, 2.0, 3.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert topk_intersection(a, b, 2).tolist() == [0.5, 0.0]
    assert topk_intersection(a, b, 5).tolist() == [1.0, 1.0]
    a, b = _pairs(5, 80, None, seed=5)
    for i in range(5):
        want = len(set(np.argsort(-a[i].numpy())[:10]) & set(np.argsort(-b[i].numpy())[:10])) / 10
        assert topk_intersection(a, b, 10)[i].item() == pytest.approx(want)


def test_topk_ties_go_to_the_lower_index() -> None:
    """Quantized and partly zero maps: the tie rule is numpy's stable descending order, whatever torch.topk would pick."""
    g = torch.Generator().manual_seed(6)
    a = (torch.rand(4, 64, 64, generator=g) * 8).floor()
    a[2:] *= torch.rand(2, 64, 64, generator=g) > 0.9
    b = torch.zeros_like(a)
    for i in range(4):
        want = np.argsort(-a[i].flatten().numpy(), kind="stable")[:100]
        assert set(topk_mask(a[i : i + 1], 100)[0].nonzero().flatten().tolist()) == set(want.tolist())
        assert topk_intersection(a[i : i + 1], b[i : i + 1], 100).item() == pytest.approx(np.mean(want < 100))


@pytest.mark.parametrize("k", [0, 26])
def test_bad_k_raises_one_line(k: int) -> None:
    with pytest.raises(WsolError, match="k=") as info:
        topk_intersection(torch.rand(2, 5, 5), torch.rand(2, 5, 5), k)
    assert "\n" not in str(info.value)


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(WsolError, match="same shape"):
        kendall_tau_b(torch.rand(2, 10), torch.rand(2, 11))


def test_ssim_matches_skimage() -> None:
    a, b = _pairs(3, 20 * 17, None, seed=6)
    a, b = a.view(3, 20, 17), (0.6 * a + 0.4 * b).view(3, 20, 17) * 3
    got = ssim(a, b)
    for i in range(3):
        rng = float(max(a[i].max(), b[i].max()) - min(a[i].min(), b[i].min()))
        want = structural_similarity(a[i].double().numpy(), b[i].double().numpy(), data_range=rng)
        assert got[i].item() == pytest.approx(want, abs=1e-8)
    fixed = structural_similarity(a[0].double().numpy(), b[0].double().numpy(), data_range=1.0)
    assert ssim(a[:1], b[:1], data_range=1.0).item() == pytest.approx(fixed, abs=1e-10)


def test_center_of_mass_and_shift_in_pixels() -> None:
    maps = torch.zeros(2, 5, 6)
    maps[0, 1, 2] = 1.0
    maps[1, 4, 0] = maps[1, 4, 4] = 2.0
    assert center_of_mass(maps).tolist() == [[1.0, 2.0], [4.0, 2.0]]
    assert center_shift(maps[:1], maps[1:]).item() == pytest.approx(3.0)
    g = torch.Generator().manual_seed(7)
    m = torch.rand(1, 9, 11, generator=g)
    r, c = np.indices((9, 11))
    mass = m[0].numpy()
    want = [(mass * r).sum() / mass.sum(), (mass * c).sum() / mass.sum()]
    np.testing.assert_allclose(center_of_mass(m)[0].numpy(), want, rtol=1e-6)


def test_preprocess_map_is_channel_mean_abs_sum_normalized() -> None:
    g = torch.Generator().manual_seed(8)
    raw = torch.randn(2, 3, 4, 5, generator=g)
    out = preprocess_map(raw)
    want = raw.abs().mean(dim=1)
    want = want / want.sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(out, want)
    assert preprocess_map(raw, total=20.0).sum(dim=(1, 2)).tolist() == pytest.approx([20.0, 20.0])
    assert preprocess_map(torch.zeros(1, 3, 2, 2)).abs().sum().item() == 0.0


def test_input_gradient_cosine_matches_a_manual_gradient() -> None:
    torch.manual_seed(0)
    model = build_model("small-cnn", 3, input_size=16).double().eval()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    y = torch.tensor([0, 2])
    xi = x.clone().requires_grad_(True)
    model(xi).gather(1, y[:, None]).sum().backward()
    want = torch.nn.functional.cosine_similarity(x.flatten(1), xi.grad.flatten(1), dim=1)
    torch.testing.assert_close(input_gradient_cosine(model, x, y), want)
