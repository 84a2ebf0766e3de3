"""Post-processing steps on batched maps, checked against hand values and scipy/numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from wsol.errors import ConfigError
from wsol.localize.heatmap import (
    PostProcess,
    gaussian_filter,
    mean_filter,
    normalize_minmax,
    percentile_clip,
    postprocess,
    resize_maps,
    to_gray,
)


def test_to_gray_is_channel_mean_of_abs():
    x = torch.tensor([[[[1.0, -2.0]], [[-3.0, 4.0]], [[0.5, 0.0]]]])  # 1×3×1×2
    assert torch.allclose(to_gray(x), torch.tensor([[[1.5, 2.0]]]))
    assert torch.allclose(to_gray(x, absolute=False), torch.tensor([[[-0.5, 2.0 / 3.0]]]))
    signed = torch.tensor([[[-1.0, 2.0]]])
    assert to_gray(signed) is signed  # already gray: untouched, sign kept


def test_minmax_per_image_and_degenerate_maps():
    x = torch.tensor([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]], [[1.0, float("nan")], [0.0, 2.0]]])
    out = normalize_minmax(x)
    assert torch.allclose(out[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))  # constant -> zeros
    assert torch.equal(out[2], torch.zeros(2, 2))  # NaN -> zeros
    both = normalize_minmax(torch.tensor([[[0.0, 1.0]], [[2.0, 4.0]]]), per_image=False)
    assert torch.allclose(both, torch.tensor([[[0.0, 0.25]], [[0.5, 1.0]]]))


def test_percentile_clip_matches_numpy_recipe():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 9, 11)).astype(np.float32) ** 3
    out = percentile_clip(torch.from_numpy(x), 2, 98).numpy()
    for m, o in zip(x, out):
        z = (m - m.mean()) / m.std()
        lo, hi = np.percentile(z, [2, 98])
        z = np.clip(z, lo, hi)
        expected = (z - z.min()) / (z.max() - z.min())
        assert np.allclose(o, expected, atol=1e-5)
    assert torch.equal(percentile_clip(torch.ones(1, 3, 3)), torch.zeros(1, 3, 3))


def test_mean_filter_is_zero_padded_box_conv():
    ones = torch.ones(1, 3, 3)
    out = mean_filter(ones)
    # corners see 4 of 9 ones, edges 6 of 9, the centre 9 of 9
    assert torch.allclose(out, torch.tensor([[[4, 6, 4], [6, 9, 6], [4, 6, 4]]]) / 9.0)
    x = torch.rand(2, 7, 5)
    conv = F.conv2d(x.unsqueeze(1), torch.full((1, 1, 3, 3), 1 / 9), padding=1).squeeze(1)
    assert torch.allclose(mean_filter(x), conv, atol=1e-6)
    with pytest.raises(ValueError):
        mean_filter(x, 4)


@pytest.mark.parametrize("sigma,shape", [(1.3, (2, 20, 17)), (3.0, (1, 7, 9)), (0.6, (1, 5, 30))])
def test_gaussian_filter_matches_scipy(sigma, shape):
    x = np.random.default_rng(1).random(shape).astype(np.float32)
    out = gaussian_filter(torch.from_numpy(x), sigma).numpy()
    for m, o in zip(x, out):
        assert np.allclose(o, ndimage.gaussian_filter(m.astype(np.float64), sigma), atol=1e-5)


def test_resize_and_postprocess_chain():
    x = torch.rand(2, 3, 7, 7)
    assert resize_maps(x[:, 0], 14).shape == (2, 14, 14)
    assert torch.equal(resize_maps(x[:, 0], (7, 7)), x[:, 0])
    manual = mean_filter(normalize_minmax(to_gray(x)), 3)
    assert torch.allclose(postprocess(x), manual)
    out = postprocess(x, ("gray", "resize", "minmax"), size=(10, 12))
    assert out.shape == (2, 10, 12) and float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert PostProcess("art_grad")(x).shape == (2, 7, 7)


def test_postprocess_rejects_bad_steps():
    with pytest.raises(ConfigError, match="unknown post-processing step"):
        PostProcess(("gray", "blur"))
    with pytest.raises(ConfigError, match="needs a size"):
        PostProcess(("gray", "resize"))
    with pytest.raises(ValueError, match="put 'gray' first"):
        postprocess(torch.rand(1, 3, 4, 4), ("minmax",))


def test_minmax_maps_infinities_to_the_ends_without_nan() -> None:
    inf = float("inf")
    x = torch.tensor([[[0.0, 1.0, inf]], [[0.0, 2.0, -inf]], [[inf, -inf, 5.0]]])
    out = normalize_minmax(x)
    assert torch.equal(out, torch.tensor([[[0.0, 1.0, 1.0]], [[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]]))
    batch = normalize_minmax(x, per_image=False)
    assert torch.isfinite(batch).all() and torch.equal(batch[0, 0, 2], torch.tensor(1.0)) and batch[1, 0, 2] == 0


def test_one_inf_value_does_not_abort_box_evaluation() -> None:
    from wsol.metrics.localization import BoxEvaluator

    maps = torch.zeros(1, 8, 8)
    maps[0, 2:5, 2:5] = 1.0
    maps[0, 3, 3] = float("inf")
    best = BoxEvaluator(workers=1).accumulate(normalize_minmax(maps), [np.array([[2.0, 2.0, 5.0, 5.0]])])
    assert best.shape[0] == 1 and best.max() == pytest.approx(1.0)
