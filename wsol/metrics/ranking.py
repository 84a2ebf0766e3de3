"""Similarity of attribution maps: ranking metrics, centre of mass, SSIM, Pearson, batched on tensors.

Every metric takes two batches of maps, N×H×W or N×D (any trailing shape is flattened per sample),
and returns one value per sample (an N-long tensor), so a job can write one row per image.
Rank statistics follow scipy exactly, ties included: :func:`kendall_tau_b` is
``scipy.stats.kendalltau`` (τ-b), :func:`spearman` is ``scipy.stats.spearmanr`` (average ranks).
Both run in O(D log² D) per row with sorts and ``searchsorted`` only, so 64×64 maps are cheap.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from wsol.attribution import input_gradient
from wsol.errors import ConfigError

SSIM_WINDOW = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _rows(a: torch.Tensor) -> torch.Tensor:
    """N×… → N×D (float64 for exact counts and stable correlations)."""
    return a.detach().reshape(a.shape[0], -1).double()


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise ConfigError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _rows(a), _rows(b)


def preprocess_map(maps: torch.Tensor, total: float = 1.0) -> torch.Tensor:
    """The official ART/IFIA map: mean over channels of |·| (N×C×H×W → N×H×W), scaled to sum to ``total``.

    N×H×W input is taken as already channel-reduced (only |·| and the scaling apply). A map that
    is zero everywhere stays zero. The result stays differentiable, so attacks can use it.
    """
    reduced = maps.abs().mean(dim=1) if maps.dim() == 4 else maps.abs()
    sums = reduced.flatten(1).sum(dim=1).clamp_min(torch.finfo(reduced.dtype).tiny)
    return reduced * (total / sums).view(-1, *([1] * (reduced.dim() - 1)))


def check_k(k: int, size: int) -> None:
    """k must be a positive count no larger than the map."""
    if not 1 <= k <= size:
        raise ConfigError(f"top-k needs 1 ≤ k ≤ {size} (the number of map entries), got k={k}")


def topk_mask(maps: torch.Tensor, k: int) -> torch.Tensor:
    """Bool N×D: the k largest entries of each flattened map; among equal values the lower flat index wins.

    The tie rule is explicit (a stable sort) because ``torch.topk`` picks among ties differently on the
    CPU and on CUDA: quantized or partly zero maps would otherwise score differently per device.
    """
    flat = maps.reshape(maps.shape[0], -1)
    check_k(k, flat.shape[1])
    idx = flat.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Share of indices common to the k largest entries of ``a`` and of ``b``, in [0, 1], per sample."""
    fa, fb = _pair(a, b)
    return (topk_mask(fa, k) & topk_mask(fb, k)).sum(dim=1).double() / k


def _run_starts(keys_equal_prev: torch.Tensor) -> torch.Tensor:
    """Index of the first element of each element's run of equal sorted keys (N×D long)."""
    d = keys_equal_prev.shape[1]
    pos = torch.arange(d, device=keys_equal_prev.device).expand_as(keys_equal_prev)
    return torch.where(keys_equal_prev, torch.zeros_like(pos), pos).cummax(dim=1).values


def _equal_prev(*sorted_keys: torch.Tensor) -> torch.Tensor:
    """Bool N×D: element i equals element i − 1 in every key (False at i = 0)."""
    eq = torch.ones_like(sorted_keys[0], dtype=torch.bool)
    for key in sorted_keys:
        eq = eq & F.pad(key[:, 1:] == key[:, :-1], (1, 0), value=False)
    return eq


def _tied_pairs(*sorted_keys: torch.Tensor) -> torch.Tensor:
    """Σ over runs of equal keys of t(t − 1)/2, per row (keys sorted jointly)."""
    eq = _equal_prev(*sorted_keys)
    pos = torch.arange(eq.shape[1], device=eq.device).expand_as(eq)
    return (pos - _run_starts(eq)).sum(dim=1).double()


def _inversions(values: torch.Tensor) -> torch.Tensor:
    """Pairs i < j with values_i > values_j per row, by a bottom-up merge sort with searchsorted."""
    n, d = values.shape
    size = 1 << max(0, (d - 1).bit_length())
    blocks = F.pad(values, (0, size - d), value=float("inf"))
    count = torch.zeros(n, dtype=torch.float64, device=values.device)
    width = 1
    while width < size:
        pairs = blocks.reshape(n, size // (2 * width), 2, width)
        left = pairs[:, :, 0].reshape(-1, width).contiguous()
        right = pairs[:, :, 1].reshape(-1, width).contiguous()
        not_greater = torch.searchsorted(left, right, right=True)
        count += (width - not_greater).reshape(n, -1).sum(dim=1).double()
        blocks = pairs.reshape(n, size // (2 * width), 2 * width).sort(dim=2).values.reshape(n, size)
        width *= 2
    return count


def kendall_tau_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall's τ-b of each pair of rows, equal to ``scipy.stats.kendalltau`` (ties included).

    τ-b = (n_c − n_d) / sqrt((n₀ − n₁)(n₀ − n₂)); a constant row gives NaN, as scipy does.
    """
    fa, fb = _pair(a, b)
    order_b = fb.argsort(dim=1, stable=True)
    order = order_b.gather(1, fa.gather(1, order_b).argsort(dim=1, stable=True))
    sa, sb = fa.gather(1, order), fb.gather(1, order)
    d = fa.shape[1]
    n0 = d * (d - 1) / 2.0
    n1 = _tied_pairs(sa)
    n2 = _tied_pairs(fb.sort(dim=1).values)
    n3 = _tied_pairs(sa, sb)
    discordant = _inversions(sb)
    s = n0 - n1 - n2 + n3 - 2 * discordant
    return s / torch.sqrt((n0 - n1) * (n0 - n2))


def average_ranks(a: torch.Tensor) -> torch.Tensor:
    """Ranks 1..D of each row, ties sharing their average rank (``scipy.stats.rankdata``)."""
    fa = _rows(a)
    sa, order = fa.sort(dim=1, stable=True)
    start = torch.searchsorted(sa, sa, right=False)
    end = torch.searchsorted(sa, sa, right=True)
    return torch.empty_like(fa).scatter_(1, order, (start + end + 1).double() / 2)


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of flattened maps (NaN for a constant map)."""
    fa, fb = _pair(a, b)
    ca = fa - fa.mean(dim=1, keepdim=True)
    cb = fb - fb.mean(dim=1, keepdim=True)
    return (ca * cb).sum(dim=1) / torch.sqrt((ca * ca).sum(dim=1) * (cb * cb).sum(dim=1))


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's ρ of each pair of rows: Pearson on average ranks (``scipy.stats.spearmanr``)."""
    _pair(a, b)
    return pearson(average_ranks(a), average_ranks(b))


def center_of_mass(maps: torch.Tensor) -> torch.Tensor:
    """N×2 (row, column) centre of mass of non-negative N×H×W maps, in pixels (0 = first pixel)."""
    if maps.dim() != 3:
        raise ConfigError(f"centre of mass needs N×H×W maps, got shape {tuple(maps.shape)}")
    h, w = maps.shape[1:]
    rows = torch.arange(h, device=maps.device, dtype=maps.dtype).view(1, h, 1)
    cols = torch.arange(w, device=maps.device, dtype=maps.dtype).view(1, 1, w)
    mass = maps.sum(dim=(1, 2)).clamp_min(torch.finfo(maps.dtype).tiny)
    return torch.stack(((maps * rows).sum(dim=(1, 2)) / mass, (maps * cols).sum(dim=(1, 2)) / mass), dim=1)


def center_shift(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance in pixels between the centres of mass of ``a`` and ``b`` (N×H×W)."""
    _pair(a, b)
    return (center_of_mass(a) - center_of_mass(b)).norm(dim=1)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: Optional[float] = None) -> torch.Tensor:
    """Mean structural similarity of N×H×W maps, as ``skimage.metrics.structural_similarity``.

    That definition: 7×7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, mean over the
    positions whose window lies inside the map. ``data_range`` None takes, per sample, the range
    (max − min) over both maps, so maps of any scale compare; pass a number to fix it.
    """
    fa, fb = _pair(a, b)
    if a.dim() != 3 or min(a.shape[1:]) < SSIM_WINDOW:
        raise ConfigError(f"SSIM needs N×H×W maps of at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {tuple(a.shape)}")
    if data_range is None:
        both = torch.cat((fa, fb), dim=1)
        rng = (both.amax(dim=1) - both.amin(dim=1)).view(-1, 1, 1, 1)
    else:
        rng = torch.full((fa.shape[0], 1, 1, 1), float(data_range), dtype=fa.dtype, device=fa.device)
    x = fa.view(a.shape)[:, None]
    y = fb.view(b.shape)[:, None]
    pool = lambda t: F.avg_pool2d(t, SSIM_WINDOW, stride=1)  # noqa: E731
    cov_norm = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)
    ux, uy = pool(x), pool(y)
    vx = cov_norm * (pool(x * x) - ux * ux)
    vy = cov_norm * (pool(y * y) - uy * uy)
    vxy = cov_norm * (pool(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * rng) ** 2, (SSIM_K2 * rng) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def input_gradient_cosine(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """cos(x, g^y(x)) per sample, g^y the gradient of the class-y logit w.r.t. the [0, 1] input (ART Fig. 6)."""
    g = input_gradient(model, x, y)
    return F.cosine_similarity(x.detach().flatten(1), g.flatten(1), dim=1)
