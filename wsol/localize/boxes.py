"""Boxes from score maps, with clovaai/wsolevaluation's exact semantics, for many thresholds at once.

Per map and threshold ``t`` (wsolevaluation ``compute_bboxes_from_scoremaps``):

1. Foreground = pixels with ``u8 > int(t * max(u8))``, ``u8 = uint8(map * 255)``: the rule of
   :mod:`wsol.localize.levels`, shared with masks and the segmentation metrics.
2. ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``: one contour per 8-connected foreground
   region plus one per hole, at every nesting depth.
3. ``mode="largest"`` keeps the first contour of maximal ``cv2.contourArea`` (Python ``max``);
   ``mode="all"`` keeps every contour (MaxBoxAccV2's multi-contour evaluation).
4. Each kept contour gives ``cv2.boundingRect`` → box ``[x, y, x + w, y + h]``: x2/y2 exclusive,
   our internal convention. wsolevaluation further clips x2 to W-1 and y2 to H-1 before its
   ``+1`` IoU; see docs/iou_convention.md.
5. No foreground → no box (an empty K×4 array). wsolevaluation substitutes ``[0, 0, 0, 0]``.

``mode="largest"`` only needs outer contours: a hole or a nested island lies inside the outer
contour of its top-level region and follows it in ``RETR_TREE``'s order, so it can never be the
first contour of maximal area. One compiled sweep gives every 8-connected component at every
level, and area bounds with a few compiled border traces pick the largest
(:func:`wsol.localize.fastboxes.level_boxes_largest`); cv2 is not called.

``mode="all"`` traces with cv2: the thresholds of one map are deduplicated to distinct integer
levels, and the level masks are cropped to the foreground's bounding box and stacked into tall
canvases. A single ``findContours`` then handles many levels at once. One zero row separates
the tiles, and the routine's own zero border matches the implicit border of a single mask. So
every tile yields exactly the contours, in the same order, that a separate call on that level
would. (The evaluator's MaxBoxAccV2 uses the compiled sweep of :mod:`wsol.localize.fastboxes`.)
The result is identical to the plain loop; tests/localize/test_boxes.py checks this.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple, Union

import cv2
import numpy as np

from wsol.localize.fastboxes import level_boxes_largest
from wsol.localize.levels import ArrayLike, as_numpy, threshold_levels, to_uint8

MODES = ("largest", "all")

# Levels whose crops are within this factor of each other share one canvas; tiny crops are
# pooled. Pure performance knobs: the output does not depend on them.
_GROUP_RATIO = 2.0
_MIN_GROUP_AREA = 4096
_MAX_CANVAS_PIXELS = 1 << 23  # bounds the memory of one stacked canvas (8 MiB)


def _empty_boxes() -> Tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.int64), np.zeros(0, np.int64)


def level_boxes(u8: np.ndarray, levels: np.ndarray, largest: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Contour boxes of one uint8 map at each of ``levels`` (sorted, distinct, each in [-1, max-1]).

    Returns ``(boxes, level_index)``: boxes K×4 int64 ``[x1, y1, x2, y2]`` with x2/y2 exclusive,
    and for each box the index into ``levels`` it belongs to. Every level has at least one
    foreground pixel, so it gets exactly one box (``largest``) or one box per contour.
    Within a level, boxes come in cv2's contour order.
    """
    if largest:
        return level_boxes_largest(u8, levels), np.arange(len(levels), dtype=np.int64)
    return _traced_boxes(u8, levels)


def _traced_boxes(u8: np.ndarray, levels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``mode="all"`` :func:`level_boxes` by contour tracing on stacked canvases (see the module docstring)."""
    n = len(levels)
    if n == 0:
        return _empty_boxes()
    h_img, w_img = u8.shape
    levels = np.asarray(levels, dtype=np.int64)
    row_max = u8.max(axis=1)
    col_max = u8.max(axis=0)
    # Foreground bounding box per level from prefix/suffix maxima of the row/column maxima.
    y0 = np.searchsorted(np.maximum.accumulate(row_max), levels, side="right")
    y1 = h_img - np.searchsorted(np.maximum.accumulate(row_max[::-1]), levels, side="right")
    x0 = np.searchsorted(np.maximum.accumulate(col_max), levels, side="right")
    x1 = w_img - np.searchsorted(np.maximum.accumulate(col_max[::-1]), levels, side="right")
    area = ((y1 - y0) * (x1 - x0)).astype(np.float64)
    group = np.floor(np.log(area[0] / np.maximum(area, _MIN_GROUP_AREA)) / np.log(_GROUP_RATIO)).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    stops = np.r_[starts[1:], n]
    # u8 > level  <=>  u8 >= level + 1, and level + 1 fits in uint8 because level < max(u8).
    cut = (levels + 1).astype(np.uint8)

    contours: List[np.ndarray] = []
    canvases = []  # (first level, crop level, contour count) per findContours call
    for s, e in zip(starts, stops):
        crop = u8[y0[s]:y1[s], x0[s]:x1[s]]
        h, w = crop.shape
        step = max(1, _MAX_CANVAS_PIXELS // ((h + 1) * w))
        for a in range(s, e, step):
            b = min(e, a + step)
            canvas = np.empty((b - a, h + 1, w), np.uint8)
            canvas[:, h, :] = 0
            np.greater_equal(crop, cut[a:b, None, None], out=canvas[:, :h, :].view(np.bool_))
            found = cv2.findContours(canvas.reshape(-1, w), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            contours.extend(found)
            canvases.append((a, s, len(found)))

    first, crop_of, counts = (np.asarray(v, dtype=np.int64) for v in zip(*canvases))
    tile_h = np.repeat(y1[crop_of] - y0[crop_of] + 1, counts)
    first_level = np.repeat(first, counts)
    off_x = np.repeat(x0[crop_of], counts)
    off_y = np.repeat(y0[crop_of], counts)

    lens = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    pts = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    begin = np.zeros(len(lens), np.int64)
    np.cumsum(lens[:-1], out=begin[1:])
    lo = np.minimum.reduceat(pts, begin, axis=0)
    hi = np.maximum.reduceat(pts, begin, axis=0)
    tile = lo[:, 1] // tile_h
    level_index = first_level + tile
    shift_y = off_y - tile * tile_h
    boxes = np.stack([lo[:, 0] + off_x, lo[:, 1] + shift_y, hi[:, 0] + 1 + off_x, hi[:, 1] + 1 + shift_y], axis=1)
    return boxes, level_index


class MapBoxes:
    """Boxes of one map at every threshold, stored flat (``boxes`` K×4 int64, x2/y2 exclusive).

    ``levels`` are the distinct cut levels (those with foreground); ``box_level`` gives each box's
    index into ``levels``, and ``level_of_threshold`` maps each threshold to an index into
    ``levels``, or -1 when that threshold leaves no foreground.
    """

    __slots__ = ("boxes", "box_level", "levels", "level_of_threshold", "shape")

    def __init__(self, boxes: np.ndarray, box_level: np.ndarray, levels: np.ndarray, level_of_threshold: np.ndarray, shape: Tuple[int, int]):
        self.boxes = boxes
        self.box_level = box_level
        self.levels = levels
        self.level_of_threshold = level_of_threshold
        self.shape = shape

    def at(self, threshold_index: int) -> np.ndarray:
        """Boxes (K×4 float32, x2/y2 exclusive) at one threshold; 0×4 when nothing is foreground."""
        li = int(self.level_of_threshold[threshold_index])
        if li < 0:
            return np.zeros((0, 4), np.float32)
        return self.boxes[self.box_level == li].astype(np.float32)


def map_boxes(u8: np.ndarray, thresholds: np.ndarray, mode: str = "largest") -> MapBoxes:
    """Boxes of one uint8 map at all ``thresholds`` (see the module docstring for the semantics)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    mx = int(u8.max())
    lv = threshold_levels([mx], thresholds)[0]
    uniq, inverse = np.unique(lv, return_inverse=True)
    has_fg = uniq < mx
    levels = uniq[has_fg]
    remap = np.full(len(uniq), -1, np.int64)
    remap[has_fg] = np.arange(len(levels))
    boxes, box_level = level_boxes(u8, levels, largest=(mode == "largest"))
    return MapBoxes(boxes, box_level, levels, remap[inverse.reshape(-1)], (u8.shape[0], u8.shape[1]))


def map_boxes_batch(u8s: np.ndarray, thresholds: np.ndarray, mode: str = "largest", workers: int = 1) -> List[MapBoxes]:
    """:func:`map_boxes` for each map of an N×H×W uint8 batch, optionally on ``workers`` threads.

    cv2 and numpy release the GIL for the heavy parts, so threads give real parallelism.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if workers <= 1 or len(u8s) < 2:
        return [map_boxes(u, thresholds, mode) for u in u8s]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda u: map_boxes(u, thresholds, mode), u8s))


def boxes_from_maps(
    maps: ArrayLike,
    thresholds: Union[float, ArrayLike],
    mode: str = "largest",
    workers: int = 1,
) -> List[List[np.ndarray]]:
    """Boxes for each map and threshold: ``out[i][j]`` is a K×4 float32 array, x2/y2 exclusive.

    ``maps`` is N×H×W (or H×W) in [0, 1], as a tensor or an array. ``thresholds`` is a float or
    a sequence of fractions of each map's maximum. ``mode="largest"`` gives K ≤ 1 (CAM, ADL,
    MaxBoxAcc); ``mode="all"`` gives every contour's box (MaxBoxAccV2). K = 0 when the
    threshold leaves no foreground pixel.
    """
    th = np.atleast_1d(np.asarray(as_numpy(thresholds), dtype=np.float64)).reshape(-1)
    per_map = map_boxes_batch(to_uint8(maps), th, mode, workers)
    return [[mb.at(j) for j in range(len(th))] for mb in per_map]


def box_from_map(map2d: ArrayLike, threshold: float, mode: str = "largest") -> np.ndarray:
    """Boxes (K×4 float32) of a single H×W map at one threshold; see :func:`boxes_from_maps`."""
    arr = as_numpy(map2d)
    if arr.ndim != 2:
        raise ValueError(f"map must be H×W, got shape {arr.shape}")
    return boxes_from_maps(arr[None], [threshold], mode)[0][0]


__all__ = [
    "MODES",
    "MapBoxes",
    "box_from_map",
    "boxes_from_maps",
    "level_boxes",
    "map_boxes",
    "map_boxes_batch",
]
