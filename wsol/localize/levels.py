"""The threshold rule of every map → region step, defined once.

wsolevaluation's recipe, which boxes, masks and the segmentation metrics all follow:

1. ``u8 = uint8(map * 255)`` (:func:`to_uint8`; truncation, the map is expected in [0, 1]);
2. a threshold ``t`` (a fraction of the map's maximum) becomes the integer cut level
   ``int(t * max(u8))`` (:func:`threshold_levels`);
3. foreground = pixels with ``u8 > level`` (``cv2.threshold`` THRESH_BINARY).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence, Union

import numpy as np
import torch
from numba import njit

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


def default_thresholds(interval: float = 0.01) -> np.ndarray:
    """``np.arange(0, 1, interval)``: wsolevaluation's threshold list (its training default is 0.001)."""
    if not 0 < interval < 1:
        raise ValueError(f"interval must be in (0, 1), got {interval}")
    return np.arange(0, 1, interval)


def as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_uint8(maps: ArrayLike, workers: int = 1) -> np.ndarray:
    """N×H×W (or H×W) maps in [0, 1] → uint8 ``trunc(map * 255)``, as wsolevaluation does.

    The product is computed in the maps' own float dtype (float32 maps stay float32, as in
    wsolevaluation). NaN becomes 0 and values are clipped to [0, 1] first. uint8 input is
    taken as already converted. float32/float64 maps take a compiled single pass (``workers``
    threads, :func:`to_uint8_compiled`); other dtypes the numpy expression below, same bytes.
    """
    arr = as_numpy(maps)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"maps must be N×H×W or H×W, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype in (np.float32, np.float64) and arr.size:
        return to_uint8_compiled(arr, workers)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    lo, hi = (arr.min(), arr.max()) if arr.size else (0.0, 0.0)
    if not (lo >= 0 and hi <= 1):  # also true for NaN
        arr = np.clip(np.where(np.isnan(arr), 0, arr), 0, 1)
    return np.ascontiguousarray((arr * 255).astype(np.uint8))


@njit(cache=True, nogil=True)
def _to_uint8_rows(flat: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = trunc(clip(nan→0 of flat[i], 0, 1) * 255)``, computed in ``flat``'s float dtype."""
    one = flat.dtype.type(1.0)
    zero = flat.dtype.type(0.0)
    scale = flat.dtype.type(255.0)
    for i in range(flat.shape[0]):
        v = flat[i]
        if not v >= zero:  # negative or NaN
            v = zero
        elif v > one:
            v = one
        out[i] = np.uint8(v * scale)


def to_uint8_compiled(arr: np.ndarray, workers: int = 1) -> np.ndarray:
    """Compiled twin of :func:`to_uint8` for float32/float64 arrays (same bytes).

    One pass, no float temporary; ``workers`` threads split the array.
    """
    flat = np.ascontiguousarray(arr).reshape(-1)
    out = np.empty(flat.shape, np.uint8)
    workers = max(1, min(int(workers), len(flat) // 65536 + 1))
    if workers == 1:
        _to_uint8_rows(flat, out)
    else:
        bounds = np.linspace(0, len(flat), workers + 1).astype(np.int64)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda a, b: _to_uint8_rows(flat[a:b], out[a:b]), bounds[:-1], bounds[1:]))
    return out.reshape(arr.shape)


def to_uint8_torch(maps: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`to_uint8` (stays on the maps' device): NaN → 0, clip to [0, 1], ``trunc(m * 255)``."""
    if maps.dim() == 2:
        maps = maps.unsqueeze(0)
    if maps.dim() != 3:
        raise ValueError(f"maps must be N×H×W or H×W, got shape {tuple(maps.shape)}")
    if maps.dtype == torch.uint8:
        return maps
    x = maps if maps.is_floating_point() else maps.float()
    x = torch.nan_to_num(x, nan=0.0).clamp(0, 1)
    return (x * 255).to(torch.uint8)


def threshold_levels(max_values: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """Integer cut levels ``int(t * max_u8)`` (N×T, int64); foreground is ``u8 > level``.

    The product is taken in float64 and truncated toward zero, like Python's ``int()`` on
    wsolevaluation's ``threshold * np.max(uint8_map)``. Levels below -1 are clamped to -1 (all
    pixels are foreground either way).
    """
    mx = as_numpy(max_values).astype(np.float64).reshape(-1, 1)
    th = as_numpy(thresholds).astype(np.float64).reshape(1, -1)
    return np.maximum(np.trunc(th * mx).astype(np.int64), -1)



__all__ = ["ArrayLike", "as_numpy", "default_thresholds", "threshold_levels", "to_uint8", "to_uint8_compiled", "to_uint8_torch"]
