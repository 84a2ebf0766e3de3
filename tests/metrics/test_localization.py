"""Localization metrics pinned on hand-made maps and boxes (expected values computed by hand)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from wsol.metrics.iou import box_iou, iou_plus_one
from wsol.metrics.localization import (
    BoxEvaluator,
    localization_accuracy,
    max_iou,
    merge_states,
    top1_accuracy,
)


def test_box_iou_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 5]], float)
    b = np.array([[5, 5, 15, 15], [10, 0, 20, 10]], float)
    iou = box_iou(a, b)
    assert iou.shape == (3, 2)
    assert iou[0, 0] == pytest.approx(25 / 175)  # 5×5 overlap, 100 + 100 - 25
    assert iou[0, 1] == 0.0  # touching edges share no area
    assert iou[2].tolist() == [0.0, 0.0]  # zero-area box
    assert box_iou([[1, 2, 3, 4]], [[1, 2, 3, 4]])[0, 0] == 1.0
    t = box_iou(torch.tensor(a), torch.tensor(b))
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy(iou))


def test_exclusive_iou_equals_plus_one_iou_on_inclusive_boxes():
    rng = np.random.default_rng(0)
    lo = rng.integers(0, 50, size=(40, 2))
    hi = lo + rng.integers(1, 30, size=(40, 2))
    excl = np.concatenate([lo, hi], axis=1).astype(float)  # [x1, y1, x2, y2) exclusive
    incl = excl - np.array([0, 0, 1, 1])  # the same pixels, inclusive corners
    assert np.allclose(box_iou(excl[:20], excl[20:]), iou_plus_one(incl[:20], incl[20:]))


def test_max_iou_over_several_gt_boxes():
    gt = [[0, 0, 4, 4], [6, 6, 9, 9]]
    assert max_iou([[6, 6, 9, 9]], gt) == 1.0
    assert max_iou(np.zeros((0, 4)), gt) == 0.0
    assert max_iou([[0, 0, 2, 4]], gt) == pytest.approx(0.5)


def test_top1_and_fixed_box_accuracy():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1_accuracy(logits, [1, 1, 1]) == pytest.approx(200 / 3)
    out = localization_accuracy([[[0, 0, 4, 4]], [[0, 0, 2, 2]]], [[[0, 0, 4, 4]], [[0, 0, 4, 4]]], correct_pred=[False, True])
    # image 1: IoU 1 (hit, but class wrong); image 2: IoU 4/16 (miss)
    assert out["gt_known_loc"] == 50.0 and out["top1_loc"] == 0.0 and out["top1_acc"] == 50.0


def _hand_maps():
    a = np.zeros((10, 10), np.float32)
    a[2:6, 2:6] = 1  # box [2, 2, 6, 6]
    b = np.zeros((10, 10), np.float32)
    b[:, :5] = 1  # box [0, 0, 5, 10]: IoU 50/100 with the full-image GT
    c = np.zeros((10, 10), np.float32)  # nothing on: no box at any threshold
    d = np.zeros((10, 10), np.float32)
    d[1:9, 1:9] = 0.5  # u8 127
    d[3:7, 3:7] = 1.0  # u8 255; t < 0.5 keeps the 8×8 block, t >= 0.5 only the 4×4 core
    e = np.zeros((10, 10), np.float32)
    e[6:9, 6:9] = 1  # matches the second of two GT boxes
    f = np.zeros((10, 10), np.float32)
    f[0:6, 0:6] = 1  # the largest region
    f[7:9, 7:9] = 1  # a small region that matches the GT
    gts = [
        [[2, 2, 6, 6]],
        [[0, 0, 10, 10]],
        [[0, 0, 10, 10]],
        [[3, 3, 7, 7]],
        [[0, 0, 4, 4], [6, 6, 9, 9]],
        [[7, 7, 9, 9]],
    ]
    return np.stack([a, b, c, d, e, f]), gts


def test_max_box_acc_v2_by_hand():
    maps, gts = _hand_maps()
    ev = BoxEvaluator([0.0, 0.25, 0.5, 0.75], (30, 50, 70), mode="all")
    best = ev.accumulate(maps, gts, correct_pred=[True, True, True, False, False, True])
    assert np.allclose(best[3], [0.25, 0.25, 1.0, 1.0]) and np.all(best[2] == -1)
    assert ev.num_correct.tolist() == [[4, 4, 5, 5], [4, 4, 5, 5], [3, 3, 4, 4]]
    res = ev.compute()
    assert res.max_box_acc(30) == pytest.approx(500 / 6)
    assert res.max_box_acc(70) == pytest.approx(400 / 6)
    assert res.max_box_acc() == pytest.approx((500 / 6 + 500 / 6 + 400 / 6) / 3)
    assert res.best_threshold(50) == 0.5
    # Top-1 Loc: images 4 and 5 have a wrong class; c never hits
    assert res.top1_loc[1].tolist() == pytest.approx([50.0] * 4)
    assert res.top1_acc == pytest.approx(400 / 6)
    d = res.to_dict()
    assert d["gt_known_loc"] == pytest.approx(500 / 6) and d["top1_loc"] == pytest.approx(50.0)
    assert res.at_threshold(0.25)["gt_known_loc@50"] == pytest.approx(400 / 6)
    with pytest.raises(ValueError, match="not evaluated"):
        res.at_threshold(0.3)


def test_max_box_acc_largest_contour_misses_small_region():
    maps, gts = _hand_maps()
    ev = BoxEvaluator([0.0, 0.25, 0.5, 0.75], (50,), mode="largest")
    ev.accumulate(maps, gts)
    assert ev.num_correct.tolist() == [[3, 3, 4, 4]]
    assert ev.compute().max_box_acc() == pytest.approx(400 / 6)
    assert ev.compute().top1_loc is None


def test_wsolevaluation_convention_by_hand():
    g = np.zeros((10, 10), np.float32)
    g[2:6, 2:6] = 1  # pred [2, 2, 6, 6]; GT in wsolevaluation format [2, 2, 5, 5]
    h = np.zeros((10, 10), np.float32)  # no region: wsolevaluation scores the box [0, 0, 0, 0]
    i = np.zeros((10, 10), np.float32)
    i[:, 5:] = 1  # touches the right border: x2 = 10, clipped to 9 by wsolevaluation
    maps = np.stack([g, h, i])
    gts = [[[2, 2, 5, 5]], [[0, 0, 0, 0]], [[5, 0, 10, 10]]]
    ours = BoxEvaluator([0.5], (60, 80), mode="largest")
    ours.accumulate(maps, gts)
    theirs = BoxEvaluator([0.5], (60, 80), mode="largest", iou_convention="wsolevaluation")
    best = theirs.accumulate(maps, gts)
    # g: (4·4 overlap with +1) 16 / (25 + 16 - 16) = 0.64 ; ours 9 / 16 = 0.5625
    # h: [0,0,0,0] vs [0,0,0,0] -> 1 ; ours: no box
    # i: [5,0,9,9] vs [5,0,10,10] -> 50 / 66 ; ours 1.0
    assert best[:, 0] == pytest.approx([0.64, 1.0, 50 / 66])
    assert theirs.num_correct[:, 0].tolist() == [3, 1]
    assert ours.num_correct[:, 0].tolist() == [1, 1]


def test_merge_threads_and_state_roundtrip_are_exact():
    rng = np.random.default_rng(3)
    maps = np.stack([ndimage.gaussian_filter(rng.random((24, 28)), 2.5) for _ in range(12)])
    maps = ((maps - maps.min(axis=(1, 2), keepdims=True)) / np.ptp(maps, axis=(1, 2), keepdims=True)).astype(np.float32)
    gts = [np.array([[4, 4, 20, 18]]) + rng.integers(-3, 4, size=(1, 4)) for _ in range(12)]
    correct = rng.random(12) > 0.3
    whole = BoxEvaluator(workers=1)
    whole.accumulate(maps, gts, correct)
    threaded = BoxEvaluator(workers=2)
    threaded.accumulate(maps, gts, correct)
    a, b = BoxEvaluator(), BoxEvaluator()
    a.accumulate(maps[:5], gts[:5], correct[:5])
    b.accumulate(maps[5:], gts[5:], correct[5:])
    merged = BoxEvaluator().merge(a).merge(b.state_dict())
    batched = BoxEvaluator(workers=1)  # one evaluator fed batches of changing size
    for lo, hi in ((0, 7), (7, 9), (9, 12)):
        batched.accumulate(maps[lo:hi], gts[lo:hi], correct[lo:hi])
    for other in (threaded, merged, batched):
        assert np.array_equal(other.num_correct, whole.num_correct)
        assert np.array_equal(other.num_correct_top1, whole.num_correct_top1)
        assert other.count == whole.count == 12
    assert merge_states([a.state_dict(), b.state_dict()])["num_correct"] == whole.num_correct.tolist()
    with pytest.raises(ValueError, match="different thresholds"):
        BoxEvaluator(mode="largest").merge(a)


def test_rejects_unnormalized_maps():
    ev = BoxEvaluator()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.accumulate(np.full((1, 4, 4), 2.0), [[[0, 0, 2, 2]]])
    with pytest.raises(ValueError, match="GT box sets"):
        ev.accumulate(np.zeros((2, 4, 4)), [[[0, 0, 2, 2]]])


def _wsolevaluation_counts(maps, gts, thresholds, deltas, largest):
    """wsolevaluation's box accuracy, re-stated plainly: clipped boxes, +1 IoU, [0,0,0,0] if empty."""
    import cv2

    counts = np.zeros((len(deltas), len(thresholds)), np.int64)
    for scoremap, gt in zip(maps, gts):
        h, w = scoremap.shape
        image = (scoremap * 255).astype(np.uint8)
        for j, t in enumerate(thresholds):
            _, binary = cv2.threshold(image, int(t * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
            if len(contours) == 0:
                boxes = [[0, 0, 0, 0]]
            else:
                if largest:
                    contours = [max(contours, key=cv2.contourArea)]
                boxes = []
                for c in contours:
                    x, y, bw, bh = cv2.boundingRect(c)
                    boxes.append([x, y, min(x + bw, w - 1), min(y + bh, h - 1)])
            best = float(iou_plus_one(np.array(boxes, float), np.array(gt, float)).max())
            for d, delta in enumerate(deltas):
                counts[d, j] += best >= delta / 100
    return counts


@pytest.mark.parametrize("mode", ["all", "largest"])
def test_wsolevaluation_convention_matches_a_plain_restatement(mode):
    rng = np.random.default_rng(11)
    maps = np.stack([ndimage.gaussian_filter(rng.random((20, 26)), rng.uniform(1, 3)) for _ in range(20)])
    maps = ((maps - maps.min(axis=(1, 2), keepdims=True)) / np.ptp(maps, axis=(1, 2), keepdims=True)).astype(np.float32)
    maps[0] = 0  # a map with no region at all
    gts = []
    for _ in range(20):
        lo = rng.integers(0, 12, size=2)
        hi = lo + rng.integers(3, 14, size=2)
        gts.append([[lo[0], lo[1], min(hi[0], 26), min(hi[1], 20)]])
    gts[1] = gts[1] + [[0, 0, 5, 5]]  # several GT boxes
    thresholds, deltas = np.arange(0, 1, 0.05), (30, 50, 70)
    ev = BoxEvaluator(thresholds, deltas, mode=mode, iou_convention="wsolevaluation")
    ev.accumulate(maps, gts)
    assert np.array_equal(ev.num_correct, _wsolevaluation_counts(maps, gts, thresholds, deltas, mode == "largest"))
