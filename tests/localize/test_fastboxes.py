"""Compiled mode="all" boxes: the component rule, exact boxes vs cv2, bit-identical IoUs, evaluator counts."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from wsol.localize.boxes import map_boxes
from wsol.localize.fastboxes import boxes_at_thresholds, level_boxes_all, max_iou_all, max_iou_largest
from wsol.localize.levels import to_uint8
from wsol.metrics.localization import BoxEvaluator

THRESHOLDS = np.arange(0, 1, 0.01)
EIGHT = np.ones((3, 3), bool)
FOUR = ndimage.generate_binary_structure(2, 1)


def cv2_boxes(binary: np.ndarray) -> list:
    """Every RETR_TREE contour's boundingRect as [x, y, x + w, y + h], sorted."""
    contours = cv2.findContours(binary.astype(np.uint8) * 255, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        out.append([x, y, x + w, y + h])
    return sorted(out)


def rule_boxes(binary: np.ndarray) -> list:
    """The rule, with scipy labelling: 8-connected regions, and 4-connected holes grown by one pixel."""
    h, w = binary.shape
    regions = ndimage.find_objects(ndimage.label(binary, EIGHT)[0])
    out = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in regions]
    for s in ndimage.find_objects(ndimage.label(~binary, FOUR)[0]):
        if s[0].start > 0 and s[1].start > 0 and s[0].stop < h and s[1].stop < w:
            out.append([s[1].start - 1, s[0].start - 1, s[1].stop + 1, s[0].stop + 1])
    return sorted(out)


def random_binary(rng: np.random.Generator, kind: int) -> np.ndarray:
    h, w = rng.integers(1, 20, size=2)
    if kind == 0:  # salt and pepper: diagonal contacts, one-pixel holes, border pixels
        return rng.random((h, w)) < rng.uniform(0.2, 0.9)
    if kind == 1:  # smoothed noise: blobs with holes
        return ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(0.5, 2)) > rng.normal(0, 0.1)
    if kind == 2:  # nested rings: islands in holes in islands
        b = np.zeros((h, w), bool)
        for k in range(min(h, w) // 2 + 1):
            if rng.random() < 0.5:
                b[k : h - k, k : w - k] = ~b[k : h - k, k : w - k]
        return b ^ (rng.random((h, w)) < 0.05)
    yy, xx = np.mgrid[:h, :w]  # checkerboards: chains of diagonal contacts
    return (((xx + yy) % 2 == 0) & (rng.random((h, w)) < 0.8)) | (rng.random((h, w)) < 0.3)


def test_contour_boxes_are_component_boxes():
    """The rule itself (independent of the compiled code) against cv2 on 2,000 random masks."""
    rng = np.random.default_rng(0)
    holes = 0
    for i in range(2000):
        b = random_binary(rng, i % 4)
        expected = cv2_boxes(b)
        assert rule_boxes(b) == expected, b.astype(int)
        holes += len(expected) - ndimage.label(b, EIGHT)[1]
    assert holes > 5000  # the masks really exercise holes


def test_hand_made_holes():
    m = np.zeros((9, 10), np.uint8)
    m[1:8, 1:8] = 200
    m[4, 4] = 0  # one-pixel hole
    m[2, 2:4] = 0  # two-pixel hole
    m[6, 6] = 100  # foreground at level 50, a hole at level 150
    m[0, 9] = 255  # a pixel in the corner, not touching the region
    boxes, idx = level_boxes_all(m, np.array([50, 150]))
    # Region rows/cols 1..7 -> [1, 1, 8, 8]; hole (4, 4) grown by one -> [3, 3, 6, 6];
    # hole row 2, cols 2..3 -> [1, 1, 5, 4]; hole (6, 6) -> [5, 5, 8, 8]; corner -> [9, 0, 10, 1].
    assert sorted(boxes[idx == 0].tolist()) == sorted([[1, 1, 8, 8], [3, 3, 6, 6], [1, 1, 5, 4], [9, 0, 10, 1]])
    assert sorted(boxes[idx == 1].tolist()) == sorted(
        [[1, 1, 8, 8], [3, 3, 6, 6], [1, 1, 5, 4], [5, 5, 8, 8], [9, 0, 10, 1]]
    )
    # A diagonal contact joins regions (8-connectivity) ...
    m[0, 8] = 255
    boxes, _ = level_boxes_all(m, np.array([150]))
    assert [1, 0, 10, 8] in boxes.tolist() and [9, 0, 10, 1] not in boxes.tolist()
    # ... and background reaching the border is outside: opening hole (4, 4) removes its box.
    m[4, 1:5] = 0
    boxes, _ = level_boxes_all(m, np.array([50]))
    assert sorted(boxes.tolist()) == sorted([[1, 0, 10, 8], [1, 1, 5, 4]])


def random_map(rng: np.random.Generator, kind: int, h: int = 0, w: int = 0) -> np.ndarray:
    """uint8 maps: smooth noise (many islands and holes), Gaussian blobs, raw noise, quantized."""
    if not h:
        h, w = rng.integers(1, 40, size=2)
    if kind == 0:
        m = ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(0.5, 3))
    elif kind == 1:
        yy, xx = np.mgrid[:h, :w]
        m = np.zeros((h, w))
        for _ in range(int(rng.integers(1, 5))):
            cx, cy, sx, sy = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(1, w / 2 + 1), rng.uniform(1, h / 2 + 1)
            m += rng.uniform(0.2, 1) * np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        m += 0.05 * rng.standard_normal((h, w))
    elif kind == 2:
        m = rng.random((h, w))
    else:  # few distinct values: large plateaus and ties for the maximum
        m = rng.integers(0, 4, size=(h, w)).astype(float)
    m = (m - m.min()) / (np.ptp(m) + 1e-12)
    return to_uint8(m.astype(np.float32))[0]


def test_boxes_equal_plain_cv2_at_every_threshold():
    rng = np.random.default_rng(1)
    thresholds = np.arange(0, 1, 0.05)
    for i in range(400):
        u8 = random_map(rng, i % 4)
        ours = boxes_at_thresholds(u8, thresholds)
        for j, t in enumerate(thresholds):
            _, binary = cv2.threshold(u8, int(t * np.max(u8)), 255, cv2.THRESH_BINARY)
            assert sorted(ours[j].tolist()) == cv2_boxes(binary > 0), (i, t)


def test_degenerate_maps():
    for u8 in (np.zeros((5, 4), np.uint8), np.full((3, 6), 7, np.uint8), np.array([[9]], np.uint8),
               np.arange(7, dtype=np.uint8)[None], np.arange(7, dtype=np.uint8)[:, None]):
        ours = boxes_at_thresholds(u8, THRESHOLDS)
        ref = map_boxes(u8, THRESHOLDS, "all")
        for j in range(len(THRESHOLDS)):
            assert sorted(ours[j].tolist()) == sorted(ref.at(j).astype(int).tolist())


def random_gt(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    k = int(rng.integers(0, 4))
    g = rng.uniform(-3, max(h, w) + 3, size=(k, 4))
    if rng.random() < 0.5:
        g = np.round(g)  # integer boxes: many exact IoU ties with the thresholds' δ
    if rng.random() < 0.3:
        g[rng.random(g.shape) < 0.2] = -0.0
    return g


@pytest.mark.parametrize("mode", ["all", "largest"])
@pytest.mark.parametrize("convention", ["exclusive", "wsolevaluation"])
def test_best_ious_bit_identical_to_cv2_path(convention, mode):
    """The compiled IoUs against the per-map numpy path (cv2 canvases for "all", the box lists for "largest")."""
    rng = np.random.default_rng(2)
    ev = BoxEvaluator(THRESHOLDS, mode=mode, iou_convention=convention)
    max_iou = max_iou_all if mode == "all" else max_iou_largest
    for batch in range(60):
        h, w = rng.integers(1, 48, size=2)
        u8s = np.stack([random_map(rng, i % 4, h, w) for i in range(4)])
        gts = [random_gt(rng, h, w) for _ in range(len(u8s))]
        ours = max_iou(u8s, THRESHOLDS, gts, convention, workers=1 + batch % 2)
        ref = np.stack([ev._image_max_iou(u, g) for u, g in zip(u8s, gts)])
        assert ours.tobytes() == ref.tobytes()


def plain_reference_counts(maps: np.ndarray, gts: list, deltas: tuple) -> np.ndarray:
    """Hit counts with one cv2 pass per map and threshold, written plainly (exclusive IoU)."""
    counts = np.zeros((len(deltas), len(THRESHOLDS)), np.int64)
    for scoremap, gt in zip(maps, gts):
        image = (scoremap * 255).astype(np.uint8)
        for j, t in enumerate(THRESHOLDS):
            _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            best = -1.0
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                for g in gt:
                    iw = max(0.0, min(x + w, g[2]) - max(x, g[0]))
                    ih = max(0.0, min(y + h, g[3]) - max(y, g[1]))
                    union = w * h + (g[2] - g[0]) * (g[3] - g[1]) - iw * ih
                    best = max(best, iw * ih / union if union > 0 else 0.0)
            for d, delta in enumerate(deltas):
                counts[d, j] += best >= delta / 100
    return counts


def test_evaluator_counts_equal_plain_loop():
    rng = np.random.default_rng(3)
    size = 40
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    maps, gts = [], []
    for i in range(24):
        m = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(0, size, 2)
            sx, sy = rng.uniform(2, 12, 2)
            m += rng.uniform(0.3, 1) * np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        m += (0.02 + 0.1 * (i % 3)) * ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.5).astype(np.float32)
        m = (m - m.min()) / (m.max() - m.min())
        maps.append(m)
        corner = rng.integers(0, size - 4, size=(int(rng.integers(1, 3)), 2))
        extent = rng.integers(4, 20, size=corner.shape)
        gts.append(np.concatenate([corner, np.minimum(corner + extent, size)], axis=1).astype(np.float64))
    maps = np.stack(maps)
    deltas = (30, 50, 70)
    expected = plain_reference_counts(maps, gts, deltas)
    for workers in (1, 2):
        ev = BoxEvaluator(THRESHOLDS, deltas, mode="all", workers=workers)
        ev.accumulate(maps[:10], gts[:10])
        ev.accumulate(maps[10:], gts[10:])
        assert np.array_equal(ev.num_correct, expected)
    assert expected.sum() > 0 and (expected < len(maps)).any()


def test_non_finite_gt_uses_the_cv2_path():
    rng = np.random.default_rng(4)
    m = rng.random((2, 12, 12)).astype(np.float32)
    gts = [np.array([[1.0, 1.0, np.nan, 5.0]]), np.array([[0.0, 0.0, 6.0, 6.0]])]
    ev = BoxEvaluator(THRESHOLDS, mode="all")
    best = ev.accumulate(m, gts)
    ref = np.stack([ev._image_max_iou(u, g) for u, g in zip(to_uint8(m), [np.asarray(g) for g in gts])])
    assert best.tobytes() == ref.tobytes()
    with pytest.raises(ValueError, match="finite"):
        max_iou_all(to_uint8(m), THRESHOLDS, gts)


def test_argument_checks():
    u8 = np.zeros((1, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="iou_convention"):
        max_iou_all(u8, THRESHOLDS, [np.zeros((0, 4))], "voc")
    with pytest.raises(ValueError, match="GT box sets"):
        max_iou_all(u8, THRESHOLDS, [])
    with pytest.raises(ValueError, match="levels"):
        level_boxes_all(np.full((3, 3), 9, np.uint8), np.array([9]))
    assert max_iou_all(np.zeros((0, 4, 4), np.uint8), THRESHOLDS, []).shape == (0, len(THRESHOLDS))
    # A map with no foreground at any threshold: -1 everywhere (exclusive).
    assert (max_iou_all(u8, THRESHOLDS, [np.array([[0.0, 0.0, 2.0, 2.0]])]) == -1).all()
