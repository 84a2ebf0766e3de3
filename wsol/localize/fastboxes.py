"""Exact, compiled MaxBoxAccV2 boxes (``mode="all"``) for every threshold, without contour tracing.

:mod:`wsol.localize.boxes` runs ``cv2.findContours(RETR_TREE)`` and keeps every contour's
``cv2.boundingRect``. Those boxes follow from connected components alone:

* an outer contour bounds an 8-connected foreground component: its box is the component's
  pixel extent ``[xmin, ymin, xmax + 1, ymax + 1]``;
* a hole contour runs through the foreground pixels 4-adjacent to a hole, i.e. a 4-connected
  background component that does not touch the image border (cv2 pads the image with zeros, so
  background reaching the border is outside, not a hole). Its box is the hole's extent grown
  by one pixel on every side, ``[xmin - 1, ymin - 1, xmax + 2, ymax + 2]``.

Every contour of every nesting depth is one of these, and each component gives exactly one
contour (tests/localize/test_fastboxes.py checks the rule against cv2 on thousands of random
maps, including nested islands, one-pixel holes, diagonal contacts and border-touching regions).

Foreground at level ``L`` is ``u8 > L``, so the components of all levels come from one sweep:
pixels are added in descending value order (counting sort) to a union-find with 8-connectivity,
and after the last pixel of value ``L + 1`` the live roots are the foreground components at
level ``L``. Background components come from a second sweep in ascending order with
4-connectivity and a "touches the border" flag. Each root keeps its bounding box, so at every
needed level the boxes are read off directly, and their best IoU against the image's GT boxes
is computed on the spot with the same float64 formula, in the same operation order, as
:mod:`wsol.metrics.localization` (results are bit-identical, so ``IoU >= δ/100`` decisions agree).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence, Tuple

import numpy as np
from numba import njit

from wsol.localize.boxes import threshold_levels

CONVENTIONS = ("exclusive", "wsolevaluation")


def _ring_groups(mask: int, conn: int) -> List[int]:
    """Representatives of the groups of processed neighbours (bits of ``mask``) around a pixel.

    Ring order: 0 NW, 1 N, 2 NE, 3 E, 4 SE, 5 S, 6 SW, 7 W. Two processed neighbours that are
    ``conn``-adjacent to each other already share a union-find set, so one ``find`` per group
    suffices. With ``conn=4`` only the side neighbours touch the pixel, so groups made only
    of corners are dropped and representatives are side neighbours.
    """
    on = [i for i in range(8) if mask >> i & 1]
    seen: set = set()
    reps = []
    for i in on:
        if i in seen:
            continue
        comp, stack = [], [i]
        seen.add(i)
        while stack:
            u = stack.pop()
            comp.append(u)
            for j in on:
                d = (j - u) % 8
                linked = d in (1, 7) or (conn == 8 and u % 2 == 1 and d in (2, 6))
                if linked and j not in seen:
                    seen.add(j)
                    stack.append(j)
        sides = [c for c in comp if c % 2 == 1]
        if conn == 8:
            reps.append(sides[0] if sides else comp[0])
        elif sides:
            reps.append(sides[0])
    return reps


def _group_table(conn: int) -> Tuple[np.ndarray, np.ndarray]:
    count = np.zeros(256, np.int64)
    reps = np.zeros((256, 4), np.int64)
    for m in range(256):
        r = _ring_groups(m, conn)
        count[m] = len(r)
        reps[m, : len(r)] = r
    return count, reps


_GROUPS8, _REPS8 = _group_table(8)
_GROUPS4, _REPS4 = _group_table(4)


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        up = parent[parent[i]]
        parent[i] = up
        i = up
    return i


@njit(cache=True, nogil=True, forceinline=True)
def _attach(p: int, px: int, py: int, m: int, core: bool, groups: np.ndarray, reps: np.ndarray, ring: np.ndarray, parent: np.ndarray, bb: np.ndarray, pos: np.ndarray, live: np.ndarray, nlive: int) -> int:
    """Add pixel ``p`` to the union-find; ``m`` flags its already-added neighbours (ring order).

    A ``core`` pixel (one that may sit outside the base set 0) joins its neighbours' sets or
    starts a listed set of its own; a non-core pixel is known to belong to set 0 (parent 0)
    and only merges its neighbours' sets into set 0. Merged-away roots leave the ``live`` list.
    Returns the new length of ``live``.
    """
    ng = groups[m]
    if core:
        if ng == 0:
            parent[p] = p
            bb[4 * p] = px
            bb[4 * p + 1] = py
            bb[4 * p + 2] = px
            bb[4 * p + 3] = py
            pos[p] = nlive
            live[nlive] = p
            return nlive + 1
        root = _find(parent, p + ring[reps[m, 0]])
        first = 1
    else:
        root = 0
        first = 0
    for gi in range(first, ng):
        other = _find(parent, p + ring[reps[m, gi]])
        if other != root:
            keep = min(root, other)
            drop = max(root, other)
            parent[drop] = keep
            bb[4 * keep] = min(bb[4 * keep], bb[4 * drop])
            bb[4 * keep + 1] = min(bb[4 * keep + 1], bb[4 * drop + 1])
            bb[4 * keep + 2] = max(bb[4 * keep + 2], bb[4 * drop + 2])
            bb[4 * keep + 3] = max(bb[4 * keep + 3], bb[4 * drop + 3])
            i = pos[drop]
            nlive -= 1
            live[i] = live[nlive]
            pos[live[i]] = i
            root = keep
    if core:
        parent[p] = root
        bb[4 * root] = min(bb[4 * root], px)
        bb[4 * root + 1] = min(bb[4 * root + 1], py)
        bb[4 * root + 2] = max(bb[4 * root + 2], px)
        bb[4 * root + 3] = max(bb[4 * root + 3], py)
    return nlive


@njit(cache=True, nogil=True)
def _bucket_sort(items: np.ndarray, n: int, val: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Stable counting sort of ``items[:n]`` (padded indices) by ``val``; returns (order, starts)."""
    start = np.zeros(257, np.int64)
    for i in range(n):
        start[val[items[i]] + 1] += 1
    for v in range(256):
        start[v + 1] += start[v]
    fill = start[:256].copy()
    order = np.empty(n, np.int32)
    for i in range(n):
        p = items[i]
        v = val[p]
        order[fill[v]] = p
        fill[v] += 1
    return order, start


@njit(cache=True, nogil=True)
def _pos(x: float) -> float:
    """``max(x, 0)`` giving +0.0 for -0.0, as numpy's ``maximum(x, 0)`` does (finite ``x``)."""
    return x if x > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _box_score(x1: int, y1: int, x2: int, y2: int, gt: np.ndarray, g0: int, g1: int, conv: int, h: int, w: int) -> float:
    """Best IoU of one integer box against ``gt[g0:g1]``; -1 when there is no GT box.

    ``conv`` 0: continuous-area IoU on x2/y2-exclusive boxes (``_iou_exclusive``);
    ``conv`` 1: wsolevaluation (x2/y2 clipped to W-1/H-1, ``+1`` IoU, ``_iou_plus_one``).
    """
    best = -1.0
    ax1 = float(x1)
    ay1 = float(y1)
    ax2 = float(x2)
    ay2 = float(y2)
    if conv == 1:
        ax2 = min(ax2, float(w - 1))
        ay2 = min(ay2, float(h - 1))
        area_a = (ax2 - ax1 + 1.0) * (ay2 - ay1 + 1.0)
    else:
        area_a = _pos(ax2 - ax1) * _pos(ay2 - ay1)
    for g in range(g0, g1):
        bx1 = gt[g, 0]
        by1 = gt[g, 1]
        bx2 = gt[g, 2]
        by2 = gt[g, 3]
        if conv == 1:
            iw = _pos(min(ax2, bx2) - max(ax1, bx1) + 1.0)
            ih = _pos(min(ay2, by2) - max(ay1, by1) + 1.0)
            area_b = (bx2 - bx1 + 1.0) * (by2 - by1 + 1.0)
        else:
            iw = _pos(min(ax2, bx2) - max(ax1, bx1))
            ih = _pos(min(ay2, by2) - max(ay1, by1))
            area_b = _pos(bx2 - bx1) * _pos(by2 - by1)
        inter = iw * ih
        den = area_a + area_b - inter
        iou = inter / den if den > 0 else 0.0
        if iou > best:
            best = iou
    return best


@njit(cache=True, nogil=True)
def _push(boxes: np.ndarray, box_k: np.ndarray, nbox: int, x1: int, y1: int, x2: int, y2: int, k: int) -> Tuple[np.ndarray, np.ndarray, int]:
    if nbox == boxes.shape[0]:
        boxes = np.concatenate((boxes, np.empty_like(boxes)))
        box_k = np.concatenate((box_k, np.empty_like(box_k)))
    boxes[nbox, 0] = x1
    boxes[nbox, 1] = y1
    boxes[nbox, 2] = x2
    boxes[nbox, 3] = y2
    box_k[nbox] = k
    return boxes, box_k, nbox + 1


@njit(cache=True, nogil=True)
def _sweep(u8: np.ndarray, need: np.ndarray, gt: np.ndarray, g0: int, g1: int, conv: int, collect: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best IoU (and optionally every box) at each needed level of one map.

    ``need`` has 256 flags; flag ``k`` asks for level ``L = k - 1`` (foreground ``u8 >= k``), and
    only levels below the map's maximum may be asked for. Returns ``best`` (256 floats, -1 where
    no box scored), and, when ``collect``, boxes K×4 (x2/y2 exclusive) with their flag index ``k``.
    """
    h, w = u8.shape
    best = np.full(256, -1.0)
    boxes = np.empty((64 if collect else 1, 4), np.int64)
    box_k = np.empty(boxes.shape[0], np.int64)
    nbox = 0
    k_lo = 256
    k_hi = -1
    for k in range(256):
        if need[k]:
            k_lo = min(k_lo, k)
            k_hi = k
    if k_hi < 0:
        return best, boxes[:0], box_k[:0]

    # Padded layout: pixel (y, x) sits at ((y + 1) << sh) + x + 1; the frame holds -1.
    sh = 1
    while (1 << sh) < w + 2:
        sh += 1
    ww = 1 << sh
    npad = (h + 2) << sh
    val = np.full(npad, -1, np.int16)
    top = np.int16(-1)
    top_p = 0
    for y in range(h):
        row = (y + 1) << sh
        for x in range(w):
            v = np.int16(u8[y, x])
            val[row + x + 1] = v
            if v > top:
                top = v
                top_p = row + x + 1

    # One forward and one backward raster scan of two partial grayscale reconstructions:
    # a (8-connected, from the top pixel) and g (4-connected, from the frame). Each value is
    # witnessed by a real path: a[p] = min over a path from the top pixel to p, so p is in the
    # top pixel's component at every level below a[p]; g[p] = max over a path from p out of the
    # image, so p is background connected to the border at every level from g[p] on.
    a = np.full(npad, -1, np.int16)
    a[top_p] = top
    g = np.full(npad, -1, np.int16)
    for y in range(1, h + 1):
        row = y << sh
        pa = np.int16(-1)
        pg = np.int16(-1)
        for p in range(row + 1, row + w + 1):
            v = val[p]
            t = max(max(a[p - ww - 1], a[p - ww]), max(a[p - ww + 1], a[p]))
            pa = min(v, max(t, pa))
            a[p] = pa
            pg = max(v, min(g[p - ww], pg))
            g[p] = pg
    # Backward scan, then classify: "main" pixels (a == val) belong to the top pixel's component
    # whenever they are foreground, "outer" pixels (g == val) are outside whenever background.
    # Only the others (side / hole pixels) and their neighbours need the union-find.
    side = np.zeros(npad, np.uint8)
    hole = np.zeros(npad, np.uint8)
    ext = np.empty((256, 4), np.int64)  # extents of the main pixels of each value
    ext[:, 0] = w
    ext[:, 1] = h
    ext[:, 2] = -1
    ext[:, 3] = -1
    n_side = 0
    n_hole = 0
    for y in range(h - 1, -1, -1):
        row = (y + 1) << sh
        pa = np.int16(-1)
        pg = np.int16(-1)
        for x in range(w - 1, -1, -1):
            p = row + x + 1
            v = val[p]
            t = max(max(a[p + ww - 1], a[p + ww]), max(a[p + ww + 1], a[p]))
            pa = min(v, max(t, pa))
            a[p] = pa
            pg = max(v, min(min(g[p + ww], g[p]), pg))
            g[p] = pg
            if pa < v:
                side[p] = 1
                n_side += 1
            else:
                ext[v, 0] = min(ext[v, 0], x)
                ext[v, 1] = min(ext[v, 1], y)
                ext[v, 2] = max(ext[v, 2], x)
                ext[v, 3] = max(ext[v, 3], y)
            if pg > v:
                hole[p] = 1
                n_hole += 1

    # Pixels to sweep: side pixels and their 8-neighbours; hole pixels and their 4-neighbours.
    fg_items = np.empty(h * w, np.int32)
    bg_items = np.empty(h * w, np.int32)
    n_fg = 0
    n_bg = 0
    if n_side or n_hole:
        for y in range(1, h + 1):
            row = y << sh
            for p in range(row + 1, row + w + 1):
                s = (side[p - ww - 1] | side[p - ww] | side[p - ww + 1] | side[p - 1] | side[p]
                     | side[p + 1] | side[p + ww - 1] | side[p + ww] | side[p + ww + 1])
                if s:
                    fg_items[n_fg] = p
                    n_fg += 1
                o = hole[p - ww] | hole[p - 1] | hole[p] | hole[p + 1] | hole[p + ww]
                if o:
                    bg_items[n_bg] = p
                    n_bg += 1
    fg_order, fg_start = _bucket_sort(fg_items, n_fg, val)
    bg_order, bg_start = _bucket_sort(bg_items, n_bg, val)

    ring = np.array([-ww - 1, -ww, -ww + 1, 1, ww + 1, ww, ww - 1, -1], np.int64)
    mask = ww - 1
    parent = np.zeros(npad, np.int32)  # 0 (a frame index) is the main component / the outside
    bb = np.empty(4 * npad, np.int32)
    bb[0] = w
    bb[1] = h
    bb[2] = -1
    bb[3] = -1
    pos = np.empty(npad, np.int32)
    live = np.empty(max(n_fg, n_bg) + 1, np.int32)

    # Foreground from the top level down (8-connected). Within a value, pixels go in raster
    # order, so a neighbour is already in when it is larger, or equal and earlier.
    nlive = 0
    for v in range(255, k_lo - 1, -1):
        bb[0] = min(bb[0], ext[v, 0])
        bb[1] = min(bb[1], ext[v, 1])
        bb[2] = max(bb[2], ext[v, 2])
        bb[3] = max(bb[3], ext[v, 3])
        for j in range(fg_start[v], fg_start[v + 1]):
            p = fg_order[j]
            m = (
                np.int64(val[p - ww - 1] >= v)
                | (np.int64(val[p - ww] >= v) << 1)
                | (np.int64(val[p - ww + 1] >= v) << 2)
                | (np.int64(val[p + 1] > v) << 3)
                | (np.int64(val[p + ww + 1] > v) << 4)
                | (np.int64(val[p + ww] > v) << 5)
                | (np.int64(val[p + ww - 1] > v) << 6)
                | (np.int64(val[p - 1] >= v) << 7)
            )
            nlive = _attach(p, (p & mask) - 1, (p >> sh) - 1, m, side[p] != 0, _GROUPS8, _REPS8, ring, parent, bb, pos, live, nlive)
        if need[v]:
            for i in range(-1, nlive):
                r = 0 if i < 0 else live[i]
                x1 = bb[4 * r]
                y1 = bb[4 * r + 1]
                x2 = bb[4 * r + 2] + 1
                y2 = bb[4 * r + 3] + 1
                best[v] = max(best[v], _box_score(x1, y1, x2, y2, gt, g0, g1, conv, h, w))
                if collect:
                    boxes, box_k, nbox = _push(boxes, box_k, nbox, x1, y1, x2, y2, v)

    # Holes from the bottom level up (4-connected): the listed sets are the holes.
    parent[:] = 0
    nlive = 0
    for v in range(0, k_hi):
        for j in range(bg_start[v], bg_start[v + 1]):
            p = bg_order[j]
            m = (
                np.int64(val[p - ww - 1] <= v)
                | (np.int64(val[p - ww] <= v) << 1)
                | (np.int64(val[p - ww + 1] <= v) << 2)
                | (np.int64(val[p + 1] < v) << 3)
                | (np.int64(val[p + ww + 1] < v) << 4)
                | (np.int64(val[p + ww] < v) << 5)
                | (np.int64(val[p + ww - 1] < v) << 6)
                | (np.int64(val[p - 1] <= v) << 7)
            )
            nlive = _attach(p, (p & mask) - 1, (p >> sh) - 1, m, hole[p] != 0, _GROUPS4, _REPS4, ring, parent, bb, pos, live, nlive)
        k = v + 1
        if need[k]:
            for i in range(nlive):
                r = live[i]
                x1 = bb[4 * r] - 1
                y1 = bb[4 * r + 1] - 1
                x2 = bb[4 * r + 2] + 2
                y2 = bb[4 * r + 3] + 2
                best[k] = max(best[k], _box_score(x1, y1, x2, y2, gt, g0, g1, conv, h, w))
                if collect:
                    boxes, box_k, nbox = _push(boxes, box_k, nbox, x1, y1, x2, y2, k)
    return best, boxes[:nbox], box_k[:nbox]


@njit(cache=True, nogil=True)
def _batch_max_iou(u8s: np.ndarray, levels: np.ndarray, gt: np.ndarray, gt_start: np.ndarray, conv: int, out: np.ndarray) -> None:
    """Fill ``out`` (N×T) with the best IoU of each map at each threshold's cut level."""
    n, t_count = levels.shape
    h = u8s.shape[1]
    w = u8s.shape[2]
    need = np.zeros(256, np.bool_)
    for i in range(n):
        u8 = u8s[i]
        mx = 0
        for y in range(h):
            for x in range(w):
                if u8[y, x] > mx:
                    mx = u8[y, x]
        need[:] = False
        for t in range(t_count):
            lv = levels[i, t]
            if lv < mx:
                need[lv + 1] = True
        g0 = gt_start[i]
        g1 = gt_start[i + 1]
        best, _, _ = _sweep(u8, need, gt, g0, g1, conv, False)
        # No foreground: no box (-1), or wsolevaluation's [0, 0, 0, 0] box.
        empty = -1.0
        if conv == 1:
            empty = _box_score(0, 0, 0, 0, gt, g0, g1, conv, h, w)
        for t in range(t_count):
            lv = levels[i, t]
            out[i, t] = best[lv + 1] if lv < mx else empty


def _pack_gt(gts: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    counts = np.array([len(g) for g in gts], np.int64)
    start = np.zeros(len(gts) + 1, np.int64)
    np.cumsum(counts, out=start[1:])
    flat = np.concatenate([np.asarray(g, np.float64).reshape(-1, 4) for g in gts]) if len(gts) else np.zeros((0, 4))
    return np.ascontiguousarray(flat.reshape(-1, 4), dtype=np.float64), start


def max_iou_all(u8s: np.ndarray, thresholds: np.ndarray, gts: Sequence[np.ndarray], iou_convention: str = "exclusive", workers: int = 1) -> np.ndarray:
    """Best IoU (N×T float64) of every ``mode="all"`` box against each map's GT boxes, per threshold.

    ``u8s`` is an N×H×W uint8 batch (:func:`wsol.localize.boxes.to_uint8`), ``gts`` N arrays of
    K_i×4 finite float boxes. A threshold with no foreground gives -1 (``"exclusive"``) or the IoU
    of wsolevaluation's ``[0, 0, 0, 0]`` box (``"wsolevaluation"``); a map without GT boxes gives -1.
    Equal, bit for bit, to ``BoxEvaluator._image_max_iou`` on the cv2 path.
    """
    if iou_convention not in CONVENTIONS:
        raise ValueError(f"iou_convention must be one of {CONVENTIONS}, got {iou_convention!r}")
    u8s = np.ascontiguousarray(u8s, dtype=np.uint8)
    if u8s.ndim != 3:
        raise ValueError(f"u8s must be N×H×W, got shape {u8s.shape}")
    if len(gts) != len(u8s):
        raise ValueError(f"got {len(gts)} GT box sets for {len(u8s)} maps")
    th = np.asarray(thresholds, np.float64).reshape(-1)
    n = len(u8s)
    out = np.empty((n, len(th)), np.float64)
    if n == 0 or len(th) == 0:
        return out
    if u8s.shape[1] == 0 or u8s.shape[2] == 0:
        raise ValueError(f"maps must not be empty, got shape {u8s.shape}")
    levels = np.ascontiguousarray(threshold_levels(u8s.reshape(n, -1).max(axis=1), th))
    gt, gt_start = _pack_gt(gts)
    conv = CONVENTIONS.index(iou_convention)
    workers = max(1, min(int(workers), n))
    if workers == 1:
        _batch_max_iou(u8s, levels, gt, gt_start, conv, out)
        return out
    # The compiled sweep releases the GIL, so threads run it in parallel on disjoint slices.
    bounds = np.linspace(0, n, workers + 1).astype(np.int64)

    def run(a: int, b: int) -> None:
        _batch_max_iou(u8s[a:b], levels[a:b], gt, gt_start[a:b + 1], conv, out[a:b])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, bounds[:-1], bounds[1:]))
    return out


def level_boxes_all(u8: np.ndarray, levels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every ``mode="all"`` box of one uint8 map at each of ``levels`` (distinct, in [-1, max - 1]).

    Returns ``(boxes, level_index)`` like :func:`wsol.localize.boxes.level_boxes`: K×4 int64,
    x2/y2 exclusive, and each box's index into ``levels``. The boxes of a level are the same
    multiset as cv2's, in a different order.
    """
    u8 = np.ascontiguousarray(u8, dtype=np.uint8)
    levels = np.asarray(levels, np.int64).reshape(-1)
    mx = int(u8.max()) if u8.size else 0
    if len(levels) and (levels.min() < -1 or levels.max() >= mx or len(np.unique(levels)) != len(levels)):
        raise ValueError(f"levels must be distinct and in [-1, {mx - 1}], got {levels.tolist()}")
    need = np.zeros(256, np.bool_)
    need[levels + 1] = True
    _, boxes, box_k = _sweep(u8, need, np.zeros((0, 4)), 0, 0, 0, True)
    index_of_k = np.full(256, -1, np.int64)
    index_of_k[levels + 1] = np.arange(len(levels))
    return boxes, index_of_k[box_k]


def boxes_at_thresholds(u8: np.ndarray, thresholds: Sequence[float]) -> List[np.ndarray]:
    """``mode="all"`` boxes (K×4 int64, x2/y2 exclusive) of one uint8 map at each threshold."""
    mx = int(np.asarray(u8).max())
    lv = threshold_levels([mx], thresholds)[0]
    uniq = np.unique(lv[lv < mx])
    boxes, idx = level_boxes_all(u8, uniq)
    pos = np.searchsorted(uniq, lv)
    return [boxes[idx == pos[j]] if lv[j] < mx else np.zeros((0, 4), np.int64) for j in range(len(lv))]


__all__ = ["CONVENTIONS", "boxes_at_thresholds", "level_boxes_all", "max_iou_all"]
