"""IoU of boxes and its two pixel conventions, defined once (docs/iou_convention.md).

* ``"exclusive"`` (ours): boxes ``[x1, y1, x2, y2]`` with x2/y2 exclusive, IoU of continuous areas
  ``(x2 - x1) * (y2 - y1)`` (:func:`iou_exclusive`, :func:`box_iou`).
* ``"wsolevaluation"``: its ``+1`` formula on every width and height (:func:`iou_plus_one`),
  applied to predicted boxes whose x2/y2 were clipped to W-1/H-1.

The compiled sweep of :mod:`wsol.localize.fastboxes` scores boxes with a scalar twin of these
two formulas (same float64 operations, same order); tests/localize/test_fastboxes.py checks that
the results agree bit for bit. Dependencies run one way: metrics import localize primitives,
never the reverse.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np
import torch

from wsol.localize.fastboxes import CONVENTIONS as IOU_CONVENTIONS

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Sequence[float]]]


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def boxes2d(x: Any) -> np.ndarray:
    """Boxes as a K×4 float64 array (a single box may be given flat; empty input gives 0×4)."""
    arr = _np(x)
    if arr.size == 0:
        return np.zeros((0, 4), np.float64)
    arr = arr.reshape(-1, 4) if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be K×4, got shape {arr.shape}")
    return arr


def box_iou(a: ArrayLike, b: ArrayLike) -> Union[np.ndarray, torch.Tensor]:
    """Pairwise IoU (M×N) of xyxy boxes with x2/y2 exclusive, by continuous area.

    Returns a torch tensor when ``a`` is a tensor, else a float64 numpy array. A pair whose
    union is empty (two zero-area boxes) gets IoU 0.
    """
    if isinstance(a, torch.Tensor):
        bt = b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b), dtype=a.dtype)
        at, bt = a.reshape(-1, 4).to(torch.float64), bt.reshape(-1, 4).to(device=a.device, dtype=torch.float64)
        iw = (torch.minimum(at[:, None, 2], bt[None, :, 2]) - torch.maximum(at[:, None, 0], bt[None, :, 0])).clamp(min=0)
        ih = (torch.minimum(at[:, None, 3], bt[None, :, 3]) - torch.maximum(at[:, None, 1], bt[None, :, 1])).clamp(min=0)
        inter = iw * ih
        area_a = (at[:, 2] - at[:, 0]).clamp(min=0) * (at[:, 3] - at[:, 1]).clamp(min=0)
        area_b = (bt[:, 2] - bt[:, 0]).clamp(min=0) * (bt[:, 3] - bt[:, 1]).clamp(min=0)
        union = area_a[:, None] + area_b[None, :] - inter
        return torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(union))
    return iou_exclusive(boxes2d(a), boxes2d(b))


def iou_exclusive(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (M×N float64) of K×4 arrays, x2/y2 exclusive, continuous areas; empty union → 0."""
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    inter = iw * ih
    area_a = np.maximum(a[:, 2] - a[:, 0], 0) * np.maximum(a[:, 3] - a[:, 1], 0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def iou_plus_one(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """wsolevaluation ``calculate_multiple_iou``: ``+1`` on every width/height; denominator ≤ 0 → 0."""
    iw = np.maximum(0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1)
    ih = np.maximum(0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    den = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, inter / np.where(den > 0, den, 1), 0.0)


__all__ = ["IOU_CONVENTIONS", "box_iou", "boxes2d", "iou_exclusive", "iou_plus_one"]
