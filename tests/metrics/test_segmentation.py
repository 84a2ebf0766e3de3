"""Segmentation metrics: mask IoU, the vectorized sweep, Top-1 Seg and PxAP, checked by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from wsol.errors import DataError
from wsol.localize.masks import masks_from_maps
from wsol.metrics.segmentation import PxAPEvaluator, SegmentationEvaluator, mask_iou


def test_mask_iou_hand_values():
    pred = np.zeros((2, 4, 4), bool)
    gt = np.zeros((2, 4, 4), bool)
    pred[0, :2, :2] = True  # 4 px
    gt[0, :2, :3] = True  # 6 px, overlap 4
    ign = np.zeros_like(gt)
    ign[0, 0, 2] = True  # drops one GT-only pixel: 4 / 5
    assert mask_iou(pred, gt).tolist() == pytest.approx([4 / 6, 1.0])  # second: both empty -> 1
    assert mask_iou(pred, gt, ignore=ign)[0] == pytest.approx(4 / 5)
    assert mask_iou(torch.from_numpy(pred[0]), torch.from_numpy(gt[0])).tolist() == pytest.approx([4 / 6])


def _two_level_map():
    m = np.zeros((10, 10), np.float32)
    m[1:9, 1:9] = 0.5  # 64 px at u8 127
    m[3:7, 3:7] = 1.0  # 16 px at u8 255
    gt = np.zeros((10, 10), bool)
    gt[3:7, 3:7] = True
    return m, gt


def test_segmentation_sweep_by_hand():
    m, gt = _two_level_map()
    zero = np.zeros_like(m)
    ev = SegmentationEvaluator([0.0, 0.5], iou_threshold=0.5)
    ev.accumulate(np.stack([m, zero]), np.stack([gt, gt]), correct_pred=[True, True])
    res = ev.compute()
    # image 1: t=0 -> 8×8 block vs 4×4 GT: fg IoU 16/64, bg IoU (100-64)/(100-16) = 36/84; t=0.5 -> 1, 1
    # image 2: empty prediction: fg IoU 0, bg IoU 84/100
    assert res.miou_fg.tolist() == pytest.approx([100 * (0.25 + 0) / 2, 100 * (1 + 0) / 2])
    assert res.miou_bg.tolist() == pytest.approx([100 * (36 / 84 + 0.84) / 2, 100 * (1 + 0.84) / 2])
    assert res.gt_known_seg.tolist() == [0.0, 50.0]
    assert res.top1_seg.tolist() == [0.0, 50.0]
    d = res.to_dict()
    assert d["top1_seg"] == 50.0 and d["top1_seg_threshold"] == 0.5 and d["miou"] == pytest.approx(50.0)
    assert res.at_threshold(0.0)["miou"] == pytest.approx(12.5)


def test_sweep_equals_per_threshold_masks():
    rng = np.random.default_rng(5)
    maps = np.stack([ndimage.gaussian_filter(rng.random((18, 22)), 2) for _ in range(6)])
    maps = ((maps - maps.min(axis=(1, 2), keepdims=True)) / np.ptp(maps, axis=(1, 2), keepdims=True)).astype(np.float32)
    gts = rng.random((6, 18, 22)) > 0.5
    ign = rng.random((6, 18, 22)) > 0.8
    thresholds = np.arange(0, 1, 0.05)
    ev = SegmentationEvaluator(thresholds)
    fg = ev.accumulate(maps, gts, ignore=ign)
    for j, t in enumerate(thresholds):
        pred = masks_from_maps(torch.from_numpy(maps), t).numpy()
        assert np.allclose(fg[:, j], mask_iou(pred, gts, ign))


def test_segmentation_merge_matches_single_pass():
    m, gt = _two_level_map()
    maps, gts = np.stack([m, m[::-1]]), np.stack([gt, gt])
    whole = SegmentationEvaluator([0.0, 0.5])
    whole.accumulate(maps, gts, [True, False])
    a, b = SegmentationEvaluator([0.0, 0.5]), SegmentationEvaluator([0.0, 0.5])
    a.accumulate(maps[:1], gts[:1], [True])
    b.accumulate(maps[1:], gts[1:], [False])
    merged = a.merge(b.state_dict()).compute()
    assert np.allclose(merged.miou_fg, whole.compute().miou_fg) and np.allclose(merged.top1_seg, whole.compute().top1_seg)


def test_pxap_by_hand():
    # Bins for thresholds [0, 0.5]: [0, .5), [.5, 1), [1, 2), [2, 3].
    # Positives 0.9, 1.0 -> hist [0, 1, 1, 0]; negatives 0.2, 0.6 -> [1, 1, 0, 0].
    # Reversed cumsums: tp [0, 1, 2, 2], fp [0, 0, 1, 2]; precision [-, 1, 2/3, 1/2]; recall [0, .5, 1, 1].
    # AP = 1·0.5 + (2/3)·0.5 + (1/2)·0 = 5/6.
    maps = np.array([[[0.9, 1.0, 0.2, 0.6, 0.95]]])
    gt = np.array([[[True, True, False, False, False]]])
    ignore = np.array([[[False, False, False, False, True]]])  # the 0.95 negative is ignored
    ev = PxAPEvaluator([0.0, 0.5])
    ev.accumulate(maps, gt, ignore=ignore)
    assert ev.compute().pxap == pytest.approx(500 / 6)
    split = PxAPEvaluator([0.0, 0.5])
    split.accumulate(maps[..., :2], gt[..., :2])
    other = PxAPEvaluator([0.0, 0.5])
    other.accumulate(maps[..., 2:4], gt[..., 2:4])
    assert split.merge(other).compute().pxap == pytest.approx(500 / 6)


def test_pxap_needs_positive_pixels():
    ev = PxAPEvaluator([0.0, 0.5])
    ev.accumulate(np.full((1, 2, 2), 0.3), np.zeros((1, 2, 2), bool))
    with pytest.raises(DataError, match="ground-truth foreground"):
        ev.compute()


def test_both_evaluators_refuse_a_wrong_number_of_correctness_flags() -> None:
    from wsol.metrics.localization import BoxEvaluator

    maps = np.zeros((2, 8, 8), np.float32)
    maps[:, 2:5, 2:5] = 1.0
    masks = maps > 0.5
    with pytest.raises(ValueError, match="got 3 correctness flags for 2 maps"):
        SegmentationEvaluator([0.5]).accumulate(maps, masks, correct_pred=[True, False, True])
    with pytest.raises(ValueError, match="got 1 correctness flags for 2 maps"):
        BoxEvaluator([0.5]).accumulate(maps, [[[2, 2, 5, 5]], [[2, 2, 5, 5]]], correct_pred=[True])
