"""Box localization metrics: IoU, Top-1 Acc, GT-Known / Top-1 Loc, MaxBoxAcc and MaxBoxAccV2.

IoU convention (docs/iou_convention.md): boxes are ``[x1, y1, x2, y2]`` with x2/y2 exclusive and
IoU is the ratio of continuous areas, ``area = (x2 - x1) * (y2 - y1)``. That equals
wsolevaluation's ``+1`` formula applied to *inclusive* boxes ``[x1, y1, x2 - 1, y2 - 1]``.
:class:`BoxEvaluator` can also reproduce wsolevaluation's own arithmetic
(``iou_convention="wsolevaluation"``) for numbers comparable with published tables.

:class:`BoxEvaluator` streams over batches (``accumulate`` / ``compute`` as in wsolevaluation).
Its state is a handful of integer counters, so shards from distributed ranks merge by adding
(:meth:`BoxEvaluator.merge`, :meth:`BoxEvaluator.state_dict`).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from wsol.localize.boxes import MODES, map_boxes
from wsol.localize.fastboxes import max_iou_all, max_iou_largest
from wsol.localize.levels import default_thresholds, to_uint8
from wsol.metrics.iou import IOU_CONVENTIONS, box_iou, boxes2d, iou_exclusive, iou_plus_one  # noqa: F401 (box_iou: re-exported)

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Any]]
def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def correctness_flags(correct_pred: Any, n: int) -> np.ndarray:
    """``correct_pred`` (one top-1-correct flag per map) as a bool vector of length ``n``."""
    flags = _np(correct_pred, bool).reshape(-1)
    if len(flags) != n:
        raise ValueError(f"got {len(flags)} correctness flags for {n} maps")
    return flags


def max_iou(pred_boxes: ArrayLike, gt_boxes: ArrayLike) -> float:
    """Best IoU over every (predicted box, GT box) pair; 0 when either set is empty."""
    p, g = boxes2d(pred_boxes), boxes2d(gt_boxes)
    if len(p) == 0 or len(g) == 0:
        return 0.0
    return float(iou_exclusive(p, g).max())


def top1_correct(logits_or_pred: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Per-sample bool: top-1 prediction equals the label (accepts N×C logits or N predictions)."""
    x = logits_or_pred.detach().cpu() if isinstance(logits_or_pred, torch.Tensor) else torch.as_tensor(np.asarray(logits_or_pred))
    pred = x.argmax(dim=1) if x.dim() == 2 else x
    y = labels.detach().cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    return (pred.reshape(-1).long() == y.reshape(-1).long()).numpy()


def top1_accuracy(logits_or_pred: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 classification accuracy in percent."""
    c = top1_correct(logits_or_pred, labels)
    return float(c.mean() * 100.0) if c.size else 0.0


def localization_accuracy(
    pred_boxes: Sequence[ArrayLike],
    gt_boxes: Sequence[ArrayLike],
    correct_pred: Optional[ArrayLike] = None,
    iou_threshold: float = 0.5,
) -> Dict[str, float]:
    """GT-Known Loc (and Top-1 Loc when ``correct_pred`` is given) for fixed predicted boxes, in %.

    An image is localized when the best IoU over its (pred × GT) box pairs is ≥ ``iou_threshold``;
    Top-1 Loc additionally needs the top-1 class to be right.
    """
    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(f"got {len(pred_boxes)} predicted box sets for {len(gt_boxes)} images")
    hits = np.array([max_iou(p, g) >= iou_threshold for p, g in zip(pred_boxes, gt_boxes)], dtype=bool)
    out = {"count": float(len(hits)), "gt_known_loc": float(hits.mean() * 100.0) if len(hits) else 0.0}
    if correct_pred is not None:
        c = _np(correct_pred, bool).reshape(-1)
        out["top1_loc"] = float((hits & c).mean() * 100.0) if len(hits) else 0.0
        out["top1_acc"] = float(c.mean() * 100.0) if len(c) else 0.0
    return out


@dataclass
class BoxAccuracy:
    """Result of :class:`BoxEvaluator`: accuracy curves (percent) over thresholds for each IoU δ."""

    thresholds: np.ndarray
    iou_thresholds: Tuple[int, ...]
    count: int
    gt_known: np.ndarray  # D×T
    top1_loc: Optional[np.ndarray]  # D×T, when every image came with a correctness flag
    top1_acc: Optional[float]
    mode: str
    iou_convention: str

    def _d(self, delta: int) -> int:
        if delta not in self.iou_thresholds:
            raise ValueError(f"IoU threshold {delta} was not evaluated; have {list(self.iou_thresholds)}")
        return self.iou_thresholds.index(delta)

    def max_box_acc(self, delta: Optional[int] = None) -> float:
        """Best GT-known accuracy over thresholds at ``delta``; with None, the mean over all δ (MaxBoxAccV2)."""
        if delta is None:
            return float(np.mean([self.gt_known[d].max() for d in range(len(self.iou_thresholds))]))
        return float(self.gt_known[self._d(delta)].max())

    def best_threshold(self, delta: int) -> float:
        """The threshold reaching :meth:`max_box_acc` at ``delta`` (the first one on ties)."""
        return float(self.thresholds[int(np.argmax(self.gt_known[self._d(delta)]))])

    def threshold_index(self, threshold: float) -> int:
        """Index of ``threshold`` in the evaluated list (must match to 1e-9)."""
        return threshold_index(self.thresholds, threshold)

    def at_threshold(self, threshold: float) -> Dict[str, float]:
        """GT-Known Loc (and Top-1 Loc) at one fixed threshold, for every δ."""
        j = self.threshold_index(threshold)
        out: Dict[str, float] = {}
        for d, delta in enumerate(self.iou_thresholds):
            out[f"gt_known_loc@{delta}"] = float(self.gt_known[d, j])
            if self.top1_loc is not None:
                out[f"top1_loc@{delta}"] = float(self.top1_loc[d, j])
        return out

    def to_dict(self) -> Dict[str, float]:
        """Flat scalars for metrics files and tables.

        ``max_box_acc`` is the mean over the evaluated δ of the per-δ maxima: that is MaxBoxAccV2
        for δ = (30, 50, 70) with ``mode="all"``, and MaxBoxAcc for δ = (50,) with ``mode="largest"``.
        ``gt_known_loc`` / ``top1_loc`` are the δ=50 values at their own best thresholds.
        """
        out: Dict[str, float] = {"count": float(self.count), "max_box_acc": self.max_box_acc()}
        for d, delta in enumerate(self.iou_thresholds):
            out[f"max_box_acc@{delta}"] = float(self.gt_known[d].max())
            out[f"best_threshold@{delta}"] = self.best_threshold(delta)
            if self.top1_loc is not None:
                out[f"top1_loc@{delta}"] = float(self.top1_loc[d].max())
                out[f"top1_loc_threshold@{delta}"] = float(self.thresholds[int(np.argmax(self.top1_loc[d]))])
        if 50 in self.iou_thresholds:
            out["gt_known_loc"] = out["max_box_acc@50"]
            if self.top1_loc is not None:
                out["top1_loc"] = out["top1_loc@50"]
        if self.top1_acc is not None:
            out["top1_acc"] = self.top1_acc
        return out


class Top1Counts:
    """The counters the box and segmentation evaluators share: images seen, images that came with a
    top-1 correctness flag, and how many of those were correct (Top-1 Loc / Top-1 Acc)."""

    count: int
    count_with_pred: int
    num_cls_correct: int

    def _reset_counts(self) -> None:
        self.count = 0
        self.count_with_pred = 0
        self.num_cls_correct = 0

    def _add_counts(self, n: int, correct_pred: Optional[ArrayLike]) -> Optional[np.ndarray]:
        """Count ``n`` new images; returns their correctness flags (None without ``correct_pred``)."""
        self.count += n
        if correct_pred is None:
            return None
        c = correctness_flags(correct_pred, n)
        self.count_with_pred += len(c)
        self.num_cls_correct += int(c.sum())
        return c

    def _with_top1(self) -> bool:
        """Top-1 fields are reported only when every image had a correctness flag."""
        return self.count > 0 and self.count_with_pred == self.count

    def _counts_state(self) -> Dict[str, int]:
        return {"count": self.count, "count_with_pred": self.count_with_pred, "num_cls_correct": self.num_cls_correct}

    def _merge_counts(self, state: Dict[str, Any]) -> None:
        self.count += int(state["count"])
        self.count_with_pred += int(state["count_with_pred"])
        self.num_cls_correct += int(state["num_cls_correct"])


def threshold_index(thresholds: np.ndarray, threshold: float) -> int:
    """Index of ``threshold`` in an evaluated threshold list (must match to 1e-9)."""
    hit = np.flatnonzero(np.isclose(thresholds, threshold, rtol=0, atol=1e-9))
    if len(hit) == 0:
        raise ValueError(f"threshold {threshold} was not evaluated; build the evaluator with it in the list")
    return int(hit[0])


def same_thresholds(stored: Sequence[float], thresholds: np.ndarray) -> bool:
    """Whether a state's threshold list is this evaluator's (to 1e-12)."""
    return len(stored) == len(thresholds) and np.allclose(np.asarray(stored, np.float64), thresholds, rtol=0, atol=1e-12)


class BoxEvaluator(Top1Counts):
    """Streaming MaxBoxAcc / MaxBoxAccV2 / GT-Known / Top-1 Loc over a threshold sweep.

    ``mode="all"`` with ``iou_thresholds=(30, 50, 70)`` is MaxBoxAccV2 (the default);
    ``mode="largest"`` with ``(50,)`` is MaxBoxAcc and the classic CAM box. Each δ picks its own
    best threshold. An image is correct at a threshold when the best IoU over (pred box × GT box)
    pairs is ≥ δ/100. A threshold with no foreground gives no box, which counts as a miss.
    An image with no GT box counts as a miss too.

    ``iou_convention="wsolevaluation"`` reproduces wsolevaluation's arithmetic: predicted x2/y2
    clipped to W-1/H-1, ``+1`` IoU, a ``[0, 0, 0, 0]`` box when nothing is foreground, and GT
    boxes taken as given (their metadata format). The default ``"exclusive"`` uses our
    convention throughout.

    Every threshold is evaluated in one pass per map by the compiled connected-component sweep
    of :mod:`wsol.localize.fastboxes` (identical to cv2's contours). ``workers`` threads split a
    batch (0: as many as torch uses, ``torch.get_num_threads()``, which torchrun sets to 1 per
    process).
    """

    def __init__(
        self,
        thresholds: Optional[ArrayLike] = None,
        iou_thresholds: Sequence[int] = (30, 50, 70),
        mode: str = "all",
        iou_convention: str = "exclusive",
        workers: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if iou_convention not in IOU_CONVENTIONS:
            raise ValueError(f"iou_convention must be one of {IOU_CONVENTIONS}, got {iou_convention!r}")
        self.thresholds = default_thresholds(0.01) if thresholds is None else _np(thresholds).reshape(-1)
        self.iou_thresholds = tuple(int(d) for d in iou_thresholds)
        if not self.iou_thresholds or any(not 0 < d <= 100 for d in self.iou_thresholds):
            raise ValueError(f"iou_thresholds must be integers in (0, 100], got {list(iou_thresholds)}")
        self.mode = mode
        self.iou_convention = iou_convention
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.workers = int(workers) or torch.get_num_threads()
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        d, t = len(self.iou_thresholds), len(self.thresholds)
        self.num_correct = np.zeros((d, t), np.int64)
        self.num_correct_top1 = np.zeros((d, t), np.int64)
        self._reset_counts()

    def _image_max_iou(self, u8: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """Best IoU at every threshold for one map (T,); -1 where the threshold yields no box."""
        mb = map_boxes(u8, self.thresholds, self.mode)
        h, w = mb.shape
        boxes = mb.boxes.astype(np.float64)
        if self.iou_convention == "wsolevaluation":
            boxes[:, 2] = np.minimum(boxes[:, 2], w - 1)
            boxes[:, 3] = np.minimum(boxes[:, 3], h - 1)
            empty = float(iou_plus_one(np.zeros((1, 4)), gt).max()) if len(gt) else -1.0
            ious = iou_plus_one(boxes, gt) if len(gt) else np.full((len(boxes), 0), -1.0)
        else:
            empty = -1.0
            ious = iou_exclusive(boxes, gt)
        per_box = ious.max(axis=1) if ious.shape[1] else np.full(len(boxes), -1.0)
        per_level = np.full(len(mb.levels) + 1, -1.0)
        np.maximum.at(per_level, mb.box_level, per_box)
        per_level[-1] = empty
        return per_level[mb.level_of_threshold]

    def accumulate(self, maps: ArrayLike, gt_boxes: Sequence[ArrayLike], correct_pred: Optional[ArrayLike] = None) -> np.ndarray:
        """Add a batch: N×H×W maps in [0, 1], N GT box sets (K_i×4, in the maps' pixel frame).

        ``correct_pred`` (N bools: top-1 class right) enables Top-1 Loc and Top-1 Acc. Returns the
        N×T matrix of best IoUs (-1 where a threshold gives no box) for per-image records.
        """
        arr = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.dtype != np.uint8 and arr.size:
            lo, hi = arr.min(), arr.max()
            if not (lo >= -1e-6 and hi <= 1 + 1e-6):  # also catches NaN
                raise ValueError("score maps must lie in [0, 1] without NaN; normalize them first (wsol.localize.heatmap.normalize_minmax)")
        u8s = to_uint8(arr, self.workers)
        if len(gt_boxes) != len(u8s):
            raise ValueError(f"got {len(gt_boxes)} GT box sets for {len(u8s)} maps")
        gts = [boxes2d(g) for g in gt_boxes]
        if all(np.isfinite(g).all() for g in gts):
            # Compiled exact sweep; non-finite GT coordinates keep numpy's semantics below.
            sweep = max_iou_all if self.mode == "all" else max_iou_largest
            best = sweep(u8s, self.thresholds, gts, self.iou_convention, self.workers)
        else:
            if self.workers > 1 and len(u8s) > 1:
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    rows = list(pool.map(self._image_max_iou, u8s, gts))
            else:
                rows = [self._image_max_iou(u, g) for u, g in zip(u8s, gts)]
            best = np.stack(rows) if rows else np.zeros((0, len(self.thresholds)))
        deltas = np.asarray(self.iou_thresholds, np.float64)[:, None, None] / 100.0
        hits = best[None] >= deltas  # D×N×T
        self.num_correct += hits.sum(axis=1)
        c = self._add_counts(len(u8s), correct_pred)
        if c is not None:
            self.num_correct_top1 += (hits & c[None, :, None]).sum(axis=1)
        return best

    def compute(self) -> BoxAccuracy:
        """Accuracy curves in percent; Top-1 fields only when every image had a correctness flag."""
        denom = max(self.count, 1)
        with_top1 = self._with_top1()
        return BoxAccuracy(
            thresholds=self.thresholds.copy(),
            iou_thresholds=self.iou_thresholds,
            count=self.count,
            gt_known=self.num_correct * 100.0 / denom,
            top1_loc=self.num_correct_top1 * 100.0 / denom if with_top1 else None,
            top1_acc=self.num_cls_correct * 100.0 / denom if with_top1 else None,
            mode=self.mode,
            iou_convention=self.iou_convention,
        )

    def state_dict(self) -> Dict[str, Any]:
        """Counters plus the configuration they belong to (JSON-friendly lists)."""
        return {
            "thresholds": self.thresholds.tolist(),
            "iou_thresholds": list(self.iou_thresholds),
            "mode": self.mode,
            "iou_convention": self.iou_convention,
            "num_correct": self.num_correct.tolist(),
            "num_correct_top1": self.num_correct_top1.tolist(),
            **self._counts_state(),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Replace the counters with ``state`` (which must come from the same configuration)."""
        self._check_same_config(state)
        self.num_correct = np.asarray(state["num_correct"], np.int64).reshape(self.num_correct.shape)
        self.num_correct_top1 = np.asarray(state["num_correct_top1"], np.int64).reshape(self.num_correct.shape)
        self._reset_counts()
        self._merge_counts(state)

    def merge(self, other: Union["BoxEvaluator", Dict[str, Any]]) -> "BoxEvaluator":
        """Add another shard's counters (an evaluator or its ``state_dict``) into this one."""
        state = other.state_dict() if isinstance(other, BoxEvaluator) else other
        self._check_same_config(state)
        self.num_correct += np.asarray(state["num_correct"], np.int64).reshape(self.num_correct.shape)
        self.num_correct_top1 += np.asarray(state["num_correct_top1"], np.int64).reshape(self.num_correct.shape)
        self._merge_counts(state)
        return self

    def _check_same_config(self, state: Dict[str, Any]) -> None:
        if not same_thresholds(state["thresholds"], self.thresholds) or tuple(state["iou_thresholds"]) != self.iou_thresholds or state["mode"] != self.mode or state["iou_convention"] != self.iou_convention:
            raise ValueError("cannot combine evaluator states with different thresholds, IoU thresholds, mode or IoU convention")


def merge_states(states: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Sum a list of :meth:`BoxEvaluator.state_dict` shards (e.g. gathered from ranks) into one."""
    if not states:
        raise ValueError("no evaluator states to merge")
    first = states[0]
    ev = BoxEvaluator(first["thresholds"], first["iou_thresholds"], first["mode"], first["iou_convention"])
    for s in states:
        ev.merge(s)
    return ev.state_dict()


__all__ = [
    "BoxAccuracy",
    "BoxEvaluator",
    "Top1Counts",
    "IOU_CONVENTIONS",
    "box_iou",
    "localization_accuracy",
    "max_iou",
    "merge_states",
    "same_thresholds",
    "threshold_index",
    "top1_accuracy",
    "top1_correct",
]