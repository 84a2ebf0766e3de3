"""mode="largest": the compiled border trace against cv2.contourArea, and the picked box against the plain loop."""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from wsol.localize.fastboxes import _outer_area2, level_boxes_largest
from wsol.localize.levels import threshold_levels

EIGHT = np.ones((3, 3), bool)


def padded(binary: np.ndarray) -> tuple:
    """The sweep's layout: pixel (y, x) at ((y + 1) << sh) + x + 1, a frame of -1, foreground 1."""
    h, w = binary.shape
    sh = 1
    while (1 << sh) < w + 2:
        sh += 1
    val = np.full((h + 2, 1 << sh), -1, np.int16)
    val[1 : h + 1, 1 : w + 1] = binary
    return val.reshape(-1), sh


def random_binary(rng: np.random.Generator, kind: int) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(1, 24, size=2))
    if kind == 0:  # salt and pepper: diagonal contacts, one-pixel holes and lines, border pixels
        return rng.random((h, w)) < rng.uniform(0.2, 0.9)
    if kind == 1:  # smoothed noise: blobs with holes
        return ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(0.5, 2)) > rng.normal(0, 0.1)
    if kind == 2:  # nested rings, some broken
        b = np.zeros((h, w), bool)
        for k in range(min(h, w) // 2 + 1):
            if rng.random() < 0.5:
                b[k : h - k, k : w - k] = ~b[k : h - k, k : w - k]
        return b ^ (rng.random((h, w)) < 0.05)
    if kind == 3:  # checkerboards: chains of diagonal contacts
        yy, xx = np.mgrid[:h, :w]
        return (((xx + yy) % 2 == 0) & (rng.random((h, w)) < 0.8)) | (rng.random((h, w)) < 0.3)
    b = np.zeros((h, w), bool)  # one-pixel lines: rows, columns and diagonals, crossing and touching
    for _ in range(int(rng.integers(1, 6))):
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        dy, dx = [(0, 1), (1, 0), (1, 1), (1, -1)][int(rng.integers(0, 4))]
        for _ in range(int(rng.integers(1, 20))):
            if 0 <= y < h and 0 <= x < w:
                b[y, x] = True
            y, x = y + dy, x + dx
    return b


def test_outer_area_equals_cv2_contour_area():
    """Twice the traced area of every component's outer contour equals cv2's, on 2,500 random masks."""
    rng = np.random.default_rng(0)
    with_holes = zero_area = 0
    for i in range(2500):
        b = random_binary(rng, i % 5)
        labels, n = ndimage.label(b, EIGHT)
        val, sh = padded(b)
        for c in range(1, n + 1):
            comp = labels == c
            contours = cv2.findContours(comp.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
            assert len(contours) == 1
            y, x = np.unravel_index(np.argmax(comp), comp.shape)  # first pixel in raster order
            assert contours[0][0, 0].tolist() == [x, y]  # where cv2 starts the contour
            expected = int(round(2 * cv2.contourArea(contours[0])))
            assert _outer_area2(val, sh, 1, ((y + 1) << sh) + x + 1) == expected, (i, c)
            # The area is that of the cells between pixel centres covered by the filled region: a
            # cell with 4 such corners counts 1, with 3 a half. It grows with the region, which
            # is what lets a region's area bound the area of every region holding it.
            filled = ndimage.binary_fill_holes(comp)
            corners = filled[:-1, :-1].astype(int) + filled[1:, :-1] + filled[:-1, 1:] + filled[1:, 1:]
            assert expected == 2 * np.sum(corners == 4) + np.sum(corners == 3)
            with_holes += bool((filled & ~comp).any())
            zero_area += expected == 0 and comp.sum() > 1
    assert with_holes > 1000 and zero_area > 1000  # holes, lines and diagonal chains are exercised


def reference_boxes(u8: np.ndarray, levels: np.ndarray) -> tuple:
    """Per level: the plain loop's box (RETR_TREE, Python max by contourArea) and whether the max was tied."""
    boxes, ties = [], 0
    for level in levels:
        binary = (u8 > level).astype(np.uint8)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        areas = [cv2.contourArea(c) for c in contours]
        ties += areas.count(max(areas)) > 1
        x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
        boxes.append([x, y, x + w, y + h])
    return boxes, ties


def check_map(u8: np.ndarray, thresholds: np.ndarray) -> int:
    """Assert level_boxes_largest equals the plain loop at every level; return the number of tied levels."""
    mx = int(u8.max())
    if mx == 0:
        return 0
    levels = np.unique(threshold_levels([mx], thresholds)[0])
    levels = levels[levels < mx]
    expected, ties = reference_boxes(u8, levels)
    assert level_boxes_largest(u8, levels).tolist() == expected
    return ties


def stamp(rng: np.random.Generator, shapes: list, size: int, count: int) -> np.ndarray:
    """Copies of a few shapes at random places (touching, overlapping or apart) with random or equal values."""
    u8 = np.zeros((size, size), np.uint8)
    values = rng.integers(1, 256, size=3)
    for _ in range(count):
        s = shapes[int(rng.integers(0, len(shapes)))]
        y, x = (int(v) for v in rng.integers(0, size - np.array(s.shape) + 1))
        patch = u8[y : y + s.shape[0], x : x + s.shape[1]]
        patch[s] = values[int(rng.integers(0, 3))]
    return u8


def _ring(n: int) -> np.ndarray:
    r = np.ones((n, n), bool)
    r[1:-1, 1:-1] = False
    return r


SHAPES = [
    np.ones((2, 3), bool),  # area 2, as the 3x2 block, the diamond, and the ring of 3
    np.ones((3, 2), bool),
    np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool),  # a diamond ring: hole contour as large as its outer one
    np.array([[0, 1, 0, 0], [1, 0, 1, 1], [0, 1, 0, 0]], bool),  # ... with a tail
    _ring(3),
    np.eye(3, dtype=bool),  # zero-area lines
    np.ones((1, 4), bool),
    np.ones((1, 1), bool),
    np.array([[1, 1], [1, 0]], bool),  # area 1/2
]


def test_ties_follow_cv2_order():
    """Many equal-area regions (and holes as large as their region): the first maximum is cv2's."""
    rng = np.random.default_rng(1)
    thresholds = np.arange(0, 1, 0.02)
    ties = 0
    for i in range(300):
        ties += check_map(stamp(rng, SHAPES, int(rng.integers(4, 20)), int(rng.integers(1, 12))), thresholds)
    assert ties > 500


def test_rings_checkerboards_and_noise():
    rng = np.random.default_rng(2)
    thresholds = np.arange(0, 1, 0.05)
    for i in range(600):
        b = random_binary(rng, i % 5)
        u8 = (b * rng.integers(1, 256, size=b.shape)).astype(np.uint8)
        if i % 2:
            u8 = (b * int(rng.integers(1, 256))).astype(np.uint8)  # one level: the masks as drawn
        check_map(u8, thresholds)


def test_smooth_multi_blob_maps_at_every_level():
    """Blobs that appear, grow and merge across 100 thresholds: most levels are decided by the bounds."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:56].astype(np.float32)
    for _ in range(25):
        m = np.zeros(xx.shape, np.float32)
        for _ in range(int(rng.integers(2, 6))):
            cx, cy, sx, sy = rng.uniform(0, 56), rng.uniform(0, 48), rng.uniform(2, 12), rng.uniform(2, 12)
            m += rng.uniform(0.3, 1) * np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        m += 0.05 * ndimage.gaussian_filter(rng.standard_normal(m.shape), 1.5).astype(np.float32)
        m = (m - m.min()) / (m.max() - m.min())
        check_map((m * 255).astype(np.uint8), np.arange(0, 1, 0.01))
