"""Attribution maps → boxes and masks: post-processing, box fitting, mask cutting.

``levels``: the threshold rule (uint8 conversion, cut levels), defined once; ``heatmap``: pure
tensor post-processing steps; ``boxes``: wsolevaluation-exact box fitting at
many thresholds in one pass; ``masks``: the matching foreground masks.
"""
from wsol.localize.boxes import MODES, MapBoxes, box_from_map, boxes_from_maps, map_boxes, map_boxes_batch
from wsol.localize.heatmap import (
    DEFAULT_STEPS,
    PRESETS,
    PostProcess,
    gaussian_filter,
    mean_filter,
    normalize_minmax,
    percentile_clip,
    postprocess,
    resize_maps,
    to_gray,
)
from wsol.localize.levels import default_thresholds, threshold_levels, to_uint8, to_uint8_torch
from wsol.localize.masks import masks_from_maps

__all__ = [
    "DEFAULT_STEPS",
    "MODES",
    "PRESETS",
    "MapBoxes",
    "PostProcess",
    "box_from_map",
    "boxes_from_maps",
    "default_thresholds",
    "gaussian_filter",
    "map_boxes",
    "map_boxes_batch",
    "masks_from_maps",
    "mean_filter",
    "normalize_minmax",
    "percentile_clip",
    "postprocess",
    "resize_maps",
    "threshold_levels",
    "to_gray",
    "to_uint8",
    "to_uint8_torch",
]
