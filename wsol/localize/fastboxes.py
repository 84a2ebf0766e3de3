"""Exact, compiled boxes for every threshold: MaxBoxAccV2 (``mode="all"``) without contour tracing,
and MaxBoxAcc (``mode="largest"``) with a few compiled border traces.

:mod:`wsol.localize.boxes` runs ``cv2.findContours(RETR_TREE)`` per level and keeps every
contour's ``cv2.boundingRect``. Those boxes follow from connected components alone (checked
against cv2 on thousands of random maps in tests/localize/test_fastboxes.py, including nested
islands, one-pixel holes, diagonal contacts and regions touching the border):

* each 8-connected foreground component gives one outer contour, whose box is the component's
  extent ``[xmin, ymin, xmax + 1, ymax + 1]``;
* each hole, a 4-connected background component that does not touch the image border (cv2
  pads the image with zeros, so background reaching the border is outside), gives one hole
  contour. It runs through the foreground pixels 4-adjacent to the hole, so its box is the
  hole's extent grown by one pixel: ``[xmin - 1, ymin - 1, xmax + 2, ymax + 2]``.

All levels come from two union-find sweeps over the pixels sorted by value (counting sort):
foreground in descending order (8-connected; after the pixels of value ``L + 1`` the sets are
the components of level ``L``) and background in ascending order (4-connected; the frame is
the "outside" set, the other sets are the holes). Sets keep their bounding boxes, so at each
needed level the boxes are read off and scored against the image's GT boxes on the spot, with
the same float64 arithmetic, in the same order, as :mod:`wsol.metrics.localization` (the IoUs
are bit-identical, so every ``IoU >= δ/100`` decision agrees).

Most pixels never enter a sweep. Two cheap partial grayscale reconstructions (vectorized row
sweeps) find the pixels that are certainly in the top pixel's component whenever they are
foreground (a path from the top pixel never goes below their own value), and those certainly
connected to the border whenever they are background. These "main" / "outer" pixels sit in set
0 from the start; only the remaining pixels and their neighbours are swept. The main
component's extent at every level comes from per-row and per-column maxima.

``mode="largest"`` runs the foreground sweep only. At each needed level it picks the first
contour of maximal ``cv2.contourArea`` among the components' outer contours: the component
holding the previous level's winner keeps at least that winner's area, every other one has at
most ``(w - 1)(h - 1)`` of its extent, and the candidates these bounds leave are measured
exactly by following their border as cv2 does (:func:`_pick_largest`, :func:`_outer_area2`).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence, Tuple

import numpy as np
from numba import njit

from wsol.localize.levels import threshold_levels

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
# Down-and-up passes of the partial reconstructions: more passes mark more pixels as main /
# outer (fewer to sweep) at a small fixed cost. A speed knob only; results do not depend on it.
_ROUNDS = 2


@njit(cache=True, nogil=True)
def _pos(x: float) -> float:
    """``max(x, 0)`` giving +0.0 for -0.0, as numpy's ``maximum(x, 0)`` does (finite ``x``)."""
    return x if x > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _box_score(
    x1: int, y1: int, x2: int, y2: int, gt: np.ndarray, g0: int, g1: int, conv: int, h: int, w: int
) -> float:
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
def _push(
    boxes: np.ndarray, box_k: np.ndarray, nbox: int, x1: int, y1: int, x2: int, y2: int, k: int
) -> Tuple[np.ndarray, np.ndarray, int]:
    """Append a box (growing the buffers by doubling); used only when boxes are collected."""
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
def _find(parent: np.ndarray, s: int) -> int:
    """Root of set ``s``, halving the path on the way."""
    while parent[s] != s:
        up = parent[parent[s]]
        parent[s] = up
        s = up
    return s


@njit(cache=True, nogil=True, inline="always")
def _store_box(bb: np.ndarray, s: int, x1: int, y1: int, x2: int, y2: int) -> None:
    """Write the inclusive extent ``(x1, y1, x2, y2)`` as set ``s``'s box (``bb[4 s : 4 s + 4]``)."""
    bb[4 * s] = x1
    bb[4 * s + 1] = y1
    bb[4 * s + 2] = x2
    bb[4 * s + 3] = y2


@njit(cache=True, nogil=True, inline="always")
def _absorb_box(bb: np.ndarray, keep: int, drop: int) -> None:
    """Grow set ``keep``'s box to cover set ``drop``'s (a union-find merge)."""
    bb[4 * keep] = min(bb[4 * keep], bb[4 * drop])
    bb[4 * keep + 1] = min(bb[4 * keep + 1], bb[4 * drop + 1])
    bb[4 * keep + 2] = max(bb[4 * keep + 2], bb[4 * drop + 2])
    bb[4 * keep + 3] = max(bb[4 * keep + 3], bb[4 * drop + 3])


@njit(cache=True, nogil=True)
def _neighbour_masks(val: np.ndarray, fg_mask: np.ndarray, bg_mask: np.ndarray, h: int, w: int, sh: int) -> None:
    """Per pixel, which ring neighbours come before it in each sweep (one vectorizable pass).

    Ring order: 0 NW, 1 N, 2 NE, 3 E, 4 SE, 5 S, 6 SW, 7 W. Foreground sweep (values
    descending, raster order within a value): a neighbour comes first when it is larger, or
    equal and earlier in raster order (NW, N, NE, W). Background sweep (values ascending): when
    it is smaller, or equal and earlier. The frame holds -1, so it never counts for the
    foreground and always counts (as the outside) for the background.
    """
    ww = 1 << sh
    for y in range(1, h + 1):
        row = y << sh
        up = val[row - ww : row]
        cur = val[row : row + ww]
        dn = val[row + ww : row + 2 * ww]
        fm = fg_mask[row : row + ww]
        bm = bg_mask[row : row + ww]
        for x in range(1, w + 1):
            v = cur[x]
            a0 = up[x - 1]
            a1 = up[x]
            a2 = up[x + 1]
            a3 = cur[x + 1]
            a4 = dn[x + 1]
            a5 = dn[x]
            a6 = dn[x - 1]
            a7 = cur[x - 1]
            fm[x] = np.uint8(
                (a0 >= v) | ((a1 >= v) << 1) | ((a2 >= v) << 2) | ((a3 > v) << 3)
                | ((a4 > v) << 4) | ((a5 > v) << 5) | ((a6 > v) << 6) | ((a7 >= v) << 7)
            )
            bm[x] = np.uint8(
                (a0 <= v) | ((a1 <= v) << 1) | ((a2 <= v) << 2) | ((a3 < v) << 3)
                | ((a4 < v) << 4) | ((a5 < v) << 5) | ((a6 < v) << 6) | ((a7 <= v) << 7)
            )


# cv2's chain codes (0 E, 1 NE, 2 N, 3 NW, 4 W, 5 SW, 6 S, 7 SE; y points down): its border
# following turns counterclockwise through them on screen.
_CHAIN_DX = np.array([1, 1, 0, -1, -1, -1, 0, 1], np.int64)
_CHAIN_DY = np.array([0, -1, -1, -1, 0, 1, 1, 1], np.int64)


@njit(cache=True, nogil=True)
def _outer_area2(val: np.ndarray, sh: int, k: int, p0: int) -> int:
    """Twice ``cv2.contourArea`` of the outer contour that starts at padded pixel ``p0`` (foreground: ``val >= k``).

    ``p0`` is its component's first pixel in raster order, where cv2 starts the contour. The
    border is followed as cv2 does (Suzuki-Abe: the first foreground neighbour clockwise from
    W, then counterclockwise searches from the pixel we came from, until the trace steps from
    that first neighbour back to ``p0``), summing the shoelace terms on the way. ``CHAIN_APPROX_SIMPLE`` only drops
    points inside straight runs, which leaves the shoelace sum unchanged, so the result is
    exact. A pixel without foreground neighbours has area 0.
    """
    ww = 1 << sh
    s = 4
    while True:
        s = (s - 1) & 7
        p1 = p0 + _CHAIN_DY[s] * ww + _CHAIN_DX[s]
        if val[p1] >= k or s == 4:
            break
    if s == 4:
        return 0
    p3 = p0
    x = 0
    y = 0
    twice = 0
    while True:
        for t in range(1, 9):
            d = (s + t) & 7
            p4 = p3 + _CHAIN_DY[d] * ww + _CHAIN_DX[d]
            if val[p4] >= k:
                break
        twice += x * _CHAIN_DY[d] - y * _CHAIN_DX[d]
        x += _CHAIN_DX[d]
        y += _CHAIN_DY[d]
        if p4 == p0 and p3 == p1:
            return abs(twice)
        p3 = p4
        s = (d + 4) & 7


@njit(cache=True, nogil=True, inline="always")
def _set_box(bb: np.ndarray, main_ext: np.ndarray, s: int, k: int) -> Tuple[int, int, int, int]:
    """Inclusive extent of foreground set ``s`` at flag ``k``; set 0 adds the main pixels of value >= k."""
    if s == 0:
        return (min(bb[0], main_ext[0, k]), min(bb[1], main_ext[1, k]),
                max(bb[2], main_ext[2, k]), max(bb[3], main_ext[3, k]))
    return bb[4 * s], bb[4 * s + 1], bb[4 * s + 2], bb[4 * s + 3]


@njit(cache=True, nogil=True)
def _first_pixel(
    val: np.ndarray, sh: int, k: int, lab: np.ndarray, parent: np.ndarray, s: int, x1: int, y1: int, x2: int
) -> int:
    """Padded index of set ``s``'s first pixel in raster order: in its top row ``y1``, within ``[x1, x2]``.

    Pixels never swept (``lab`` 0) are main pixels, in set 0 whenever they are foreground.
    """
    row = (y1 + 1) << sh
    for x in range(x1 + 1, x2 + 2):
        if val[row + x] >= k and _find(parent, lab[row + x]) == s:
            return row + x
    raise AssertionError("a set has no pixel in the top row of its extent")


@njit(cache=True, nogil=True)
def _pick_largest(
    val: np.ndarray, sh: int, k: int, lab: np.ndarray, parent: np.ndarray, bb: np.ndarray, live: np.ndarray,
    nlive: int, main_ext: np.ndarray, prev: int, low: int,
) -> Tuple[int, int, int, int, int, int]:
    """The first maximal-area outer contour among the foreground sets at flag ``k``, as cv2 would list it.

    Returns its component's inclusive extent, a pixel of it and a lower bound on twice its area.
    ``prev`` is a pixel of the previous (higher) level's winner and ``low`` a lower bound on
    twice its contour area. Regions are nested across levels, and a region's contour polygon
    grows with the region, so the set now holding ``prev`` (the holder) has at least that area.
    Every other set's contour runs through pixel centres inside its extent: twice its area is at
    most ``2 (w - 1)(h - 1)``. When no other set reaches ``low`` the holder wins untraced;
    otherwise the holder and every set whose bound reaches the best area so far are traced
    (:func:`_outer_area2`). Ties go to the set whose first pixel comes last in raster order:
    cv2 lists outer contours in reverse raster order of their first pixel, and Python's ``max``
    keeps the first. Holes and islands in holes never come first (see :mod:`wsol.localize.boxes`).
    """
    holder = _find(parent, lab[prev])
    decided = True
    for i in range(-1, nlive):
        t = 0 if i < 0 else live[i]
        if t != holder:
            x1, y1, x2, y2 = _set_box(bb, main_ext, t, k)
            if 2 * (x2 - x1) * (y2 - y1) >= low:
                decided = False
                break
    hx1, hy1, hx2, hy2 = _set_box(bb, main_ext, holder, k)
    if decided:
        return hx1, hy1, hx2, hy2, prev, low
    best_p = _first_pixel(val, sh, k, lab, parent, holder, hx1, hy1, hx2)
    best = _outer_area2(val, sh, k, best_p)
    for i in range(-1, nlive):
        t = 0 if i < 0 else live[i]
        if t == holder:
            continue
        x1, y1, x2, y2 = _set_box(bb, main_ext, t, k)
        bound = 2 * (x2 - x1) * (y2 - y1)
        if bound < best:
            continue
        if bound == 0:  # one row or column: area 0, first pixel at the extent's top left
            p = ((y1 + 1) << sh) + x1 + 1
            area = 0
        else:
            p = _first_pixel(val, sh, k, lab, parent, t, x1, y1, x2)
            area = _outer_area2(val, sh, k, p)
        if area > best or (area == best and p > best_p):
            best, best_p = area, p
            hx1, hy1, hx2, hy2 = x1, y1, x2, y2
    return hx1, hy1, hx2, hy2, best_p, best


@njit(cache=True, nogil=True)
def _component_pass(
    order: np.ndarray, start: np.ndarray, values: np.ndarray, groups: np.ndarray, reps: np.ndarray,
    ring: np.ndarray, sh: int, need: np.ndarray, k_offset: int, grow: int, with_main: bool, main_ext: np.ndarray,
    lab: np.ndarray, parent: np.ndarray, bb: np.ndarray, pos: np.ndarray, live: np.ndarray,
    gt: np.ndarray, g0: int, g1: int, conv: int, h: int, w: int,
    best: np.ndarray, collect: bool, boxes: np.ndarray, box_k: np.ndarray, nbox: int,
    largest: bool, val: np.ndarray, top_p: int,
) -> Tuple[np.ndarray, np.ndarray, int]:
    """Add the pixels of each value in ``values`` to a union-find of sets, reading off boxes.

    ``order[start[v]:start[v + 1]]`` holds the pixels of value ``v`` in raster order, each packed
    with its neighbour mask (bits 32-39) and a "core" flag (bit 48: may lie outside set 0). A
    pixel that is not core is known to be in set 0 and only merges its neighbours' sets into it.
    ``lab`` gives each added pixel a set id; set ids form a small union-find (``parent``) whose
    roots keep bounding boxes (``bb``, 4 per set) and sit in ``live``. The smaller root survives
    a merge, so set 0 (the top pixel's component in the foreground sweep, the outside in the
    background sweep) stays a root and is never listed. A set's box is cached in registers while
    consecutive pixels join it. After value ``v``, if ``need[v + k_offset]``, every
    live set gives the box of its extent grown by ``grow`` pixels, and with ``with_main`` set 0
    (the top pixel's component) gives the union of its box and ``main_ext[:, k]``. With
    ``largest`` (foreground sweep only) each needed level instead collects the one box of the
    largest outer contour (:func:`_pick_largest`; ``val`` is the padded map, ``top_p`` the top pixel).
    """
    mask = (1 << sh) - 1
    prev = top_p  # a pixel of the last largest-contour winner, and a lower bound on twice
    low = 0  # the contour area of the component that holds it
    parent[0] = 0
    _store_box(bb, 0, w, h, -1, -1)
    nsets = 1
    nlive = 0
    cur = -1  # the set whose box is cached in (cx0, cy0, cx1, cy1)
    cx0 = cy0 = cx1 = cy1 = 0
    for v in values:
        for j in range(start[v], start[v + 1]):
            pk = order[j]
            p = pk & 0xFFFFFFFF
            m = (pk >> 32) & 0xFF
            px = (p & mask) - 1
            py = (p >> sh) - 1
            ng = groups[m]
            if not (pk >> 48) & 1:
                # A pixel known to be in set 0: it only merges its neighbours' sets into set 0.
                for gi in range(ng):
                    other = _find(parent, lab[p + ring[reps[m, gi]]])
                    if other != 0:
                        if cur >= 0:
                            _store_box(bb, cur, cx0, cy0, cx1, cy1)
                            cur = -1
                        parent[other] = 0
                        _absorb_box(bb, 0, other)
                        i = pos[other]
                        nlive -= 1
                        live[i] = live[nlive]
                        pos[live[i]] = i
                continue
            if ng == 0:
                parent[nsets] = nsets
                _store_box(bb, nsets, px, py, px, py)
                pos[nsets] = nlive
                live[nlive] = nsets
                lab[p] = nsets
                nsets += 1
                nlive += 1
                continue
            root = _find(parent, lab[p + ring[reps[m, 0]]])
            for gi in range(1, ng):
                other = _find(parent, lab[p + ring[reps[m, gi]]])
                if other != root:
                    if cur >= 0:
                        _store_box(bb, cur, cx0, cy0, cx1, cy1)
                        cur = -1
                    keep = min(root, other)
                    drop = max(root, other)
                    parent[drop] = keep
                    _absorb_box(bb, keep, drop)
                    i = pos[drop]
                    nlive -= 1
                    live[i] = live[nlive]
                    pos[live[i]] = i
                    root = keep
            lab[p] = root
            if root != cur:
                if cur >= 0:
                    _store_box(bb, cur, cx0, cy0, cx1, cy1)
                cur = root
                cx0 = bb[4 * cur]
                cy0 = bb[4 * cur + 1]
                cx1 = bb[4 * cur + 2]
                cy1 = bb[4 * cur + 3]
            cx0 = min(cx0, px)
            cy0 = min(cy0, py)
            cx1 = max(cx1, px)
            cy1 = max(cy1, py)
        k = v + k_offset
        if need[k]:
            if cur >= 0:
                _store_box(bb, cur, cx0, cy0, cx1, cy1)
                cur = -1
            if largest:
                x1, y1, x2, y2, prev, low = _pick_largest(val, sh, k, lab, parent, bb, live, nlive, main_ext, prev, low)
                best[k] = max(best[k], _box_score(x1, y1, x2 + 1, y2 + 1, gt, g0, g1, conv, h, w))
                if collect:
                    boxes, box_k, nbox = _push(boxes, box_k, nbox, x1, y1, x2 + 1, y2 + 1, k)
                continue
            if with_main:
                # Set 0 is the top pixel's component: the main pixels of value >= k plus the
                # sets merged into it.
                x1 = min(bb[0], main_ext[0, k])
                y1 = min(bb[1], main_ext[1, k])
                x2 = max(bb[2], main_ext[2, k]) + 1
                y2 = max(bb[3], main_ext[3, k]) + 1
                best[k] = max(best[k], _box_score(x1, y1, x2, y2, gt, g0, g1, conv, h, w))
                if collect:
                    boxes, box_k, nbox = _push(boxes, box_k, nbox, x1, y1, x2, y2, k)
            for i in range(nlive):
                s = live[i]
                x1 = bb[4 * s] - grow
                y1 = bb[4 * s + 1] - grow
                x2 = bb[4 * s + 2] + 1 + grow
                y2 = bb[4 * s + 3] + 1 + grow
                best[k] = max(best[k], _box_score(x1, y1, x2, y2, gt, g0, g1, conv, h, w))
                if collect:
                    boxes, box_k, nbox = _push(boxes, box_k, nbox, x1, y1, x2, y2, k)
    return boxes, box_k, nbox


@njit(cache=True, nogil=True)
def _reconstruct(val: np.ndarray, a: np.ndarray, g: np.ndarray, h: int, w: int, sh: int, rounds: int, holes: bool) -> None:
    """Downward and upward row sweeps of two partial grayscale reconstructions, in place.

    ``a`` (by dilation from the marked top pixel, 8-connected paths) and ``g`` (by erosion from
    the frame, 4-connected paths) only ever take values carried along real paths: ``a[p]`` is
    the smallest value on some 8-path from the top pixel to ``p``, and ``g[p]`` the largest on
    some 4-path from ``p`` out of the image. Each row is updated from the row before it only
    (straight and diagonal steps; a diagonal 4-path step goes through the lower of the two
    pixels between), so every row update is vectorizable. Full convergence is not needed:
    better values only mean less work for the union-find. Without ``holes`` only ``a`` is built.
    """
    ww = 1 << sh
    if not holes:
        for _ in range(rounds):
            for y in range(1, h + 1):
                row = y << sh
                _dilate_row(val[row : row + ww], a[row : row + ww], a[row - ww : row], w)
            for y in range(h, 0, -1):
                row = y << sh
                _dilate_row(val[row : row + ww], a[row : row + ww], a[row + ww : row + 2 * ww], w)
        return
    for _ in range(rounds):
        for y in range(1, h + 1):
            row = y << sh
            up = row - ww
            _sweep_row(val[row : row + ww], val[up:row], a[row : row + ww], a[up:row], g[row : row + ww], g[up:row], w)
        for y in range(h, 0, -1):
            row = y << sh
            dn = row + ww
            _sweep_row(val[row:dn], val[dn : dn + ww], a[row:dn], a[dn : dn + ww], g[row:dn], g[dn : dn + ww], w)


@njit(cache=True, nogil=True, inline="always")
def _dilate_row(vc: np.ndarray, ac: np.ndarray, an: np.ndarray, w: int) -> None:
    """The ``a`` half of :func:`_sweep_row`."""
    for x in range(1, w + 1):
        ac[x] = min(vc[x], max(max(an[x - 1], an[x]), max(an[x + 1], ac[x])))


@njit(cache=True, nogil=True, inline="always")
def _sweep_row(
    vc: np.ndarray, vn: np.ndarray, ac: np.ndarray, an: np.ndarray, gc: np.ndarray, gn: np.ndarray, w: int
) -> None:
    """Update row ``c`` of ``a`` and ``g`` from the neighbouring row ``n`` (see ``_reconstruct``)."""
    for x in range(1, w + 1):
        v = vc[x]
        ac[x] = min(v, max(max(an[x - 1], an[x]), max(an[x + 1], ac[x])))
        left = max(min(vn[x], vc[x - 1]), gn[x - 1])
        right = max(min(vn[x], vc[x + 1]), gn[x + 1])
        gc[x] = max(v, min(min(gn[x], gc[x]), min(left, right)))


@njit(cache=True, nogil=True)
def _sort_members(
    items: np.ndarray, n: int, val: np.ndarray, core: np.ndarray, masks: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Stable counting sort by value of the padded indices ``items[:n]`` (given in raster order).

    Each entry packs the padded index (low 32 bits), the neighbour mask (bits 32-39) and the
    core flag (bit 48). The pixels of value ``v`` are ``order[start[v]:start[v + 1]]``.
    """
    counts = np.zeros((4, 256), np.int64)  # four interleaved histograms avoid store-to-load stalls
    for i in range(0, n - 3, 4):
        counts[0, val[items[i]]] += 1
        counts[1, val[items[i + 1]]] += 1
        counts[2, val[items[i + 2]]] += 1
        counts[3, val[items[i + 3]]] += 1
    for i in range(n - n % 4, n):
        counts[0, val[items[i]]] += 1
    start = np.zeros(257, np.int64)
    for v in range(256):
        start[v + 1] = start[v] + counts[0, v] + counts[1, v] + counts[2, v] + counts[3, v]
    fill = start[:256].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        p = items[i]
        v = val[p]
        order[fill[v]] = p | (np.int64(masks[p]) << 32) | (np.int64(core[p]) << 48)
        fill[v] += 1
    return order, start


@njit(cache=True, nogil=True)
def _sweep(
    u8: np.ndarray, need: np.ndarray, gt: np.ndarray, g0: int, g1: int, conv: int, collect: bool, largest: bool
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best IoU (and optionally every box) at each needed level of one map.

    With ``largest`` only the foreground components (the outer contours) are swept, and each
    needed level scores (and collects) the box of its largest outer contour only.

    ``need`` has 256 flags; flag ``k`` asks for level ``L = k - 1`` (foreground ``u8 >= k``), and
    only levels below the map's maximum may be asked for. Returns ``best`` (256 floats, -1 where
    no box scored), and, when ``collect``, boxes K×4 (x2/y2 exclusive) with their flag index ``k``.
    """
    h, w = u8.shape
    holes = not largest
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
    row_max = np.empty(h, np.int16)
    for y in range(h):
        row = (y + 1) << sh
        r = u8[y]
        m = r[0]
        for x in range(w):
            val[row + x + 1] = r[x]
            m = max(m, r[x])
        row_max[y] = m
    top_y = np.argmax(row_max)  # the top pixel: the first maximum in raster order
    top = row_max[top_y]
    top_p = ((top_y + 1) << sh) + np.argmax(u8[top_y]) + 1
    fg_mask = np.zeros(npad, np.uint8)
    bg_mask = np.zeros(npad, np.uint8)
    _neighbour_masks(val, fg_mask, bg_mask, h, w, sh)
    a = np.full(npad, -1, np.int16)
    a[top_p] = top
    g = np.full(npad, 256 if holes else -1, np.int16)  # without holes: no pixel is a hole candidate
    g[:ww] = -1
    g[npad - ww :] = -1
    for y in range(1, h + 1):
        g[y << sh] = -1
        g[(y << sh) + w + 1] = -1
    _reconstruct(val, a, g, h, w, sh, _ROUNDS, holes)

    # Main pixels (a == val) are in the top pixel's component whenever they are foreground;
    # outer pixels (g == val) are in the outside whenever they are background. Only the other
    # pixels ("side" / "hole") and their neighbours go through the union-find sweeps.
    side = np.zeros(npad, np.uint8)
    hole = np.zeros(npad, np.uint8)
    row_top = np.full(h, -1, np.int16)  # per row / column: largest value of a main pixel
    col_top = np.full(w, -1, np.int16)
    for y in range(h):
        row = (y + 1) << sh
        vr = val[row : row + ww]
        ar = a[row : row + ww]
        gr = g[row : row + ww]
        sr = side[row : row + ww]
        hr = hole[row : row + ww]
        rt = np.int16(-1)
        for x in range(1, w + 1):
            v = vr[x]
            is_side = ar[x] < v
            sr[x] = is_side
            hr[x] = gr[x] > v
            mv = np.int16(-1) if is_side else v
            rt = max(rt, mv)
            col_top[x - 1] = max(col_top[x - 1], mv)
        row_top[y] = rt
    fg_member = np.zeros(npad, np.uint8)
    bg_member = np.zeros(npad, np.uint8)
    for y in range(1, h + 1):
        row = y << sh
        su = side[row - ww : row]
        sc = side[row : row + ww]
        sd = side[row + ww : row + 2 * ww]
        hu = hole[row - ww : row]
        hc = hole[row : row + ww]
        hd = hole[row + ww : row + 2 * ww]
        fm = fg_member[row : row + ww]
        bm = bg_member[row : row + ww]
        fk = fg_mask[row : row + ww]
        bk = bg_mask[row : row + ww]
        for x in range(1, w + 1):
            # Ring bits of the side (hole) neighbours. A main (outer) member looks only at those:
            # its other added neighbours are in set 0 already, like itself.
            sring = np.uint8(
                su[x - 1] | (su[x] << 1) | (su[x + 1] << 2) | (sc[x + 1] << 3)
                | (sd[x + 1] << 4) | (sd[x] << 5) | (sd[x - 1] << 6) | (sc[x - 1] << 7)
            )
            hring = np.uint8(
                hu[x - 1] | (hu[x] << 1) | (hu[x + 1] << 2) | (hc[x + 1] << 3)
                | (hd[x + 1] << 4) | (hd[x] << 5) | (hd[x - 1] << 6) | (hc[x - 1] << 7)
            )
            fm[x] = sc[x] | (sring != 0)
            bm[x] = hc[x] | ((hring & 0xAA) != 0)
            fk[x] = fk[x] if sc[x] else fk[x] & sring
            bk[x] = bk[x] if hc[x] else bk[x] & hring
    fg_items = np.empty(npad, np.int32)
    bg_items = np.empty(npad, np.int32)
    n_fg = 0
    n_bg = 0
    for p in range(ww, npad - ww):  # branch-free compaction: write always, advance for members
        fg_items[n_fg] = p
        n_fg += fg_member[p]
        bg_items[n_bg] = p
        n_bg += bg_member[p]

    # Extent of the main pixels with value >= k, for every k.
    main_ext = np.empty((4, 257), np.int64)
    main_ext[0, :] = w
    main_ext[1, :] = h
    main_ext[2, :] = -1
    main_ext[3, :] = -1
    for y in range(h):
        t = row_top[y]
        if t >= 0:
            main_ext[1, t] = min(main_ext[1, t], y)
            main_ext[3, t] = max(main_ext[3, t], y)
    for x in range(w):
        t = col_top[x]
        if t >= 0:
            main_ext[0, t] = min(main_ext[0, t], x)
            main_ext[2, t] = max(main_ext[2, t], x)
    for k in range(254, -1, -1):
        main_ext[0, k] = min(main_ext[0, k], main_ext[0, k + 1])
        main_ext[1, k] = min(main_ext[1, k], main_ext[1, k + 1])
        main_ext[2, k] = max(main_ext[2, k], main_ext[2, k + 1])
        main_ext[3, k] = max(main_ext[3, k], main_ext[3, k + 1])

    ring = np.array([-ww - 1, -ww, -ww + 1, 1, ww + 1, ww, ww - 1, -1], np.int64)
    n = h * w + 1
    lab = np.zeros(npad, np.int32)  # pixels not yet swept (and the frame) are in set 0
    parent = np.empty(n, np.int32)
    bb = np.empty(4 * n, np.int32)
    pos = np.empty(n, np.int32)
    live = np.empty(n, np.int32)
    # Foreground, values from the top down, 8-connected: after value v the components of
    # u8 >= v (level v - 1) are set 0 (the top pixel's) and the live sets.
    fg_order, fg_start = _sort_members(fg_items, n_fg, val, side, fg_mask)
    boxes, box_k, nbox = _component_pass(
        fg_order, fg_start, np.arange(255, k_lo - 1, -1), _GROUPS8, _REPS8, ring, sh, need, 0, 0, True, main_ext,
        lab, parent, bb, pos, live, gt, g0, g1, conv, h, w, best, collect, boxes, box_k, nbox, largest, val, top_p,
    )
    if largest:
        return best, boxes[:nbox], box_k[:nbox]
    # Background, values from the bottom up, 4-connected: after value v the live sets (all but
    # set 0, the outside) are the holes of level v; their boxes grow by one pixel.
    lab[:] = 0
    bg_order, bg_start = _sort_members(bg_items, n_bg, val, hole, bg_mask)
    boxes, box_k, nbox = _component_pass(
        bg_order, bg_start, np.arange(0, k_hi), _GROUPS4, _REPS4, ring, sh, need, 1, 1, False, main_ext,
        lab, parent, bb, pos, live, gt, g0, g1, conv, h, w, best, collect, boxes, box_k, nbox, False, val, top_p,
    )
    return best, boxes[:nbox], box_k[:nbox]


@njit(cache=True, nogil=True)
def _batch_max_iou(
    u8s: np.ndarray, maxima: np.ndarray, levels: np.ndarray, gt: np.ndarray, gt_start: np.ndarray, conv: int,
    out: np.ndarray, largest: bool,
) -> None:
    """Fill ``out`` (N×T) with the best IoU of each map (maximum ``maxima[i]``) at each threshold's cut level."""
    n, t_count = levels.shape
    h = u8s.shape[1]
    w = u8s.shape[2]
    need = np.zeros(256, np.bool_)
    for i in range(n):
        u8 = u8s[i]
        mx = maxima[i]
        need[:] = False
        for t in range(t_count):
            lv = levels[i, t]
            if lv < mx:
                need[lv + 1] = True
        g0 = gt_start[i]
        g1 = gt_start[i + 1]
        best, _, _ = _sweep(u8, need, gt, g0, g1, conv, False, largest)
        # No foreground: no box (-1), or wsolevaluation's [0, 0, 0, 0] box.
        empty = -1.0
        if conv == 1:
            empty = _box_score(0, 0, 0, 0, gt, g0, g1, conv, h, w)
        for t in range(t_count):
            lv = levels[i, t]
            out[i, t] = best[lv + 1] if lv < mx else empty


def _pack_gt(gts: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Concatenate per-map GT boxes into one G×4 float64 array plus N+1 offsets."""
    counts = np.array([len(g) for g in gts], np.int64)
    start = np.zeros(len(gts) + 1, np.int64)
    np.cumsum(counts, out=start[1:])
    flat = np.concatenate([np.asarray(g, np.float64).reshape(-1, 4) for g in gts]) if len(gts) else np.zeros((0, 4))
    return np.ascontiguousarray(flat.reshape(-1, 4), dtype=np.float64), start


def max_iou_all(
    u8s: np.ndarray,
    thresholds: np.ndarray,
    gts: Sequence[np.ndarray],
    iou_convention: str = "exclusive",
    workers: int = 1,
) -> np.ndarray:
    """Best IoU (N×T float64) of every ``mode="all"`` box against each map's GT boxes, per threshold.

    ``u8s`` is an N×H×W uint8 batch (:func:`wsol.localize.levels.to_uint8`), ``gts`` N arrays of
    K_i×4 finite boxes in the maps' pixel frame. A threshold with no foreground gives -1
    (``"exclusive"``) or the IoU of wsolevaluation's ``[0, 0, 0, 0]`` box (``"wsolevaluation"``);
    a map without GT boxes gives -1. The values equal, bit for bit, those of the cv2 path
    (``BoxEvaluator._image_max_iou`` with ``mode="all"``). ``workers`` threads split the batch.
    """
    return _max_iou(u8s, thresholds, gts, iou_convention, workers, largest=False)


def max_iou_largest(
    u8s: np.ndarray,
    thresholds: np.ndarray,
    gts: Sequence[np.ndarray],
    iou_convention: str = "exclusive",
    workers: int = 1,
) -> np.ndarray:
    """:func:`max_iou_all` for the ``mode="largest"`` box (MaxBoxAcc); bit for bit as the per-map path."""
    return _max_iou(u8s, thresholds, gts, iou_convention, workers, largest=True)


def _max_iou(
    u8s: np.ndarray, thresholds: np.ndarray, gts: Sequence[np.ndarray], iou_convention: str, workers: int, largest: bool
) -> np.ndarray:
    """Validated, optionally threaded :func:`_batch_max_iou`."""
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
    maxima = u8s.reshape(n, -1).max(axis=1).astype(np.int64)
    levels = np.ascontiguousarray(threshold_levels(maxima, th))
    gt, gt_start = _pack_gt(gts)
    if not np.isfinite(gt).all():
        raise ValueError("GT boxes must be finite")
    conv = CONVENTIONS.index(iou_convention)
    workers = max(1, min(int(workers), n))
    if workers == 1:
        _batch_max_iou(u8s, maxima, levels, gt, gt_start, conv, out, largest)
        return out
    # The compiled sweep releases the GIL, so threads run it in parallel on disjoint slices.
    bounds = np.linspace(0, n, workers + 1).astype(np.int64)

    def run(a: int, b: int) -> None:
        _batch_max_iou(u8s[a:b], maxima[a:b], levels[a:b], gt, gt_start[a:b + 1], conv, out[a:b], largest)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(run, bounds[:-1], bounds[1:]))
    return out


def _level_sweep(u8: np.ndarray, levels: np.ndarray, largest: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Validated call of the collecting sweep: boxes K×4 and each box's index into ``levels``."""
    u8 = np.ascontiguousarray(u8, dtype=np.uint8)
    if u8.ndim != 2:
        raise ValueError(f"map must be H×W, got shape {u8.shape}")
    levels = np.asarray(levels, np.int64).reshape(-1)
    mx = int(u8.max()) if u8.size else 0
    if len(levels) and (levels.min() < -1 or levels.max() >= mx or len(np.unique(levels)) != len(levels)):
        raise ValueError(f"levels must be distinct and in [-1, {mx - 1}], got {levels.tolist()}")
    need = np.zeros(256, np.bool_)
    need[levels + 1] = True
    _, boxes, box_k = _sweep(u8, need, np.zeros((0, 4)), 0, 0, 0, True, largest)
    index_of_k = np.full(256, -1, np.int64)
    index_of_k[levels + 1] = np.arange(len(levels))
    return boxes, index_of_k[box_k]


def level_boxes_all(u8: np.ndarray, levels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Every ``mode="all"`` box of one uint8 map at each of ``levels`` (distinct, in [-1, max - 1]).

    Returns ``(boxes, level_index)`` like :func:`wsol.localize.boxes.level_boxes`: K×4 int64,
    x2/y2 exclusive, and each box's index into ``levels``. The boxes of a level are the same
    multiset as cv2's, in a different order.
    """
    return _level_sweep(u8, levels, largest=False)


def level_boxes_largest(u8: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The ``mode="largest"`` box of one uint8 map at each of ``levels`` (distinct, in [-1, max - 1]).

    Returns len(levels)×4 int64, x2/y2 exclusive, in the order of ``levels``: the box of the first
    contour of maximal ``cv2.contourArea`` in cv2's ``RETR_TREE`` list, found by the foreground
    sweep with a few compiled border traces per level (:func:`_pick_largest`).
    """
    boxes, index = _level_sweep(u8, levels, largest=True)
    out = np.empty_like(boxes)
    out[index] = boxes
    return out


def boxes_at_thresholds(u8: np.ndarray, thresholds: Sequence[float]) -> List[np.ndarray]:
    """``mode="all"`` boxes (K×4 int64, x2/y2 exclusive) of one H×W uint8 map at each threshold.

    Same boxes as :func:`wsol.localize.boxes.boxes_from_maps` with ``mode="all"`` (as multisets;
    the order within a threshold differs). Meant for inspection and tests; the evaluator uses
    :func:`max_iou_all`, which never materializes boxes.
    """
    u8 = np.asarray(u8)
    if u8.ndim != 2 or u8.size == 0:
        raise ValueError(f"map must be a non-empty H×W array, got shape {u8.shape}")
    mx = int(u8.max())
    lv = threshold_levels([mx], thresholds)[0]
    uniq = np.unique(lv[lv < mx])
    boxes, idx = level_boxes_all(u8, uniq)
    pos = np.searchsorted(uniq, lv)
    return [boxes[idx == pos[j]] if lv[j] < mx else np.zeros((0, 4), np.int64) for j in range(len(lv))]


def kernels_cached() -> bool:
    """Whether numba's on-disk cache holds every kernel of this module (inlined ones aside) for
    this source file.

    In a fresh environment the first call compiles them, a minute or more on a CPU with no
    progress to show, so jobs say so first. Unknown cache internals count as cached (no note).
    """
    from numba.core.registry import CPUDispatcher

    kernels = [v for v in globals().values() if isinstance(v, CPUDispatcher) and v.targetoptions.get("inline") != "always"]
    try:
        return all(k._cache._cache_file._load_index() for k in kernels)  # {} when missing or stale
    except AttributeError:
        return True


__all__ = [
    "CONVENTIONS", "boxes_at_thresholds", "kernels_cached", "level_boxes_all", "level_boxes_largest", "max_iou_all", "max_iou_largest",
]
