"""Weak segmentation metrics: mask IoU, mIoU, Top-1 Seg over a threshold sweep, and PxAP.

Masks from maps use the same rule as the boxes (:func:`wsol.localize.masks.masks_from_maps`):
``u8 = uint8(map * 255)``, foreground ``u8 > int(t * max(u8))``. Because a map has only 256
distinct uint8 values, every threshold of a sweep is scored at once from two per-image
histograms (all valid pixels, GT-foreground pixels); no mask is ever materialized per threshold.

PxAP follows wsolevaluation's ``MaskEvaluator``: histograms of the raw float scores of
GT-positive and GT-negative pixels are pooled over the dataset. The bin right edges are the
thresholds followed by 1, 2, 3. AP = Σ precision·Δrecall × 100 over bins with a positive
prediction. Ignored pixels are left out of every count.

Evaluator states are plain counters and histograms, so shards merge by adding
(``merge`` / ``state_dict``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from wsol.errors import DataError
from wsol.localize.levels import default_thresholds, threshold_levels, to_uint8
from wsol.metrics.localization import Top1Counts, same_thresholds, threshold_index

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Any]]


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def _masks3d(x: Any, name: str) -> np.ndarray:
    arr = _np(x).astype(bool)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be N×H×W or H×W, got shape {arr.shape}")
    return arr


def mask_iou(pred: ArrayLike, gt: ArrayLike, ignore: Optional[ArrayLike] = None) -> np.ndarray:
    """Foreground IoU per image (N,) of boolean masks; ``ignore`` pixels are left out.

    When both masks are empty (the union is empty) the IoU is 1: the prediction agrees with
    the ground truth.
    """
    p, g = _masks3d(pred, "pred"), _masks3d(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    valid = np.ones_like(p) if ignore is None else ~_masks3d(ignore, "ignore")
    inter = (p & g & valid).reshape(len(p), -1).sum(1)
    union = ((p | g) & valid).reshape(len(p), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _suffix_counts(hist: np.ndarray) -> np.ndarray:
    """For N×256 value histograms, S[:, i] = #pixels with value ≥ i, for i in 0..256."""
    s = np.zeros((hist.shape[0], 257), np.int64)
    s[:, :256] = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]
    return s


@dataclass
class SegmentationScores:
    """Curves over thresholds (percent) from :class:`SegmentationEvaluator`."""

    thresholds: np.ndarray
    count: int
    miou_fg: np.ndarray  # mean over images of foreground IoU
    miou_bg: np.ndarray  # mean over images of background IoU
    gt_known_seg: np.ndarray  # share of images with foreground IoU ≥ iou_threshold
    top1_seg: Optional[np.ndarray]  # ... and top-1 class correct
    top1_acc: Optional[float]
    iou_threshold: float

    def threshold_index(self, threshold: float) -> int:
        """Index of ``threshold`` in the evaluated list (must match to 1e-9)."""
        return threshold_index(self.thresholds, threshold)

    def at_threshold(self, threshold: float) -> Dict[str, float]:
        """Every metric at one fixed threshold."""
        j = self.threshold_index(threshold)
        out = {
            "miou": float(self.miou_fg[j]),
            "miou_bg": float(self.miou_bg[j]),
            "miou_mean": float((self.miou_fg[j] + self.miou_bg[j]) / 2),
            "gt_known_seg": float(self.gt_known_seg[j]),
        }
        if self.top1_seg is not None:
            out["top1_seg"] = float(self.top1_seg[j])
        return out

    def to_dict(self) -> Dict[str, float]:
        """Flat scalars: each metric at its own best threshold, plus that threshold.

        ``miou`` is the mean foreground IoU; ``miou_mean`` averages the foreground and background
        mIoU (the two-class mIoU of semantic segmentation).
        """
        def best(curve: np.ndarray) -> tuple:
            j = int(np.argmax(curve))
            return float(curve[j]), float(self.thresholds[j])

        mean_curve = (self.miou_fg + self.miou_bg) / 2
        out: Dict[str, float] = {"count": float(self.count)}
        for name, curve in (("miou", self.miou_fg), ("miou_mean", mean_curve), ("gt_known_seg", self.gt_known_seg)):
            out[name], out[f"{name}_threshold"] = best(curve)
        if self.top1_seg is not None:
            out["top1_seg"], out["top1_seg_threshold"] = best(self.top1_seg)
        if self.top1_acc is not None:
            out["top1_acc"] = self.top1_acc
        return out


class SegmentationEvaluator(Top1Counts):
    """Streaming mask IoU / mIoU / Top-1 Seg over a threshold sweep (all thresholds in one pass).

    Top-1 Seg at a threshold = share of images whose top-1 class is right AND whose mask IoU
    ≥ ``iou_threshold`` (0.5). Results come both per threshold and at the best threshold.
    """

    def __init__(self, thresholds: Optional[ArrayLike] = None, iou_threshold: float = 0.5) -> None:
        self.thresholds = default_thresholds(0.01) if thresholds is None else _np(thresholds, np.float64).reshape(-1)
        self.iou_threshold = float(iou_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        t = len(self.thresholds)
        self.sum_iou_fg = np.zeros(t, np.float64)
        self.sum_iou_bg = np.zeros(t, np.float64)
        self.num_hit = np.zeros(t, np.int64)
        self.num_hit_top1 = np.zeros(t, np.int64)
        self._reset_counts()

    def per_image_iou(self, maps: ArrayLike, gt_masks: ArrayLike, ignore: Optional[ArrayLike] = None) -> tuple:
        """(foreground IoU, background IoU), each N×T, for every threshold."""
        u8 = to_uint8(maps)
        g = _masks3d(gt_masks, "gt_masks")
        if g.shape != u8.shape:
            raise ValueError(f"maps and gt_masks shapes differ: {u8.shape} vs {g.shape}")
        valid = np.ones_like(g) if ignore is None else ~_masks3d(ignore, "ignore")
        n = len(u8)
        offs = (np.arange(n, dtype=np.int64) * 256)[:, None]
        flat = (u8.reshape(n, -1).astype(np.int64) + offs)
        v = valid.reshape(n, -1)
        fg = (g & valid).reshape(n, -1)
        h_all = np.bincount(flat[v], minlength=n * 256).reshape(n, 256)
        h_fg = np.bincount(flat[fg], minlength=n * 256).reshape(n, 256)
        s_all, s_fg = _suffix_counts(h_all), _suffix_counts(h_fg)
        levels = threshold_levels(u8.reshape(n, -1).max(axis=1), self.thresholds)  # N×T
        col = np.clip(levels + 1, 0, 256)  # u8 > level  <=>  u8 >= level + 1
        rows = np.arange(n)[:, None]
        pred = s_all[rows, col]
        inter = s_fg[rows, col]
        n_valid = v.sum(1)[:, None]
        n_gt = fg.sum(1)[:, None]
        union = pred + n_gt - inter
        iou_fg = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
        bg_inter = n_valid - union
        bg_union = n_valid - inter
        iou_bg = np.where(bg_union > 0, bg_inter / np.maximum(bg_union, 1), 1.0)
        return iou_fg, iou_bg

    def accumulate(
        self,
        maps: ArrayLike,
        gt_masks: ArrayLike,
        correct_pred: Optional[ArrayLike] = None,
        ignore: Optional[ArrayLike] = None,
    ) -> np.ndarray:
        """Add a batch (N×H×W maps in [0, 1], N×H×W GT masks); returns the N×T foreground IoUs."""
        iou_fg, iou_bg = self.per_image_iou(maps, gt_masks, ignore)
        hit = iou_fg >= self.iou_threshold
        self.sum_iou_fg += iou_fg.sum(0)
        self.sum_iou_bg += iou_bg.sum(0)
        self.num_hit += hit.sum(0)
        c = self._add_counts(len(iou_fg), correct_pred)
        if c is not None:
            self.num_hit_top1 += (hit & c[:, None]).sum(0)
        return iou_fg

    def compute(self) -> SegmentationScores:
        """Curves in percent; Top-1 fields only when every image had a correctness flag."""
        d = max(self.count, 1)
        with_top1 = self._with_top1()
        return SegmentationScores(
            thresholds=self.thresholds.copy(),
            count=self.count,
            miou_fg=self.sum_iou_fg * 100.0 / d,
            miou_bg=self.sum_iou_bg * 100.0 / d,
            gt_known_seg=self.num_hit * 100.0 / d,
            top1_seg=self.num_hit_top1 * 100.0 / d if with_top1 else None,
            top1_acc=self.num_cls_correct * 100.0 / d if with_top1 else None,
            iou_threshold=self.iou_threshold,
        )

    def state_dict(self) -> Dict[str, Any]:
        """Sums and counters plus the thresholds they belong to."""
        return {
            "thresholds": self.thresholds.tolist(),
            "iou_threshold": self.iou_threshold,
            "sum_iou_fg": self.sum_iou_fg.tolist(),
            "sum_iou_bg": self.sum_iou_bg.tolist(),
            "num_hit": self.num_hit.tolist(),
            "num_hit_top1": self.num_hit_top1.tolist(),
            **self._counts_state(),
        }

    def merge(self, other: Union["SegmentationEvaluator", Dict[str, Any]]) -> "SegmentationEvaluator":
        """Add another shard (an evaluator or its ``state_dict``)."""
        s = other.state_dict() if isinstance(other, SegmentationEvaluator) else other
        if not same_thresholds(s["thresholds"], self.thresholds) or float(s["iou_threshold"]) != self.iou_threshold:
            raise ValueError("cannot combine segmentation states with different thresholds or IoU threshold")
        self.sum_iou_fg += np.asarray(s["sum_iou_fg"], np.float64)
        self.sum_iou_bg += np.asarray(s["sum_iou_bg"], np.float64)
        self.num_hit += np.asarray(s["num_hit"], np.int64)
        self.num_hit_top1 += np.asarray(s["num_hit_top1"], np.int64)
        self._merge_counts(s)
        return self


@dataclass
class PxAPResult:
    """PxAP (percent) and the precision–recall curve it integrates."""

    pxap: float
    precision: np.ndarray
    recall: np.ndarray


class PxAPEvaluator:
    """Pixel average precision exactly as wsolevaluation's ``MaskEvaluator`` (pooled histograms)."""

    def __init__(self, thresholds: Optional[ArrayLike] = None) -> None:
        self.thresholds = default_thresholds(0.01) if thresholds is None else _np(thresholds, np.float64).reshape(-1)
        self.bin_edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.gt_true_hist = np.zeros(len(self.thresholds) + 2, np.float64)
        self.gt_false_hist = np.zeros(len(self.thresholds) + 2, np.float64)

    def accumulate(self, maps: ArrayLike, gt_masks: ArrayLike, ignore: Optional[ArrayLike] = None) -> None:
        """Add a batch: N×H×W float maps in [0, 1] and boolean GT masks (``ignore``: pixels to skip)."""
        m = _np(maps)
        if m.ndim == 2:
            m = m[None]
        g = _masks3d(gt_masks, "gt_masks")
        if g.shape != m.shape:
            raise ValueError(f"maps and gt_masks shapes differ: {m.shape} vs {g.shape}")
        valid = np.ones_like(g) if ignore is None else ~_masks3d(ignore, "ignore")
        self.gt_true_hist += np.histogram(m[g & valid], bins=self.bin_edges)[0]
        self.gt_false_hist += np.histogram(m[~g & valid], bins=self.bin_edges)[0]

    def compute(self) -> PxAPResult:
        """AP in percent; raises DataError when there is no GT-positive pixel or no positive score."""
        num_true = self.gt_true_hist.sum()
        tp = self.gt_true_hist[::-1].cumsum()
        fn = num_true - tp
        fp = self.gt_false_hist[::-1].cumsum()
        if ((tp + fn) <= 0).all():
            raise DataError("PxAP needs at least one ground-truth foreground pixel, but every evaluated mask was empty.")
        if ((tp + fp) <= 0).all():
            raise DataError("PxAP needs at least one scored pixel, but no pixel fell inside the threshold bins.")
        nonzero = (tp + fp) != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        auc = float((precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100)
        return PxAPResult(pxap=auc, precision=precision, recall=recall)

    def state_dict(self) -> Dict[str, Any]:
        """The two histograms and the thresholds they belong to."""
        return {"thresholds": self.thresholds.tolist(), "gt_true_hist": self.gt_true_hist.tolist(), "gt_false_hist": self.gt_false_hist.tolist()}

    def merge(self, other: Union["PxAPEvaluator", Dict[str, Any]]) -> "PxAPEvaluator":
        """Add another shard (an evaluator or its ``state_dict``)."""
        s = other.state_dict() if isinstance(other, PxAPEvaluator) else other
        if not same_thresholds(s["thresholds"], self.thresholds):
            raise ValueError("cannot combine PxAP states with different thresholds")
        self.gt_true_hist += np.asarray(s["gt_true_hist"], np.float64)
        self.gt_false_hist += np.asarray(s["gt_false_hist"], np.float64)
        return self


__all__ = ["PxAPEvaluator", "PxAPResult", "SegmentationEvaluator", "SegmentationScores", "mask_iou"]
