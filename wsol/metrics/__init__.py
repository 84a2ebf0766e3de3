"""Metrics: localization (boxes), segmentation (masks, PxAP); all evaluators stream and merge."""
from wsol.metrics.localization import (
    BoxAccuracy,
    BoxEvaluator,
    box_iou,
    localization_accuracy,
    max_iou,
    merge_states,
    top1_accuracy,
    top1_correct,
)
from wsol.metrics.segmentation import PxAPEvaluator, PxAPResult, SegmentationEvaluator, SegmentationScores, mask_iou

__all__ = [
    "BoxAccuracy",
    "BoxEvaluator",
    "PxAPEvaluator",
    "PxAPResult",
    "SegmentationEvaluator",
    "SegmentationScores",
    "box_iou",
    "localization_accuracy",
    "mask_iou",
    "max_iou",
    "merge_states",
    "top1_accuracy",
    "top1_correct",
]
